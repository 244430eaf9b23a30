"""Payload capture for the request log: what a sampled call sent and got, kept as one JSON object in the
request bucket, with the fields its module's `Api` manifests call sensitive redacted before anything is
written.

The object (`payloads/<module>/<YYYY-MM-DD>/<request id>.json`) holds `inputs`, `parameters`, `outputs`
(one object for a single call, a list for a batch, as the caller sent and got them) and `uploads`. A file
input is named by the stored object it is kept as (an upload of the call) or came from (the
`{"object": "bucket/key"}` the caller named), never by a path on this machine. Headers are never part of a
payload, so neither are credentials. A document larger than `maxBytes` is replaced by its first bytes, marked
`"truncated": true`.

Writing happens in one background thread fed by a bounded queue: a call never waits for the store, and when
the queue is full the payload is dropped and counted.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from modelport.core.manifests import ApiLogging
from modelport.obs.calls import CallPayload
from modelport.sdk.validation import DataFile, ObjectFile, UploadedFile
from modelport.storage import ObjectStore

__all__ = ["REDACTED", "PayloadWriter", "payload_document", "payload_key", "redact"]

log = logging.getLogger("modelport.requests")

REDACTED = "[redacted]"
"""What a redacted field holds in a captured payload."""

_QUEUE = 1000
"""Payloads waiting to be written; past it new ones are dropped (and counted)."""
_FILE_KEYS = frozenset({"path", "content_type", "filename", "size", "object"})
_GROUPS = ("inputs", "parameters", "outputs")


def payload_key(module: str, request_id: str, *, at: float) -> str:
    """The request-bucket key of the payload of call `request_id` of `module`, which arrived at `at`."""
    day = datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d")
    return f"payloads/{module}/{day}/{request_id}.json"


def payload_document(
    payload: CallPayload, *, bucket: str, redact_paths: Sequence[str], max_bytes: int
) -> bytes:
    """The JSON object kept for a call: its payload with file inputs named by their stored objects (in
    `bucket` for uploads), every path of `redact_paths` redacted, at most `max_bytes` long."""
    inputs = [_plain_record(index, record, payload, bucket) for index, record in enumerate(payload.inputs)]
    outputs = None if payload.outputs is None else [_plain(record) for record in payload.outputs]
    groups: dict[str, Any] = {"inputs": inputs, "parameters": _plain(payload.parameters), "outputs": outputs}
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


def _plain_record(index: int, record: dict[str, Any], payload: CallPayload, bucket: str) -> dict[str, Any]:
    """One record's inputs as plain JSON, each file value replaced by the object that keeps it."""
    plain: dict[str, Any] = {}
    for name, value in record.items():
        label = f"{index}-{name}" if payload.batch else name
        if isinstance(value, list):
            plain[name] = [
                _plain_input(item, payload.uploads.get(f"{label}-{position}"), bucket)
                for position, item in enumerate(value)
            ]
        else:
            plain[name] = _plain_input(value, payload.uploads.get(label), bucket)
    return plain


def _plain_input(value: Any, upload_key: str | None, bucket: str) -> Any:
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
    return _plain(value)


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
        return _plain_input(value, None, "")
    return str(value)


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
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=str).encode()


@dataclass(frozen=True, slots=True)
class _Job:
    key: str
    payload: CallPayload
    logging: ApiLogging


class PayloadWriter:
    """Writes captured payloads to `bucket` of `store` from its own thread, at most `capacity` waiting."""

    def __init__(self, store: ObjectStore, *, bucket: str, capacity: int = _QUEUE) -> None:
        self.store, self.bucket = store, bucket
        self.dropped = 0
        """Payloads dropped because the queue was full (read by the metrics)."""
        self.failed = 0
        """Payloads the store refused to keep."""
        self._queue: queue.Queue[_Job | None] = queue.Queue(capacity)
        self._thread: threading.Thread | None = None
        self._failing = False

    def submit(self, key: str, payload: CallPayload, logging: ApiLogging) -> bool:
        """Queue a payload to be written under `key`; False (and counted) when the queue is full. Never
        blocks."""
        try:
            self._queue.put_nowait(_Job(key, payload, logging))
        except queue.Full:
            self.dropped += 1
            return False
        return True

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="request-payloads", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Write what is queued, then stop (blocking)."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def drain(self) -> None:
        """Write what is queued now, in the calling thread (when no writer thread runs)."""
        for job in _take_all(self._queue):
            if job is not None:
                self.write(job.key, job.payload, job.logging)

    def write(self, key: str, payload: CallPayload, logging: ApiLogging) -> None:
        """Redact, cut and store one payload; failures are counted and logged, once per run of them."""
        try:
            document = payload_document(
                payload, bucket=self.bucket, redact_paths=logging.redact, max_bytes=logging.max_bytes
            )
            self.store.put(self.bucket, key, document, content_type="application/json")
        except Exception as exc:  # the store's failure, whatever it is, never stops the writer
            self.failed += 1
            if not self._failing:
                log.warning("keeping call payloads failed (%s); calls go on without them", exc)
            self._failing = True
            return
        if self._failing:
            log.info("call payloads are kept again")
        self._failing = False

    def _run(self) -> None:
        while (job := self._queue.get()) is not None:
            self.write(job.key, job.payload, job.logging)


def _take_all(jobs: queue.Queue[_Job | None]) -> Iterable[_Job | None]:
    while True:
        try:
            yield jobs.get_nowait()
        except queue.Empty:
            return
