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
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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

__all__ = ["CONTENT_SECURITY_POLICY", "PAGE_GROUPS", "SecurityHeaders", "create_console"]

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


CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",  # no inline script runs: data goes in `<script type="application/json">`
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data: blob:",
        "connect-src 'self'",
        "frame-ancestors 'self'",
        "form-action 'self'",
        "base-uri 'none'",
        "object-src 'none'",
    ]
)
"""What the console's pages may load and run: their own scripts, never an inline one, so markup that slipped
into a page could not run even if escaping failed."""

_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-frame-options", b"SAMEORIGIN"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
]


class SecurityHeaders:
    """Adds the console's security headers to each of its answers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *_HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)


def create_console(services: Services) -> ASGIApp:
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
    return SecurityHeaders(Starlette(routes=routes, exception_handlers=handlers))


def _as_error(exc: Exception) -> ModelportError:
    if isinstance(exc, HTTPException):
        if exc.status_code == 404:
            return NotFound("no such page")
        if exc.status_code == 405:
            return MethodNotAllowed("this page does not take that method")
    return to_modelport_error(exc)
