"""Pure-ASGI middleware: request body limits."""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelport.core.errors import PayloadTooLarge
from modelport.gateway.errors import error_response

__all__ = ["BodyLimit"]


class BodyLimit:
    """Answers 413 when a body is declared or turns out to be larger than `max_bytes`.

    `max_bytes` is a number, or a function of the request's scope where routes have limits of their own
    (version artifacts, objects).
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int | Callable[[Scope], int]) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes if isinstance(self.max_bytes, int) else self.max_bytes(scope)
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit():
                if int(value) > limit:
                    await error_response(self._too_large(int(value), limit))(scope, receive, send)
                    return
                # The HTTP server never delivers more than the declared length: nothing to count.
                await self.app(scope, receive, send)
                return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise self._too_large(received, limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except PayloadTooLarge as exc:
            if started:
                raise
            await error_response(exc)(scope, receive, send)

    @staticmethod
    def _too_large(size: int, limit: int) -> PayloadTooLarge:
        return PayloadTooLarge(f"the request body ({size} bytes or more) exceeds the limit of {limit} bytes")
