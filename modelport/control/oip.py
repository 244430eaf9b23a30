"""The Open Inference Protocol v2 (KServe, Triton) in terms of a module's `ApiSpec`.

A module's inputs and outputs become tensors whose first dimension is the batch, one record per row:
`float` is FP32, `int` INT64, `bool` BOOL, `str` BYTES (UTF-8), `json` BYTES holding JSON text, and
`list[float]`, `list[int]` (of any scalar) a row per record (`[-1, -1]`). Files cannot be tensors: the
metadata leaves them out. This module maps an inference request's tensors onto records (which the module's
own validation then checks), the records a module answers onto output tensors, and reads and writes the
elements of the binary tensor data extension. Pure: no HTTP, no I/O.
"""

from __future__ import annotations

import functools
import json
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from modelport.core.errors import BadRequest
from modelport.sdk.spec import ApiSpec, FieldSpec, Kind, TypeSpec
from modelport.sdk.validation import ParsedRequest, parse_json

__all__ = [
    "PLATFORM",
    "InferRequest",
    "InputTensor",
    "OutputTensor",
    "RequestedOutput",
    "TensorType",
    "decode_binary",
    "encode_binary",
    "infer_request",
    "model_metadata",
    "output_tensors",
    "parse_infer",
    "tensor_type",
]

PLATFORM = "modelport"
"""The `platform` of every model's metadata."""

_FLOATS = ("FP16", "FP32", "FP64")
_INTS = ("INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64")
_FORMATS = {
    "BOOL": "?",
    "INT8": "b",
    "INT16": "h",
    "INT32": "i",
    "INT64": "q",
    "UINT8": "B",
    "UINT16": "H",
    "UINT32": "I",
    "UINT64": "Q",
    "FP16": "e",
    "FP32": "f",
    "FP64": "d",
}
"""`struct` formats of the fixed-size datatypes (little-endian, as the binary extension sends them)."""
_SCALAR_TYPES: dict[Kind, tuple[str, tuple[str, ...]]] = {
    Kind.FLOAT: ("FP32", _FLOATS),
    Kind.INT: ("INT64", _INTS),
    Kind.BOOL: ("BOOL", ("BOOL",)),
    Kind.STR: ("BYTES", ("BYTES",)),
    Kind.JSON: ("BYTES", ("BYTES",)),
}
_RESERVED_PARAMETERS = frozenset(
    {"binary_data_output", "sequence_id", "sequence_start", "sequence_end", "priority", "timeout", "headers"}
)
"""Request parameters that belong to the protocol (or to Triton's client), not to the module."""


@dataclass(frozen=True)
class TensorType:
    """How one field travels as a tensor: `datatype` in metadata and answers, `accepts` in requests, `rank`
    1 (a value per record) or 2 (a list per record), `json`: BYTES elements hold JSON text."""

    datatype: str
    accepts: tuple[str, ...]
    rank: int
    json: bool

    @property
    def shape(self) -> list[int]:
        return [-1] * self.rank


def tensor_type(field: FieldSpec) -> TensorType | None:
    """The tensor `field` travels as (None: a file, or a type no tensor can hold). Its first expressible type
    decides the datatype and rank; its other types of that rank add the datatypes it accepts."""
    return _tensor_type(field.types)


@functools.lru_cache(maxsize=4096)
def _tensor_type(types: tuple[TypeSpec, ...]) -> TensorType | None:
    """`tensor_type` of a field's types (remembered: every call of a module asks it for the same fields)."""
    found = [(rank, *_scalar_of(t)) for t in types if (rank := _rank(t)) is not None]
    if not found:
        return None
    rank = found[0][0]
    same_rank = [entry for entry in found if entry[0] == rank]
    accepts = tuple(dict.fromkeys(d for _, _, kind in same_rank for d in _SCALAR_TYPES[kind][1]))
    kinds = {kind for _, _, kind in same_rank}
    return TensorType(
        datatype=found[0][1], accepts=accepts, rank=rank, json=Kind.JSON in kinds and Kind.STR not in kinds
    )


def _rank(type_: TypeSpec) -> int | None:
    if type_.kind in _SCALAR_TYPES:
        return 1
    item = type_.item
    if (
        type_.kind is Kind.LIST
        and item is not None
        and item.kind in _SCALAR_TYPES
        and item.kind is not Kind.JSON
    ):
        return 2
    return None


def _scalar_of(type_: TypeSpec) -> tuple[str, Kind]:
    kind = type_.item.kind if type_.kind is Kind.LIST and type_.item is not None else type_.kind
    return _SCALAR_TYPES[kind][0], kind


