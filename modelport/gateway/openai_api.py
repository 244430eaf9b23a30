"""The OpenAI-compatible routes: `GET /v1/models`, `GET /v1/models/{model}` and `POST /v1/embeddings`.

OpenAI's clients call them with `base_url=<server>/v1` and the caller's token as `api_key`. The module a call
is for is named in the body, not the path, so `CallGate` cannot apply the module's `Api` grants and rate
limits by path: `POST /v1/embeddings` applies them itself, with what `CallGate` uses (`check_call`, the
policy's rates, the same `RateLimiter` under the same keys, so both routes draw on one budget). The routes
are declared `ANYONE` for that reason (a caller without a token goes on, for the route to accept or refuse),
and kept out of the platform's OpenAPI document: OpenAI's API reference documents them.

`openai_body` writes an error answered under `/v1` in OpenAI's shape (`control/openai_compat.py`); the
application's `ErrorDialects` layer (`gateway/errors.py`) applies it to the routes' errors and to those of the
layers in front of them (a bad token, a body too large).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Scope

from modelport.control.access import AccessPolicies, check_call
from modelport.control.calls import ModuleCall
from modelport.control.openai_compat import (
    EmbeddingsRequest,
    OpenAiModels,
    embeddings_answer,
    module_request,
    openai_error,
    parse_embeddings,
    requested_model,
)
from modelport.core.errors import BadRequest, InvalidJson, TooManyRequests
from modelport.core.manifests import OpenAiSpec
from modelport.gateway.access import metered
from modelport.gateway.auth import principal_of
from modelport.gateway.errors import error_response, to_modelport_error
from modelport.gateway.predict import (
    CLIENT_CLOSED,
    Disconnected,
    PredictRoute,
    encode_json,
    unless_disconnected,
)
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
        ]

    async def list_models(self, request: Request) -> Response:
        data = await self.models.models(principal_of(request.scope))
        return JSONResponse({"object": "list", "data": data})

    async def get_model(self, request: Request) -> Response:
        return JSONResponse(
            await self.models.model(principal_of(request.scope), request.path_params["model"])
        )

    async def embeddings(self, request: Request) -> Response:
        call = self.predict.new_call(request)
        decision: Decision | None = None
        try:
            body = _decode(await request.body())
            name = requested_model(body)
            decision = await self._admit(request.scope, name)
            if decision is not None and not decision.allowed:
                raise TooManyRequests(
                    "too many requests for this API; slow down", retry_after=decision.reset_after
                )
            _, role = self.models.route(call, name)
        except Exception as exc:
            return _with_limits(error_response(exc, request_id=call.request_id), decision)
        response = await self.predict.answer(call, self._embed(request, call, body, role))
        return _with_limits(response, decision)

    async def _embed(
        self, request: Request, call: ModuleCall, body: Any, role: OpenAiSpec
    ) -> tuple[Response, str | None]:
        """The answer (and its error code) of a call routed to a version with an embeddings role."""
        served = call.served
        assert served is not None
        headers = {"X-Model-Version": served.version}
        try:
            wanted: EmbeddingsRequest = parse_embeddings(body)
            parsed = module_request(wanted, role, served.spec)
            outputs = await unless_disconnected(request, self.calls.run(call, parsed))
            answer = embeddings_answer(wanted, role, outputs)
            return Response(encode_json(answer), headers=headers, media_type="application/json"), None
        except Disconnected:
            return Response(status_code=CLIENT_CLOSED), "client_closed"
        except Exception as exc:
            response = error_response(exc, request_id=call.request_id)
            response.headers.update(headers)
            return response, to_modelport_error(exc).code

    async def _admit(self, scope: Scope, module: str) -> Decision | None:
        """May the caller call `module`, and is it within its rate limits? As `CallGate` decides for the
        module's predict route: raises what the caller may be told, else the tightest rate decision (None:
        no `Api` limits this caller)."""
        policy = check_call(principal_of(scope), module, await self.policies.current(module))
        return await metered(self.limiter, policy, scope)


def _decode(body: bytes) -> Any:
    if not body:
        raise InvalidJson("the request body is empty; expected a JSON object")
    try:
        return _decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise InvalidJson(f"the request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise BadRequest("the JSON body is nested too deeply") from None


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
