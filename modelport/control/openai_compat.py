"""OpenAI's models, embeddings and chat completions API over modules: which modules are models, and how a
request becomes a call of one.

A module is a model of the OpenAI-compatible routes when its manifest gives it a role (`spec.openai`,
`OpenAiSpec`). A request becomes one call of the module through `Calls`, like any call (request log,
statistics, metrics, deadline). An embeddings request: each string is one record (batched by the platform as
it batches any call), sent as the role's `input` field, and each record's `output` field is its vector. A chat
completion: one record holding the conversation in the role's `messages` field, OpenAI's options as the
module's parameters of the same names, the reply from its `output` field (streamed as OpenAI's chunks when
asked). Errors keep the platform's statuses; `openai_error` writes them in OpenAI's shape, with OpenAI's
codes where it has its own.
"""

from __future__ import annotations

import base64
import math
import re
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from modelport.control.access import AccessPolicies, may_call
from modelport.control.calls import Calls, ModuleCall
from modelport.control.identity import Principal
from modelport.control.modules import ModuleRegistry, ServedModule
from modelport.core.errors import BadModuleOutput, BadRequest, ModuleNotFound, ValidationFailed, field_error
from modelport.core.manifests import CHAT_OPTIONS, CHAT_OUTPUTS, OpenAiSpec
from modelport.sdk import ApiSpec
from modelport.sdk.spec import Kind
from modelport.sdk.validation import InvalidRequest, ParsedRequest, parse_json

