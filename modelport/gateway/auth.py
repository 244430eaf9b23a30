"""Authentication as pure ASGI middleware: every request gets a principal, or a 401.

A bearer token is either a modelport token (`mp_…`, looked up by digest) or, when an OIDC issuer is
configured, a JWT access token from that issuer. A request without credentials is anonymous, which only the
routes whose rule says so accept (`gateway/routes.py`: health, the platform's docs, the password exchange,
module routes, and presigned object URLs); whether an anonymous call reaches a module is for its `Api`
manifests to say, and a presigned URL is checked by the storage routes. Credentials that are present but
invalid are refused everywhere, even where anonymous calls would pass. Credentials that cannot be checked
because the database is unavailable are 503, not 401: the caller should try again, not sign in again.

The web console's session cookie (`mp_session`, holding a token of kind `console`) is credentials too, read
only where no `Authorization` header is sent. A cookie is ambient, so it counts only for safe methods, for the
console's own routes (which check their forms' CSRF field themselves) and for requests carrying the session's
CSRF token in `X-CSRF-Token`; and a stale one is no credentials at all, never a 401.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from modelport.control.identity import ANONYMOUS, Principal
from modelport.core.errors import InvalidToken, Unauthorized
from modelport.core.names import TOKEN_PREFIX
from modelport.gateway.errors import error_response
from modelport.gateway.routes import RouteTable

__all__ = [
    "CSRF_HEADER",
    "SESSION_COOKIE",
    "Authenticate",
    "caller_key",
    "client_address",
    "csrf_token",
    "owner_key",
    "principal_of",
    "session_of",
]

log = logging.getLogger("modelport.auth")


Verify = Callable[[str], Awaitable[Principal | None]]

SESSION_COOKIE = "mp_session"
"""The console's session cookie: a token of kind `console`, `HttpOnly`, `SameSite=Lax`."""
CSRF_HEADER = b"x-csrf-token"
_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})


def csrf_token(session: str) -> str:
    """The CSRF token of a console session: bound to its secret, which no page ever shows."""
    return hashlib.sha256(b"modelport-csrf:" + session.encode()).hexdigest()


def cookie(scope: Scope, name: str) -> str | None:
    """The value of the request's cookie `name`, if it sent one."""
    for key, value in scope["headers"]:
        if key == b"cookie":
            for part in bytes(value).decode("latin-1").split(";"):
                found, _, text = part.strip().partition("=")
                if found == name and text:
                    return text
    return None


def session_of(scope: Scope) -> str | None:
    """The console session the request was authenticated with, if it was (None for bearer tokens)."""
    session = scope.get("state", {}).get("session")
    return str(session) if session is not None else None


def principal_of(scope: Scope) -> Principal:
    principal: Principal = scope.get("state", {}).get("principal", ANONYMOUS)
    return principal


def client_address(scope: Scope) -> str | None:
    client = scope.get("client")
    return str(client[0]) if client else None


def caller_key(scope: Scope) -> str:
    """A stable, opaque key of the caller: its user, or its address when anonymous."""
    principal = principal_of(scope)
    who = f"user:{principal.user_id}" if principal.user_id is not None else f"ip:{client_address(scope)}"
    return hashlib.sha256(who.encode()).hexdigest()[:24]


def owner_key(scope: Scope) -> str:
    """The directory name of the caller's own files: its user's, or one shared by anonymous callers."""
    return "anonymous" if principal_of(scope).user_id is None else caller_key(scope)


class Authenticate:
    """Puts the request's principal in `scope["state"]["principal"]`, or answers 401."""

    def __init__(self, app: ASGIApp, *, verify: Verify, routes: RouteTable) -> None:
        self.app, self.verify, self.routes = app, verify, routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            principal = await self._authenticate(scope)
            if principal is None:
                principal = await self._session(scope)
        except Exception as exc:  # what the caller may be told; anything else a logged 500, never a bare one
            await _refuse(exc, scope, receive, send)
            return
        if principal is None and not self._anonymous_allowed(scope):
            await _refuse(
                Unauthorized("send a token as `Authorization: Bearer <token>`"), scope, receive, send
            )
            return
        scope.setdefault("state", {})["principal"] = principal or ANONYMOUS
        await self.app(scope, receive, send)

    async def _authenticate(self, scope: Scope) -> Principal | None:
        """The principal of the request's credentials; None without any; `InvalidToken` if they are bad."""
        values = [value for name, value in scope["headers"] if name == b"authorization"]
        if not values:
            return None
        if len(values) > 1:
            raise InvalidToken("send one Authorization header")
        scheme, _, token = values[0].decode("latin-1").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise InvalidToken("the Authorization header must be `Bearer <token>`")
        principal = await self.verify(token)
        if principal is None:
            raise InvalidToken("the token is unknown, revoked or expired")
        return principal

    async def _session(self, scope: Scope) -> Principal | None:
        """The principal of the console session cookie, where it may count (see the module's docstring)."""
        secret = cookie(scope, SESSION_COOKIE)
        if secret is None or not secret.startswith(TOKEN_PREFIX):
            return None
        if scope["method"] not in _SAFE and not self.routes.match(scope).rule.console:
            sent = next((value for name, value in scope["headers"] if name == CSRF_HEADER), b"")
            if not hmac.compare_digest(sent, csrf_token(secret).encode()):
                return None
        try:
            principal = await self.verify(secret)
        except InvalidToken:
            return None
        if principal is not None:
            scope.setdefault("state", {})["session"] = secret
        return principal

    def _anonymous_allowed(self, scope: Scope) -> bool:
        rule = self.routes.match(scope).rule
        return rule.anonymous or (rule.presigned and b"signature=" in scope.get("query_string", b""))


async def _refuse(exc: Exception, scope: Scope, receive: Receive, send: Send) -> None:
    await error_response(exc)(scope, receive, send)
