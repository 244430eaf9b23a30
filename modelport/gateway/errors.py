"""The single mapping from errors to HTTP responses.

Handlers raise; this module alone writes error bodies: `{"error": {"code", "message", "details"}}`. Bodies of
5xx answers never carry internals; the full error goes to the log with the request id. A database that is
down, locked past its wait or too slow is 503 `database_unavailable` with `Retry-After`, wherever it is met.
"""

from __future__ import annotations

import logging
import math

import msgspec
from starlette.exceptions import HTTPException
from starlette.responses import Response

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

__all__ = ["error_response", "to_modelport_error"]

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
