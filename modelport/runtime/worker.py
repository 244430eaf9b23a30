"""The worker process: imports a module, loads its models, and answers calls until told to stop.

Run as `python -m modelport.runtime.worker CONFIG_JSON`. The control channel is the socket whose descriptor
the config names; stdout and stderr stay free for the module's own prints, which the parent captures into the
log. User code only ever runs here, never in the gateway.

States: starting → ready ⇄ busy → stopped (or failed during setup).

A module with a streaming output (`:type outputs.text: str, stream`) streams it one of two ways. A generator
function `inference` runs one record per call, and each piece it yields goes to the gateway as a `Chunk` at
once (for a call that asked to stream). A plain `inference` takes the whole batch, as any module does, and the
streaming output of each record it returns may be an iterator: the worker drains the batch's iterators in
turn, a piece from each, so a module that decodes the batch in one loop streams every record as its pieces
come. The `Result` holds the joined outputs. Between two pieces the worker reads what the gateway sent
meanwhile: a `Cancel` of the call closes every iterator, a `Cancel` of one record closes only its own.

`inference` raising `RejectedInput` (`modelport.sdk`) fails the call as the caller's fault (`rejected_input`,
answered 400 with the module's code); anything else it raises is the module's (`module_error`).
"""

from __future__ import annotations

import ctypes
import importlib
import io
import mimetypes
import os
import select
import signal
import socket
import sys
import tempfile
import time
import traceback
from collections import OrderedDict, deque
from collections.abc import Callable, Collection, Iterator
from enum import StrEnum
from inspect import isgeneratorfunction
from pathlib import Path
from typing import Any, Protocol

import msgspec

from modelport.core.protocol import (
    HEADER_SIZE,
    REQUEST_TAG,
    REQUEST_TAG_END,
    Call,
    CallFailed,
    Cancel,
    Chunk,
    Ping,
    Pong,
    Ready,
    Result,
    SetupFailed,
    Shutdown,
    ToGateway,
    ToWorker,
    decode_to_worker,
    encode,
    frame,
    frame_length,
)
from modelport.runtime.sandbox import Confinement, confine
from modelport.sdk import ApiSpec, CallContext, FieldSpec, File, RejectedInput, TypeSpec
from modelport.sdk.context import served, serving
from modelport.sdk.spec import check_value

__all__ = ["TaggedLines", "WorkerConfig", "main"]

_PR_SET_PDEATHSIG = 1


class WorkerConfig(msgspec.Struct, frozen=True):
    """Everything a worker needs to start; passed as JSON on its command line."""

    fd: int
    module_dir: str
    entrypoint: str
    load: str | None
    spec: dict[str, Any]
    default_model_key: str
    models_dir: str
    cache_size: int
    output_dir: str
    default_model_path: str | None = None
    """The fetched weights of the default model key; None: `<models_dir>/<default_model_key>`."""
    confinement: Confinement | None = None
    """What the module may reach (`runtime/sandbox.py`); None: whatever the worker's user may."""


class State(StrEnum):
    STARTING = "starting"
    READY = "ready"
    BUSY = "busy"
    STOPPED = "stopped"
    FAILED = "failed"


class _SetupError(Exception):
    def __init__(self, stage: str, message: str) -> None:
        super().__init__(message)
        self.stage = stage


class _OutputError(Exception):
    """The module's return value does not match its declared outputs."""


class _Canceled(Exception):
    """The gateway canceled the streaming call; its generator has been closed."""


class Outlet(Protocol):
    """Where a streaming call's pieces go."""

    dropped: set[int]
    """The records of the current call whose callers went away (a `Cancel` naming them)."""

    def emit(self, chunk: Chunk) -> bool:
        """Send one piece; False once the gateway has canceled the whole call."""
        ...


def _import_callable(module_dir: Path, reference: str) -> Callable[..., Any]:
    file_part, _, name = reference.partition(":")
    module_name = file_part.removesuffix(".py").replace("/", ".")
    if str(module_dir) not in sys.path:
        sys.path.insert(0, str(module_dir))
    module = importlib.import_module(module_name)
    function = getattr(module, name, None)
    if not callable(function):
        raise _SetupError("import", f"{file_part} defines no function `{name}`")
    return function  # type: ignore[no-any-return]


