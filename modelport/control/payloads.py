"""Payload capture for the request log: what a sampled call sent and got, kept as one JSON object in the
request bucket, with the fields its module's `Api` manifests call sensitive redacted before anything is
written.

Each payload (one line of a JSON Lines object, `payloads/<module>/<YYYY-MM-DD>/<batch>.jsonl`, referenced
from its call's record as `<key>#<line>`) holds `inputs`, `parameters`, `outputs`
(one object for a single call, a list for a batch, as the caller sent and got them) and `uploads`. A file
input is named by the stored object it is kept as (an upload of the call) or came from (the
`{"object": "bucket/key"}` the caller named), never by a path on this machine. Headers are never part of a
payload, so neither are credentials. A document larger than `maxBytes` is replaced by its first bytes, marked
`"truncated": true`.

Writing happens in one background thread, once a second, one object per module and day: a call never waits
for the store, and when too many payloads wait the new one is dropped and counted.
"""

from __future__ import annotations

import functools
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec

from modelport.core.manifests import ApiLogging
from modelport.obs.calls import CallPayload
from modelport.sdk.validation import DataFile, ObjectFile, UploadedFile
from modelport.storage import ObjectStore

__all__ = ["REDACTED", "PayloadWriter", "payload_batch_key", "payload_document", "read_payload", "redact"]

log = logging.getLogger("modelport.requests")

REDACTED = "[redacted]"
"""What a redacted field holds in a captured payload."""

_QUEUE = 10_000
"""Payloads waiting to be written; past it new ones are dropped (and counted)."""
_BATCH_LINES = 1000
"""Payloads in one object at most."""
_BATCH_BYTES = 16 * 1024 * 1024
"""The bytes of one object past which a new one starts."""
JSON_LINES = "application/jsonl"
_FILE_KEYS = frozenset({"path", "content_type", "filename", "size", "object"})
_GROUPS = ("inputs", "parameters", "outputs")


def payload_batch_key(module: str, day: str) -> str:
    """The request-bucket key of a new batch of `module`'s payloads of `day` (`YYYY-MM-DD`): the time, so
    that a day's batches list in order, and random bits, so that gateways never collide."""
    return f"payloads/{module}/{day}/{time.time_ns():020d}-{secrets.token_hex(4)}.jsonl"


def payload_document(
    payload: CallPayload, *, bucket: str, redact_paths: Sequence[str], max_bytes: int
) -> bytes:
    """The JSON object kept for a call: its payload with file inputs named by their stored objects (in
    `bucket` for uploads), every path of `redact_paths` redacted, at most `max_bytes` long."""
    # Values are copied only where a redaction will change them: the call's own objects are never touched.
    copy = _plain if redact_paths else _as_is
    inputs = [
        _plain_record(index, record, payload, bucket, copy) for index, record in enumerate(payload.inputs)
    ]
    outputs = None if payload.outputs is None else [copy(record) for record in payload.outputs]
    groups: dict[str, Any] = {"inputs": inputs, "parameters": copy(payload.parameters), "outputs": outputs}
    for path in redact_paths:
        group, _, rest = path.partition(".")
        if group in groups and rest:
            records = [groups[group]] if group == "parameters" else groups[group] or []
            for record in records:
                redact(record, rest.split("."))
    document = {
        "inputs": inputs if payload.batch else (inputs[0] if inputs else {}),
        "parameters": groups["parameters"],
        "outputs": outputs if payload.batch or outputs is None else (outputs[0] if outputs else {}),
        "uploads": {name: f"{bucket}/{key}" for name, key in payload.uploads.items()},
    }
    return _within(document, max_bytes)


def redact(value: Any, path: Sequence[str]) -> None:
    """Replace the field at `path` (names of nested objects) in `value` with `REDACTED`, in place; lists
    on the way are followed into each of their items, so `items.secret` reaches every item's `secret`."""
    if isinstance(value, list):
        for item in value:
            redact(item, path)
        return
    if not isinstance(value, dict) or not path or path[0] not in value:
        return
    if len(path) == 1:
        value[path[0]] = REDACTED
    else:
        redact(value[path[0]], path[1:])


