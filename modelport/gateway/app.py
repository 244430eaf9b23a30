"""The route table of the HTTP gateway."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.routing import RouteContext
from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Match, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from modelport import __version__
from modelport.control.calls import Calls
from modelport.control.modules import ModuleRegistry
from modelport.control.openai_compat import OpenAiModels
from modelport.control.platform import Services
from modelport.control.request_files import RequestFiles
from modelport.core.errors import ModelportError, ModuleUnavailable, NotFound, ValidationFailed, field_error
from modelport.core.manifests import Cors
from modelport.core.settings import Settings
from modelport.gateway.access import CallGate
from modelport.gateway.auth import Authenticate, owner_key
from modelport.gateway.context import RequestContext
from modelport.gateway.control_api import control_router
from modelport.gateway.cors import ApiCors
from modelport.gateway.drift_api import drift_router
from modelport.gateway.errors import ErrorDialects, error_response
from modelport.gateway.history_api import history_router
from modelport.gateway.identity_api import identity_router
from modelport.gateway.jobs_api import JobRoutes, jobs_router
from modelport.gateway.logs_api import logs_router
from modelport.gateway.metrics_api import metrics_router
from modelport.gateway.middleware import BodyLimit, Limits, call_limits
from modelport.gateway.oip_api import INFER_PATH, INFER_VERSION_PATH, OipRoutes, oip_router, protocol_error
from modelport.gateway.openai_api import OPENAI_PREFIX, OpenAiRoutes, openai_body
from modelport.gateway.pages import render_swagger_ui, render_try_page
from modelport.gateway.pipelines_api import (
    PIPELINE_JOBS_PATH,
    PIPELINE_PREDICT_PATH,
    PipelineRoutes,
    pipelines_router,
)
from modelport.gateway.predict import PredictRoute
from modelport.gateway.ratelimit import RateLimiter
from modelport.gateway.requests_api import requests_router
from modelport.gateway.routes import (
    ANYONE,
    CONSOLE,
    MODULE,
    PIPELINE,
    PIPELINE_CALL,
    PREDICT,
    RouteTable,
    Rule,
    allow,
)
from modelport.gateway.stats_api import stats_router
from modelport.gateway.storage_api import storage_router
from modelport.gateway.webhooks_api import webhooks_router
from modelport.sdk.openapi import module_openapi
from modelport.storage import ObjectReader

__all__ = ["STATIC_DIR", "ModuleRoutes", "PredictFastPath", "create_app", "create_platform_app", "on_error"]

STATIC_DIR = Path(__file__).parent / "static"
_OUTPUT_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
PREDICT_PATH = "/api/v1/modules/{module}/predict"
JOBS_PATH = "/api/v1/modules/{module}/jobs"
_FastRoute = tuple[BaseRoute | RouteContext, Callable[[Request], Awaitable[Response]]]


class PredictFastPath:
    """Sends POSTs to the module call routes (predict, and on the platform the jobs, pipeline, Open Inference
    Protocol and OpenAI routes) straight to their handlers; everything else goes to the full app.

    Those handlers answer every error themselves, so the router and the exception layers around them only
    cost time on the paths whose overhead users pay on every call. Each route is the app's own, so the path is
    matched exactly as the router would match it.
    """

    def __init__(
        self, app: ASGIApp, predict: PredictRoute, route: BaseRoute | RouteContext, *others: _FastRoute
    ) -> None:
        self.app = app
        self.routes: tuple[_FastRoute, ...] = ((route, predict.handle), *others)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            for route, handle in self.routes:
                found, child = route.matches(scope)
                if found is Match.FULL:
                    scope["path_params"] = child["path_params"]
                    response = await handle(Request(scope, receive))
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)


class ModuleRoutes:
    """The handlers that the dev server and the platform share: health, module docs, try-it pages, outputs."""

    def __init__(self, *, registry: ModuleRegistry, files: RequestFiles) -> None:
        self.registry = registry
        self.files = files

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        modules = {name: _module_state(self.registry, name) for name in self.registry.names()}
        ready = all(state == "ready" for state in modules.values())
        return JSONResponse(
            {"status": "ready" if ready else "not_ready", "modules": modules}, 200 if ready else 503
        )

    async def module_openapi(self, request: Request) -> Response:
        served = self.registry.get(request.path_params["module"], request.query_params.get("version"))
        return JSONResponse(module_openapi(served.spec, module=served.name, version=served.version))

    async def module_docs(self, request: Request) -> Response:
        name = request.query_params.get("module") or _only_module(self.registry).name
        return HTMLResponse(
            render_swagger_ui(openapi_url=f"/api/v1/modules/{name}/openapi.json", title=f"{name} · API")
        )

    async def try_page(self, request: Request) -> Response:
        name = request.path_params.get("module")
        version = request.query_params.get("version")
        served = self.registry.get(name, version) if name else _only_module(self.registry)
        return HTMLResponse(
            render_try_page(
                served.spec,
                module=served.name,
                version=served.version,
                predict_url=f"/api/v1/modules/{served.name}/predict",
                openapi_url=f"/api/v1/modules/{served.name}/openapi.json",
                docs_url=f"/docs?module={served.name}",
            )
        )

    async def output_file(self, request: Request) -> Response:
        name = request.path_params["name"]
        if not _OUTPUT_NAME.match(name):
            raise NotFound("no such output file")
        pipeline = "pipeline" in request.path_params  # a pipeline's outputs are kept apart from its modules'
        target = request.path_params["pipeline" if pipeline else "module"]
        reader = await asyncio.to_thread(
            self.files.open_output, owner_key(request.scope), target, name, pipeline=pipeline
        )
        info = reader.info
        headers = {
            "Content-Length": str(info.size),
            "Content-Type": info.content_type,
            "ETag": f'"{info.etag}"',
            "X-Content-Type-Options": "nosniff",
        }
        return StreamingResponse(_chunks(reader), headers=headers)

    async def favicon(self, request: Request) -> Response:
        return RedirectResponse("/static/swagger-ui/favicon-32x32.png")


def _chunks(reader: ObjectReader) -> Iterator[bytes]:
    with reader:
        yield from reader


async def on_error(request: Request, exc: Exception) -> Response:
    return error_response(exc)


def create_app(
    *,
    registry: ModuleRegistry,
    settings: Settings,
    files: RequestFiles,
    lifespan: Callable[[Starlette], AbstractAsyncContextManager[None]] | None = None,
) -> ASGIApp:
    """The dev server's application: one module, its docs and try-it page, no authentication."""
    predict = PredictRoute(calls=Calls(registry=registry, settings=settings, files=files), settings=settings)
    handlers = ModuleRoutes(registry=registry, files=files)

    async def openapi_json(request: Request) -> Response:
        served = _only_module(registry)
        return JSONResponse(module_openapi(served.spec, module=served.name, version=served.version))

    async def list_modules(request: Request) -> Response:
        return JSONResponse(
            {
                "modules": [
                    {"name": s.name, "version": s.version, "title": s.spec.title, "workers": len(s.pool.pids)}
                    for s in registry.served()
                ]
            }
        )

    predict_route = Route(PREDICT_PATH, predict.handle, methods=["POST"])
    routes = [
        Route("/healthz", handlers.healthz),
        Route("/readyz", handlers.readyz),
        Route("/api/v1/modules", list_modules),
        predict_route,
        Route("/api/v1/modules/{module}/openapi.json", handlers.module_openapi),
        Route("/api/v1/modules/{module}/try", handlers.try_page),
        Route("/api/v1/modules/{module}/outputs/{name}", handlers.output_file),
        Route("/openapi.json", openapi_json),
        Route("/docs", handlers.module_docs),
        Route("/", handlers.try_page),
        Route("/favicon.ico", handlers.favicon),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={ModelportError: on_error, HTTPException: on_error, Exception: on_error},
        lifespan=lifespan,
    )
    return RequestContext(
        BodyLimit(
            PredictFastPath(app, predict, predict_route), limits=call_limits(settings), settings=settings
        )
    )