class _Models:
    """The per-worker LRU of loaded models, keyed by model_key."""

    def __init__(self, load: Callable[[str, str], Any] | None, models_dir: Path, size: int) -> None:
        self._load, self._dir, self._size = load, models_dir, size
        self._cache: OrderedDict[str, Any] = OrderedDict()

    def get(self, key: str, path: str | None = None) -> Any:
        """The model of `key`, loaded from `path` (fetched weights) or else from `<models_dir>/<key>`."""
        if self._load is None:
            return None
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        if path is None:
            directory = self._dir / key
            directory.mkdir(parents=True, exist_ok=True)
            path = str(directory)
        model = self._load(key, path)
        self._cache[key] = model
        while len(self._cache) > self._size:
            self._cache.popitem(last=False)
        return model


def _enc_hook(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise TypeError(f"values of type {type(value).__name__} cannot be returned as JSON")


class Worker:
    """One module loaded in this process, answering `Call`s one at a time."""

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.spec = ApiSpec.from_dict(config.spec)
        self.state = State.STARTING
        self._inference: Callable[..., Any] | None = None
        self._models: _Models | None = None
        self._file_inputs = {f.name: f for f in self.spec.inputs if f.has_file}
        self._outputs = {f.name: f for f in self.spec.outputs}
        self._single_output = self.spec.outputs[0].name if len(self.spec.outputs) == 1 else None
        self._stream = self.spec.stream_output
        self.batches_streams = False
        """A streaming module whose plain `inference` takes whole batches (known once it is imported)."""

    def setup(self) -> None:
        module_dir = Path(self.config.module_dir)
        try:
            self._inference = _import_callable(module_dir, self.config.entrypoint)
            load = _import_callable(module_dir, self.config.load) if self.config.load else None
            self.batches_streams = self._stream is not None and not isgeneratorfunction(self._inference)
        except _SetupError:
            raise
        except BaseException as exc:
            traceback.print_exc()
            raise _SetupError("import", f"{type(exc).__name__}: {exc}") from None
        self._models = _Models(load, Path(self.config.models_dir), self.config.cache_size)
        try:
            self._models.get(self.config.default_model_key, self.config.default_model_path)
        except BaseException as exc:
            traceback.print_exc()
            raise _SetupError(
                "load", f"load({self.config.default_model_key!r}) raised {type(exc).__name__}: {exc}"
            ) from None
        self.state = State.READY

    def handle(self, call: Call, outlet: Outlet | None = None) -> ToGateway:
        """The answer to `call`; `outlet` (a call that asked to stream) gets each piece as it is produced."""
        ids = tuple(dict.fromkeys(call.request_ids))
        token = serving(CallContext(tuple(call.request_ids), tuple(call.traceparents)))
        _tag.value = f"{REQUEST_TAG}{','.join(ids)}{REQUEST_TAG_END}".encode() if ids else b""
        try:
            return self._handle(call, outlet)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            TaggedLines.end_lines()
            _tag.value = b""
            served(token)

    def _handle(self, call: Call, outlet: Outlet | None) -> ToGateway:
        assert self._inference is not None and self._models is not None
        self.state = State.BUSY
        started = time.perf_counter()
        failure, during = "load_failed", f"load({call.model_key!r}) raised "
        try:
            model = self._models.get(call.model_key, call.model_path)
            failure, during = "module_error", ""
            inputs = [self._with_files(record) for record in call.records]
            fields = [{"name": name} for name in call.output_fields]
            if self._stream is None:
                returned = self._inference(call.parameters, inputs, fields, call.model_key, model)
            else:
                returned = self._streamed(call, inputs, fields, model, outlet)
        except _Canceled:
            return CallFailed(id=call.id, code="canceled", message="the call was canceled")
        except RejectedInput as exc:
            return CallFailed(
                id=call.id, code="rejected_input", message=exc.message, reason=exc.code, field=exc.field
            )
        except _OutputError as exc:
            print(f"modelport: bad output from inference: {exc}", file=sys.stderr, flush=True)
            return CallFailed(id=call.id, code="bad_module_output", message=str(exc))
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            traceback.print_exc()
            return CallFailed(id=call.id, code=failure, message=f"{during}{type(exc).__name__}: {exc}")
        finally:
            self.state = State.READY
            sys.stdout.flush()
            sys.stderr.flush()
        dropped = outlet.dropped if outlet is not None else set()
        try:
            outputs = self._check_outputs(returned, len(call.records), call.output_fields, dropped)
        except _OutputError as exc:
            print(f"modelport: bad output from inference: {exc}", file=sys.stderr, flush=True)
            return CallFailed(id=call.id, code="bad_module_output", message=str(exc))
        return Result(id=call.id, outputs=outputs, seconds=time.perf_counter() - started)

    def _streamed(
        self,
        call: Call,
        inputs: list[dict[str, Any]],
        fields: list[dict[str, str]],
        model: Any,
        outlet: Outlet | None,
    ) -> list[Any]:
        """The results of a module with a streaming output, its iterators drained (each piece emitted) into
        each record's outputs: the batch at once for a plain `inference`, a record at a time for a
        generator function."""
        assert self._inference is not None and self._stream is not None
        if self.batches_streams:
            returned = self._inference(call.parameters, inputs, fields, call.model_key, model)
            if not isinstance(returned, list | tuple) or len(returned) != len(inputs):
                self._check_outputs(returned, len(inputs), [])  # raises what is wrong with it
            results = [
                {self._stream.name: item}
                if isinstance(item, Iterator)
                else dict(item)
                if isinstance(item, dict)
                else item
                for item in returned
            ]
            pieces = {
                index: item[self._stream.name]
                for index, item in enumerate(results)
                if isinstance(item, dict) and isinstance(item.get(self._stream.name), Iterator)
            }
            self._drain(call.id, pieces, results, outlet)
            return results
        results = []
        for index, (parameters, record) in enumerate(zip(call.parameters, inputs, strict=True)):
            returned = self._inference([parameters], [record], fields, call.model_key, model)
            if isinstance(returned, Iterator):
                drained: dict[int, Any] = {index: {}}
                self._drain(call.id, {index: returned}, drained, outlet)
                results.append(drained[index])
            elif isinstance(returned, list | tuple) and len(returned) == 1:
                results.append(returned[0])
            else:
                raise _OutputError("inference must return a generator or a list of one result for one input")
        return results

    def _drain(
        self,
        call_id: int,
        iterators: dict[int, Iterator[Any]],
        results: Any,
        outlet: Outlet | None,
    ) -> None:
        """Drain each record's iterator into `results[index]`, a piece from each in turn: its streaming
        output (the pieces joined for `str`, listed for `json`) and whatever other outputs the generator
        returned as a dict. A record whose caller went away has its iterator closed and is left as it is."""
        assert self._stream is not None
        stream, text = self._stream, self._stream.types[0].kind == "str"
        seen: dict[int, list[Any]] = {index: [] for index in iterators}
        active = dict(iterators)
        try:
            while active:
                for index, pieces in list(active.items()):
                    if outlet is not None and index in outlet.dropped:
                        del active[index]
                        _close(pieces)
                        continue
                    try:
                        piece = next(pieces)
                    except StopIteration as stop:
                        del active[index]
                        results[index] = self._finished(results[index], stop.value, stream.name)
                        results[index][stream.name] = "".join(seen[index]) if text else seen[index]
                        continue
                    piece = self._piece(stream, text, piece)
                    seen[index].append(piece)
                    if outlet is not None and not outlet.emit(Chunk(id=call_id, index=index, piece=piece)):
                        raise _Canceled
        finally:
            for pieces in active.values():
                _close(pieces)

    @staticmethod
    def _finished(result: Any, rest: Any, stream: str) -> dict[str, Any]:
        if rest is not None and not isinstance(rest, dict):
            raise _OutputError(
                f"the generator must return a dict of the other outputs, got {type(rest).__name__}"
            )
        return {**(result if isinstance(result, dict) else {}), **(rest or {})}

    def _piece(self, field: FieldSpec, text: bool, piece: Any) -> Any:
        if text:
            if not isinstance(piece, str):
                raise _OutputError(f"output `{field.name}` streams str pieces, got {type(piece).__name__}")
            return piece
        try:
            return msgspec.to_builtins(piece, enc_hook=_enc_hook)
        except (TypeError, msgspec.EncodeError) as exc:
            raise _OutputError(f"output `{field.name}`: {exc}") from None

    def _with_files(self, record: dict[str, Any]) -> dict[str, Any]:
        if not self._file_inputs:
            return record
        out = dict(record)
        for name, field in self._file_inputs.items():
            if name in out and out[name] is not None:
                out[name] = _to_files(out[name], field)
        return out

    def _check_outputs(
        self, returned: Any, count: int, requested: list[str], dropped: Collection[int] = ()
    ) -> list[dict[str, Any]]:
        """The outputs `requested` of each record, checked against their declared types; a record in
        `dropped` (its caller went away mid-stream) is answered empty, unchecked."""
        if not isinstance(returned, list | tuple):
            raise _OutputError(f"inference must return a list, got {type(returned).__name__}")
        if len(returned) != count:
            raise _OutputError(f"inference returned {len(returned)} results for {count} inputs")
        return [
            {} if i in dropped else self._check_record(i, item, requested) for i, item in enumerate(returned)
        ]

    def _check_record(self, index: int, item: Any, requested: list[str]) -> dict[str, Any]:
        if not isinstance(item, dict):
            if self._single_output is None:
                raise _OutputError(f"result {index} must be a dict of outputs, got {type(item).__name__}")
            item = {self._single_output: item}
        out: dict[str, Any] = {}
        for name in requested:
            field = self._outputs[name]
            if name not in item or item[name] is None:
                if field.optional:
                    continue
                raise _OutputError(f"result {index} lacks the declared output `{name}`")
            out[name] = self._output_value(index, field, item[name])
        return out

    def _output_value(self, index: int, field: FieldSpec, value: Any) -> Any:
        file_type = field.file_type
        if file_type is not None and _looks_like_file(value):
            return self._store_file(field, file_type, value)
        try:
            value = msgspec.to_builtins(value, enc_hook=_enc_hook)
        except (TypeError, msgspec.EncodeError) as exc:
            raise _OutputError(f"result {index}, output `{field.name}`: {exc}") from None
        problem = check_value(field, value)
        if problem is not None:
            raise _OutputError(f"result {index}, output `{field.name}`: {problem}")
        return value

    def _store_file(self, field: FieldSpec, file_type: TypeSpec, value: Any) -> dict[str, Any]:
        content_type = next((m for m in file_type.mime if "*" not in m), "application/octet-stream")
        if isinstance(value, bytes | bytearray):
            data = bytes(value)
        elif isinstance(value, str | os.PathLike):
            data = Path(value).read_bytes()
        else:  # a PIL image
            buffer = io.BytesIO()
            image_format = content_type.split("/")[-1].upper() if content_type.startswith("image/") else "PNG"
            value.save(buffer, format="JPEG" if image_format == "JPG" else image_format)
            data = buffer.getvalue()
            content_type = content_type if content_type.startswith("image/") else "image/png"
        suffix = mimetypes.guess_extension(content_type) or ""
        handle, path = tempfile.mkstemp(dir=self.config.output_dir, prefix=f"{field.name}-", suffix=suffix)
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        return {"path": path, "content_type": content_type, "filename": field.name, "size": len(data)}


def _looks_like_file(value: Any) -> bool:
    return isinstance(value, bytes | bytearray | os.PathLike) or hasattr(value, "save")


def _to_files(value: Any, field: FieldSpec) -> Any:
    if isinstance(value, list):
        return [_to_files(v, field) for v in value]
    if isinstance(value, dict) and "path" in value and "content_type" in value:
        return File(
            Path(value["path"]), value["content_type"], value.get("filename", ""), value.get("size", 0)
        )
    return value


class _Channel:
    """Blocking, framed reads and writes on the control socket."""

    def __init__(self, fd: int) -> None:
        self._sock = socket.socket(fileno=fd)

    def send(self, message: ToGateway) -> None:
        self._sock.sendall(frame(encode(message)))

    def waiting(self) -> bool:
        """Whether the gateway has sent something not read yet (never blocks)."""
        return bool(select.select([self._sock], [], [], 0)[0])

    def receive(self) -> bytes | None:
        header = self._exactly(HEADER_SIZE)
        return None if header is None else self._exactly(frame_length(header))

    def _exactly(self, size: int) -> bytes | None:
        chunks, remaining = [], size
        while remaining:
            chunk = self._sock.recv(min(remaining, 1 << 20))
            if not chunk:
                return None
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)


