"""The OpenAPI 3.1 description of a module's HTTP API, built from its `ApiSpec`.

`module_openapi` is the whole document of one module (what `modelport dev` serves). `module_paths` is the
predict path of one module and the components it refers to, so that the platform's document can hold many
modules side by side: a module's components are named after it (`ReceiptOcrPredictRequest`), the shared error
and file schemas are not, and `merge_components` joins the pieces.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Literal
from urllib.parse import quote

from modelport.sdk.spec import ApiSpec, FieldSpec, Kind, TypeSpec

__all__ = [
    "MODEL_KEY_PATTERN",
    "OPENAPI_VERSION",
    "Mode",
    "component_prefix",
    "field_schema",
    "health_paths",
    "merge_components",
    "module_openapi",
    "module_paths",
    "module_schemas",
    "predict_operation",
    "predict_path",
    "shared_schemas",
]

OPENAPI_VERSION = "3.1.0"
MODEL_KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"

Mode = Literal["json", "form", "output"]
"""Where a field's schema is used: a JSON request, a multipart request, or a response."""

_UNITS = (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024))
_ERRORS: tuple[tuple[str, str, str], ...] = (
    ("400", "Error", "The request is malformed (`bad_request`, `invalid_json`)."),
    ("408", "Error", "The body did not arrive in time (`body_timeout`); the connection is closed."),
    ("413", "Error", "The request body or a file is too large (`payload_too_large`)."),
    (
        "415",
        "Error",
        "The request or a file has a content type not accepted here (`unsupported_media_type`).",
    ),
    ("422", "ValidationError", "The request does not fit the module's API; `details` lists each bad field."),
    ("500", "Error", "The module failed (`module_error`, `bad_module_output`) or the server did."),
    (
        "503",
        "Error",
        "No worker can take the request now (`module_unavailable`, `overloaded`...), or the server holds "
        "too many request bodies at once (`overloaded`); retry after `Retry-After` seconds.",
    ),
    (
        "504",
        "Error",
        "The call passed its deadline: waiting for a worker (`queue_timeout`, it never ran) or running "
        "(`module_timeout`).",
    ),
)


# The documents


