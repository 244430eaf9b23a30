"""The Open Inference Protocol v2 (KServe, Triton HTTP/REST) for every module: HTTP in and out.

`/v2` describes the server, `/v2/models/{module}[/versions/{version}]` a module (its tensors), `.../ready`
says whether it can answer, and `.../infer` calls it: JSON, or a JSON header followed by binary tensor data
(the binary tensor data extension, `Inference-Header-Content-Length`). Tensors become records in
`control/oip.py`; the call goes through `control/calls.py` as a predict call does (request log, statistics,
metrics, deadline). Metadata and readiness take the rule `MODULE`, inference `PREDICT`, so the module's
`Api` grants, rate limits and CORS apply as on `/api/v1/modules/{module}/predict`. The routes' own errors
answer `{"error": "..."}`, as the protocol says.
"""

from __future__ import annotations

from typing import Any

import msgspec
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from modelport import __version__
from modelport.control.calls import Calls, ModuleCall
from modelport.control.modules import ModuleRegistry
from modelport.control.oip import (
    InferRequest,
    OutputTensor,
    encode_binary,
    infer_request,
    model_metadata,
    output_tensors,
    parse_infer,
)
from modelport.core.errors import BadRequest, ModuleUnavailable
from modelport.gateway.errors import error_response
from modelport.gateway.predict import PredictRoute, respond, unless_disconnected
from modelport.gateway.routes import ANYONE, MODULE, PREDICT, Rule, allow

__all__ = [
    "HEADER_LENGTH",
    "INFER_PATH",
    "INFER_VERSION_PATH",
    "OipRoutes",
    "oip_error",
    "oip_router",
    "protocol_error",
]

HEADER_LENGTH = "Inference-Header-Content-Length"
"""The header that says how many bytes of a body are its JSON; binary tensor data follows them."""
MODEL_PATH = "/v2/models/{module}"
VERSION_PATH = "/v2/models/{module}/versions/{version}"
INFER_PATH = MODEL_PATH + "/infer"
INFER_VERSION_PATH = VERSION_PATH + "/infer"
EXTENSIONS = ("binary_tensor_data",)

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()
_EXPECTED = "an inference request"


def oip_error(exc: BaseException, *, request_id: str | None = None) -> Response:
    """The answer to `exc` in the protocol's shape, `{"error": "..."}`: the status, headers and log line are
    those of the gateway's one error table."""
    answer = error_response(exc, request_id=request_id)
    headers = {k: v for k, v in answer.headers.items() if k not in ("content-length", "content-type")}
    return Response(
        protocol_error(answer.status_code, bytes(answer.body)),
        status_code=answer.status_code,
        headers=headers,
        media_type="application/json",
    )


def protocol_error(status: int, body: bytes) -> bytes:
    """An error body of the gateway (`{"error": {"code", "message", "details"}}`) in the protocol's shape,
    `{"error": "message"}`, a validation error's details joined to its message; any other body as it is
    (`gateway/errors.py` `ErrorDialects` reshapes what the layers in front of the routes answer with it)."""
    try:
        error = _decoder.decode(body).get("error")
    except (msgspec.DecodeError, AttributeError):
        return body
    if not isinstance(error, dict) or not isinstance(error.get("message"), str):
        return body
    message = error["message"]
    details = error.get("details")
    if isinstance(details, list):
        found = [f"{d['field']}: {d['message']}" for d in details if isinstance(d, dict) and "field" in d]
        if found:
            message = f"{message}: {'; '.join(found)}"
    return _encoder.encode({"error": message})