class _Tag:
    """The prefix of the lines printed now: the ids of the requests being served (empty between calls)."""

    value = b""


_tag = _Tag()


class TaggedLines(io.RawIOBase):
    """The bytes behind a worker's `sys.stdout` or `sys.stderr`: every line written during a call starts with
    the call's request ids, so that the gateway files a `print` (or a log record, or bytes written to
    `sys.stdout.buffer`) inside `inference` under the requests it served. Lines written between calls, and
    bytes written below Python (C extensions writing to the descriptor), go untagged."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._line_start = True

    @classmethod
    def stream(cls, fd: int) -> io.TextIOWrapper:
        """A line-buffered text stream over descriptor `fd`, tagged."""
        return io.TextIOWrapper(
            io.BufferedWriter(cls(fd)), encoding="utf-8", errors="backslashreplace", line_buffering=True
        )

    def write(self, data: Any) -> int:
        data = bytes(data)
        tag = _tag.value
        if tag and data:
            out = bytearray()
            for piece in data.splitlines(keepends=True):
                if self._line_start:
                    out += tag
                out += piece
                self._line_start = piece.endswith((b"\n", b"\r"))
            _write_all(self._fd, bytes(out))
        elif data:
            _write_all(self._fd, data)
            self._line_start = data.endswith((b"\n", b"\r"))
        return len(data)

    @staticmethod
    def end_lines() -> None:
        """End a line a call left open on `sys.stdout` or `sys.stderr` (flushed), so that the next call's
        output starts a line of its own under its own ids, instead of being filed under this call's."""
        for stream in (sys.stdout, sys.stderr):
            raw = getattr(getattr(stream, "buffer", None), "raw", None)
            if isinstance(raw, TaggedLines) and not raw._line_start:
                _write_all(raw._fd, b"\n")
                raw._line_start = True

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd


class _Inbox:
    """The gateway's messages in order, as the main loop reads them; during a streaming call, `emit` also
    reads what arrived (answering pings, keeping calls for later) to notice the call's `Cancel` at once."""

    def __init__(self, channel: _Channel) -> None:
        self._channel = channel
        self._later: deque[ToWorker | None] = deque()
        self._canceled: set[int] = set()
        self.dropped: set[int] = set()
        """The current call's records whose callers went away."""
        self.current = 0
        """The id of the last call started: a `Cancel` of it or of an earlier one that has been answered
        needs no note."""

    def next(self) -> ToWorker | None:
        """The next message (None: the gateway closed the channel)."""
        if self._later:
            return self._later.popleft()
        payload = self._channel.receive()
        return None if payload is None else decode_to_worker(payload)

    def cancel(self, call_id: int) -> None:
        if call_id > self.current:
            self._canceled.add(call_id)

    def canceled(self, call: Call) -> bool:
        """Whether `call` was canceled before it started; marks it started either way."""
        self.current = call.id
        self.dropped = set()
        if call.id in self._canceled:
            self._canceled.discard(call.id)
            return True
        return False

    def emit(self, chunk: Chunk) -> bool:
        self._channel.send(chunk)
        while self._channel.waiting():
            payload = self._channel.receive()
            message = None if payload is None else decode_to_worker(payload)
            if isinstance(message, Ping):
                self._channel.send(Pong(id=message.id))
            elif isinstance(message, Cancel) and message.id == chunk.id and message.index is not None:
                self.dropped.add(message.index)
            elif isinstance(message, Cancel) and message.id == chunk.id:
                return False
            elif isinstance(message, Cancel):
                self.cancel(message.id)
            else:
                self._later.append(message)
                if message is None:
                    return False  # the gateway went away: nobody reads the rest
        return True


