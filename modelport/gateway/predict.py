"""The inference route: parse and validate the request, check its files, run it, shape the answer.

A module whose `Api` caches its answers says on each of them whether it came from the cache (`X-Cache: hit`)
or not (`miss`); a request's `Cache-Control: no-cache` skips the lookup, `no-store` also keeping the answer.

A module with a streaming output answers a request that asks for a stream (`Accept: text/event-stream`, or
`"stream": true` in its JSON body) with server-sent events: `chunk` per piece, then `done` with the outputs
(or `error` with the error body). Every other request, to any module, is answered with JSON.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from starlette.background import BackgroundTask
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartParser
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from modelport.control.cache import cache_directives
from modelport.control.calls import Calls, ModuleCall, Piece
from modelport.core.errors import (
    BadRequest,
    InvalidJson,
    ModelportError,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from modelport.core.settings import Settings
from modelport.gateway.auth import client_address, owner_key, principal_of
from modelport.gateway.context import new_request_id, request_id_of, trace_of
from modelport.gateway.errors import error_response, to_modelport_error
from modelport.sdk.spec import ApiSpec
from modelport.sdk.validation import ParsedRequest, UploadedFile, parse_form, parse_json

__all__ = [
    "CLIENT_CLOSED",
    "Disconnected",
    "EventWriter",
    "PredictRoute",
    "encode_json",
    "prefers_async",
    "respond",
    "unless_disconnected",
]

_encoder = msgspec.json.Encoder()
encode_json = _encoder.encode
"""JSON as every call route answers it."""
_decoder = msgspec.json.Decoder()
_FORMS = ("multipart/form-data", "application/x-www-form-urlencoded")
_MAX_FIELD_BYTES = 1024 * 1024
"""Largest text field of a form: more than a model's text input needs; larger values go as files."""
_WATCH_AFTER = 0.05
"""Seconds a call runs before the gateway starts watching for its client's disconnect."""
CLIENT_CLOSED = 499
"""The status logged for a call whose client disconnected before its answer (nobody receives it)."""