def _module_state(registry: ModuleRegistry, name: str) -> str:
    try:
        served = registry.get(name)
    except ModuleUnavailable:
        return "failed"
    return "ready" if served.pool.ready else "unavailable"


def _only_module(registry: ModuleRegistry) -> Any:
    served = registry.served()
    if not served:
        names = registry.names()
        problem = registry.problems.get(names[0]) if names else "no module is loaded"
        raise ModuleUnavailable(problem or "no module is loaded", retry_after=5)
    return served[0]


_VERSION_PARAMETER = {
    "name": "version",
    "in": "query",
    "required": False,
    "schema": {"type": "string"},
    "description": "Pin a running version instead of the routed one.",
}
_PREDICT_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["inputs"],
                "properties": {
                    "inputs": {
                        "oneOf": [{"type": "object"}, {"type": "array", "items": {"type": "object"}}],
                        "description": "One record, or a list of records.",
                    },
                    "parameters": {"type": "object"},
                    "output_fields": {"type": "array", "items": {"type": "string"}},
                    "model_key": {"type": "string"},
                },
            }
        },
        "multipart/form-data": {"schema": {"type": "object"}},
    },
}


_JOB_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["inputs"],
                "properties": {
                    **_PREDICT_BODY["content"]["application/json"]["schema"]["properties"],  # type: ignore[index]
                    "webhook": {
                        "type": "string",
                        "format": "uri",
                        "description": "Where the job's events go.",
                    },
                    "webhook_events_filter": {
                        "type": "array",
                        "items": {"enum": ["started", "completed"]},
                        "description": "Which events to send (default: `completed`).",
                    },
                },
            }
        },
        "multipart/form-data": {"schema": {"type": "object"}},
    },
}
_JOB_RESPONSES = {
    "202": {
        "description": "The job, as it was queued; `Location` is where to read it.",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/JobInfo"}}},
    },
    "200": {
        "description": "The job made before with this `Idempotency-Key` and request.",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/JobInfo"}}},
    },
}


