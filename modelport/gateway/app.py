"""The route table of the HTTP gateway."""

from __future__ import annotations

import re
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from modelport.control.modules import ModuleRegistry
from modelport.core.errors import ModelportError, ModuleUnavailable, NotFound
from modelport.core.settings import Settings
from modelport.gateway.errors import error_response
from modelport.gateway.middleware import BodyLimit
from modelport.gateway.pages import render_swagger_ui, render_try_page
from modelport.gateway.predict import PredictRoute
from modelport.sdk.openapi import module_openapi

__all__ = ["PredictFastPath", "create_app"]

_STATIC = Path(__file__).parent / "static"
_OUTPUT_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_PREDICT_PATH = re.compile(r"^/api/v1/modules/([^/]+)/predict$")


class PredictFastPath:
    """Sends POSTs to a predict path straight to their handler; everything else goes to the full app.

    The predict handler answers every error itself, so the router and the exception layers around it only
    cost time on the one path whose overhead users pay on every call.
    """

    def __init__(self, app: Starlette, predict: PredictRoute) -> None:
        self.app, self.predict = app, predict

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            match = _PREDICT_PATH.match(scope["path"])
            if match is not None:
                scope["path_params"] = {"module": match.group(1)}
                response = await self.predict.handle(Request(scope, receive))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(
    *,
    registry: ModuleRegistry,
    settings: Settings,
    lifespan: Callable[[Starlette], AbstractAsyncContextManager[None]] | None = None,
) -> ASGIApp:
    """The dev server's application: one or more modules, their docs and try-it pages."""
    predict = PredictRoute(registry=registry, settings=settings)
    outputs_dir = (settings.data_dir / "outputs").resolve()

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        modules = {name: _module_state(registry, name) for name in registry.names()}
        ready = bool(modules) and all(state == "ready" for state in modules.values())
        return JSONResponse(
            {"status": "ready" if ready else "not_ready", "modules": modules}, 200 if ready else 503
        )

    async def module_openapi_json(request: Request) -> Response:
        served = registry.get(request.path_params["module"])
        return JSONResponse(module_openapi(served.spec, module=served.name, version=served.version))

    async def openapi_json(request: Request) -> Response:
        served = _only_module(registry)
        return JSONResponse(module_openapi(served.spec, module=served.name, version=served.version))

    async def docs(request: Request) -> Response:
        name = request.query_params.get("module") or _only_module(registry).name
        return HTMLResponse(
            render_swagger_ui(openapi_url=f"/api/v1/modules/{name}/openapi.json", title=f"{name} · API")
        )

    async def try_page(request: Request) -> Response:
        name = request.path_params.get("module")
        served = registry.get(name) if name else _only_module(registry)
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

    async def output_file(request: Request) -> Response:
        name = request.path_params["name"]
        path = outputs_dir / name
        if not _OUTPUT_NAME.match(name) or not path.is_file():
            raise NotFound("no such output file")
        return FileResponse(path)

    async def list_modules(request: Request) -> Response:
        return JSONResponse(
            {
                "modules": [
                    {"name": s.name, "version": s.version, "title": s.spec.title, "workers": len(s.pool.pids)}
                    for s in registry.served()
                ]
            }
        )

    routes = [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/api/v1/modules", list_modules),
        Route("/api/v1/modules/{module}/predict", predict.handle, methods=["POST"]),
        Route("/api/v1/modules/{module}/openapi.json", module_openapi_json),
        Route("/api/v1/modules/{module}/try", try_page),
        Route("/api/v1/outputs/{name}", output_file),
        Route("/openapi.json", openapi_json),
        Route("/docs", docs),
        Route("/", try_page),
        Route("/favicon.ico", lambda request: RedirectResponse("/static/swagger-ui/favicon-32x32.png")),
        Mount("/static", StaticFiles(directory=_STATIC), name="static"),
    ]

    async def on_error(request: Request, exc: Exception) -> Response:
        return error_response(exc)

    app = Starlette(
        routes=routes,
        exception_handlers={ModelportError: on_error, HTTPException: on_error, Exception: on_error},
        lifespan=lifespan,
    )
    return BodyLimit(PredictFastPath(app, predict), max_bytes=settings.max_body_bytes)


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
