"""HTTP connections that a slow or greedy client cannot keep: each request head must arrive within a deadline,
and one client address may hold only so many connections at once.

uvicorn closes a kept-alive connection that stays idle, but waits forever for a head sent a byte at a time,
and accepts any number of connections from one address. `guarded_http_protocol` makes its httptools protocol
with both limits, for `uvicorn.Config(http=...)`. The per-byte path stays uvicorn's own: the deadline is one
timer per request head, armed when the server starts waiting for a head and cancelled once the head is whole.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import ClassVar

import msgspec
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from modelport.core.errors import ModelportError, TooManyConnections

__all__ = ["GuardedHttpProtocol", "guarded_http_protocol"]

log = logging.getLogger("modelport.gateway")

_TIMED_OUT = b"content-length: 0\r\nconnection: close\r\n\r\n"


class OpenConnections:
    """How many connections each client address holds open in this process, and the most (`limit` >= 1) it
    may hold."""

    def __init__(self, *, limit: int) -> None:
        self.limit = limit
        self._open: dict[str, int] = {}
        self._refused: set[str] = set()  # reported once until the address has no connection left

    def take(self, address: str) -> bool:
        """Count one more connection from `address`; False, counting nothing, if it holds `limit` already."""
        held = self._open.get(address, 0)
        if held >= self.limit:
            if address not in self._refused:
                self._refused.add(address)
                log.warning("%s holds %d connections, the most one address may; refusing more", address, held)
            return False
        self._open[address] = held + 1
        return True

    def release(self, address: str) -> None:
        held = self._open[address] - 1
        if held:
            self._open[address] = held
        else:
            del self._open[address]
            self._refused.discard(address)


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline for each request head and a cap per client address.

    Made by `guarded_http_protocol`, which sets the class attributes below.
    """

    header_timeout: ClassVar[float]
    per_address: ClassVar[OpenConnections | None]  # None: no limit
    refusal: ClassVar[bytes]  # the 503's headers and body, after the status line and uvicorn's own headers

    _address: str | None = None  # counted in `per_address` until the connection is lost
    _head_timer: asyncio.TimerHandle | None = None
    _in_head: bool = False  # part of a request head has arrived, not all of it

    def connection_made(  # type: ignore[override]
        self, transport: asyncio.Transport
    ) -> None:
        super().connection_made(transport)
        if self.per_address is not None and self.client is not None:
            if not self.per_address.take(self.client[0]):
                self._answer(503, self.refusal)
                return
            self._address = self.client[0]
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._release()
        self._disarm_head_timer()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        self._in_head = True
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm_head_timer()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # uvicorn arms its keep-alive timer exactly when it waits for the next request: not when the
        # connection is closing, nor when a pipelined request (whose head is complete) starts instead.
        if self.timeout_keep_alive_task is not None:
            self._arm_head_timer()

    def handle_websocket_upgrade(self) -> None:
        # The WebSocket protocol takes the transport over; this one never hears of the connection again.
        self._release()
        super().handle_websocket_upgrade()

    def _arm_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self._in_head:
            self._answer(408, _TIMED_OUT)
        else:
            # Nothing was sent: close as an idle connection is closed, so clients retry on a fresh one.
            self.transport.close()

    def _answer(self, status: int, rest: bytes) -> None:
        """Write a whole response without running the application, and close the connection."""
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head.append(rest)
        self.transport.write(b"".join(head))
        self.transport.close()

    def _release(self) -> None:
        if self._address is not None and self.per_address is not None:
            self.per_address.release(self._address)
            self._address = None


def guarded_http_protocol(*, header_timeout: float, max_per_address: int) -> type[GuardedHttpProtocol]:
    """A protocol class for `uvicorn.Config(http=...)`: a request head must arrive within `header_timeout`
    seconds of the connection opening or of the previous response, and one address may hold at most
    `max_per_address` connections (0: any number). The connections of one class share one count."""

    class Guarded(GuardedHttpProtocol):
        pass

    Guarded.header_timeout = header_timeout
    Guarded.per_address = OpenConnections(limit=max_per_address) if max_per_address else None
    Guarded.refusal = _error_rest(
        TooManyConnections(
            f"this address already holds the most connections the server allows one address "
            f"({max_per_address}); reuse or close one, or retry later"
        )
    )
    return Guarded


def _error_rest(error: ModelportError) -> bytes:
    """The headers and body of `error`'s response in the platform's error shape, ending the connection.
    Written here, as bytes made once, because `errors.error_response` makes an ASGI response and logs each
    5xx as a failed request, while this answer goes straight to the socket and no request ran."""
    body = msgspec.json.encode({"error": {"code": error.code, "message": error.public_message()}})
    lines = [b"content-type: application/json", b"content-length: %d" % len(body), b"connection: close"]
    if error.retry_after is not None:
        lines.append(b"retry-after: %d" % max(1, math.ceil(error.retry_after)))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body