def module_openapi(
    spec: ApiSpec,
    *,
    module: str,
    version: str | None = None,
    server_url: str | None = None,
    pipeline: bool = False,
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of one module (or of the `pipeline` of that name): predict, its own document,
    and the health probes."""
    paths, components = module_paths(spec, module=module, pipeline=pipeline)
    info: dict[str, Any] = {"title": module, "version": version or "dev"}
    if spec.description:
        info["description"] = spec.description
    document: dict[str, Any] = {
        "openapi": OPENAPI_VERSION,
        "info": info,
        "paths": {**paths, **_document_path(module, pipeline), **health_paths()},
        "components": components,
    }
    if server_url:
        document["servers"] = [{"url": server_url}]
    return document


def module_paths(
    spec: ApiSpec, *, module: str, pipeline: bool = False
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The predict path of one module (or pipeline) and the components it refers to (its schemas and shared
    ones)."""
    operation = predict_operation(spec, module=module, pipeline=pipeline)
    paths = {predict_path(module, pipeline=pipeline): {"post": operation}}
    components = {"schemas": {**shared_schemas(), **module_schemas(spec, module=module, pipeline=pipeline)}}
    return paths, components


def merge_components(*parts: dict[str, Any]) -> dict[str, Any]:
    """Join component maps (`{"schemas": {...}, ...}`); a name used twice must mean the same thing."""
    merged: dict[str, dict[str, Any]] = {}
    for part in parts:
        for section, entries in part.items():
            target = merged.setdefault(section, {})
            for name, value in entries.items():
                if name in target and target[name] != value:
                    raise ValueError(f"component {section}/{name} is defined twice, differently")
                target[name] = value
    return merged


def health_paths() -> dict[str, Any]:
    """`GET /healthz` (alive) and `GET /readyz` (able to serve)."""
    live = {"200": {"description": "The server is alive."}}
    ready = {
        "200": {"description": "The server can serve requests."},
        "503": _error_response("Error", "The server is not ready yet."),
    }
    return {
        "/healthz": {"get": _get("healthz", "Liveness probe", live)},
        "/readyz": {"get": _get("readyz", "Readiness probe", ready)},
    }


def _document_path(module: str, pipeline: bool = False) -> dict[str, Any]:
    ok = {
        "200": {
            "description": "This document.",
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    }
    operation = _get(f"openapi{component_prefix(module)}", f"The OpenAPI document of {module}", ok)
    return {f"{_module_url(module, pipeline)}/openapi.json": {"get": {**operation, "tags": [module]}}}


def _get(operation_id: str, summary: str, responses: dict[str, Any]) -> dict[str, Any]:
    return {"operationId": operation_id, "summary": summary, "tags": ["health"], "responses": responses}


# Naming


def predict_path(module: str, *, pipeline: bool = False) -> str:
    """`/api/v1/modules/<module>/predict` (`/api/v1/pipelines/<pipeline>/predict`), the name escaped for a
    URL path."""
    return f"{_module_url(module, pipeline)}/predict"


def _module_url(module: str, pipeline: bool = False) -> str:
    return f"/api/v1/{'pipelines' if pipeline else 'modules'}/{quote(module, safe='')}"


def component_prefix(module: str) -> str:
    """A component-name-safe prefix for one module's schemas: `receipt-ocr` → `ReceiptOcr`."""
    words = re.findall(r"[A-Za-z0-9]+", module)
    prefix = "".join(w[:1].upper() + w[1:] for w in words) or "Module"
    return f"M{prefix}" if prefix[0].isdigit() else prefix


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


# The predict operation


def predict_operation(spec: ApiSpec, *, module: str, pipeline: bool = False) -> dict[str, Any]:
    """The `POST /api/v1/modules/<module>/predict` operation (a pipeline's: `/api/v1/pipelines/...`); its
    schemas come from `module_schemas`."""
    prefix = component_prefix(module)
    pin = {
        "name": "version",
        "in": "query",
        "required": False,
        "description": "Run this version of the module instead of the deployed one.",
        "schema": {"type": "string"},
    }
    operation: dict[str, Any] = {
        "operationId": f"predict{prefix}",
        "summary": spec.title or f"Run {module}",
        "tags": [module],
        "parameters": [] if pipeline else [pin],
        "requestBody": _request_body(spec, prefix),
        "responses": _predict_responses(prefix, pipeline),
    }
    if spec.description:
        operation["description"] = spec.description
    return operation


def _request_body(spec: ApiSpec, prefix: str) -> dict[str, Any]:
    return {
        "required": True,
        "description": (
            "JSON: one record of inputs (an object) or several (a list). Multipart: one record, a part per "
            "input (`inputs.<name>`) and per parameter (`parameters.<name>`)."
        ),
        "content": {
            "application/json": {"schema": _ref(f"{prefix}PredictRequest")},
            "multipart/form-data": {"schema": _ref(f"{prefix}PredictForm"), "encoding": _form_encoding(spec)},
        },
    }


def _form_encoding(spec: ApiSpec) -> dict[str, Any]:
    encoding: dict[str, Any] = {}
    for field in (*spec.inputs, *spec.parameters):
        content_type = _part_content_type(field)
        if content_type:
            encoding[f"{field.group}.{field.name}"] = {"contentType": content_type}
    return encoding


def _part_content_type(field: FieldSpec) -> str | None:
    file_type = _file_type(field)
    if file_type is not None:
        return ", ".join(file_type.mime) or "*/*"
    return None


def _file_type(field: FieldSpec) -> TypeSpec | None:
    """The file alternative of a field, looking inside `list[...]`."""
    for type_ in field.types:
        while type_.kind is Kind.LIST and type_.item is not None:
            type_ = type_.item
        if type_.kind is Kind.FILE:
            return type_
    return None


def _predict_responses(prefix: str, pipeline: bool = False) -> dict[str, Any]:
    headers = {"X-Request-Id": _header("The id of this request, also found in the logs.")}
    if not pipeline:
        headers["X-Model-Version"] = _header("The module version that answered.")
    ok = {
        "description": "The outputs, one record per input record (a list when the request sent a list).",
        "headers": headers,
        "content": {"application/json": {"schema": _ref(f"{prefix}PredictResponse")}},
    }
    errors = {status: _error_response(schema, text) for status, schema, text in _ERRORS}
    errors["503"]["headers"]["Retry-After"] = {
        "description": "Seconds to wait before retrying.",
        "schema": {"type": "integer", "minimum": 0},
    }
    return {"200": ok, **errors}


def _error_response(schema: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "headers": {"X-Request-Id": _header("The id of this request, also found in the logs.")},
        "content": {"application/json": {"schema": _ref(schema)}},
    }


def _header(description: str) -> dict[str, Any]:
    return {"description": description, "schema": {"type": "string"}}


# Component schemas


def shared_schemas() -> dict[str, Any]:
    """The schemas every module's operations share: errors and file references."""
    text = {"type": "string"}
    return {
        "Error": _error_schema({}),
        "ValidationError": _error_schema({"type": "array", "items": _ref("FieldError")}),
        "FieldError": {
            "type": "object",
            "required": ["field", "code", "message"],
            "properties": {"field": text, "code": text, "message": text},
        },
        "FileReference": {
            "description": 'A file: a stored object (`{"object": "bucket/key"}`) or a `data:` URL.',
            "oneOf": [
                {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["object"],
                    "properties": {"object": {"type": "string", "description": "`bucket/key` in storage"}},
                },
                {"type": "string", "pattern": "^data:", "description": "A data URL (RFC 2397)"},
            ],
        },
        "FileOutput": {
            "type": "object",
            "required": ["url", "content_type", "size"],
            "properties": {
                "url": {"type": "string", "description": "Where to fetch the file (or a `data:` URL)"},
                "content_type": text,
                "size": {"type": "integer", "minimum": 0, "description": "Size in bytes"},
            },
        },
    }


def _error_schema(details: dict[str, Any]) -> dict[str, Any]:
    body = {
        "type": "object",
        "required": ["code", "message", *(["details"] if details else [])],
        "properties": {
            "code": {"type": "string", "description": "A stable machine-readable code"},
            "message": {"type": "string", "description": "What went wrong, for people"},
            "details": details,
        },
    }
    return {"type": "object", "required": ["error"], "properties": {"error": body}}


def module_schemas(spec: ApiSpec, *, module: str, pipeline: bool = False) -> dict[str, Any]:
    """The schemas of one module's (or pipeline's) request and response, named with
    `component_prefix(module)`."""
    p = component_prefix(module)
    record = _ref(f"{p}Inputs")
    return {
        f"{p}Inputs": _record_schema(spec.inputs, "json", closed=True),
        f"{p}Parameters": _record_schema(spec.parameters, "json", closed=True),
        f"{p}Outputs": _record_schema(spec.outputs, "output", closed=False),
        f"{p}PredictRequest": _json_request(spec, p, record),
        f"{p}PredictForm": _form_request(spec),
        f"{p}PredictResponse": _response_schema(p, pipeline),
    }


def _record_schema(fields: tuple[FieldSpec, ...], mode: Mode, *, closed: bool) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {f.name: field_schema(f, mode=mode) for f in fields},
    }
    required = [f.name for f in fields if f.required and mode != "output"]
    if required:
        schema["required"] = required
    if closed:
        schema["additionalProperties"] = False
    return schema


def _json_request(spec: ApiSpec, p: str, record: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "inputs": {
                "description": "One record of inputs, or a list of records (a batch).",
                "oneOf": [record, {"type": "array", "items": record, "minItems": 1}],
            },
            "parameters": {**_ref(f"{p}Parameters"), "description": "Applies to every record."},
            "output_fields": _output_fields_schema(spec),
            "model_key": _model_key_schema(),
        },
    }
    required = [g for g in ("inputs", "parameters") if any(f.required for f in spec.group(g))]
    if required:
        schema["required"] = required
    return schema


