"""What the platform knows of each call once it is answered, and who is told.

`control/calls.py` makes one `CallRecord` per call (every kind: synchronous calls now, jobs and pipeline steps
too) and hands it, with the call's `CallPayload`, to each `CallObserver`: the request log, the statistics, the
Prometheus metrics, drift. An observer runs on the event loop while the answer goes out, so it only takes
note (append to a buffer, bump a counter) and leaves any real work to its own thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["CallObserver", "CallPayload", "CallRecord", "FileObserver"]


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One call of a module, answered."""

    id: str
    """The request id (`X-Request-Id`)."""
    trace_id: str
    """The W3C trace id: the caller's when it sent `traceparent`, else a new one."""
    at: float
    """When the call arrived (Unix seconds)."""
    kind: str
    """`sync`, `job`, `batch`, or `pipeline` (a step of a pipeline call)."""
    module: str
    version: str
    replica: int | None
    """The replica that answered (None: no worker took the call)."""
    caller: str
    """The caller's user name (`anonymous` for anonymous callers)."""
    caller_id: int | None
    """The caller's user id (None when anonymous)."""
    client: str | None
    """The client's address."""
    status: int
    """The HTTP status the caller got (499: it went away before the answer)."""
    code: str | None
    """The error code of a failed call."""
    total: float
    """Seconds from arrival to answer."""
    queue: float
    """Seconds its records waited for a worker."""
    compute: float
    """Seconds the worker computed the batch that answered it."""
    batch_size: int
    """Records in that batch (0: none ran)."""
    records: int
    """Records in the call itself."""
    request_bytes: int
    response_bytes: int
    model_key: str | None = None
    parent: str | None = None
    """A pipeline step's call: the request id of the pipeline call it is part of."""
    pipeline: str | None = None
    step: str | None = None


@dataclass(frozen=True, slots=True)
class CallPayload:
    """What a call sent and got, as the module saw it: references, not copies (read, never change)."""

    inputs: list[dict[str, Any]]
    """One dict per record; a file value is `{"path", "content_type", "filename", "size"}` (an upload) or
    names the stored object it came from."""
    parameters: dict[str, Any]
    outputs: list[dict[str, Any]] | None
    """One dict per record, as the caller got them (file outputs as URLs); None when the call failed."""
    batch: bool
    """Whether the caller sent a list of records."""
    owner: str
    """The directory name of the caller's own files (where its uploads are kept)."""
    uploads: dict[str, str]
    """The object key each uploaded file is kept under in the request bucket, by its name in the record
    (`field`, or `index-field` in a batch, with `-position` for a list)."""


class CallObserver(Protocol):
    def observe(self, record: CallRecord, payload: CallPayload | None) -> None:
        """Take note of an answered call; never blocks, never raises."""


class FileObserver(Protocol):
    def observe_files(self, record: CallRecord, payload: CallPayload) -> None:
        """Look at a call's files (its uploads are still on disk: `payload.inputs` holds their paths). Runs in
        a worker thread after the answer went out, for calls that sent files; never raises."""