def model_metadata(spec: ApiSpec, *, name: str, versions: Sequence[str]) -> dict[str, Any]:
    """The model metadata response of a module: its tensors, files left out."""

    def tensors(fields: tuple[FieldSpec, ...]) -> list[dict[str, Any]]:
        return [
            {"name": field.name, "datatype": kind.datatype, "shape": kind.shape}
            for field in fields
            if (kind := tensor_type(field)) is not None
        ]

    return {
        "name": name,
        "versions": list(versions),
        "platform": PLATFORM,
        "inputs": tensors(spec.inputs),
        "outputs": tensors(spec.outputs),
    }


@dataclass(frozen=True)
class InputTensor:
    """One input tensor of a request: its elements flat, in row-major order (BYTES elements as `str` when
    they came as JSON, `bytes` when they came binary)."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: list[Any]


@dataclass(frozen=True)
class RequestedOutput:
    """An output the request asks for; `binary` None: as the request's `binary_data_output` says."""

    name: str
    binary: bool | None = None


@dataclass(frozen=True)
class InferRequest:
    """An inference request, its binary data already read into its tensors."""

    id: str | None
    inputs: tuple[InputTensor, ...]
    outputs: tuple[RequestedOutput, ...] = ()
    parameters: dict[str, Any] | None = None
    binary_output: bool = False
    """The request's `binary_data_output`: outputs not asked for otherwise go as binary data."""


def infer_request(header: Any, binary: bytes | memoryview = b"") -> InferRequest:
    """The inference request in `header` (its decoded JSON), with the binary data that followed it; raises
    `BadRequest` naming what is wrong."""
    if not isinstance(header, dict):
        raise BadRequest("the inference request must be a JSON object")
    request_id = header.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise BadRequest("the request's id must be a string")
    raw_inputs = header.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise BadRequest("the request must list its input tensors in `inputs`")
    data = memoryview(binary)
    inputs, offset = [], 0
    for raw in raw_inputs:
        tensor, used = _input_tensor(raw, data[offset:])
        inputs.append(tensor)
        offset += used
    if offset != len(data):
        raise BadRequest(f"the request has {len(data) - offset} bytes of binary data that no input claims")
    names = [tensor.name for tensor in inputs]
    if len(set(names)) != len(names):
        raise BadRequest("an input tensor is sent more than once")
    parameters = _object(header.get("parameters"), "the request's parameters")
    return InferRequest(
        id=request_id,
        inputs=tuple(inputs),
        outputs=_requested_outputs(header.get("outputs")),
        parameters={k: v for k, v in parameters.items() if k not in _RESERVED_PARAMETERS},
        binary_output=parameters.get("binary_data_output") is True,
    )


def _input_tensor(raw: Any, binary: memoryview) -> tuple[InputTensor, int]:
    """One input tensor, and how many bytes of `binary` (the data not yet claimed) it holds."""
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        raise BadRequest("each input tensor must be an object with a `name`")
    name = raw["name"]
    datatype, shape = raw.get("datatype"), raw.get("shape")
    if datatype != "BYTES" and datatype not in _FORMATS:
        raise BadRequest(f"input tensor {name!r}: unknown datatype {datatype!r}")
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
        raise BadRequest(f"input tensor {name!r}: the shape must be a list of non-negative integers")
    count = math.prod(shape)
    parameters = _object(raw.get("parameters"), f"input tensor {name!r}: parameters")
    size = parameters.get("binary_data_size")
    if size is not None:
        if not _is_int(size) or size < 0 or size > len(binary):
            raise BadRequest(f"input tensor {name!r}: binary_data_size {size!r} exceeds the binary data sent")
        values = decode_binary(datatype, bytes(binary[:size]), count, name=name)
        return InputTensor(name, datatype, tuple(shape), values), size
    if "data" not in raw:
        raise BadRequest(f"input tensor {name!r} has neither `data` nor `binary_data_size`")
    values = _flatten(raw["data"])
    if len(values) != count:
        raise BadRequest(
            f"input tensor {name!r}: shape {shape} holds {count} elements, the data {len(values)}"
        )
    return InputTensor(name, datatype, tuple(shape), values), 0


