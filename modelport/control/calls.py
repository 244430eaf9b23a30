"""Calling a module: the one path every call takes, whoever makes it.

The predict route parses HTTP into a `ParsedRequest` and hands it here; so will jobs and pipelines. `Calls`
routes the call to a version, checks its files where the bytes are, answers it from the prediction cache
when the module's `Api` caches its answers (`control/cache.py`), else runs it through the version's pool
(with the request id and trace context the worker tags its output with), publishes file outputs as the
caller's own objects, keeps the uploads in the request bucket, and, once the caller has its answer, makes
the call's one `CallRecord` and tells every observer (request log, statistics, metrics, drift).

`Calls.stream` runs a call the same way for a module with a streaming output, giving each piece of it as the
worker produces it before the outputs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelport.control.cache import CacheEntry, PredictionCache
from modelport.control.identity import ANONYMOUS, Principal
from modelport.control.modules import ModuleRegistry, ServedModule
from modelport.control.request_files import RequestFiles
from modelport.core.errors import ModelportError, ValidationFailed
from modelport.core.settings import Settings
from modelport.obs.calls import CallObserver, CallPayload, CallRecord, FileObserver
from modelport.runtime.files import FileChecker
from modelport.runtime.pool import CallTiming
from modelport.sdk.validation import InvalidRequest, ParsedRequest

__all__ = ["Calls", "ModuleCall", "Piece", "Trace", "as_error", "new_request_id"]

log = logging.getLogger("modelport.calls")

_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")


def new_request_id() -> str:
    """32 hex digits: the time in milliseconds, then 80 random bits. Ids made later sort later, so the request
    log's rows go in at the end of its index, as its other indexes (by time) do. Every call has one: a
    request's (`X-Request-Id`), a job's run, a batch's request, a pipeline's step."""
    return f"{int(time.time() * 1000) & 0xFFFFFFFFFFFF:012x}{random.getrandbits(80):020x}"


def as_error(exc: BaseException) -> ModelportError:
    """What a caller is told of `exc`, raised by a call."""
    if isinstance(exc, ModelportError):
        return exc
    if isinstance(exc, InvalidRequest):
        return ValidationFailed("the request does not match the module's API", details=exc.details)
    return ModelportError(f"{type(exc).__name__}: {exc}")


@dataclass(frozen=True, slots=True)
class Trace:
    """The W3C trace context of one request: the caller's trace (or a new one) and this request's span."""

    trace_id: str
    span_id: str
    flags: str = "00"

    @classmethod
    def continuing(cls, traceparent: str | None) -> Trace:
        """This request's context: a child of `traceparent` when it is a valid W3C header, else a new trace
        (an invalid header is ignored, as the recommendation says)."""
        span = f"{random.getrandbits(64) or 1:016x}"
        match = _TRACEPARENT.match(traceparent.strip().lower()) if traceparent else None
        if match:
            version, trace_id, parent, flags, rest = match.groups()
            valid = version != "ff" and (version != "00" or rest is None)
            if valid and trace_id != "0" * 32 and parent != "0" * 16:
                return cls(trace_id, span, flags)
        return cls(f"{random.getrandbits(128) or 1:032x}", span)

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}"


@dataclass(frozen=True, slots=True)
class Piece:
    """One piece of a streaming call's streaming output, for the record at `index` of the request."""

    index: int
    value: Any


@dataclass(eq=False)
class ModuleCall:
    """One call as it goes through the platform: who made it, its ids, where its time went, what it sent."""

    request_id: str
    trace: Trace
    principal: Principal = ANONYMOUS
    owner: str = "anonymous"
    """The directory name of the caller's own files."""
    client: str | None = None
    kind: str = "sync"
    arrived: float = field(default_factory=time.monotonic)
    at: float = field(default_factory=time.time)
    request_bytes: int = 0
    served: ServedModule | None = None
    parsed: ParsedRequest | None = None
    outputs: list[dict[str, Any]] | None = None
    timing: CallTiming = field(default_factory=CallTiming)
    uploads: list[tuple[str, Path, str]] = field(default_factory=list)
    """(name, path, content type) of each file uploaded with the call."""
    workdir: Path | None = None
    """The call's own directory for its uploads and fetched objects, removed when the call is done."""
    record: CallRecord | None = None
    payload: CallPayload | None = None
    pinned: str | None = None
    """The version the caller pinned (`?version=`); None: whichever the module's routing picks."""
    reader: Principal | None = None
    """Who reads the stored objects the call names (None: its principal): a job's run reads the copies
    the platform made when it accepted the job."""
    timeout: float | None = None
    """Seconds from arrival the call may take (None: the module's `Api`, else its pool, decides)."""
    cache_control: frozenset[str] = frozenset()
    """The request's `Cache-Control` directives: `no-cache` skips the prediction cache's lookup, `no-store`
    that and keeping the answer."""
    cache: str | None = None
    """`hit` or `miss` once the prediction cache was asked; None where the module's answers are not cached."""
    parent: str | None = None
    """A pipeline step's call: the request id of the pipeline call it is part of (with `pipeline`, `step`)."""
    pipeline: str | None = None
    step: str | None = None
    publish: bool = True
    """Whether file outputs become the caller's URLs (a pipeline step's stay the worker's files, for the
    steps after it; the pipeline publishes those it answers with)."""