def _plain_record(
    index: int, record: dict[str, Any], payload: CallPayload, bucket: str, copy: Callable[[Any], Any]
) -> dict[str, Any]:
    """One record's inputs as plain JSON, each file value replaced by the object that keeps it."""
    plain: dict[str, Any] = {}
    for name, value in record.items():
        label = f"{index}-{name}" if payload.batch else name
        if isinstance(value, list):
            plain[name] = [
                _plain_input(item, payload.uploads.get(f"{label}-{position}"), bucket, copy)
                for position, item in enumerate(value)
            ]
        else:
            plain[name] = _plain_input(value, payload.uploads.get(label), bucket, copy)
    return plain


def _plain_input(value: Any, upload_key: str | None, bucket: str, copy: Callable[[Any], Any]) -> Any:
    """An input value as plain JSON; a file is described by its object, type, name and size only."""
    if isinstance(value, ObjectFile):
        return {"object": value.ref}
    if isinstance(value, DataFile):
        return {"content_type": value.content_type, "size": len(value.data)}
    if isinstance(value, UploadedFile):
        return {"content_type": value.content_type, "filename": value.filename, "size": value.size}
    if _is_file(value):
        described = {k: value[k] for k in ("content_type", "filename", "size") if k in value}
        if upload_key is not None:
            return {"object": f"{bucket}/{upload_key}", **described}
        if isinstance(value.get("object"), str):
            return {"object": value["object"], **described}
        return described
    return copy(value)


def _is_file(value: Any) -> bool:
    """Whether `value` is a checked file as the platform hands it to a worker (it holds a local path)."""
    return (
        isinstance(value, dict) and "path" in value and "content_type" in value and set(value) <= _FILE_KEYS
    )


