"""`GET /api/v1/modules/{module}/logs`: a module's worker logs, filtered, as JSON or plain text, or followed
as server-sent events; with `?build=VERSION`, that version's build log.

Owners and admins only, as every management route: a module the caller may not see is 404, one it may only
call is 403. Files and the database are read in worker threads; a follow waits on the event loop, where the
log is fed, and ends when the client goes away or the server stops.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import PlainTextResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from modelport.control.platform import Services
from modelport.core.errors import Forbidden, ValidationFailed, field_error
from modelport.core.records import LogLines
from modelport.core.roles import Role
from modelport.core.times import parse_instant
from modelport.gateway.auth import principal_of
from modelport.gateway.routes import SIGNED_IN, allow
from modelport.obs.logs import Follower, LogEntry, LogGap, log_time

__all__ = ["HEARTBEAT_SECONDS", "EventStream", "log_events", "logs_router", "parse_since", "text_line"]

HEARTBEAT_SECONDS = 15.0
"""How often a follow with nothing to say sends a comment, so that proxies and clients keep it open."""

_ENCODER = msgspec.json.Encoder()

_DESCRIPTION = """The module's worker logs: every line its workers printed (`stdout`, `stderr`) and what the
platform said about them (`modelport`), oldest first, each with the version and replica that wrote it and the
ids of the requests it was printed for. Filters: `version`, `replica`, `request_id` (the `X-Request-Id` of a
call), `since` (ISO 8601, or relative: `30s`, `10m`, `2h`, `1d`), and `tail`, the most lines answered.

