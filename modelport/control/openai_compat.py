"""OpenAI's models and embeddings API over modules: which modules are models, and how an embeddings request
becomes a call of one.

A module is a model of the OpenAI-compatible routes when its manifest gives it a role (`spec.openai`,
`OpenAiSpec`). An embeddings request becomes one call of the module through `Calls`, like any call (request
log, statistics, metrics, deadline): each string is one record (batched by the platform as it batches any
call), sent as the role's `input` field, and each record's `output` field is its vector. Errors keep the
platform's statuses; `openai_error` writes them in OpenAI's shape, with OpenAI's codes where it has its own.
"""

from __future__ import annotations

import base64
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from modelport.control.access import AccessPolicies, may_call
from modelport.control.calls import Calls, ModuleCall
from modelport.control.identity import Principal
from modelport.control.modules import ModuleRegistry, ServedModule
from modelport.core.errors import BadModuleOutput, BadRequest, ModuleNotFound, ValidationFailed, field_error
from modelport.core.manifests import OpenAiSpec
from modelport.sdk import ApiSpec
from modelport.sdk.spec import Kind
from modelport.sdk.validation import InvalidRequest, ParsedRequest, parse_json

__all__ = [
    "MAX_INPUTS",
    "EmbeddingsRequest",
    "OpenAiModels",
    "count_tokens",
    "embeddings_answer",
    "encode_vector",
    "module_request",
    "openai_error",
    "parse_embeddings",
    "requested_model",
    "role_of",
]

Encoding = Literal["float", "base64"]
MAX_INPUTS = 2048
"""Most strings one embeddings request may hold (OpenAI's own limit)."""
_FIELD_PATH = re.compile(r"([a-z_]+)(?:\[(\d+)\])?\.?(.*)")
"""A module field's path in a validation problem: `inputs[3].text`, `parameters.dimensions`."""
_FIELDS = ("model", "input", "encoding_format", "dimensions", "user")
_TYPES = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}
_CODES = {
    "module_not_found": "model_not_found",
    "unauthorized": "invalid_api_key",
    "invalid_token": "invalid_api_key",
    "rate_limited": "rate_limit_exceeded",
}


@dataclass(frozen=True)
class EmbeddingsRequest:
    """A `POST /v1/embeddings` body, checked: the module (`model`), the strings, how to answer."""

    model: str
    texts: tuple[str, ...]
    encoding_format: Encoding = "float"
    dimensions: int | None = None


