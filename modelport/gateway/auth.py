"""Bearer-token authentication as pure ASGI middleware: every route needs a principal but the open ones."""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from modelport.control.identity import Principal
from modelport.core.errors import Unauthorized
from modelport.gateway.errors import error_response

__all__ = ["OPEN_PATHS", "BearerAuth", "principal_of"]

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/docs", "/openapi.json", "/favicon.ico", "/"})
"""Paths anyone may fetch: liveness, readiness and the platform's API documentation (no module data)."""
_OPEN_PREFIXES = ("/static/",)


def principal_of(scope: Scope) -> Principal:
    principal: Principal = scope["state"]["principal"]
    return principal


class BearerAuth:
    """Answers 401 unless `Authorization: Bearer <token>` names a token that `verify` accepts."""

    def __init__(self, app: ASGIApp, *, verify: Callable[[str], Principal | None]) -> None:
        self.app, self.verify = app, verify

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _is_open(scope["path"]):
            await self.app(scope, receive, send)
            return
        principal = self._authenticate(scope)
        if principal is None:
            response = error_response(Unauthorized("send an API token as `Authorization: Bearer <token>`"))
            response.headers["WWW-Authenticate"] = 'Bearer realm="modelport"'
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)

    def _authenticate(self, scope: Scope) -> Principal | None:
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, token = value.decode("latin-1").partition(" ")
                if scheme.lower() != "bearer" or not token.strip():
                    return None
                return self.verify(token.strip())
        return None


def _is_open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(_OPEN_PREFIXES)
