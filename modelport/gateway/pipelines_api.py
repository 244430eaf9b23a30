"""The pipeline routes: call a pipeline (`POST /api/v1/pipelines/{pipeline}/predict`, or as a job with
`.../jobs` or `Prefer: respond-async`), its OpenAPI document, try-it page and file outputs, and the list of
pipelines with the state of their steps.

Calls go through the pipeline's `Api` like a module's (grants, rate limits, CORS: `CallGate` reads the route's
`PIPELINE_CALL` rule), are parsed by the predict route's own code against the pipeline's composed API, and run
through `control/pipelines.py`.
"""

from __future__ import annotations

import asyncio
import shutil
from typing import Annotated

from fastapi import APIRouter, Path, Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from modelport.control.calls import ModuleCall
from modelport.control.jobs import JobSubmission
from modelport.control.platform import Services
from modelport.core.records import PipelineInfo, PipelineList
from modelport.gateway.auth import principal_of
from modelport.gateway.errors import error_response
from modelport.gateway.jobs_api import accepted, idempotency_key, webhook_of
from modelport.gateway.pages import render_try_page
from modelport.gateway.predict import (
    CLIENT_CLOSED,
    Disconnected,
    PredictRoute,
    encode_json,
    prefers_async,
    unless_disconnected,
)
from modelport.gateway.routes import SIGNED_IN, allow
from modelport.sdk.openapi import module_openapi

__all__ = ["PIPELINE_JOBS_PATH", "PIPELINE_PREDICT_PATH", "PipelineRoutes", "pipelines_router"]

PIPELINE_PREDICT_PATH = "/api/v1/pipelines/{pipeline}/predict"
PIPELINE_JOBS_PATH = "/api/v1/pipelines/{pipeline}/jobs"
_EXTRAS = ("webhook", "webhook_events_filter")


class PipelineRoutes:
    """The handlers of a pipeline's call routes, which read the raw request as the predict route does."""

    def __init__(self, *, services: Services, predict: PredictRoute) -> None:
        self.services = services
        self.predict = predict

    async def handle(self, request: Request) -> Response:
        """`POST /api/v1/pipelines/{pipeline}/predict`."""
        if prefers_async(request):
            return await self.submit(request)
        call = self.predict.new_call(request)
        try:
            pipeline = self.services.pipelines.find(request.path_params["pipeline"])
            parsed, _ = await self.predict.parse(request, call, spec=pipeline.spec)
            outputs = await unless_disconnected(request, self.services.pipelines.run(call, pipeline, parsed))
            body = {
                "outputs": outputs if parsed.batch else outputs[0],
                "pipeline": pipeline.name,
                "steps": pipeline.versions,
                "request_id": call.request_id,
            }
            return Response(encode_json(body), media_type="application/json")
        except Disconnected:
            return Response(status_code=CLIENT_CLOSED)
        except Exception as exc:
            return error_response(exc, request_id=call.request_id)
        finally:
            await _drop_work_files(call)

    async def submit(self, request: Request) -> Response:
        """`POST /api/v1/pipelines/{pipeline}/jobs`, and predict with `Prefer: respond-async`."""
        call = self.predict.new_call(request, kind="job")
        try:
            pipeline = self.services.pipelines.find(request.path_params["pipeline"])
            key = idempotency_key(request)
            parsed, extras = await self.predict.parse(request, call, spec=pipeline.spec, extras=_EXTRAS)
            submission = JobSubmission(idempotency_key=key, kind="pipeline", **webhook_of(extras))
            info, created = await self.services.jobs.submit(
                call, parsed, submission, target=(pipeline.name, pipeline.spec)
            )
        except Exception as exc:
            return error_response(exc, request_id=call.request_id)
        finally:
            await _drop_work_files(call)
        return accepted(info, created)

    async def openapi(self, request: Request) -> Response:
        pipeline = await asyncio.to_thread(self.services.pipelines.find, request.path_params["pipeline"])
        return JSONResponse(module_openapi(pipeline.spec, module=pipeline.name, pipeline=True))

    async def try_page(self, request: Request) -> Response:
        pipeline = await asyncio.to_thread(self.services.pipelines.find, request.path_params["pipeline"])
        steps = ", ".join(f"{step} {v['module']} {v['version']}" for step, v in pipeline.versions.items())
        return HTMLResponse(
            render_try_page(
                pipeline.spec,
                module=pipeline.name,
                version=f"pipeline: {steps}",
                predict_url=f"/api/v1/pipelines/{pipeline.name}/predict",
                openapi_url=f"/api/v1/pipelines/{pipeline.name}/openapi.json",
                docs_url=f"/docs?pipeline={pipeline.name}",
            )
        )


def pipelines_router(services: Services) -> APIRouter:
    """`GET /api/v1/pipelines` and `GET /api/v1/pipelines/{pipeline}`: the pipelines the caller may call,
    each step with the version it runs now (or why it cannot run)."""
    router = APIRouter(prefix="/api/v1/pipelines", tags=["pipelines"], dependencies=[allow(SIGNED_IN)])

    @router.get("", response_model=PipelineList, summary="List pipelines")
    async def list_pipelines(request: Request) -> PipelineList:
        principal = principal_of(request.scope)
        return await asyncio.to_thread(services.pipelines.listing, principal)

    @router.get("/{pipeline}", response_model=PipelineInfo, summary="Show a pipeline")
    async def get_pipeline(request: Request, pipeline: Annotated[str, Path(max_length=63)]) -> PipelineInfo:
        principal = principal_of(request.scope)
        return await asyncio.to_thread(services.pipelines.info, principal, pipeline)

    return router


async def _drop_work_files(call: ModuleCall) -> None:
    if call.workdir is not None:
        await asyncio.to_thread(shutil.rmtree, call.workdir, True)
        call.workdir = None