JSON by default; plain text lines (`time version/replica stream line`) with `Accept: text/plain`. With
`follow=true` the answer is a `text/event-stream`: the last `tail` lines, then each new line as it is
written, one `data:` JSON line per event (event `gap`, `{"dropped": N}`, when a slow reader lost lines), and
a comment every 15 seconds while nothing happens. With `build`, the build log of that version, as text."""

_ALTERNATIVES: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {
            "text/plain": {"schema": {"type": "string"}},
            "text/event-stream": {"schema": {"type": "string"}},
        }
    }
}


def logs_router(services: Services, *, heartbeat: float = HEARTBEAT_SECONDS) -> APIRouter:
    """The logs route over `services`; a follow with nothing to send comments every `heartbeat` seconds."""
    policies = services.policies

    def guard(request: Request) -> None:
        """Before validation: a module the caller may not see is 404, one it may only call is 403, and reading
        logs needs the developer or admin role."""
        principal = principal_of(request.scope)
        policies.require_manage(principal, request.path_params["module"])
        if principal.role not in (Role.ADMIN, Role.DEVELOPER):
            raise Forbidden("reading logs needs the developer or admin role")

    router = APIRouter(prefix="/api/v1", tags=["modules"], dependencies=[allow(SIGNED_IN), Depends(guard)])

    @router.get(
        "/modules/{module}/logs",
        response_model=LogLines,
        summary="A module's worker logs, or a version's build log",
        description=_DESCRIPTION,
        responses=_ALTERNATIVES,
    )
    async def logs(
        request: Request,
        module: str,
        build: Annotated[str | None, Query(description="Answer this version's build log instead.")] = None,
        version: Annotated[str | None, Query(description="Only lines of this version.")] = None,
        replica: Annotated[int | None, Query(ge=0, le=1_000_000, description="Only this replica.")] = None,
        since: Annotated[
            str | None, Query(description="Only lines written since: ISO 8601, or `30s`, `10m`, `2h`, `1d`.")
        ] = None,
        tail: Annotated[int, Query(ge=1, le=100_000, description="The most lines answered.")] = 200,
        request_id: Annotated[str | None, Query(description="Only lines printed for this request.")] = None,
        follow: Annotated[bool, Query(description="Keep the answer open and send new lines.")] = False,
    ) -> Response:
        if build is not None:
            return PlainTextResponse(await asyncio.to_thread(services.versions.build_log, module, build))
        start = parse_since(since, now=datetime.now(UTC))
        await asyncio.to_thread(services.module, module)  # 404 for a module the database does not know
        backlog = functools.partial(
            services.logs.read,
            module,
            version=version,
            replica=replica,
            request_id=request_id,
            since=start,
            tail=tail,
        )
        if follow:
            following = services.logs.follow(module, version=version, replica=replica, request_id=request_id)
            return EventStream(log_events(following, backlog, heartbeat=heartbeat))
        entries = await asyncio.to_thread(backlog)
        if _wants_text(request.headers.get("accept", "")):
            return PlainTextResponse("".join(text_line(entry) + "\n" for entry in entries))
        return Response(_ENCODER.encode({"lines": entries}), media_type="application/json")

    return router


def parse_since(value: str | None, *, now: datetime) -> datetime | None:
    """The instant `since` names (`core/times.py`); 422 naming the field otherwise."""
    if value is None:
        return None
    try:
        return parse_instant(value, now=now)
    except ValueError as exc:
        problem = field_error("query.since", "invalid_since", f"since: {exc}")
        raise ValidationFailed("the log query is not valid", details=[problem]) from None


def text_line(entry: LogEntry) -> str:
    """One line of the plain-text answer: `time version/replica stream line`."""
    return f"{entry.time} {entry.version}/{entry.replica} {entry.stream} {entry.line}"


async def log_events(
    following: AbstractContextManager[Follower],
    backlog: Callable[[], list[LogEntry]],
    *,
    heartbeat: float,
) -> AsyncGenerator[bytes]:
    """The server-sent events of a follow: the lines `backlog` reads (in a worker thread), then each new one
    the follower gets, a `gap` event where lines were lost, a comment every `heartbeat` seconds of silence;
    until the follow ends (the server stops, or `EventStream` closes this when the client goes away)."""
    with following as follower:
        subscribed = datetime.now(UTC)
        recent = await asyncio.to_thread(backlog)
        yield b": following\n\n"  # a first byte at once: the client knows the follow has begun
        for entry in recent:
            yield _event(entry)
        async for item in _live(follower, recent, subscribed, heartbeat):
            yield item


async def _live(
    follower: Follower, recent: list[LogEntry], subscribed: datetime, heartbeat: float
) -> AsyncIterator[bytes]:
    """The follower's items as events. Lines written while the backlog was read are both in `recent` and in
    the follower's queue: those are sent once."""
    cutoff = log_time(subscribed - timedelta(milliseconds=1))
    already = [entry for entry in recent if entry.time >= cutoff]
    while True:
        try:
            item = await follower.get(timeout=heartbeat)
        except TimeoutError:
            yield b": heartbeat\n\n"
            continue
        if item is None:
            return
        if isinstance(item, LogEntry) and item in already:
            already.remove(item)
            continue
        already.clear()  # past the lines the backlog held
        yield _event(item)


def _event(item: LogEntry | LogGap) -> bytes:
    if isinstance(item, LogGap):
        return b"event: gap\ndata: " + _ENCODER.encode(item) + b"\n\n"
    return b"data: " + _ENCODER.encode(item) + b"\n\n"


def _wants_text(accept: str) -> bool:
    """Whether the client asked for plain text rather than JSON (JSON when it names both, or neither)."""
    kinds = [part.split(";", 1)[0].strip().lower() for part in accept.split(",")]
    return "text/plain" in kinds and "application/json" not in kinds


class EventStream(StreamingResponse):
    """A `text/event-stream` answer sent as `events` yields it; it ends when `events` does, or when the client
    disconnects (noticed at once, not at the next write), which closes `events`."""

    def __init__(self, events: AsyncGenerator[bytes]) -> None:
        super().__init__(
            events,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self.events = events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        streaming = asyncio.create_task(self._stream(send))
        watching = asyncio.create_task(_disconnected(receive))
        try:
            await asyncio.wait((streaming, watching), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (streaming, watching):
                task.cancel()
            await asyncio.gather(streaming, watching, return_exceptions=True)
            await self.events.aclose()

    async def _stream(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        try:
            async for chunk in self.events:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            return  # the client went away mid-write


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