def create_platform_app(
    *,
    services: Services,
    settings: Settings,
    limiter: RateLimiter,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]] | None = None,
    apps: Mapping[str, Path] | None = None,
    console: ASGIApp | None = None,
) -> ASGIApp:
    """The platform's application: the control API, every deployed module, authentication on all of it,
    the `Api` manifests' access rules, rate limits and CORS in front of the modules; `console`, the web
    console, at `/ui` (behind the same authentication, which reads its session cookie); and `apps`, static
    client applications served as they are under `/apps/<name>/` (the demo's receipt page)."""

    jobs = JobRoutes(services=services, predict=PredictRoute(calls=services.calls, settings=settings))
    predict = PredictRoute(calls=services.calls, settings=settings, respond_async=jobs.submit)
    handlers = ModuleRoutes(registry=services.registry, files=services.request_files)
    pipelines = PipelineRoutes(services=services, predict=predict)
    api = FastAPI(
        title="modelport",
        version=__version__,
        description="The modelport platform: modules, versions, deployments and inference.",
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
        lifespan=lifespan,
        exception_handlers={
            ModelportError: on_error,
            HTTPException: on_error,
            RequestValidationError: _validation_error,
            SQLAlchemyError: on_error,  # answered here, not re-raised: a database outage is 503, not a trace
            Exception: on_error,
        },
    )
    public = [allow(ANYONE)]
    for probe, check, title in (
        ("/healthz", handlers.healthz, "Liveness"),
        ("/readyz", handlers.readyz, "Readiness"),
    ):
        api.add_api_route(probe, check, methods=["GET"], tags=["health"], summary=title, dependencies=public)
    api.include_router(control_router(services))
    api.include_router(identity_router(services))
    api.include_router(storage_router(services))
    api.include_router(requests_router(services))
    api.include_router(history_router(services))
    api.include_router(drift_router(services))
    api.include_router(stats_router(services))
    api.include_router(logs_router(services))
    api.include_router(metrics_router(services))
    api.include_router(jobs_router(services, jobs))
    api.include_router(webhooks_router(services))
    api.include_router(pipelines_router(services))
    pinned = [_VERSION_PARAMETER]
    inference: list[tuple[str, str, Callable[[Request], Awaitable[Response]], Rule, str, dict[str, Any]]] = [
        ("POST", PREDICT_PATH, predict.handle, PREDICT, "Call a module", {"requestBody": _PREDICT_BODY}),
        (
            "POST",
            JOBS_PATH,
            jobs.submit,
            PREDICT,
            "Submit a job",
            {"requestBody": _JOB_BODY, "responses": _JOB_RESPONSES},
        ),
        (
            "GET",
            "/api/v1/modules/{module}/openapi.json",
            handlers.module_openapi,
            MODULE,
            "A module's OpenAPI document",
            {},
        ),
        ("GET", "/api/v1/modules/{module}/try", handlers.try_page, MODULE, "Try-it page", {}),
        ("GET", "/api/v1/modules/{module}/outputs/{name}", handlers.output_file, MODULE, "A file output", {}),
        (
            "POST",
            PIPELINE_PREDICT_PATH,
            pipelines.handle,
            PIPELINE_CALL,
            "Call a pipeline",
            {"requestBody": _PREDICT_BODY},
        ),
        (
            "POST",
            PIPELINE_JOBS_PATH,
            pipelines.submit,
            PIPELINE_CALL,
            "Submit a pipeline job",
            {"requestBody": _JOB_BODY, "responses": _JOB_RESPONSES},
        ),
        (
            "GET",
            "/api/v1/pipelines/{pipeline}/openapi.json",
            pipelines.openapi,
            PIPELINE,
            "A pipeline's OpenAPI document",
            {},
        ),
        (
            "GET",
            "/api/v1/pipelines/{pipeline}/try",
            pipelines.try_page,
            PIPELINE,
            "A pipeline's try-it page",
            {},
        ),
        (
            "GET",
            "/api/v1/pipelines/{pipeline}/outputs/{name}",
            handlers.output_file,
            PIPELINE,
            "A pipeline's file output",
            {},
        ),
    ]
    for method, path, endpoint, rule, summary, extra in inference:
        # The handlers read the raw request, so the document learns their parameters from here.
        takes_version = "/outputs/" not in path and "{pipeline}" not in path
        parameters = _path_parameters(path) + (pinned if takes_version else [])
        api.add_api_route(
            path,
            endpoint,
            methods=[method],
            tags=["inference"],
            summary=summary,
            dependencies=[allow(rule)],
            openapi_extra={"parameters": parameters, **extra},
        )

    oip = OipRoutes(registry=services.registry, calls=services.calls, predict=predict)
    api.include_router(oip_router(oip))  # the Open Inference Protocol v2: `MODULE` and `PREDICT` rules

    async def docs(request: Request) -> Response:
        if request.query_params.get("module"):
            return await handlers.module_docs(request)
        if pipeline := request.query_params.get("pipeline"):
            openapi_url = f"/api/v1/pipelines/{quote(pipeline, safe='')}/openapi.json"
            return HTMLResponse(render_swagger_ui(openapi_url=openapi_url, title=f"{pipeline} · API"))
        return HTMLResponse(render_swagger_ui(openapi_url="/openapi.json", title="modelport · API"))

    async def root(request: Request) -> Response:
        return RedirectResponse("/ui/" if console is not None else "/docs")

    # OpenAI's clients call these; they check the module's `Api` grants and rate limits themselves (the module
    # is named in the body), and OpenAI's API reference documents them.
    openai = OpenAiRoutes(
        models=OpenAiModels(registry=services.registry, policies=services.policies, calls=services.calls),
        predict=predict,
        policies=services.policies,
        limiter=limiter,
    )
    for method, path, endpoint in openai.routes():
        api.add_api_route(path, endpoint, methods=[method], include_in_schema=False, dependencies=public)

    hidden: dict[str, Any] = {"methods": ["GET"], "include_in_schema": False, "dependencies": public}
    api.add_api_route("/docs", docs, **hidden)
    api.add_api_route("/", root, **hidden)
    api.add_api_route("/favicon.ico", handlers.favicon, **hidden)
    api.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    for name, directory in (apps or {}).items():
        api.mount(f"/apps/{name}", StaticFiles(directory=directory, html=True), name=f"app-{name}")
    if console is not None:
        api.mount("/ui", console, name="console")
    # The document, the static files and the console are routes without dependencies: their rules are here.
    served_apps: dict[str, Rule] = {f"/apps/{name}": ANYONE for name in apps or {}}
    if console is not None:
        served_apps["/ui"] = CONSOLE
    routes = RouteTable(api.routes, others={"/openapi.json": ANYONE, "/static": ANYONE, **served_apps})
    _declare_security(api, routes)
    fast = PredictFastPath(
        api,
        predict,
        routes.route(PREDICT_PATH),
        (routes.route(JOBS_PATH), jobs.submit),
        (routes.route(PIPELINE_PREDICT_PATH), pipelines.handle),
        (routes.route(PIPELINE_JOBS_PATH), pipelines.submit),
        (routes.route(INFER_PATH), oip.infer),
        (routes.route(INFER_VERSION_PATH), oip.infer),
        *((routes.route(path), endpoint) for method, path, endpoint in openai.routes() if method == "POST"),
    )
    gate = CallGate(fast, policies=services.policies, limiter=limiter, routes=routes)
    authenticated = Authenticate(gate, verify=services.authenticate, routes=routes)

    async def cors(scope: Scope) -> Cors | None:
        match = routes.match(scope)
        if match.rule.called:
            return gate.cors(
                match.params["pipeline" if match.rule.pipeline else "module"], pipeline=match.rule.pipeline
            )
        bucket = match.params.get("bucket")
        return None if bucket is None else await services.storage.cors(bucket)

    # Module calls have the limits of their content type; version artifacts and objects stream to disk.
    call = call_limits(settings)
    streamed = {
        "push_version": Limits(settings.max_artifact_bytes, in_memory=0),
        "put_object": Limits(settings.max_object_bytes, in_memory=0),
    }
    held = Limits(settings.max_body_bytes, in_memory=settings.max_body_bytes)

    def body_limits(scope: Scope) -> Limits:
        match = routes.match(scope)
        if match.rule is PREDICT or match.rule is PIPELINE_CALL:
            return call(scope)
        return streamed.get(getattr(match.route, "name", ""), held)

    # OpenAI's clients and the Open Inference Protocol's read errors in their own shapes.
    dialects = [(OPENAI_PREFIX, openai_body), ("/v2", protocol_error)]
    return RequestContext(
        ErrorDialects(
            BodyLimit(ApiCors(authenticated, policy=cors), limits=body_limits, settings=settings), dialects
        )
    )