def _form_request(spec: ApiSpec) -> dict[str, Any]:
    fields = (*spec.inputs, *spec.parameters)
    schema: dict[str, Any] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            **{f"{f.group}.{f.name}": field_schema(f, mode="form") for f in fields},
            "output_fields": _output_fields_schema(spec),
            "model_key": _model_key_schema(),
        },
    }
    required = [f"{f.group}.{f.name}" for f in fields if f.required]
    if required:
        schema["required"] = required
    return schema


def _output_fields_schema(spec: ApiSpec) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "array",
        "description": "The outputs to compute and return (default: all).",
        "uniqueItems": True,
    }
    if spec.outputs:
        schema["items"] = {"type": "string", "enum": list(spec.output_names)}
    else:
        schema["maxItems"] = 0
    return schema


def _model_key_schema() -> dict[str, Any]:
    return {
        "type": "string",
        "pattern": MODEL_KEY_PATTERN,
        "description": "Which model (weights) to use; default: the module's own.",
    }


def _response_schema(p: str, pipeline: bool = False) -> dict[str, Any]:
    record = _ref(f"{p}Outputs")
    if pipeline:
        step = {
            "type": "object",
            "required": ["module", "version"],
            "properties": {"module": {"type": "string"}, "version": {"type": "string"}},
        }
        return {
            "type": "object",
            "required": ["outputs", "pipeline", "steps", "request_id"],
            "properties": {
                "outputs": {"oneOf": [record, {"type": "array", "items": record}]},
                "pipeline": {"type": "string"},
                "steps": {
                    "type": "object",
                    "additionalProperties": step,
                    "description": "The module and version each step ran, by step name.",
                },
                "request_id": {
                    "type": "string",
                    "description": "Each step's call is in the request log with this as its `parent_id`.",
                },
            },
        }
    return {
        "type": "object",
        "required": ["outputs", "module", "version", "request_id"],
        "properties": {
            "outputs": {"oneOf": [record, {"type": "array", "items": record}]},
            "module": {"type": "string"},
            "version": {"type": "string"},
            "request_id": {"type": "string"},
        },
    }