class PredictRoute:
    """`POST /api/v1/modules/{module}/predict`, for every module the registry serves: HTTP in and out; the
    call itself goes through `control/calls.py`."""

    def __init__(
        self,
        *,
        calls: Calls,
        settings: Settings,
        respond_async: Callable[[Request], Awaitable[Response]] | None = None,
    ) -> None:
        """`respond_async` answers a call whose client prefers an asynchronous answer (`Prefer:
        respond-async`) by queueing it as a job; None (the dev server): such calls are answered at once."""
        self.calls = calls
        self.settings = settings
        self.respond_async = respond_async

    def new_call(self, request: Request, *, kind: str = "sync") -> ModuleCall:
        """The call `request` makes: its ids, who makes it and from where."""
        scope = request.scope
        return ModuleCall(
            request_id=request_id_of(scope) or new_request_id(),
            trace=trace_of(scope),
            principal=principal_of(scope),
            owner=owner_key(scope),
            client=client_address(scope),
            request_bytes=_content_length(request),
            kind=kind,
            cache_control=cache_directives(request.headers.get("cache-control")),
        )

    async def handle(self, request: Request) -> Response:
        if self.respond_async is not None and prefers_async(request):
            return await self.respond_async(request)
        call = self.new_call(request)
        request_id = call.request_id
        try:
            self.calls.route(call, request.path_params["module"], request.query_params.get("version"))
        except Exception as exc:
            return error_response(exc, request_id=request_id)
        return await self.answer(call, self._handle(request, call))

    async def answer(self, call: ModuleCall, handle: Awaitable[tuple[Response, str | None]]) -> Response:
        """The answer of a call routed to its version, as `handle` gives it with its error code: counted in
        the version's calls in flight, recorded (`Calls.finish`), and followed by keeping its uploads and
        removing its work files. Every route that calls a module (predict, the protocols') answers here."""
        served = call.served
        assert served is not None
        served.in_flight += 1
        try:
            response, code = await handle
        except BaseException:
            served.in_flight -= 1
            raise
        if isinstance(response, _EventStream):
            return response  # still in flight: it is recorded once its last event is out
        served.in_flight -= 1
        self.calls.finish(
            call, status=response.status_code, code=code, response_bytes=len(response.body or b"")
        )
        if call.workdir is not None or call.uploads:
            # The answer goes out first; keeping the uploads and removing the work files follow it.
            response.background = BackgroundTask(self.calls.settle, call)
        return response

    async def _handle(self, request: Request, call: ModuleCall) -> tuple[Response, str | None]:
        """The answer (and its error code), by the call's deadline at the latest; a client that disconnects
        first stops the call, so what it still has queued never reaches a worker."""
        served = call.served
        assert served is not None
        try:
            stream = served.spec.stream_output is not None
            parsed, extras = await self.parse(request, call, extras=("stream",) if stream else ())
            if stream and (extras.get("stream") is True or _accepts_events(request)):
                return self._events(call, parsed), None
            outputs = await unless_disconnected(request, self.calls.run(call, parsed))
            body = {
                "outputs": outputs if parsed.batch else outputs[0],
                "module": served.name,
                "version": served.version,
                "request_id": call.request_id,
            }
            headers = {"X-Model-Version": served.version}
            if call.cache is not None:
                headers["X-Cache"] = call.cache
            return Response(_encoder.encode(body), headers=headers, media_type="application/json"), None
        except Disconnected:
            return Response(status_code=CLIENT_CLOSED), "client_closed"
        except Exception as exc:
            response = error_response(exc, request_id=call.request_id)
            response.headers["X-Model-Version"] = served.version
            if call.cache is not None:
                response.headers["X-Cache"] = call.cache
            return response, to_modelport_error(exc).code

    def _events(self, call: ModuleCall, parsed: ParsedRequest) -> Response:
        """The call as server-sent events: `chunk` per piece, then `done` with the outputs (or `error`)."""
        served = call.served
        assert served is not None and served.spec.stream_output is not None
        stream = served.spec.stream_output.name

        def piece(event: Piece) -> bytes:
            data: dict[str, Any] = {"output": stream, "delta": event.value}
            if parsed.batch:
                data["index"] = event.index
            return _event("chunk", data)

        def done(outputs: list[dict[str, Any]]) -> bytes:
            return _event(
                "done", {"outputs": outputs if parsed.batch else outputs[0], "request_id": call.request_id}
            )

        def failed(error: Response) -> bytes:
            return b"event: error\ndata: " + bytes(error.body) + b"\n\n"

        return self.event_stream(call, parsed, EventWriter(piece=piece, done=done, failed=failed))

    def event_stream(self, call: ModuleCall, parsed: ParsedRequest, writer: EventWriter) -> Response:
        """The streamed call written as server-sent events by `writer`; once the last one is out (or the
        client has gone, which stops the call) the call leaves the version's calls in flight and is
        recorded, as `answer` does for a whole answer."""
        served = call.served
        assert served is not None
        outcome: dict[str, Any] = {"status": 200, "code": None, "bytes": 0}

        async def events() -> AsyncIterator[bytes]:
            try:
                if writer.start:
                    outcome["bytes"] += len(writer.start)
                    yield writer.start
                async for event in self.calls.stream(call, parsed):
                    chunk = writer.piece(event) if isinstance(event, Piece) else writer.done(event)
                    outcome["bytes"] += len(chunk)
                    yield chunk
            except asyncio.CancelledError:
                outcome["status"], outcome["code"] = CLIENT_CLOSED, "client_closed"
                raise
            except Exception as exc:
                error = error_response(exc, request_id=call.request_id)
                outcome["status"], outcome["code"] = error.status_code, to_modelport_error(exc).code
                yield writer.failed(error)
            finally:
                served.in_flight -= 1
                self.calls.finish(
                    call, status=outcome["status"], code=outcome["code"], response_bytes=outcome["bytes"]
                )
                if call.workdir is not None or call.uploads:
                    asyncio.get_running_loop().run_in_executor(None, self.calls.settle, call)

        headers = {"X-Model-Version": served.version, "Cache-Control": "no-cache"}
        return _EventStream(events(), headers=headers, media_type="text/event-stream")

    async def parse(
        self,
        request: Request,
        call: ModuleCall,
        *,
        extras: tuple[str, ...] = (),
        spec: ApiSpec | None = None,
    ) -> tuple[ParsedRequest, dict[str, Any]]:
        """The request's body validated against the routed version's API (or `spec`, a pipeline's), and the
        values of the `extras` fields (besides the prediction's own, such as a job's `webhook`; a form part
        may repeat)."""
        if spec is None:
            assert call.served is not None
            spec = call.served.spec
        content_type = (
            request.headers.get("content-type", "application/json").split(";", 1)[0].strip().lower()
        )
        found: dict[str, Any] = {}
        if content_type in ("application/json", "") or content_type.endswith("+json"):
            body = self.decode(await _read(request))
            if extras and isinstance(body, dict):
                found = {name: body.pop(name) for name in extras if name in body}
            return parse_json(spec, body), found
        if content_type in _FORMS:
            items = await self._form(request, content_type, lambda: self.calls.workdir(call))
            if extras:
                for name, value in items:
                    if name in extras and isinstance(value, str):
                        found.setdefault(name, []).append(value)
                items = [(name, value) for name, value in items if name not in extras]
            return parse_form(spec, items), found
        raise UnsupportedMediaType(
            f"content type {content_type!r} is not accepted; send application/json or multipart/form-data"
        )

    def decode(self, body: bytes | bytearray, *, what: str = "a JSON object") -> Any:
        """A call's JSON body (`what` it should be, for the messages); `InvalidJson` if it is empty or not
        JSON, `BadRequest` past `max_json_depth` levels. Every route that calls a module reads JSON here."""
        if not body:
            raise InvalidJson(f"the request body is empty; expected {what}")
        try:
            value = _decoder.decode(body)
        except msgspec.DecodeError as exc:
            raise InvalidJson(f"the request body is not valid JSON: {exc}") from None
        except RecursionError:
            raise BadRequest(
                f"the JSON body is nested deeper than {self.settings.max_json_depth} levels"
            ) from None
        if body.count(b"[") + body.count(b"{") > self.settings.max_json_depth:
            _check_depth(value, self.settings.max_json_depth)
        return value

    async def _form(
        self, request: Request, content_type: str, workdir: Callable[[], Path]
    ) -> list[tuple[str, str | UploadedFile]]:
        limit = self.settings.max_form_fields
        try:
            if content_type == "multipart/form-data":
                parser = _FormParser(
                    request.headers,
                    request.stream(),
                    max_files=limit,
                    max_fields=limit,
                    max_part_size=_MAX_FIELD_BYTES,
                    max_memory=self.settings.max_body_bytes,
                )
                form = await parser.parse()
            else:  # urlencoded: the whole body is within `max_body_bytes`
                form = await request.form(max_files=limit, max_fields=limit)
        except ModelportError:
            raise
        except Exception as exc:
            raise BadRequest(f"the form cannot be parsed: {exc}") from None
        items: list[tuple[str, str | UploadedFile]] = []
        try:
            for name, value in form.multi_items():
                if isinstance(value, UploadFile):
                    items.append((name, _save_upload(value, workdir())))
                else:
                    items.append((name, value))
        finally:
            await form.close()
        return items