def _declare_security(api: FastAPI, routes: RouteTable) -> None:
    """Say in the OpenAPI document what each operation needs: a bearer token (Swagger UI's Authorize), a
    token or nothing, or nothing at all, as its route's rule says."""

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            document = get_openapi(
                title=api.title, version=api.version, description=api.description, routes=api.routes
            )
            document.setdefault("components", {})["securitySchemes"] = {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A modelport token (`mp_…`) or an access token of the OIDC issuer.",
                }
            }
            document["security"] = [{"bearer": []}]
            for (method, path), rule in routes.rules().items():
                operation = document["paths"].get(path, {}).get(method.lower())
                if operation is not None:
                    operation["x-access"] = rule.name
                    if rule.anonymous:
                        operation["security"] = [] if not rule.called else [{}, {"bearer": []}]
            api.openapi_schema = document
        return api.openapi_schema

    api.openapi = openapi  # type: ignore[method-assign]


def _path_parameters(path: str) -> list[dict[str, Any]]:
    return [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in re.findall(r"{(\w+)}", path)
    ]


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    details = [
        field_error(
            ".".join(str(part) for part in error["loc"] if part != "body") or "body",
            str(error["type"]),
            str(error["msg"]),
        )
        for error in exc.errors()
    ]
    return error_response(ValidationFailed("the request does not match the API", details=details))