def _close(pieces: Iterator[Any]) -> None:
    close = getattr(pieces, "close", None)
    if close is not None:
        close()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _die_with_parent() -> None:
    """Ask Linux to kill this process when the gateway that started it dies, even mid-call."""
    if sys.platform != "linux":
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:  # the parent died before the request took effect
        os._exit(1)


def main(argv: list[str] | None = None) -> int:
    _die_with_parent()
    sys.stdout, sys.stderr = TaggedLines.stream(1), TaggedLines.stream(2)
    config = msgspec.json.decode((argv or sys.argv[1:])[0], type=WorkerConfig)
    if config.confinement is not None:
        for line in confine(config.confinement):
            print(f"modelport: {line}", file=sys.stderr)
    channel = _Channel(config.fd)
    worker = Worker(config)
    try:
        worker.setup()
    except _SetupError as exc:
        worker.state = State.FAILED
        channel.send(SetupFailed(stage=exc.stage, message=str(exc)))
        return 3
    channel.send(Ready(pid=os.getpid(), batches_streams=worker.batches_streams))
    inbox = _Inbox(channel)
    while (message := inbox.next()) is not None:
        if isinstance(message, Shutdown):
            break
        if isinstance(message, Ping):
            channel.send(Pong(id=message.id))
        elif isinstance(message, Cancel):
            if message.index is None:
                inbox.cancel(message.id)
        elif inbox.canceled(message):
            channel.send(CallFailed(id=message.id, code="canceled", message="the call was canceled"))
        else:
            channel.send(worker.handle(message, inbox if message.stream else None))
    worker.state = State.STOPPED
    return 0


if __name__ == "__main__":
    sys.exit(main())