def prefers_async(request: Request) -> bool:
    """Whether the client asked for an asynchronous answer (RFC 7240 `Prefer: respond-async`)."""
    prefer = request.headers.get("prefer")
    if not prefer:
        return False
    return any(part.split(";", 1)[0].strip().lower() == "respond-async" for part in prefer.split(","))


def _content_length(request: Request) -> int:
    try:
        return max(0, int(request.headers.get("content-length", "0")))
    except ValueError:
        return 0


@dataclass(frozen=True)
class EventWriter:
    """How a streamed call is written as server-sent events: `start` goes first, `piece` writes each piece,
    `done` the outputs, and `failed` the error response of a call that fails once the stream has begun."""

    piece: Callable[[Piece], bytes]
    done: Callable[[list[dict[str, Any]]], bytes]
    failed: Callable[[Response], bytes]
    start: bytes = b""


class _EventStream(StreamingResponse):
    """A call answered as server-sent events (`PredictRoute.answer` leaves its recording to the stream)."""


def _accepts_events(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return any(part.split(";", 1)[0].strip().lower() == "text/event-stream" for part in accept.split(","))


def _event(name: str, data: Any) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + _encoder.encode(data) + b"\n\n"


async def respond(
    call: ModuleCall,
    produce: Callable[[], Awaitable[Response]],
    *,
    error: Callable[..., Response] = error_response,
) -> tuple[Response, str | None]:
    """The answer `produce` makes for a call routed to its version, with its error code (None: none): a
    client that went away first gets nothing (499 in the log), any error `error`'s response (the platform's
    shape by default). Both carry `X-Model-Version`, as `produce`'s answer should."""
    served = call.served
    assert served is not None
    try:
        return await produce(), None
    except Disconnected:
        return Response(status_code=CLIENT_CLOSED), "client_closed"
    except Exception as exc:
        response = error(exc, request_id=call.request_id)
        response.headers["X-Model-Version"] = served.version
        return response, to_modelport_error(exc).code


class Disconnected(Exception):
    """The client went away before its answer was ready."""


async def unless_disconnected(
    request: Request, call: Coroutine[Any, Any, list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    """What `call` returns, unless the client disconnects first: then `call` is cancelled (which drops its
    records still queued) and `Disconnected` raised. The body has been read by now, so the next message
    the server delivers is `http.disconnect`.

    Most calls are answered within milliseconds, so the watch for a disconnect starts only once the call has
    taken `_WATCH_AFTER` seconds: a fast call costs one timer, not a task."""
    task = asyncio.current_task()
    assert task is not None
    gone = False
    watcher: asyncio.Task[None] | None = None

    async def watch() -> None:
        nonlocal gone
        while (await request.receive())["type"] != "http.disconnect":
            pass
        gone = True
        task.cancel()

    def start_watching() -> None:
        nonlocal watcher
        watcher = asyncio.ensure_future(watch())

    timer = asyncio.get_running_loop().call_later(_WATCH_AFTER, start_watching)
    try:
        return await call
    except asyncio.CancelledError:
        if gone:
            task.uncancel()
            raise Disconnected from None
        raise
    finally:
        timer.cancel()
        if watcher is not None:
            watcher.cancel()


async def _read(request: Request) -> bytearray:
    """The body in one buffer, grown in place: `request.body()` holds its chunks and their join at once."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
    return body


class _FormParser(MultiPartParser):
    """Starlette's multipart parser, which refuses a form once what it holds in memory passes `max_memory`
    bytes: its text fields, and each file until it passes `spool_max_size` and moves to disk."""

    spool_max_size = 64 * 1024

    def __init__(
        self,
        headers: Headers,
        stream: AsyncGenerator[bytes, None],
        *,
        max_memory: int,
        max_files: int,
        max_fields: int,
        max_part_size: int,
    ) -> None:
        super().__init__(
            headers, stream, max_files=max_files, max_fields=max_fields, max_part_size=max_part_size
        )
        self.max_memory, self.in_memory, self._part_size = max_memory, 0, 0

    def on_part_begin(self) -> None:
        super().on_part_begin()
        self._part_size = 0

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        before = self._part_size
        self._part_size += end - start
        if self._current_part.file is None:
            if self._part_size > self.max_part_size:
                raise PayloadTooLarge(
                    f"the form field {self._current_part.field_name!r} is larger than {self.max_part_size} "
                    "bytes; send it as a file, or the call as JSON"
                )
            self.in_memory += end - start
        elif self._part_size <= self.spool_max_size:
            self.in_memory += end - start
        elif before <= self.spool_max_size:
            self.in_memory -= before  # the file has grown past the spool: it moves to disk
        if self.in_memory > self.max_memory:
            raise PayloadTooLarge(
                f"the form's text fields and small files exceed {self.max_memory} bytes held in memory; "
                "send large values as files"
            )
        super().on_part_data(data, start, end)


def _save_upload(upload: UploadFile, directory: Path) -> UploadedFile:
    handle = tempfile.NamedTemporaryFile(dir=directory, prefix="upload-", delete=False)  # noqa: SIM115
    with handle:
        upload.file.seek(0)
        shutil.copyfileobj(upload.file, handle, 1 << 20)
        size = handle.tell()
    content_type = (upload.content_type or "application/octet-stream").split(";", 1)[0]
    return UploadedFile(handle.name, upload.filename or "", content_type, size)


def _check_depth(value: Any, limit: int) -> None:
    """Refuse bodies whose objects and arrays nest deeper than `limit` (the outermost one is level 1)."""
    stack: list[tuple[Any, int]] = [(value, 1)] if isinstance(value, dict | list) else []
    while stack:
        current, depth = stack.pop()
        if depth > limit:
            raise BadRequest(f"the JSON body is nested deeper than {limit} levels")
        children = current.values() if isinstance(current, dict) else current
        stack.extend((v, depth + 1) for v in children if isinstance(v, dict | list))