__all__ = [
    "MAX_INPUTS",
    "ChatRequest",
    "ChatStream",
    "EmbeddingsRequest",
    "OpenAiModels",
    "chat_answer",
    "chat_request",
    "count_tokens",
    "embeddings_answer",
    "encode_vector",
    "module_request",
    "openai_error",
    "parse_chat",
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
    return role if role is not None and (role.embeddings or role.chat) else None


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
    return _parsed(spec, body, request.model, lambda detail: _as_openai_field(detail, role))


def _parsed(
    spec: ApiSpec, body: dict[str, Any], model: str, rename: Callable[[Mapping[str, str]], dict[str, str]]
) -> ParsedRequest:
    """`body` parsed against the module's API; `ValidationFailed` naming each problem's field as OpenAI's
    body names it (`rename`)."""
    try:
        return parse_json(spec, body)
    except InvalidRequest as exc:
        details = [rename(detail) for detail in exc.details]
        first = details[0]
        raise ValidationFailed(
            f"the request does not match model {model!r}: {first['field']}: {first['message']}",
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


# Chat completions

ROLES = ("system", "developer", "user", "assistant")
"""The roles a conversation's messages may have (tools are not served)."""
MAX_STOPS = 4
_CHAT_FIELDS = (
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "stop",
    "seed",
    "stream",
    "stream_options",
    "response_format",
    "n",
    "user",
)
_FORMATS = ("text", "json_object", "json_schema")


@dataclass(frozen=True)
class ChatRequest:
    """A `POST /v1/chat/completions` body, checked: the module (`model`), the conversation (each message's
    content as text), the options given (by the module's parameter names), and whether to stream."""

    model: str
    messages: tuple[dict[str, str], ...]
    options: dict[str, Any] = field(default_factory=dict)
    stream: bool = False
    include_usage: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    """Fields OpenAI does not define: each goes to the module's parameter of the same name, if it has one."""


def parse_chat(body: Any) -> ChatRequest:
    """The chat completion a decoded body asks for; `BadRequest` naming the field (`param`) otherwise.

    `messages` is a non-empty list of `{"role", "content"}` (content a string or a list of text parts;
    `name` is accepted); `max_tokens` (or `max_completion_tokens`) a positive integer, `temperature` 0..2,
    `top_p` above 0 and at most 1, `stop` a string or up to 4, `seed` an integer, `response_format` one of
    OpenAI's three types, `n` only 1; `user` is accepted and ignored. Other fields are kept in `extra`, for
    `chat_request` to give the module parameters of the same names (a model's own `top_k`, say)."""
    model = requested_model(body)
    messages = _messages(body.get("messages"))
    options: dict[str, Any] = {}
    if "max_tokens" in body and "max_completion_tokens" in body:
        raise _bad("max_tokens", "give `max_tokens` or `max_completion_tokens`, not both")
    for name in ("max_tokens", "max_completion_tokens"):
        if body.get(name) is not None:
            options["max_tokens"] = _integer(body, name, minimum=1)
    if body.get("temperature") is not None:
        options["temperature"] = _number(body, "temperature", 0.0, 2.0)
    if body.get("top_p") is not None:
        top_p = _number(body, "top_p", 0.0, 1.0)
        if top_p == 0:
            raise _bad("top_p", "top_p must be above 0")
        options["top_p"] = top_p
    if body.get("stop") is not None:
        options["stop"] = _stops(body["stop"])
    if body.get("seed") is not None:
        options["seed"] = _integer(body, "seed")
    if body.get("response_format") is not None:
        response_format = _response_format(body["response_format"])
        if response_format["type"] != "text":
            options["response_format"] = response_format
    if body.get("n") is not None and (_integer(body, "n", minimum=1) != 1):
        raise _bad("n", "only one choice per request is served (`n` 1)")
    stream = body.get("stream") or False
    if not isinstance(stream, bool):
        raise _bad("stream", "stream must be true or false")
    include_usage = _include_usage(body.get("stream_options"), stream)
    extra = {str(key): value for key, value in body.items() if key not in _CHAT_FIELDS}
    return ChatRequest(model, messages, options, stream, include_usage, extra)


def _messages(value: Any) -> tuple[dict[str, str], ...]:
    if value is None:
        raise _bad("messages", "`messages` is required: a list of {role, content}")
    if not isinstance(value, list) or not value:
        raise _bad("messages", "`messages` must be a non-empty list of {role, content}")
    messages = []
    for index, message in enumerate(value):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise _bad(where, f"{where} must be an object with `role` and `content`")
        extra = sorted(str(key) for key in message if key not in ("role", "content", "name"))
        if extra:
            raise _bad(
                f"{where}.{extra[0]}", f"{where} has {extra[0]!r}, which is not served (tools are not)"
            )
        role = message.get("role")
        if role not in ROLES:
            raise _bad(f"{where}.role", f"{where}.role is {role!r}; expected one of {', '.join(ROLES)}")
        messages.append({"role": role, "content": _content(message.get("content"), f"{where}.content")})
    return tuple(messages)


def _content(value: Any, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value:
        texts = []
        for part in value:
            if (
                not isinstance(part, dict)
                or part.get("type") != "text"
                or not isinstance(part.get("text"), str)
            ):
                raise _bad(where, f'{where} may hold only text parts ({{"type": "text", "text": ...}})')
            texts.append(part["text"])
        return "".join(texts)
    raise _bad(where, f"{where} must be a string or a list of text parts")


def _integer(body: Mapping[str, Any], name: str, *, minimum: int | None = None) -> int:
    value = body[name]
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(name, f"{name} must be an integer")
    if minimum is not None and value < minimum:
        raise _bad(name, f"{name} must be at least {minimum}")
    return value


def _number(body: Mapping[str, Any], name: str, low: float, high: float) -> float:
    value = body[name]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _bad(name, f"{name} must be a number")
    if not low <= value <= high:
        raise _bad(name, f"{name} must be between {low:g} and {high:g}")
    return float(value)


def _stops(value: Any) -> list[str]:
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(stop, str) and stop for stop in stops):
        raise _bad("stop", "stop must be a string or a list of non-empty strings")
    if len(stops) > MAX_STOPS:
        raise _bad("stop", f"stop holds {len(stops)} strings; at most {MAX_STOPS}")
    return stops


def _response_format(value: Any) -> dict[str, Any]:
    kind = value.get("type") if isinstance(value, dict) else None
    if kind not in _FORMATS:
        raise _bad("response_format", f"response_format.type must be one of {', '.join(_FORMATS)}")
    if kind == "json_schema":
        schema = value.get("json_schema")
        if not isinstance(schema, dict) or not isinstance(schema.get("schema", {}), dict):
            raise _bad(
                "response_format", "response_format.json_schema must be an object with a `schema` object"
            )
    return dict(value)


def _include_usage(value: Any, stream: bool) -> bool:
    if value is None:
        return False
    if not stream:
        raise _bad("stream_options", "stream_options is only allowed with stream: true")
    usage = value.get("include_usage", False) if isinstance(value, dict) else None
    if not isinstance(usage, bool):
        raise _bad("stream_options", "stream_options must be an object with a boolean `include_usage`")
    return usage


def chat_request(request: ChatRequest, role: OpenAiSpec, spec: ApiSpec) -> ParsedRequest:
    """The module's request for the chat completion `request`: one record holding the conversation, the
    options as parameters; `BadRequest` for an option the module does not take, `ValidationFailed` (fields
    named as OpenAI's) for a value its API refuses."""
    assert role.messages is not None and role.output is not None
    for name in request.options:
        if spec.get("parameters", name) is None:
            raise _bad(name, f"model {request.model!r} does not take `{name}`")
    for name in request.extra:
        if spec.get("parameters", name) is None or name in CHAT_OPTIONS:
            known = ", ".join(
                (*_CHAT_FIELDS, *(p.name for p in spec.parameters if p.name not in CHAT_OPTIONS))
            )
            raise _bad(name, f"unrecognized request argument {name!r}; known: {known}")
    outputs = [role.output, *(name for name in CHAT_OUTPUTS if spec.get("outputs", name) is not None)]
    body = {
        "inputs": {role.messages: [dict(message) for message in request.messages]},
        "parameters": {**request.extra, **request.options},
        "output_fields": outputs,
    }
    return _parsed(spec, body, request.model, _as_chat_field)


def _as_chat_field(detail: Mapping[str, str]) -> dict[str, str]:
    match = _FIELD_PATH.fullmatch(detail["field"])
    group, _, name = match.groups() if match else ("", None, "")
    field = name if group == "parameters" else "messages"
    return field_error(field, detail["code"], detail["message"])


def chat_answer(
    request: ChatRequest, role: OpenAiSpec, output: Mapping[str, Any], *, request_id: str, created: int
) -> dict[str, Any]:
    """OpenAI's `chat.completion` for the module's `output`."""
    assert role.output is not None
    return {
        "id": f"chatcmpl-{request_id}",
        "object": "chat.completion",
        "created": created,
        "model": request.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": output[role.output], "refusal": None},
                "logprobs": None,
                "finish_reason": output.get("finish_reason") or "stop",
            }
        ],
        "usage": chat_usage(request, role, output),
    }