def _requested_outputs(raw: Any) -> tuple[RequestedOutput, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise BadRequest("the request's `outputs` must be a list")
    requested = []
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise BadRequest("each requested output must be an object with a `name`")
        parameters = _object(item.get("parameters"), f"output {item['name']!r}: parameters")
        binary = parameters.get("binary_data")
        requested.append(RequestedOutput(item["name"], binary if isinstance(binary, bool) else None))
    return tuple(requested)


def _object(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest(f"{what} must be a JSON object")
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _flatten(data: Any) -> list[Any]:
    """A tensor's `data` in row-major order, whether it came flat or nested."""
    if not isinstance(data, list):
        return [data]
    if list not in map(type, data):  # flat already (the type test runs in C: one pass, no Python frame each)
        return data
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        item = next(stack[-1], _END)
        if item is _END:
            stack.pop()
        elif isinstance(item, list):
            stack.append(iter(item))
        else:
            flat.append(item)
    return flat


_END: Any = object()


def decode_binary(datatype: str, raw: bytes, count: int, *, name: str = "") -> list[Any]:
    """The `count` elements of `raw`, a tensor's binary data (BYTES: each a 4-byte little-endian length, then
    its bytes)."""
    if datatype == "BYTES":
        values, offset = [], 0
        while offset < len(raw):
            if offset + 4 > len(raw):
                raise BadRequest(f"input tensor {name!r}: a BYTES element's length is cut short")
            (length,) = struct.unpack_from("<I", raw, offset)
            offset += 4
            if offset + length > len(raw):
                raise BadRequest(f"input tensor {name!r}: a BYTES element is longer than its data")
            values.append(raw[offset : offset + length])
            offset += length
        if len(values) != count:
            raise BadRequest(
                f"input tensor {name!r}: the shape holds {count} elements, the data {len(values)}"
            )
        return values
    code = _FORMATS[datatype]
    size = struct.calcsize(code)
    if len(raw) != count * size:
        raise BadRequest(
            f"input tensor {name!r}: the shape holds {count} {datatype} elements ({count * size} bytes), "
            f"the data {len(raw)} bytes"
        )
    return list(struct.unpack(f"<{count}{code}", raw))


def encode_binary(datatype: str, data: Sequence[Any]) -> bytes:
    """A tensor's elements as binary data (BYTES elements are `str` or `bytes`)."""
    if datatype == "BYTES":
        parts = []
        for value in data:
            item = value.encode() if isinstance(value, str) else bytes(value)
            parts.append(struct.pack("<I", len(item)))
            parts.append(item)
        return b"".join(parts)
    return struct.pack(f"<{len(data)}{_FORMATS[datatype]}", *data)


def parse_infer(spec: ApiSpec, request: InferRequest) -> ParsedRequest:
    """The records (one per row of the first dimension) and parameters of `request`, validated against the
    module's API; raises `BadRequest` for tensors that do not fit it, and the validation's own error for
    values it refuses."""
    tensors = {tensor.name: tensor for tensor in request.inputs}
    columns: dict[str, list[Any]] = {}
    for field in spec.inputs:
        kind = tensor_type(field)
        tensor = tensors.pop(field.name, None)
        if tensor is None:
            if field.required:
                what = "a file, which this protocol cannot send" if kind is None else "a required input"
                raise BadRequest(f"input tensor {field.name!r} is missing: it is {what}")
            continue
        if kind is None:
            raise BadRequest(f"input {field.name!r} is a file, which this protocol cannot send")
        columns[field.name] = _column(tensor, kind)
    if tensors:
        raise BadRequest(f"unknown input tensor {next(iter(tensors))!r}; the model takes {_names(spec)}")
    sizes = {len(column) for column in columns.values()}
    if len(sizes) > 1:
        raise BadRequest("the input tensors disagree on the batch size (their first dimension)")
    rows = sizes.pop() if sizes else 0
    if rows == 0:
        raise BadRequest("the request holds no records: the first dimension of its tensors is 0")
    records = [{name: column[row] for name, column in columns.items()} for row in range(rows)]
    body: dict[str, Any] = {"inputs": records, "parameters": request.parameters or {}}
    if request.outputs:
        body["output_fields"] = [output.name for output in request.outputs]
    return parse_json(spec, body)


def _names(spec: ApiSpec) -> str:
    names = [field.name for field in spec.inputs if tensor_type(field) is not None]
    return ", ".join(repr(name) for name in names) or "no tensors"


def _column(tensor: InputTensor, kind: TensorType) -> list[Any]:
    """One value per record of `tensor`, converted to what the field holds."""
    name, shape = tensor.name, tensor.shape
    if tensor.datatype not in kind.accepts:
        accepted = ", ".join(kind.accepts)
        raise BadRequest(
            f"input tensor {name!r}: datatype {tensor.datatype} is not accepted; send {accepted}"
        )
    values = _elements(tensor, kind)
    if kind.rank == 1:
        if len(shape) == 1 or (len(shape) == 2 and shape[1] == 1):
            return values
        raise BadRequest(f"input tensor {name!r}: expected shape [batch] or [batch, 1], got {list(shape)}")
    if len(shape) != 2:
        raise BadRequest(f"input tensor {name!r}: expected shape [batch, length], got {list(shape)}")
    width = shape[1]
    return [values[row * width : (row + 1) * width] for row in range(shape[0])]


_NUMBERS = frozenset({int, float})


def _elements(tensor: InputTensor, kind: TensorType) -> list[Any]:
    """The tensor's elements as the field's values; numbers and booleans are checked a whole tensor at a
    time (their types tested in C), anything else element by element."""
    data, datatype = tensor.data, tensor.datatype
    types = set(map(type, data))
    if datatype in _FLOATS and types <= _NUMBERS:
        return [float(value) for value in data] if int in types else list(data)
    if datatype in _INTS and types <= {int}:
        return list(data)
    if datatype == "BOOL" and types <= {bool}:
        return list(data)
    return [_element(tensor, value, kind) for value in data]


def _element(tensor: InputTensor, value: Any, kind: TensorType) -> Any:
    datatype = tensor.datatype
    if datatype in _FLOATS and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if datatype in _INTS and _is_int(value):
        return value
    if datatype == "BOOL" and isinstance(value, bool):
        return value
    if datatype == "BYTES" and isinstance(value, str | bytes):
        text = value if isinstance(value, str) else _utf8(tensor.name, value)
        return _json(tensor.name, text) if kind.json else text
    raise BadRequest(f"input tensor {tensor.name!r}: {value!r} is not a {datatype} element")


def _utf8(name: str, value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(f"input tensor {name!r}: a BYTES element is not valid UTF-8 text") from None


def _json(name: str, text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise BadRequest(f"input tensor {name!r}: a BYTES element is not JSON text") from None


@dataclass(frozen=True)
class OutputTensor:
    """One output tensor of an answer: its elements flat, in row-major order; `binary`: sent as binary
    data."""

    name: str
    datatype: str
    shape: list[int]
    data: list[Any]
    binary: bool = False

    def to_json(self) -> dict[str, Any]:
        """The tensor as the answer's JSON lists it (its data left out when it goes as binary)."""
        tensor: dict[str, Any] = {"name": self.name, "datatype": self.datatype, "shape": self.shape}
        if self.binary:
            tensor["parameters"] = {"binary_data_size": len(encode_binary(self.datatype, self.data))}
        else:
            tensor["data"] = self.data
        return tensor


def output_tensors(
    spec: ApiSpec,
    outputs: list[dict[str, Any]],
    *,
    requested: tuple[RequestedOutput, ...] = (),
    binary: bool = False,
) -> list[OutputTensor]:
    """The answer's tensors, from the records a module answered: each declared output that a tensor can hold
    (or those `requested`); `binary`: the request's `binary_data_output`.

    An output whose values this answer cannot put in its declared tensor (a null, rows of different lengths)
    goes as BYTES holding each record's JSON.
    """
    wanted = requested or tuple(
        RequestedOutput(field.name) for field in spec.outputs if tensor_type(field) is not None
    )
    tensors = []
    for output in wanted:
        field = spec.get("outputs", output.name)
        kind = tensor_type(field) if field is not None else None
        if field is None or kind is None:
            raise BadRequest(f"unknown output tensor {output.name!r}")
        column = [record.get(output.name) for record in outputs]
        datatype, shape, data = _output(column, kind)
        as_binary = output.binary if output.binary is not None else binary
        tensors.append(OutputTensor(output.name, datatype, shape, data, as_binary))
    return tensors


def _output(column: list[Any], kind: TensorType) -> tuple[str, list[int], list[Any]]:
    rows = len(column)
    if kind.rank == 1 and all(_fits(kind, value) for value in column):
        if kind.datatype == "BYTES":
            column = [_dump(value) if kind.json else value for value in column]
        return kind.datatype, [rows], column
    if kind.rank == 2 and all(isinstance(row, list) for row in column):
        widths = {len(row) for row in column}
        if len(widths) <= 1 and all(_fits(kind, value) for row in column for value in row):
            width = widths.pop() if widths else 0
            return kind.datatype, [rows, width], [value for row in column for value in row]
    return "BYTES", [rows], [_dump(value) for value in column]


def _fits(kind: TensorType, value: Any) -> bool:
    datatype = kind.datatype
    if datatype == "FP32":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if datatype == "INT64":
        return _is_int(value) and -(2**63) <= value < 2**63
    if datatype == "BOOL":
        return isinstance(value, bool)
    return kind.json or isinstance(value, str)


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