# Field schemas


def field_schema(field: FieldSpec, *, mode: Mode = "json") -> dict[str, Any]:
    """The JSON Schema of one field's value in a JSON request, a multipart form or a response."""
    alternatives = [_type_schema(t, mode, field) for t in field.types]
    if field.has_default and field.default is None:
        alternatives.append({"type": "null"})
    schema: dict[str, Any] = {"title": field.name}
    schema.update(alternatives[0] if len(alternatives) == 1 else {"anyOf": alternatives})
    description = " ".join(filter(None, [field.description, _file_note(field, mode)]))
    if description:
        schema["description"] = description
    literal = _form_literal if mode == "form" else _same
    if field.choices is not None:
        schema["enum"] = [literal(c) for c in field.choices]
    if field.has_default:
        schema["default"] = literal(field.default)
    if field.max_bytes is not None and mode != "output":
        schema["x-max-bytes"] = field.max_bytes
    return schema


def _type_schema(type_: TypeSpec, mode: Mode, field: FieldSpec | None) -> dict[str, Any]:
    """One alternative; `field` carries the bounds (None for list items, which have none)."""
    kind = type_.kind
    if kind is Kind.FILE:
        return _file_schema(mode)
    if kind is Kind.LIST:
        assert type_.item is not None
        if mode == "form" and not type_.has_file:
            return _json_text(_type_schema(type_, "json", field))
        return {"type": "array", "items": _type_schema(type_.item, mode, None), **_bounds(kind, field)}
    if kind is Kind.JSON:
        return _json_text({}) if mode == "form" else {}
    scalar = {Kind.STR: "string", Kind.INT: "integer", Kind.FLOAT: "number", Kind.BOOL: "boolean"}[kind]
    return {"type": scalar, **_bounds(kind, field)}


def _form_literal(value: Any) -> Any:
    """How a value is written in a multipart part: lists and objects as JSON text."""
    return json.dumps(value, ensure_ascii=False) if isinstance(value, list | dict) else value


def _same(value: Any) -> Any:
    return value


def _json_text(schema: dict[str, Any]) -> dict[str, Any]:
    """A multipart part whose text is JSON matching `schema`."""
    return {"type": "string", "contentMediaType": "application/json", "contentSchema": schema}


def _file_schema(mode: Mode) -> dict[str, Any]:
    if mode == "output":
        return _ref("FileOutput")
    if mode == "json":
        return _ref("FileReference")
    return {"type": "string", "format": "binary", "contentMediaType": "application/octet-stream"}


def _bounds(kind: Kind, field: FieldSpec | None) -> dict[str, Any]:
    low = field.minimum if field is not None else None
    high = field.maximum if field is not None else None
    if kind in (Kind.INT, Kind.FLOAT):
        names = ("minimum", "maximum")
    elif kind not in (Kind.STR, Kind.LIST):
        return {}
    else:  # lengths are whole and never negative
        if high is not None and high < 0:
            return {"not": {}}
        names = ("minLength", "maxLength") if kind is Kind.STR else ("minItems", "maxItems")
        low = math.ceil(low) if low is not None and low > 0 else None
        high = math.floor(high) if high is not None else None
    return {name: value for name, value in zip(names, (low, high), strict=True) if value is not None}


def _file_note(field: FieldSpec, mode: Mode) -> str:
    file_type = _file_type(field)
    if file_type is None or mode == "output":
        return ""
    accepted = f"Accepted types: {', '.join(file_type.mime)}." if file_type.mime else "Any file type."
    if field.max_bytes is None:
        return accepted
    return f"{accepted} At most {_size_text(field.max_bytes)}."


def _size_text(size: int) -> str:
    for unit, factor in _UNITS:
        if size >= factor and size % factor == 0:
            return f"{size // factor} {unit}"
    return f"{size} bytes"