class Calls:
    """Calls of the modules in `registry`; `observers` hear of every answered call."""

    def __init__(
        self,
        *,
        registry: ModuleRegistry,
        settings: Settings,
        files: RequestFiles,
        sync_timeout: Callable[[str], float | None] | None = None,
        observers: Sequence[CallObserver] = (),
        file_observers: Sequence[FileObserver] = (),
        cache: PredictionCache | None = None,
    ) -> None:
        """`sync_timeout(module)` is the `syncTimeoutSeconds` of the module's `Api` manifests (None where none
        sets one: the deadline is then the pool's `sync_timeout`). `cache` answers again what it kept (None:
        every call reaches a worker)."""
        self.registry = registry
        self.settings = settings
        self.files = files
        self.sync_timeout = sync_timeout
        self.observers = list(observers)
        self.file_observers = list(file_observers)
        self.cache = cache
        self.uploads_dir = settings.data_dir / "uploads"

    def route(self, call: ModuleCall, module: str, version: str | None = None) -> ServedModule:
        """The version that serves `call` (`version` pins a running one); raises `ModuleNotFound`,
        `VersionNotFound` or `ModuleUnavailable`."""
        served = self.registry.get(module, version)
        call.served, call.pinned = served, version
        return served

    def deadline(self, call: ModuleCall) -> float:
        """When `call` is answered at the latest (a `time.monotonic()` instant)."""
        assert call.served is not None
        timeout = call.timeout
        if timeout is None and self.sync_timeout is not None:
            timeout = self.sync_timeout(call.served.name)
        return call.arrived + (call.served.pool.sync_timeout if timeout is None else timeout)

    def workdir(self, call: ModuleCall) -> Path:
        """The call's own directory for its uploads, made on first use."""
        if call.workdir is None:
            self.uploads_dir.mkdir(parents=True, exist_ok=True)
            call.workdir = Path(tempfile.mkdtemp(dir=self.uploads_dir))
        return call.workdir

    async def stream(
        self, call: ModuleCall, parsed: ParsedRequest
    ) -> AsyncIterator[Piece | list[dict[str, Any]]]:
        """`run` as a stream, for a version with a streaming output: each `Piece` as the worker produces it,
        then the outputs (as `run` returns them; an answer from the prediction cache comes without pieces).
        Raises the call's error where `run` would; the deadline bounds the first piece and the whole call.
        Leaving the iteration early (its client went away) cancels the call, which stops the generation."""
        pieces: asyncio.Queue[Piece | None] = asyncio.Queue()
        task = asyncio.ensure_future(
            self.run(call, parsed, on_chunk=lambda index, value: pieces.put_nowait(Piece(index, value)))
        )
        task.add_done_callback(lambda _: pieces.put_nowait(None))
        try:
            while (piece := await pieces.get()) is not None:
                yield piece
            yield task.result()
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def run(
        self,
        call: ModuleCall,
        parsed: ParsedRequest,
        *,
        on_chunk: Callable[[int, Any], None] | None = None,
    ) -> list[dict[str, Any]]:
        """Run a validated request through the version `route` chose: check its files, answer it from the
        prediction cache or predict, publish file outputs. Returns one output dict per record; raises the
        call's error. `on_chunk(index, piece)` streams the call (`stream`)."""
        served = call.served
        assert served is not None
        call.parsed = parsed
        if served.spec.has_file_inputs:
            checker = FileChecker(
                directory=self.workdir(call),
                max_upload_bytes=self.settings.max_upload_bytes,
                max_image_pixels=self.settings.max_image_pixels,
                fetch=self.files.fetcher(call.reader or call.principal, self.workdir(call)),
            )
            await asyncio.to_thread(checker.resolve, served.spec, parsed)
            call.uploads = _uploaded_files(served, parsed)
        model_key = parsed.model_key or served.default_model_key
        model_path = await served.model_path(model_key)
        cached = await self._cached(call, parsed, model_key, model_path)
        if cached is not None and cached.outputs is not None:
            call.outputs = cached.outputs
            return cached.outputs
        outputs = await served.pool.predict(
            parsed.records,
            parameters=parsed.parameters,
            model_key=model_key,
            output_fields=parsed.output_fields,
            model_path=model_path,
            deadline=self.deadline(call),
            request_id=call.request_id,
            traceparent=call.trace.traceparent,
            timing=call.timing,
            background=call.kind != "sync",
            on_chunk=on_chunk,
        )
        if served.spec.has_file_outputs and call.publish:
            await asyncio.to_thread(self._publish_all, served, outputs, call.owner)
        call.outputs = outputs
        if cached is not None:
            await cached.keep(outputs)
        return outputs

    async def _cached(
        self, call: ModuleCall, parsed: ParsedRequest, model_key: str, model_path: str | None
    ) -> CacheEntry | None:
        """The call's entry in the prediction cache (None: the module's answers are not cached)."""
        if self.cache is None:
            return None
        assert call.served is not None
        entry = await self.cache.lookup(
            call.served,
            parsed,
            model_key=model_key,
            model_path=model_path,
            caller=call.principal.user_id,
            directives=call.cache_control,
        )
        if entry is not None:
            call.cache = "hit" if entry.hit else "miss"
        return entry

    def finish(self, call: ModuleCall, *, status: int, code: str | None, response_bytes: int) -> None:
        """The caller has its answer: make the call's record and tell every observer. Never raises."""
        served = call.served
        if served is None:
            return  # no module: nothing to record under one (and no label value to create)
        timing, parsed = call.timing, call.parsed
        record = CallRecord(
            id=call.request_id,
            trace_id=call.trace.trace_id,
            at=call.at,
            kind=call.kind,
            module=served.name,
            version=served.version,
            replica=timing.replica,
            caller=call.principal.name,
            caller_id=call.principal.user_id,
            client=call.client,
            status=status,
            code=code,
            total=time.monotonic() - call.arrived,
            queue=timing.queue,
            compute=timing.compute,
            batch_size=timing.batch_size,
            records=len(parsed.records) if parsed is not None else 0,
            request_bytes=call.request_bytes,
            response_bytes=response_bytes,
            model_key=(parsed.model_key or served.default_model_key) if parsed is not None else None,
            parent=call.parent,
            pipeline=call.pipeline,
            step=call.step,
        )
        payload = None
        if parsed is not None:
            payload = CallPayload(
                inputs=parsed.records,
                parameters=parsed.parameters,
                outputs=call.outputs,
                batch=parsed.batch,
                owner=call.owner,
                uploads={name: self._upload_key(call, name) for name, _, _ in call.uploads},
            )
        call.record, call.payload = record, payload
        for observer in self.observers:
            try:
                observer.observe(record, payload)
            except Exception:  # an observer's fault never reaches a caller
                log.exception(
                    "call %s: %s failed to take note of it", call.request_id, type(observer).__name__
                )

    def settle(self, call: ModuleCall) -> None:
        """After the answer: keep the call's uploads in the request bucket and remove its work files
        (blocking: run it in a thread, or as the response's background task)."""
        try:
            if call.record is not None and call.payload is not None:
                for observer in self.file_observers:
                    try:
                        observer.observe_files(call.record, call.payload)
                    except Exception:
                        name = type(observer).__name__
                        log.exception("call %s: %s failed to look at its files", call.request_id, name)
            if call.uploads:
                kept = [(self._upload_key(call, name), path, kind) for name, path, kind in call.uploads]
                self.files.keep_uploads(call.request_id, kept)
        finally:
            if call.workdir is not None:
                shutil.rmtree(call.workdir, ignore_errors=True)

    def _upload_key(self, call: ModuleCall, name: str) -> str:
        return self.files.upload_key(call.owner, call.request_id, name, at=call.at)

    def _publish_all(self, served: ServedModule, records: list[dict[str, Any]], owner: str) -> None:
        """Replace file outputs (local paths from the worker) with URLs this server serves to the caller.

        Each file is stored as the caller's own, under a name with 128 random bits, so that one caller's
        outputs cannot be fetched by another, nor guessed.
        """
        for outputs in records:
            for field_spec in served.spec.outputs:
                value = outputs.get(field_spec.name)
                if field_spec.has_file and isinstance(value, dict) and "path" in value:
                    name = self.files.publish_output(
                        owner,
                        served.name,
                        field_spec.name,
                        Path(value["path"]),
                        value["content_type"],
                        directory=served.output_dir or self.settings.data_dir / "outputs",
                    )
                    outputs[field_spec.name] = {
                        "url": f"/api/v1/modules/{served.name}/outputs/{name}",
                        "content_type": value["content_type"],
                        "size": value["size"],
                    }


def _uploaded_files(served: ServedModule, parsed: ParsedRequest) -> list[tuple[str, Path, str]]:
    """(name, path, content type) of each file sent with the request (not the stored objects it named)."""
    found: list[tuple[str, Path, str]] = []
    for index, record in enumerate(parsed.records):
        for field_spec in served.spec.inputs:
            value = record.get(field_spec.name)
            values = value if isinstance(value, list) else [value]
            for position, item in enumerate(values):
                if isinstance(item, dict) and "path" in item:
                    path = Path(item["path"])
                    if path.name.startswith("object-"):
                        continue
                    name = f"{index}-{field_spec.name}" if parsed.batch else field_spec.name
                    if isinstance(value, list):
                        name += f"-{position}"
                    found.append((name, path, item["content_type"]))
    return found
