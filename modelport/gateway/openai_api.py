"""The OpenAI-compatible routes: `GET /v1/models`, `GET /v1/models/{model}`, `POST /v1/embeddings` and
`POST /v1/chat/completions` (answered whole, or with `stream: true` as OpenAI's server-sent chunks ending in
`data: [DONE]`).

OpenAI's clients call them with `base_url=<server>/v1` and the caller's token as `api_key`. The module a call
is for is named in the body, not the path, so `CallGate` cannot apply the module's `Api` grants and rate
limits by path: the POST routes apply them themselves, with what `CallGate` uses (`check_call`, the
policy's rates, the same `RateLimiter` under the same keys, so both routes draw on one budget). The routes
are declared `ANYONE` for that reason (a caller without a token goes on, for the route to accept or refuse),
and kept out of the platform's OpenAPI document: OpenAI's API reference documents them.

`openai_body` writes an error answered under `/v1` in OpenAI's shape (`control/openai_compat.py`); the
application's `ErrorDialects` layer (`gateway/errors.py`) applies it to the routes' errors and to those of the
layers in front of them (a bad token, a body too large).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Scope

from modelport.control.access import AccessPolicies, check_call
from modelport.control.calls import ModuleCall, Piece
from modelport.control.openai_compat import (
    ChatRequest,
    ChatStream,
    EmbeddingsRequest,
    OpenAiModels,
    chat_answer,
    chat_request,
    embeddings_answer,
    module_request,
    openai_error,
    parse_chat,
    parse_embeddings,
    requested_model,
)
from modelport.core.errors import BadRequest, TooManyRequests
from modelport.core.manifests import OpenAiSpec
from modelport.gateway.access import metered
from modelport.gateway.auth import principal_of
from modelport.gateway.errors import error_response
from modelport.gateway.predict import EventWriter, PredictRoute, encode_json, respond, unless_disconnected
from modelport.gateway.ratelimit import Decision, RateLimiter

__all__ = ["OPENAI_PREFIX", "OpenAiRoutes", "openai_body"]

OPENAI_PREFIX = "/v1"
_decoder = msgspec.json.Decoder()
Handler = Callable[[Request], Awaitable[Response]]


class OpenAiRoutes:
    """The handlers of the OpenAI-compatible routes; `routes()` lists them for the application."""

    def __init__(
        self, *, models: OpenAiModels, predict: PredictRoute, policies: AccessPolicies, limiter: RateLimiter
    ) -> None:
        self.models, self.predict, self.policies, self.limiter = models, predict, policies, limiter
        self.calls = predict.calls

    def routes(self) -> list[tuple[str, str, Handler]]:
        """(method, path, handler) of each route."""
        return [
            ("GET", "/v1/models", self.list_models),
            ("GET", "/v1/models/{model}", self.get_model),
            ("POST", "/v1/embeddings", self.embeddings),
            ("POST", "/v1/chat/completions", self.chat_completions),
        ]

    async def list_models(self, request: Request) -> Response:
        data = await self.models.models(principal_of(request.scope))
        return JSONResponse({"object": "list", "data": data})

    async def get_model(self, request: Request) -> Response:
        return JSONResponse(
            await self.models.model(principal_of(request.scope), request.path_params["model"])
        )

    async def embeddings(self, request: Request) -> Response:
        return await self._serve(request, "embeddings", self._embed)

    async def chat_completions(self, request: Request) -> Response:
        return await self._serve(request, "chat", self._chat)

    async def _serve(
        self,
        request: Request,
        kind: Literal["embeddings", "chat"],
        handle: Callable[[Request, ModuleCall, Any, OpenAiSpec], Awaitable[tuple[Response, str | None]]],
    ) -> Response:
        """Admit the call of the model the body names (grants, rate limits), route it to a version that
        plays `kind`, and answer it with `handle`."""
        call = self.predict.new_call(request)
        decision: Decision | None = None
        try:
            body = self.predict.decode(await request.body())
            name = requested_model(body)
            decision = await self._admit(request.scope, name)
            if decision is not None and not decision.allowed:
                raise TooManyRequests(
                    "too many requests for this API; slow down", retry_after=decision.reset_after
                )
            _, role = self.models.route(call, name, kind)
        except Exception as exc:
            return _with_limits(error_response(exc, request_id=call.request_id), decision)
        response = await self.predict.answer(call, handle(request, call, body, role))
        return _with_limits(response, decision)

    async def _chat(
        self, request: Request, call: ModuleCall, body: Any, role: OpenAiSpec
    ) -> tuple[Response, str | None]:
        """The answer (and its error code) of a call routed to a version with a chat role."""
        served = call.served
        assert served is not None

        async def produce() -> Response:
            created = int(time.time())
            wanted: ChatRequest = parse_chat(body)
            parsed = chat_request(wanted, role, served.spec)
            if wanted.stream:
                if served.spec.stream_output is None or served.spec.stream_output.name != role.output:
                    raise BadRequest(
                        f"model {wanted.model!r} does not stream its replies; leave out `stream`"
                    )
                return self._chat_events(call, parsed, wanted, role, created)
            outputs = await unless_disconnected(request, self.calls.run(call, parsed))
            answer = chat_answer(wanted, role, outputs[0], request_id=call.request_id, created=created)
            return _json(answer, served.version)

        return await respond(call, produce)

    def _chat_events(
        self, call: ModuleCall, parsed: Any, wanted: ChatRequest, role: OpenAiSpec, created: int
    ) -> Response:
        """The completion as OpenAI's stream: `data: <chunk>` events, then `data: [DONE]`; an error once the
        stream has begun is a `data: {"error": ...}` event in OpenAI's shape, and ends it."""
        chunks = ChatStream(wanted, role, request_id=call.request_id, created=created)

        def piece(event: Piece) -> bytes:
            return _data(chunks.piece(event.value))

        def done(outputs: list[dict[str, Any]]) -> bytes:
            return b"".join(_data(chunk) for chunk in chunks.end(outputs[0])) + b"data: [DONE]\n\n"

        def failed(error: Response) -> bytes:
            return b"data: " + openai_body(error.status_code, bytes(error.body)) + b"\n\n"

        writer = EventWriter(piece=piece, done=done, failed=failed, start=_data(chunks.start()))
        return self.predict.event_stream(call, parsed, writer)

    async def _embed(
        self, request: Request, call: ModuleCall, body: Any, role: OpenAiSpec
    ) -> tuple[Response, str | None]:
        """The answer (and its error code) of a call routed to a version with an embeddings role."""
        served = call.served
        assert served is not None

        async def produce() -> Response:
            wanted: EmbeddingsRequest = parse_embeddings(body)
            parsed = module_request(wanted, role, served.spec)
            outputs = await unless_disconnected(request, self.calls.run(call, parsed))
            return _json(embeddings_answer(wanted, role, outputs), served.version)

        return await respond(call, produce)

    async def _admit(self, scope: Scope, module: str) -> Decision | None:
        """May the caller call `module`, and is it within its rate limits? As `CallGate` decides for the
        module's predict route: raises what the caller may be told, else the tightest rate decision (None:
        no `Api` limits this caller)."""
        policy = check_call(principal_of(scope), module, await self.policies.current(module))
        return await metered(self.limiter, policy, scope)


def _data(chunk: dict[str, Any]) -> bytes:
    return b"data: " + encode_json(chunk) + b"\n\n"


def _json(answer: dict[str, Any], version: str) -> Response:
    return Response(encode_json(answer), headers={"X-Model-Version": version}, media_type="application/json")


def _with_limits(response: Response, decision: Decision | None) -> Response:
    if decision is not None:
        response.headers.update(decision.headers())
    return response


def openai_body(status: int, body: bytes) -> bytes:
    """The platform's error body in OpenAI's shape; a body of any other shape as it is."""
    try:
        error = _decoder.decode(body)["error"]
        code, message = error["code"], error["message"]
    except (msgspec.DecodeError, KeyError, TypeError):
        return body
    if not isinstance(code, str) or not isinstance(message, str):
        return body
    return encode_json(openai_error(status, code, message, error.get("details")))