class OipRoutes:
    """The protocol's handlers, for every module the registry serves."""

    def __init__(self, *, registry: ModuleRegistry, calls: Calls, predict: PredictRoute) -> None:
        self.registry = registry
        self.calls = calls
        self.predict = predict

    async def server_metadata(self, request: Request) -> Response:
        return _json({"name": "modelport", "version": __version__, "extensions": list(EXTENSIONS)})

    async def live(self, request: Request) -> Response:
        return _json({"live": True})

    async def ready(self, request: Request) -> Response:
        """Ready when every module serves: a module that failed to start or has no ready worker is not."""
        ready = not self.registry.problems and all(s.pool.ready for s in self.registry.served())
        return _json({"ready": ready}, 200 if ready else 400)

    async def model_metadata(self, request: Request) -> Response:
        name, version = request.path_params["module"], request.path_params.get("version")
        try:
            served = self.registry.get(name, version)
        except Exception as exc:
            return oip_error(exc)
        versions = sorted(self.registry.versions(name)) or [served.version]
        return _json(model_metadata(served.spec, name=served.name, versions=versions))

    async def model_ready(self, request: Request) -> Response:
        """200 when the module (or the pinned version) has a worker ready, 400 when not; 404 unknown."""
        name, version = request.path_params["module"], request.path_params.get("version")
        try:
            ready = self.registry.get(name, version).pool.ready
        except ModuleUnavailable:
            ready = False
        except Exception as exc:
            return oip_error(exc)
        return _json({"name": name, "ready": ready}, 200 if ready else 400)

    async def infer(self, request: Request) -> Response:
        """Call the module as the predict route does, with the request's tensors as its records."""
        call = self.predict.new_call(request)
        try:
            self.calls.route(call, request.path_params["module"], request.path_params.get("version"))
        except Exception as exc:
            return oip_error(exc, request_id=call.request_id)
        return await self.predict.answer(call, self._infer(request, call))

    async def _infer(self, request: Request, call: ModuleCall) -> tuple[Response, str | None]:
        served = call.served
        assert served is not None

        async def produce() -> Response:
            infer = self._read_request(bytes(await request.body()), request.headers.get(HEADER_LENGTH))
            parsed = parse_infer(served.spec, infer)
            outputs = await unless_disconnected(request, self.calls.run(call, parsed))
            tensors = output_tensors(
                served.spec, outputs, requested=infer.outputs, binary=infer.binary_output
            )
            answer = {
                "model_name": served.name,
                "model_version": served.version,
                "id": infer.id if infer.id is not None else call.request_id,
                "outputs": [tensor.to_json() for tensor in tensors],
            }
            return _answer(answer, tensors, {"X-Model-Version": served.version})

        return await respond(call, produce, error=oip_error)

    def _read_request(self, body: bytes, header_length: str | None) -> InferRequest:
        """The request in `body`: JSON, or (`header_length` given) a JSON header and binary data after it."""
        if header_length is None:
            return infer_request(self.predict.decode(body, what=_EXPECTED))
        try:
            length = int(header_length)
        except ValueError:
            raise BadRequest(f"{HEADER_LENGTH} must be a number of bytes") from None
        if not 0 < length <= len(body):
            raise BadRequest(f"{HEADER_LENGTH} {length} does not fit the {len(body)} bytes sent")
        header = self.predict.decode(body[:length], what=_EXPECTED)
        return infer_request(header, memoryview(body)[length:])


def _answer(answer: dict[str, Any], tensors: list[OutputTensor], headers: dict[str, str]) -> Response:
    """JSON, or the JSON header followed by the binary outputs' data when any output goes binary."""
    header = _encoder.encode(answer)
    binary = [encode_binary(t.datatype, t.data) for t in tensors if t.binary]
    if not binary:
        return Response(header, headers=headers, media_type="application/json")
    headers[HEADER_LENGTH] = str(len(header))
    return Response(b"".join((header, *binary)), headers=headers, media_type="application/octet-stream")


def _json(body: dict[str, Any], status: int = 200) -> Response:
    return Response(_encoder.encode(body), status_code=status, media_type="application/json")


def oip_router(routes: OipRoutes) -> APIRouter:
    """The protocol's routes, each with its access rule. They are left out of the platform's OpenAPI
    document: the protocol has its own specification, and its errors their own shape."""
    router = APIRouter()
    table: list[tuple[str, str, Any, Rule]] = [
        ("GET", "/v2", routes.server_metadata, ANYONE),
        ("GET", "/v2/health/live", routes.live, ANYONE),
        ("GET", "/v2/health/ready", routes.ready, ANYONE),
        ("GET", MODEL_PATH, routes.model_metadata, MODULE),
        ("GET", VERSION_PATH, routes.model_metadata, MODULE),
        ("GET", MODEL_PATH + "/ready", routes.model_ready, MODULE),
        ("GET", VERSION_PATH + "/ready", routes.model_ready, MODULE),
        ("POST", INFER_PATH, routes.infer, PREDICT),
        ("POST", INFER_VERSION_PATH, routes.infer, PREDICT),
    ]
    for method, path, endpoint, rule in table:
        router.add_api_route(
            path, endpoint, methods=[method], dependencies=[allow(rule)], include_in_schema=False
        )
    return router