def chat_usage(request: ChatRequest, role: OpenAiSpec, output: Mapping[str, Any]) -> dict[str, int]:
    """The call's usage: the module's own token counts where it declares them, else whitespace-separated
    words of the conversation and of the reply."""
    assert role.output is not None
    prompt = output.get("prompt_tokens")
    if not isinstance(prompt, int):
        prompt = count_tokens([message["content"] for message in request.messages])
    completion = output.get("completion_tokens")
    if not isinstance(completion, int):
        completion = count_tokens([output[role.output]])
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


class ChatStream:
    """OpenAI's `chat.completion.chunk`s of one streamed completion: the assistant's role first, a chunk per
    piece of the reply, the finish reason with the usage, and (with `include_usage`) a chunk of the usage
    alone, as OpenAI ends such a stream."""

    def __init__(self, request: ChatRequest, role: OpenAiSpec, *, request_id: str, created: int) -> None:
        self.request, self.role = request, role
        self._head = {
            "id": f"chatcmpl-{request_id}",
            "object": "chat.completion.chunk",
            "created": created,
            "model": request.model,
        }

    def _chunk(self, delta: dict[str, Any], finish: str | None = None, **more: Any) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {**self._head, "choices": [choice], **more}

    def start(self) -> dict[str, Any]:
        return self._chunk({"role": "assistant", "content": ""})

    def piece(self, text: str) -> dict[str, Any]:
        return self._chunk({"content": text})

    def end(self, output: Mapping[str, Any]) -> list[dict[str, Any]]:
        usage = chat_usage(self.request, self.role, output)
        chunks = [self._chunk({}, output.get("finish_reason") or "stop", usage=usage)]
        if self.request.include_usage:
            chunks.append({**self._head, "choices": [], "usage": usage})
        return chunks


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

    def route(
        self, call: ModuleCall, name: str, kind: Literal["embeddings", "chat"]
    ) -> tuple[ServedModule, OpenAiSpec]:
        """The version that serves `call` of the model `name`, with its role; `ModuleNotFound` unless it
        serves `kind` (embeddings, or chat completions)."""
        served = self.calls.route(call, name)
        role = role_of(served)
        if role is None or not getattr(role, kind):
            what = "embeddings" if kind == "embeddings" else "chat completions"
            raise ModuleNotFound(f"model {name!r} does not serve {what}")
        return served, role


def _model(served: ServedModule, owner: str | None) -> dict[str, Any]:
    return {
        "id": served.name,
        "object": "model",
        "created": int(served.started),
        "owned_by": owner or "modelport",
    }
