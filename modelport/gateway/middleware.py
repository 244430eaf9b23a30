"""Pure-ASGI middleware: what a request body may cost the server.

`BodyLimit` holds every request body to three limits: its route's size limit (413), the request-body bytes the
server holds in memory at once over all requests (503 with `Retry-After`), and the time the body may take to
arrive (408, and the connection is closed). A refusal comes before the body is read where `Content-Length`
allows, else as soon as the bytes or the time that break the rule have passed; either way this layer answers
itself, so what a route makes of its failed read (FastAPI turns any into a 400) never reaches the client.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelport.core.errors import BodyTimeout, ModelportError, Overloaded, PayloadTooLarge
from modelport.core.settings import Settings
from modelport.gateway.errors import error_response

__all__ = ["BodyLimit", "Limits", "call_limits"]

_FORM = "multipart/form-data"


@dataclass(frozen=True)
class Limits:
    """What a route accepts as a body: at most `max_bytes`, of which its handler holds at most `in_memory` in
    memory at once (0 where the body streams to disk)."""

    max_bytes: int
    in_memory: int


def call_limits(settings: Settings) -> Callable[[Scope], Limits]:
    """The limits of a module call's body: a multipart form may reach `max_form_bytes`, as its files go to
    disk while at most `max_body_bytes` of it stays in memory; any other body is held whole."""
    form = Limits(settings.max_form_bytes, settings.max_body_bytes)
    whole = Limits(settings.max_body_bytes, settings.max_body_bytes)

    def limits(scope: Scope) -> Limits:
        return form if _header(scope, b"content-type").split(";", 1)[0].strip().lower() == _FORM else whole

    return limits


class BodyLimit:
    """Holds each request body to its route's `Limits` (`limits` is a function of the request's scope), to the
    server's `max_body_bytes_in_flight` and to `body_timeout_seconds`.

    The bytes a body will hold in memory are reserved before it is read: its declared length (up to what its
    route holds in memory), or, for a chunked body, its bytes as they arrive. The reservation is given back
    when the response is complete, or when the request ends however it ends.
    """

    def __init__(self, app: ASGIApp, *, limits: Callable[[Scope], Limits], settings: Settings) -> None:
        self.app, self.limits = app, limits
        self.free = settings.max_body_bytes_in_flight
        self.timeout = settings.body_timeout_seconds
        self.min_rate = settings.body_min_bytes_per_second

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        limits = self.limits(scope)
        declared = _header(scope, b"content-length")
        length = int(declared) if declared.isdigit() else None
        if length is not None and length > limits.max_bytes:
            await error_response(_too_large(length, limits.max_bytes))(scope, receive, send)
            return
        held = 0 if length is None else min(length, limits.in_memory)
        if held > self.free:
            await error_response(_busy())(scope, receive, send)
            return
        self.free -= held
        body = _Body(self, scope, receive, send, limits, held=held, chunked=length is None)
        try:
            await self.app(scope, body.receive, body.send)
        except ModelportError as exc:
            if exc is not body.failure or not body.answered:
                raise
        finally:
            body.release()


class _Body:
    """One request's body as it arrives, counted against its limits, the server's budget and its deadline."""

    def __init__(
        self,
        layer: BodyLimit,
        scope: Scope,
        receive: Receive,
        send: Send,
        limits: Limits,
        *,
        held: int,
        chunked: bool,
    ) -> None:
        self.layer, self.scope, self._receive, self._send = layer, scope, receive, send
        self.limits, self.held, self.chunked = limits, held, chunked
        self.received = 0
        self.complete = self.started = self.answered = False
        self.failure: ModelportError | None = None
        self.loop = asyncio.get_running_loop()
        self.deadline = self.loop.time() + layer.timeout
        self.waiting: asyncio.Task[Any] | None = None  # the task in `receive` while the body is incomplete
        self.expired = False
        self.timer: asyncio.TimerHandle | None = self.loop.call_at(self.deadline, self._check_deadline)

    def _check_deadline(self) -> None:
        """One timer per body: at the deadline (extended by the bytes received at the minimum rate) a receive
        still waiting is interrupted."""
        self.timer = None
        if self.complete:
            return
        due = self.deadline + self.received / self.layer.min_rate
        if due > self.loop.time():
            self.timer = self.loop.call_at(due, self._check_deadline)
            return
        self.expired = True
        if self.waiting is not None:
            self.waiting.cancel()

    async def receive(self) -> Message:
        if self.failure is not None:
            return {"type": "http.disconnect"}
        if self.complete:
            return await self._receive()
        if not self.expired:
            self.waiting = asyncio.current_task()
            try:
                message = await self._receive()
            except asyncio.CancelledError:
                if not self.expired:
                    raise
                assert self.waiting is not None
                self.waiting.uncancel()
            finally:
                self.waiting = None
        if self.expired:
            problem = f"the request body did not arrive within {self.layer.timeout:g} seconds; send it faster"
            raise await self._refuse(BodyTimeout(problem), close=True) from None
        if message["type"] != "http.request":
            self.complete = True
            return message
        self.received += len(message.get("body", b""))
        self.complete = not message.get("more_body", False)
        if self.complete and self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.received > self.limits.max_bytes:
            raise await self._refuse(_too_large(self.received, self.limits.max_bytes))
        if self.chunked and self.held < self.limits.in_memory:
            wanted = min(self.received, self.limits.in_memory)
            if wanted - self.held > self.layer.free:
                raise await self._refuse(_busy())
            self.layer.free -= wanted - self.held
            self.held = wanted
        return message

    async def send(self, message: Message) -> None:
        if self.answered:
            return  # this layer has answered: the route's reply to its failed read goes nowhere
        self.started = self.started or message["type"] == "http.response.start"
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            self.release()  # the route is done with the body: a client that has its answer has its room back
        await self._send(message)

    def release(self) -> None:
        self.layer.free += self.held
        self.held = 0
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    async def _refuse(self, error: ModelportError, *, close: bool = False) -> ModelportError:
        """Answer `error` unless a response has begun; returns it for the caller to raise into the route."""
        self.failure = error
        if not self.started:
            response = error_response(error)
            if close:
                response.headers["Connection"] = "close"
            self.started = self.answered = True
            await response(self.scope, self._receive, self._send)
        return error


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return ""


def _too_large(size: int, limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"the request body ({size} bytes or more) exceeds the limit of {limit} bytes")


def _busy() -> Overloaded:
    return Overloaded("the server is receiving as many request bodies as it can hold; retry shortly")