def requested_model(body: Any) -> str:
    """The `model` a decoded body names; `BadRequest` (param `model`) when it names none."""
    if not isinstance(body, dict):
        raise _bad("body", "expected a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("model", "`model` is required: the name of the module to call")
    return model


def parse_embeddings(body: Any) -> EmbeddingsRequest:
    """The embeddings request a decoded body makes; `BadRequest` naming the field (`param`) otherwise.

    `input` is a string or a list of strings (token arrays are refused: modules take text), `encoding_format`
    `float` or `base64`, `dimensions` a positive integer; `user` is accepted and ignored."""
    model = requested_model(body)
    unknown = sorted(str(key) for key in body if key not in _FIELDS)
    if unknown:
        raise _bad(unknown[0], f"unrecognized request argument {unknown[0]!r}; known: {', '.join(_FIELDS)}")
    texts = _texts(body.get("input"))
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise _bad("encoding_format", f"encoding_format must be `float` or `base64`, not {encoding!r}")
    dimensions = body.get("dimensions")
    if dimensions is not None and (isinstance(dimensions, bool) or not isinstance(dimensions, int)):
        raise _bad("dimensions", "dimensions must be an integer")
    if dimensions is not None and dimensions < 1:
        raise _bad("dimensions", "dimensions must be at least 1")
    return EmbeddingsRequest(model, texts, "base64" if encoding == "base64" else "float", dimensions)


def _texts(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        values: list[Any] = [value]
    elif isinstance(value, list) and value:
        values = value
    elif value is None:
        raise _bad("input", "`input` is required: a string or a list of strings")
    else:
        raise _bad("input", "`input` must be a string or a non-empty list of strings")
    if any(isinstance(item, int | list) and not isinstance(item, bool) for item in values):
        raise _bad("input", "token arrays are not accepted: send the text itself")
    if not all(isinstance(item, str) for item in values):
        raise _bad("input", "`input` must be a string or a list of strings")
    if len(values) > MAX_INPUTS:
        raise _bad("input", f"`input` holds {len(values)} strings; at most {MAX_INPUTS} at once")
    if not all(values):
        raise _bad("input", "`input` must not hold empty strings")
    return tuple(values)


def _bad(param: str, message: str) -> BadRequest:
    return BadRequest(message, details=[field_error(param, "invalid", message)])


def role_of(served: ServedModule) -> OpenAiSpec | None:
    """The version's role behind the OpenAI-compatible routes; None when it has none."""
    role = served.definition.manifest.spec.openai
    return role if role is not None and role.embeddings else None


def module_request(request: EmbeddingsRequest, role: OpenAiSpec, spec: ApiSpec) -> ParsedRequest:
    """The module's request for `request`: one record per string, validated against the module's API
    (`ValidationFailed`, its fields named as OpenAI's: `input`, `dimensions`)."""
    assert role.input is not None and role.output is not None
    text = spec.get("inputs", role.input)
    as_list = text is not None and not any(t.kind is Kind.STR for t in text.types)
    records: list[dict[str, Any]] = [{role.input: [value] if as_list else value} for value in request.texts]
    parameters: dict[str, Any] = {}
    if request.dimensions is not None:
        if role.dimensions is None:
            raise _bad("dimensions", f"model {request.model!r} does not take `dimensions`")
        if spec.get("parameters", role.dimensions) is not None:
            parameters[role.dimensions] = request.dimensions
        else:
            for record in records:
                record[role.dimensions] = request.dimensions
    body = {"inputs": records, "parameters": parameters, "output_fields": [role.output]}
    try:
        return parse_json(spec, body)
    except InvalidRequest as exc:
        details = [_as_openai_field(detail, role) for detail in exc.details]
        first = details[0]
        raise ValidationFailed(
            f"the request does not match model {request.model!r}: {first['field']}: {first['message']}",
            details=details,
        ) from None


def _as_openai_field(detail: Mapping[str, str], role: OpenAiSpec) -> dict[str, str]:
    """A module field's problem, named as the field of OpenAI's body it comes from."""
    match = _FIELD_PATH.fullmatch(detail["field"])
    group, index, name = match.groups() if match else ("", None, "")
    if group == "parameters" or name == role.dimensions:
        field = "dimensions"
    elif group == "inputs" and index is not None:
        field = f"input[{index}]"
    else:
        field = "input"
    return field_error(field, detail["code"], detail["message"])


def embeddings_answer(
    request: EmbeddingsRequest, role: OpenAiSpec, outputs: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """OpenAI's answer: each record's vector (as asked: floats, or base64) with its index, and the usage."""
    assert role.output is not None
    data = []
    for index, record in enumerate(outputs):
        vector = record[role.output]
        if request.dimensions is not None and len(vector) != request.dimensions:
            raise BadModuleOutput(
                f"model {request.model!r} answered {len(vector)} numbers where {request.dimensions} "
                "were asked for"
            )
        data.append(
            {
                "object": "embedding",
                "index": index,
                "embedding": encode_vector(vector, request.encoding_format),
            }
        )
    tokens = count_tokens(request.texts)
    return {
        "object": "list",
        "data": data,
        "model": request.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def encode_vector(vector: Sequence[float], encoding: Encoding) -> list[float] | str:
    """The vector as the caller asked for it: the numbers, or (`base64`) its little-endian float32 bytes
    in base64, as OpenAI sends them."""
    if encoding == "float":
        return list(vector)
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


def count_tokens(texts: Sequence[str]) -> int:
    """The usage the answer reports: whitespace-separated words (modules have no tokenizer to ask)."""
    return sum(len(text.split()) for text in texts)


def openai_error(status: int, code: str, message: str, details: Any = None) -> dict[str, Any]:
    """An error the platform answers with `status`, `code` and `details`, in OpenAI's shape: `{"error":
    {"message", "type", "param", "code"}}`, where `param` is the first field `details` names."""
    kind = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    param = None
    if isinstance(details, list) and details and isinstance(details[0], dict):
        field = details[0].get("field")
        param = field if isinstance(field, str) else None
    return {"error": {"message": message, "type": kind, "param": param, "code": _CODES.get(code, code)}}


class OpenAiModels:
    """The modules behind the OpenAI-compatible routes, as each caller may see them."""

    def __init__(self, *, registry: ModuleRegistry, policies: AccessPolicies, calls: Calls) -> None:
        self.registry, self.policies, self.calls = registry, policies, calls

    async def models(self, principal: Principal) -> list[dict[str, Any]]:
        """`/v1/models`' entries: every served module with a role that `principal` may call, by name."""
        found = []
        for served in sorted(self.registry.served(), key=lambda served: served.name):
            if role_of(served) is not None:
                policy = await self.policies.current(served.name)
                if policy is not None and may_call(principal, policy):
                    found.append(_model(served, policy.owner))
        return found

    async def model(self, principal: Principal, name: str) -> dict[str, Any]:
        """One entry of `/v1/models`; `ModuleNotFound` unless `principal` may call it and it has a role."""
        policy = await self.policies.current(name)
        served = self.registry.active(name)
        if policy is None or served is None or role_of(served) is None or not may_call(principal, policy):
            raise ModuleNotFound(f"no model named {name!r}")
        return _model(served, policy.owner)

    def route(self, call: ModuleCall, name: str) -> tuple[ServedModule, OpenAiSpec]:
        """The version that serves `call` of the model `name`, with its role; `ModuleNotFound` unless it
        serves embeddings."""
        served = self.calls.route(call, name)
        role = role_of(served)
        if role is None or not role.embeddings:
            raise ModuleNotFound(f"model {name!r} does not serve embeddings")
        return served, role


def _model(served: ServedModule, owner: str | None) -> dict[str, Any]:
    return {
        "id": served.name,
        "object": "model",
        "created": int(served.started),
        "owned_by": owner or "modelport",
    }