def _plain(value: Any) -> Any:
    """A copy of `value` made of JSON values only (so that redacting the copy leaves the call alone)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, DataFile | ObjectFile | UploadedFile):
        return _plain_input(value, None, "", _plain)
    return str(value)


def _as_is(value: Any) -> Any:
    """`value` itself: what the JSON decoder and the worker hand over is JSON already, and nothing will
    change it."""
    return value


def _within(document: dict[str, Any], max_bytes: int) -> bytes:
    """`document` as JSON, or, past `max_bytes`, a marked object holding its first bytes (only the marker
    when even that does not fit)."""
    encoded = _dumps(document)
    if len(encoded) <= max_bytes:
        return encoded
    keep = max_bytes
    while keep > 0:
        head = encoded[:keep].decode("utf-8", errors="ignore")
        cut = _dumps({"truncated": True, "bytes": len(encoded), "head": head})
        if len(cut) <= max_bytes:
            return cut
        keep -= len(cut) - max_bytes
    return _dumps({"truncated": True, "bytes": len(encoded)})


def _dumps(value: Any) -> bytes:
    return _encoder.encode(value)


def _unknown(value: Any) -> Any:
    if isinstance(value, DataFile | ObjectFile | UploadedFile):
        return _plain_input(value, None, "", _plain)
    return str(value)


_encoder = msgspec.json.Encoder(enc_hook=_unknown)


@dataclass(eq=False)
class _Batch:
    """The payloads of one module and day written together as one JSON Lines object."""

    key: str
    lines: list[bytes] = field(default_factory=list)
    size: int = 0


class PayloadWriter:
    """Writes captured payloads to `bucket` of `store` from its own thread, at most `capacity` waiting.

    Payloads are gathered per module and day into JSON Lines objects (`payloads/<module>/<YYYY-MM-DD>/
    <batch>.jsonl`), one object per `interval` seconds (or per `_BATCH_LINES` payloads, or `_BATCH_BYTES`),
    so that capturing every call costs one write a second, not one per call. A payload is referenced as
    `<key>#<line>` from the moment it is submitted."""

    def __init__(
        self, store: ObjectStore, *, bucket: str, capacity: int = _QUEUE, interval: float = 1.0
    ) -> None:
        self.store, self.bucket, self.capacity, self.interval = store, bucket, capacity, interval
        self.dropped = 0
        """Payloads dropped because too many were waiting (read by the metrics)."""
        self.failed = 0
        """Payloads the store refused to keep."""
        self._lock = threading.Lock()
        self._open: dict[tuple[str, str], _Batch] = {}
        self._closed: list[_Batch] = []
        self._waiting = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False

    def submit(self, module: str, at: float, payload: CallPayload, logging: ApiLogging) -> str | None:
        """Queue a payload of a call of `module` that arrived at `at`; its reference (`<key>#<line>`), or
        None (and counted) when too many wait. Never blocks on the store.

        The payload is redacted and encoded here, at once (a few microseconds for a small call; at most what
        decoding the call's body took): what waits for the writer is bytes, not the call's objects, which
        would otherwise outlive the call by a second and make the collector's work grow with the load."""
        if self._waiting >= self.capacity:
            self.dropped += 1
            return None
        line = payload_document(
            payload, bucket=self.bucket, redact_paths=logging.redact, max_bytes=logging.max_bytes
        )
        day = _day(int(at // 86_400))
        with self._lock:
            if self._waiting >= self.capacity:
                self.dropped += 1
                return None
            batch = self._open.get((module, day))
            if batch is None:
                batch = self._open[(module, day)] = _Batch(payload_batch_key(module, day))
            batch.lines.append(line)
            batch.size += len(line) + 1
            self._waiting += 1
            reference = f"{batch.key}#{len(batch.lines) - 1}"
            if len(batch.lines) >= _BATCH_LINES or batch.size >= _BATCH_BYTES:
                self._closed.append(self._open.pop((module, day)))
                self._wake.set()
        return reference

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="request-payloads", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Write what is waiting, then stop (blocking)."""
        if self._thread is not None:
            self._stop.set()
            self._wake.set()
            self._thread.join()
            self._thread = None
        self.drain()

    def drain(self) -> None:
        """Write every payload waiting now, in the calling thread."""
        with self._lock:
            batches = [*self._closed, *self._open.values()]
            self._closed, self._open = [], {}
        for batch in batches:
            self.write(batch)
            with self._lock:
                self._waiting -= len(batch.lines)

    def write(self, batch: _Batch) -> None:
        """Store one batch; failures are counted and logged, once per run of them."""
        try:
            self.store.put(self.bucket, batch.key, b"\n".join(batch.lines) + b"\n", content_type=JSON_LINES)
        except Exception as exc:  # the store's failure, whatever it is, never stops the writer
            self.failed += len(batch.lines)
            if not self._failing:
                log.warning("keeping call payloads failed (%s); calls go on without them", exc)
            self._failing = True
            return
        if self._failing:
            log.info("call payloads are kept again")
        self._failing = False

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            self.drain()


@functools.lru_cache(maxsize=4)
def _day(number: int) -> str:
    """`YYYY-MM-DD` of the UTC day `number` days after the epoch."""
    return datetime.fromtimestamp(number * 86_400, UTC).strftime("%Y-%m-%d")


def read_payload(store: ObjectStore, bucket: str, reference: str) -> Any:
    """The payload `reference` (`<key>#<line>`, or the key of a whole JSON object) names; raises the store's
    errors, `ValueError` when it is not there."""
    key, _, line = reference.partition("#")
    data = store.get(bucket, key)
    if not line:
        return json.loads(data)
    lines = data.split(b"\n")
    index = int(line)
    if not 0 <= index < len(lines) or not lines[index]:
        raise ValueError(f"no line {index} in {key}")
    return json.loads(lines[index])
