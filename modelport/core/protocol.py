"""The gateway↔worker message protocol: typed envelopes, length-prefixed MessagePack frames.

Nothing here is pickled: both sides decode into the tagged union below and reject anything else. Every call
carries an id that its answer repeats, so a gateway can match answers to waiting requests and fail exactly the
in-flight ones when a worker dies.
"""

from __future__ import annotations

import struct
from typing import Any

import msgspec

__all__ = [
    "MAX_FRAME",
    "REQUEST_TAG",
    "REQUEST_TAG_END",
    "Call",
    "CallFailed",
    "Cancel",
    "Chunk",
    "FileRef",
    "Ping",
    "Pong",
    "Ready",
    "Result",
    "SetupFailed",
    "Shutdown",
    "ToGateway",
    "ToWorker",
    "decode_to_gateway",
    "decode_to_worker",
    "encode",
    "frame",
    "split_tag",
]

MAX_FRAME = 256 * 1024 * 1024
REQUEST_TAG = "\x1e"
"""Starts a line a worker printed during a call: the record separator, the ids of the requests it served
(comma-separated), the unit separator, then the line."""
REQUEST_TAG_END = "\x1f"
_HEADER = struct.Struct("!I")


class FileRef(msgspec.Struct, frozen=True):
    """A file on local disk, as both sides see it; the worker turns it into `modelport.sdk.File`."""

    path: str
    content_type: str
    filename: str
    size: int


# gateway → worker


class Call(msgspec.Struct, tag="call", frozen=True):
    """Run `inference` once on `records`; `parameters[i]` belongs to `records[i]`.

    `model_path` is the local directory of `model_key`'s weights when the gateway fetched them from object
    storage; None means the module's own `<models_dir>/<model_key>`.
    """

    id: int
    records: list[dict[str, Any]]
    parameters: list[dict[str, Any]]
    output_fields: list[str]
    model_key: str
    model_path: str | None = None
    request_ids: list[str] = []
    """The id of the request each record belongs to: the worker tags what it prints during the call."""
    traceparents: list[str] = []
    """The W3C `traceparent` of each record's request, for module code that continues the trace."""
    stream: bool = False
    """Send each piece of the module's streaming output as a `Chunk` while `inference` produces it."""


class Ping(msgspec.Struct, tag="ping", frozen=True):
    """Answer `Pong` with the same id: the gateway checks that an idle worker still reads its messages."""

    id: int


class Cancel(msgspec.Struct, tag="cancel", frozen=True):
    """Stop the streaming call of this id (its callers went away): the worker closes its generator at the
    next piece and answers `CallFailed` with code `canceled`. With `index`, stop only that record's stream
    (its caller went away; the call's other records go on, and the record's outputs come back empty)."""

    id: int
    index: int | None = None


class Shutdown(msgspec.Struct, tag="shutdown", frozen=True):
    """Finish the current call and exit."""


ToWorker = Call | Ping | Cancel | Shutdown


# worker → gateway


class Ready(msgspec.Struct, tag="ready", frozen=True):
    """The module imported and the default model loaded; the worker takes calls now. `batches_streams`: the
    module streams an output from a plain `inference` that takes a whole batch (not a generator function,
    which takes one record at a time), so streaming records may be batched."""

    pid: int
    batches_streams: bool = False


class SetupFailed(msgspec.Struct, tag="setup_failed", frozen=True):
    """The module could not be imported or its model could not be loaded; the worker exits."""

    stage: str
    message: str


class Result(msgspec.Struct, tag="result", frozen=True):
    """One output record per input record, in order; file outputs are `FileRef`-shaped dicts."""

    id: int
    outputs: list[dict[str, Any]]
    seconds: float


class Chunk(msgspec.Struct, tag="chunk", frozen=True):
    """One piece of a streaming call's streaming output, for the record at `index` of the call, sent as soon
    as `inference` yields it; the call's `Result` (or `CallFailed`) follows the last one."""

    id: int
    index: int
    piece: Any


class CallFailed(msgspec.Struct, tag="call_failed", frozen=True):
    """The call failed: `code` is `module_error` (user code raised), `load_failed` (`load` raised for the
    call's model key: no record of the call could succeed), `bad_module_output`, `canceled` (a `Cancel`
    stopped it) or `rejected_input` (`inference` raised `RejectedInput`: the caller's fault, its `reason`
    the module's code and `field` what to change)."""

    id: int
    code: str
    message: str
    reason: str = ""
    field: str | None = None


class Pong(msgspec.Struct, tag="pong", frozen=True):
    """The answer to the `Ping` of the same id."""

    id: int


ToGateway = Ready | SetupFailed | Result | Chunk | CallFailed | Pong

_encoder = msgspec.msgpack.Encoder()
_to_worker = msgspec.msgpack.Decoder(ToWorker)
_to_gateway = msgspec.msgpack.Decoder(ToGateway)


def encode(message: ToWorker | ToGateway) -> bytes:
    return _encoder.encode(message)


def frame(payload: bytes) -> bytes:
    """Prefix an encoded message with its length."""
    if len(payload) > MAX_FRAME:
        raise ValueError(f"message of {len(payload)} bytes exceeds the {MAX_FRAME}-byte frame limit")
    return _HEADER.pack(len(payload)) + payload


def frame_length(header: bytes) -> int:
    (length,) = _HEADER.unpack(header)
    if length > MAX_FRAME:
        raise ValueError(f"frame of {length} bytes exceeds the {MAX_FRAME}-byte limit")
    return int(length)


HEADER_SIZE = _HEADER.size


def decode_to_worker(payload: bytes) -> ToWorker:
    message: ToWorker = _to_worker.decode(payload)
    return message


def decode_to_gateway(payload: bytes) -> ToGateway:
    message: ToGateway = _to_gateway.decode(payload)
    return message


def split_tag(line: str) -> tuple[tuple[str, ...], str]:
    """(request ids, text) of a line a worker printed; no ids for an untagged line."""
    if line.startswith(REQUEST_TAG):
        end = line.find(REQUEST_TAG_END, 1)
        if end > 0:
            return tuple(part for part in line[1:end].split(",") if part), line[end + 1 :]
    return (), line
