"""The single mapping from errors to HTTP responses.

Handlers raise; this module alone writes error bodies: `{"error": {"code", "message", "details"}}`. Bodies of
5xx answers never carry internals; the full error goes to the log with the request id. A database that is
down, locked past its wait or too slow is 503 `database_unavailable` with `Retry-After`, wherever it is met.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence

import msgspec
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelport.core.errors import (
    BadRequest,
    DatabaseUnavailable,
    InvalidToken,
    MethodNotAllowed,
    ModelportError,
    NotFound,
    RangeNotSatisfiable,
    ValidationFailed,
)
from modelport.db.database import failure, unavailable, unstorable
from modelport.obs.context import request_id_var
from modelport.sdk.validation import InvalidRequest

__all__ = ["ErrorDialects", "Reshape", "error_response", "to_modelport_error"]

log = logging.getLogger("modelport.gateway")
_encoder = msgspec.json.Encoder()


def to_modelport_error(exc: BaseException) -> ModelportError:
    if isinstance(exc, ModelportError):
        return exc
    if isinstance(exc, InvalidRequest):
        return ValidationFailed("the request does not match the module's API", details=exc.details)
    if isinstance(exc, HTTPException):
        if exc.status_code == 404:
            return NotFound("no such path")
        if exc.status_code == 405:
            return MethodNotAllowed("this method is not allowed on this path")
        return BadRequest(str(exc.detail))
    if unavailable(exc):
        return DatabaseUnavailable()
    if unstorable(exc):
        return BadRequest(
            "a value in the request cannot be stored: text must not hold NUL characters, "
            "and numbers must fit in 32 bits"
        )
    return ModelportError("unexpected error")


def error_response(exc: BaseException, *, request_id: str | None = None) -> Response:
    """The answer to `exc`; its log line names the request (by default the one being served)."""
    request_id = request_id or request_id_var.get()
    error = to_modelport_error(exc)
    if isinstance(error, DatabaseUnavailable):  # one line each: an outage must not flood the log with traces
        log.warning("request %s: the database is unavailable: %s", request_id, failure(exc.__cause__ or exc))
    elif error.status == 503 and error.retry_after is not None:
        # Back-pressure (a full queue, too many bodies, a worker being replaced) is the server working as
        # meant; at one line per refusal a flood of callers would flood the log too.
        log.debug("request %s refused: %s: %s", request_id, error.code, error)
    elif error.status >= 500:
        log.error("request %s failed: %s: %s", request_id, type(exc).__name__, exc, exc_info=error is not exc)
    body: dict[str, object] = {"code": error.code, "message": error.public_message()}
    if error.details is not None and (error.status < 500 or error.public):
        body["details"] = error.details
    headers = {}  # the request's id goes on every answer from `gateway/context.py`
    if error.retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(error.retry_after)))
    if error.status == 401:
        problem = ', error="invalid_token"' if isinstance(error, InvalidToken) else ""
        headers["WWW-Authenticate"] = f'Bearer realm="modelport"{problem}'
    if isinstance(error, RangeNotSatisfiable) and isinstance(error.details, dict):
        headers["Content-Range"] = f"bytes */{error.details['size']}"
    return Response(
        _encoder.encode({"error": body}),
        status_code=error.status,
        headers=headers,
        media_type="application/json",
    )


Reshape = Callable[[int, bytes], bytes]
"""An error answer's body (`{"error": {"code", "message", "details"}}`) and status → the same error in another
protocol's shape; a body it does not recognise comes back as it is."""


class ErrorDialects:
    """Writes the error answers under chosen path prefixes again in their protocol's shape (OpenAI's under
    `/v1`, the Open Inference Protocol's under `/v2`), whichever layer answered them: every layer writes the
    platform's shape, and this one, outside them, holds back a JSON error answer's body and reshapes it.
    Other answers and other paths pass as they are."""

    def __init__(self, app: ASGIApp, dialects: Sequence[tuple[str, Reshape]]) -> None:
        self.app, self.dialects = app, dialects

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        reshape = next(
            (shape for prefix, shape in self.dialects if path == prefix or path.startswith(prefix + "/")),
            None,
        )
        if reshape is None:
            await self.app(scope, receive, send)
            return
        held: Message | None = None
        chunks: list[bytes] = []

        async def send_reshaped(message: Message) -> None:
            nonlocal held
            if message["type"] == "http.response.start" and message["status"] >= 400 and _json(message):
                held = message
            elif held is None or message["type"] != "http.response.body":
                await send(message)
            else:
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    body = reshape(held["status"], b"".join(chunks))
                    headers = [(k, v) for k, v in held["headers"] if k.lower() != b"content-length"]
                    headers.append((b"content-length", str(len(body)).encode()))
                    await send({**held, "headers": headers})
                    await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, send_reshaped)


def _json(start: Message) -> bool:
    return any(
        key.lower() == b"content-type" and value.split(b";")[0].strip() == b"application/json"
        for key, value in start["headers"]
    )
