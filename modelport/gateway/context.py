"""Every request's identity: a request id and a W3C trace context, given before anything else runs.

`RequestContext` is the outermost layer of both applications. It puts the request id and the `Trace` in
`scope["state"]` (the predict route, the error mapping and the audit trail read them from there) and in the
log context, and adds `X-Request-Id` to every answer, errors included, so that any 5xx a caller sees names the
log line that explains it; a caller that sent a `traceparent` gets one back, naming the span of its call.
"""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelport.control.calls import Trace, new_request_id
from modelport.obs.context import request_id_var

__all__ = ["RequestContext", "new_request_id", "request_id_of", "trace_of"]


class RequestContext:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = new_request_id()
        traceparent = _header(scope, b"traceparent")
        trace = Trace.continuing(traceparent)
        state = scope.setdefault("state", {})
        state["request_id"], state["trace"] = request_id, trace
        token = request_id_var.set(request_id)
        extra = [(b"x-request-id", request_id.encode())]
        if traceparent is not None:  # a caller that traces is told the span its call is in
            extra.append((b"traceparent", trace.traceparent.encode()))

        async def send_with_ids(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        try:
            await self.app(scope, receive, send_with_ids)
        finally:
            request_id_var.reset(token)


def request_id_of(scope: Scope) -> str | None:
    request_id: str | None = scope.get("state", {}).get("request_id")
    return request_id


def trace_of(scope: Scope) -> Trace:
    trace: Trace | None = scope.get("state", {}).get("trace")
    return trace if trace is not None else Trace.continuing(None)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            decoded: Any = value.decode("latin-1")
            return str(decoded)
    return None
