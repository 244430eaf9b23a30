"""The web console's application, mounted by the platform at `/ui` (see `console/web.py` for what its pages
share). Each page group contributes its routes; the composition root hands the result to the gateway."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from modelport.console import (
    admin,
    jobs,
    module_logs,
    module_metrics,
    module_try,
    modules,
    pipelines,
    signin,
    storage,
    wizard,
)
from modelport.console.web import STATIC_DIR, Console, SignInRequired
from modelport.control.platform import Services
from modelport.core.errors import MethodNotAllowed, ModelportError, NotFound
from modelport.gateway.errors import to_modelport_error

__all__ = ["PAGE_GROUPS", "create_console"]

log = logging.getLogger("modelport.console")

PAGE_GROUPS: list[Callable[[Console], Sequence[BaseRoute]]] = [
    signin.sign_in_routes,
    modules.module_routes,
    module_try.routes,
    module_metrics.routes,
    module_logs.routes,
    storage.routes,
    jobs.routes,
    pipelines.routes,
    admin.routes,
    wizard.routes,
]
"""Every group of pages, in the order their routes are matched."""


def create_console(services: Services) -> Starlette:
    """The console as an ASGI application, to mount at `/ui` behind the gateway's authentication."""
    console = Console(services)

    async def home(request: Request) -> Response:
        return RedirectResponse(request.scope.get("root_path", "") + "/modules", status_code=303)

    routes: list[BaseRoute] = [Route("/", home, methods=["GET"], name="home")]
    for group in PAGE_GROUPS:
        routes.extend(group(console))
    routes.append(Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"))

    async def sign_in(request: Request, exc: Exception) -> Response:
        return console.sign_in_redirect(request)

    async def failed(request: Request, exc: Exception) -> Response:
        error = _as_error(exc)
        if error.status >= 500:
            log.exception("console page failed: %s", request.url.path, exc_info=exc)
        return console.error(request, error)

    handlers: dict[Any, Any] = {
        SignInRequired: sign_in,
        ModelportError: failed,
        HTTPException: failed,
        Exception: failed,
    }
    return Starlette(routes=routes, exception_handlers=handlers)


def _as_error(exc: Exception) -> ModelportError:
    if isinstance(exc, HTTPException):
        if exc.status_code == 404:
            return NotFound("no such page")
        if exc.status_code == 405:
            return MethodNotAllowed("this page does not take that method")
    return to_modelport_error(exc)
