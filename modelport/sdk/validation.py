"""Request validation driven by the `ApiSpec`: JSON bodies and multipart forms into one `ParsedRequest`.

Every problem is collected, not just the first, and reported as a list of
`{"field": "inputs.image", "code": ..., "message": ...}` entries. File values are only recognised and
shaped here; checking their bytes (size, sniffed type, image dimensions) happens where the bytes are.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_to_bytes

from modelport.sdk.spec import ApiSpec, FieldSpec, Kind, check_value

__all__ = [
    "DataFile",
    "InvalidRequest",
    "ObjectFile",
    "ParsedRequest",
    "UploadedFile",
    "parse_form",
    "parse_json",
]

MODEL_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_DATA_URL = re.compile(
    r"^data:(?P<type>[^;,]*)(?P<params>(;[^;,]*)*?)(?P<b64>;base64)?,(?P<data>.*)$", re.DOTALL
)
_TOP_LEVEL = ("inputs", "parameters", "output_fields", "model_key")
_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}


class InvalidRequest(ValueError):
    """The request does not match the spec; `details` lists each bad field."""

    def __init__(self, details: list[dict[str, str]]) -> None:
        super().__init__("; ".join(f"{d['field']}: {d['message']}" for d in details))
        self.details = details


@dataclass(frozen=True)
class DataFile:
    """A file sent inline as a `data:` URL."""

    data: bytes
    content_type: str


@dataclass(frozen=True)
class ObjectFile:
    """A reference to a stored object, `bucket/key`."""

    ref: str


@dataclass(frozen=True)
class UploadedFile:
    """A multipart part already written to local disk."""

    path: str
    filename: str
    content_type: str
    size: int


FileValue = DataFile | ObjectFile | UploadedFile


@dataclass(frozen=True)
class ParsedRequest:
    records: list[dict[str, Any]]
    parameters: dict[str, Any]
    output_fields: tuple[str, ...]
    model_key: str | None
    batch: bool


class _Problems:
    def __init__(self) -> None:
        self.items: list[dict[str, str]] = []

    def add(self, field: str, code: str, message: str) -> None:
        self.items.append({"field": field, "code": code, "message": message})

    def raise_if_any(self) -> None:
        if self.items:
            raise InvalidRequest(self.items)


def parse_json(spec: ApiSpec, body: Any) -> ParsedRequest:
    """Validate a decoded JSON body (`{"inputs", "parameters", "output_fields", "model_key"}`)."""
    problems = _Problems()
    if not isinstance(body, dict):
        raise InvalidRequest([{"field": "body", "code": "type", "message": "expected a JSON object"}])
    for key in body:
        if key not in _TOP_LEVEL:
            problems.add(str(key), "unknown_field", f"unknown field; expected one of {', '.join(_TOP_LEVEL)}")
    raw_inputs = body.get("inputs", {} if not any(f.required for f in spec.inputs) else None)
    batch = isinstance(raw_inputs, list)
    if raw_inputs is None:
        problems.add("inputs", "required", "inputs are required")
        raw_records: list[Any] = []
    elif batch:
        raw_records = raw_inputs
        if not raw_records:
            problems.add("inputs", "empty", "expected at least one record")
    elif isinstance(raw_inputs, dict):
        raw_records = [raw_inputs]
    else:
        problems.add("inputs", "type", "expected an object (one record) or a list of objects")
        raw_records = []
    records = [
        _record(spec, raw, _prefix(i, batch), problems, _json_value) for i, raw in enumerate(raw_records)
    ]
    parameters = _parameters(spec, body.get("parameters", {}), problems, _json_value)
    output_fields = _output_fields(spec, body.get("output_fields"), problems)
    model_key = _model_key(body.get("model_key"), problems)
    problems.raise_if_any()
    return ParsedRequest(records, parameters, output_fields, model_key, batch)


def parse_form(spec: ApiSpec, form: list[tuple[str, str | UploadedFile]]) -> ParsedRequest:
    """Validate a multipart or urlencoded form.

    Parts are named `inputs.<name>`, `parameters.<name>`, `output_fields` and `model_key`.
    """
    problems = _Problems()
    grouped: dict[str, dict[str, Any]] = {"inputs": {}, "parameters": {}}
    outputs: list[Any] = []
    model_key: Any = None
    for name, value in form:
        group, dot, field_name = name.partition(".")
        if name == "output_fields":
            outputs.extend(v.strip() for v in str(value).split(",") if v.strip())
        elif name == "model_key" and model_key is not None:
            problems.add("model_key", "duplicate", "sent more than once")
        elif name == "model_key":
            model_key = value
        elif dot and group in grouped:
            _add_form_value(spec, grouped[group], group, field_name, value, problems)
        elif name.lstrip().startswith(("{", "[")):
            problems.add(
                "body", "content_type", "this looks like JSON; send it with Content-Type: application/json"
            )
        else:
            problems.add(
                name, "unknown_field", "unknown form field; expected inputs.<name> or parameters.<name>"
            )
    record = _record(spec, grouped["inputs"], "inputs", problems, _form_value)
    parameters = _parameters(spec, grouped["parameters"], problems, _form_value)
    output_fields = _output_fields(spec, outputs or None, problems)
    checked_key = _model_key(model_key, problems)
    problems.raise_if_any()
    return ParsedRequest([record], parameters, output_fields, checked_key, False)


def _add_form_value(
    spec: ApiSpec, target: dict[str, Any], group: str, name: str, value: Any, problems: _Problems
) -> None:
    field = spec.get(group, name)  # type: ignore[arg-type]
    is_list = field is not None and any(t.kind is Kind.LIST for t in field.types)
    if name in target and is_list and isinstance(value, UploadedFile):
        previous = target[name]
        target[name] = [*(previous if isinstance(previous, list) else [previous]), value]
    elif name in target:
        problems.add(f"{group}.{name}", "duplicate", "sent more than once")
    else:
        target[name] = [value] if is_list and isinstance(value, UploadedFile) else value


def _prefix(index: int, batch: bool) -> str:
    return f"inputs[{index}]" if batch else "inputs"


def _record(spec: ApiSpec, raw: Any, prefix: str, problems: _Problems, convert: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        problems.add(prefix, "type", "expected an object of named inputs")
        return {}
    return _fields(spec.inputs, raw, prefix, problems, convert)


def _parameters(spec: ApiSpec, raw: Any, problems: _Problems, convert: Any) -> dict[str, Any]:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        problems.add("parameters", "type", "expected an object of named parameters")
        return {}
    return _fields(spec.parameters, raw, "parameters", problems, convert)


def _fields(
    declared: tuple[FieldSpec, ...], raw: dict[str, Any], prefix: str, problems: _Problems, convert: Any
) -> dict[str, Any]:
    names = {f.name for f in declared}
    for key in raw:
        if key not in names:
            expected = ", ".join(sorted(names)) or "none"
            problems.add(
                f"{prefix}.{key}", "unknown_field", f"not declared by the module (declared: {expected})"
            )
    out: dict[str, Any] = {}
    for field in declared:
        label = f"{prefix}.{field.name}"
        if field.name not in raw or raw[field.name] is None:
            if field.has_default:
                out[field.name] = field.default
            elif not field.optional:
                problems.add(label, "required", "this field is required")
            continue
        value = convert(field, raw[field.name], label, problems)
        if value is not _INVALID:
            out[field.name] = value
    return out


_INVALID: Any = object()


def _json_value(field: FieldSpec, value: Any, label: str, problems: _Problems) -> Any:
    if field.has_file:
        file_value = _json_file(field, value)
        if file_value is not None:
            return file_value
        if not any(t.kind is not Kind.FILE for t in field.types):
            problems.add(label, "type", 'expected a file: {"object": "bucket/key"} or a data: URL')
            return _INVALID
    problem = check_value(field, value)
    if problem is not None:
        problems.add(label, _code(problem), problem)
        return _INVALID
    return value


def _json_file(field: FieldSpec, value: Any) -> Any:
    if isinstance(value, list) and value and any(t.kind is Kind.LIST for t in field.types):
        files = [_single_json_file(v) for v in value]
        return files if all(f is not None for f in files) else None
    return _single_json_file(value)


def _single_json_file(value: Any) -> FileValue | None:
    if isinstance(value, dict) and set(value) == {"object"} and isinstance(value["object"], str):
        return ObjectFile(value["object"])
    if isinstance(value, str) and value.startswith("data:"):
        return _decode_data_url(value)
    return None


def _decode_data_url(url: str) -> DataFile | None:
    match = _DATA_URL.match(url)
    if match is None:
        return None
    try:
        data = (
            base64.b64decode(match["data"], validate=True)
            if match["b64"]
            else unquote_to_bytes(match["data"])
        )
    except (binascii.Error, ValueError):
        return None
    return DataFile(data, match["type"].strip().lower() or "application/octet-stream")


def _form_value(field: FieldSpec, value: Any, label: str, problems: _Problems) -> Any:
    if isinstance(value, UploadedFile) or (
        isinstance(value, list) and all(isinstance(v, UploadedFile) for v in value)
    ):
        if field.has_file:
            return value
        problems.add(label, "type", f"expected {field.type_text}, got a file")
        return _INVALID
    text = str(value)
    if field.has_file and text.startswith("data:"):
        decoded = _decode_data_url(text)
        if decoded is not None:
            return decoded
    for type_ in sorted(field.types, key=lambda t: t.kind is Kind.STR):
        parsed = _from_text(type_.kind, text)
        if parsed is not _INVALID and check_value(field, parsed) is None:
            return parsed
    if field.has_file and not any(t.kind is not Kind.FILE for t in field.types):
        problems.add(label, "type", "expected a file part")
        return _INVALID
    fallback = _from_text(field.types[0].kind, text)
    problem = check_value(field, fallback) if fallback is not _INVALID else f"expected {field.type_text}"
    problems.add(label, _code(problem) if problem else "type", problem or f"expected {field.type_text}")
    return _INVALID


def _code(problem: str) -> str:
    """The stable code of a `check_value` problem."""
    if problem.startswith("must be one of"):
        return "choice"
    if " must be at " in problem:
        return "range"
    return "type"


def _from_text(kind: Kind, text: str) -> Any:
    try:
        if kind is Kind.STR:
            return text
        if kind is Kind.INT:
            return int(text.strip())
        if kind is Kind.FLOAT:
            return float(text.strip())
        if kind is Kind.BOOL:
            lowered = text.strip().lower()
            return True if lowered in _TRUE else False if lowered in _FALSE else _INVALID
        if kind in (Kind.JSON, Kind.LIST):
            return json.loads(text)
    except ValueError:
        return _INVALID
    return _INVALID


def _output_fields(spec: ApiSpec, raw: Any, problems: _Problems) -> tuple[str, ...]:
    declared = spec.output_names
    if raw is None or raw == []:
        return declared
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not all(isinstance(v, str | dict) for v in raw):
        problems.add("output_fields", "type", "expected a list of output names")
        return declared
    names = [v.get("name") if isinstance(v, dict) else v for v in raw]
    unknown = [n for n in names if n not in declared]
    if unknown:
        problems.add(
            "output_fields", "unknown_field", f"unknown outputs {unknown}; declared: {', '.join(declared)}"
        )
        return declared
    return tuple(n for n in declared if n in names)


def _model_key(raw: Any, problems: _Problems) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, str) or not MODEL_KEY.match(raw):
        problems.add("model_key", "type", "expected 1-128 letters, digits, '.', '_' or '-'")
        return None
    return raw
