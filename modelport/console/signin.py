"""Signing in and out of the console: a password, an API token, or the OIDC issuer (authorization code with
PKCE).

Each way ends the same: the identity service issues a console session (a token of kind `console`, good for
`console_session_seconds`), which goes into the `mp_session` cookie: `HttpOnly`, `SameSite=Lax`, `Path=/`, and
`Secure` when the console is reached over https. Signing out revokes it on every gateway.

The OIDC flow runs on the server: the state, nonce and PKCE verifier wait in a short-lived `HttpOnly` cookie
scoped to the callback, the code is exchanged at the issuer's token endpoint, and the access token is
verified exactly as a bearer token would be (issuer, audience, algorithms, expiry).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import replace
from typing import Any
from urllib.parse import urlencode

import httpx
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from modelport.console.web import (
    FORM_CSRF_COOKIE,
    LANG_COOKIE,
    LANGUAGES,
    Console,
    Page,
    local_target,
    new_form_csrf,
)
from modelport.core.errors import BadRequest, ModelportError, Unauthorized
from modelport.gateway.auth import SESSION_COOKIE, client_address

__all__ = ["sign_in_routes"]

_OIDC_COOKIE = "mp_oidc"
_OIDC_SECONDS = 600
_DISCOVERY_SECONDS = 300.0


class OidcSignIn:
    """The authorization-code flow with PKCE against the configured issuer, for the console's public
    client."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.settings = console.settings
        self._discovered: tuple[float, dict[str, Any]] | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.settings.oidc_issuer and self.settings.oidc_client_id)

    async def endpoints(self) -> dict[str, Any]:
        if self._discovered is not None and time.monotonic() - self._discovered[0] < _DISCOVERY_SECONDS:
            return self._discovered[1]
        issuer = str(self.settings.oidc_issuer).rstrip("/")
        async with httpx.AsyncClient(timeout=10) as client:
            answer = await client.get(f"{issuer}/.well-known/openid-configuration")
        answer.raise_for_status()
        document: dict[str, Any] = answer.json()
        self._discovered = (time.monotonic(), document)
        return document

    async def start(self, request: Request) -> Response:
        if not self.enabled:
            raise BadRequest("no OpenID Connect issuer is configured: sign in with a password or a token")
        root = request.scope.get("root_path", "")
        target = local_target(request.query_params.get("next"), root + "/")
        try:
            endpoints = await self.endpoints()
        except (httpx.HTTPError, ValueError):
            return _back(root, target, "oidc_unavailable")
        verifier = secrets.token_urlsafe(48)
        state, nonce = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        query = urlencode(
            {
                "response_type": "code",
                "client_id": self.settings.oidc_client_id,
                "redirect_uri": _callback(request),
                "scope": "openid profile email",
                "state": state,
                "nonce": nonce,
                "code_challenge": challenge,
                "code_challenge_method": "S256",
            }
        )
        response = RedirectResponse(f"{endpoints['authorization_endpoint']}?{query}", status_code=303)
        flow = json.dumps({"state": state, "verifier": verifier, "next": target})
        response.set_cookie(
            _OIDC_COOKIE,
            base64.urlsafe_b64encode(flow.encode()).decode(),
            max_age=_OIDC_SECONDS,
            path=f"{root}/sign-in/oidc",
            httponly=True,
            samesite="lax",
            secure=request.url.scheme == "https",
        )
        return response

    async def callback(self, request: Request) -> Response:
        root = request.scope.get("root_path", "")
        try:
            flow = json.loads(base64.urlsafe_b64decode(request.cookies.get(_OIDC_COOKIE, "")))
            state, verifier, target = str(flow["state"]), str(flow["verifier"]), str(flow["next"])
        except (ValueError, KeyError, TypeError):
            return _back(root, root + "/", "oidc_expired")
        sent = request.query_params.get("state", "")
        if not hmac.compare_digest(sent.encode(), state.encode()):
            return _back(root, target, "oidc_expired")
        if request.query_params.get("error") or not request.query_params.get("code"):
            return _back(root, target, "oidc_refused")
        try:
            endpoints = await self.endpoints()
            async with httpx.AsyncClient(timeout=10) as client:
                answer = await client.post(
                    endpoints["token_endpoint"],
                    data={
                        "grant_type": "authorization_code",
                        "code": request.query_params["code"],
                        "redirect_uri": _callback(request),
                        "client_id": self.settings.oidc_client_id,
                        "code_verifier": verifier,
                    },
                )
            answer.raise_for_status()
            access_token = str(answer.json()["access_token"])
        except (httpx.HTTPError, ValueError, KeyError):
            return _back(root, target, "oidc_refused")
        try:
            principal = await self.console.services.authenticate(access_token)
        except ModelportError:
            principal = None
        if principal is None:
            return _back(root, target, "oidc_refused")
        response = await _signed_in(self.console, request, principal, how="oidc", target=target)
        response.delete_cookie(_OIDC_COOKIE, path=f"{root}/sign-in/oidc")
        return response


def _callback(request: Request) -> str:
    root = request.scope.get("root_path", "")
    return f"{request.url.scheme}://{request.url.netloc}{root}/sign-in/oidc/callback"


def _back(root: str, target: str, problem: str) -> Response:
    return RedirectResponse(
        f"{root}/sign-in?{urlencode({'next': target, 'problem': problem})}", status_code=303
    )


async def _signed_in(
    console: Console, request: Request, principal: Any, *, how: str, target: str
) -> Response:
    session = await asyncio.to_thread(
        console.services.identity.console_session,
        principal,
        seconds=console.settings.console_session_seconds,
        how=how,
        client=client_address(request.scope),
    )
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        session.token,
        max_age=session.seconds,
        path="/",
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )
    response.delete_cookie(FORM_CSRF_COOKIE, path="/")
    return response


def sign_in_routes(console: Console) -> list[Route]:
    identity = console.services.identity
    oidc = OidcSignIn(console)

    async def sign_in_page(request: Request) -> Response:
        page = console.page(request, signed_in=False)
        root = request.scope.get("root_path", "")
        target = local_target(request.query_params.get("next"), root + "/")
        if page.signed_in:
            return RedirectResponse(target, status_code=303)
        fresh = None if page.csrf else new_form_csrf()
        if fresh is not None:
            page = replace(page, csrf=fresh)
        response = console.render(
            page,
            "sign_in.html",
            next=target,
            problem=request.query_params.get("problem"),
            expired=request.query_params.get("expired") == "1",
            oidc_enabled=oidc.enabled,
        )
        if fresh is not None:
            response.set_cookie(
                FORM_CSRF_COOKIE,
                fresh,
                path="/",
                httponly=True,
                samesite="lax",
                secure=request.url.scheme == "https",
            )
        return response

    async def with_password(request: Request) -> Response:
        page, form = await console.form(request, signed_in=False)
        target = local_target(str(form.get("next") or ""), request.scope.get("root_path", "") + "/")
        try:
            principal = await asyncio.to_thread(
                identity.check_password,
                str(form.get("name") or "").strip(),
                str(form.get("password") or ""),
                client=client_address(request.scope),
            )
        except ModelportError as exc:
            return _problem(console, page, exc, target, name=str(form.get("name") or ""))
        return await _signed_in(console, request, principal, how="password", target=target)

    async def with_token(request: Request) -> Response:
        page, form = await console.form(request, signed_in=False)
        target = local_target(str(form.get("next") or ""), request.scope.get("root_path", "") + "/")
        token = str(form.get("token") or "").strip()
        try:
            principal = await console.services.authenticate(token) if token else None
        except ModelportError:
            principal = None
        if principal is None:
            return _problem(console, page, Unauthorized("the token is unknown, revoked or expired"), target)
        return await _signed_in(console, request, principal, how="token", target=target)

    async def sign_out(request: Request) -> Response:
        page, _ = await console.form(request, signed_in=False)
        root = request.scope.get("root_path", "")
        token_id = page.principal.token_id
        if page.signed_in and token_id is not None:
            await asyncio.to_thread(identity.revoke, token_id, actor=page.actor())
        response = RedirectResponse(f"{root}/sign-in", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    async def language(request: Request) -> Response:
        chosen = request.path_params["language"]
        root = request.scope.get("root_path", "")
        target = local_target(request.query_params.get("next"), root + "/")
        response = RedirectResponse(target, status_code=303)
        if chosen in LANGUAGES:
            response.set_cookie(LANG_COOKIE, chosen, max_age=365 * 86_400, path="/", samesite="lax")
        return response

    return [
        Route("/sign-in", sign_in_page, methods=["GET"], name="sign-in"),
        Route("/sign-in/password", with_password, methods=["POST"], name="sign-in-password"),
        Route("/sign-in/token", with_token, methods=["POST"], name="sign-in-token"),
        Route("/sign-in/oidc", oidc.start, methods=["GET"], name="sign-in-oidc"),
        Route("/sign-in/oidc/callback", oidc.callback, methods=["GET"], name="oidc-callback"),
        Route("/sign-out", sign_out, methods=["POST"], name="sign-out"),
        Route("/language/{language}", language, methods=["GET"], name="language"),
    ]


def _problem(console: Console, page: Page, exc: ModelportError, target: str, *, name: str = "") -> Response:
    """The sign-in page again, saying what was wrong (401, or 429 after too many failures)."""
    headers = {"Retry-After": str(int(exc.retry_after))} if exc.retry_after else None
    return console.render(
        page,
        "sign_in.html",
        status=exc.status,
        headers=headers,
        next=target,
        problem=exc.code,
        message=exc.public_message(),
        expired=False,
        oidc_enabled=bool(console.settings.oidc_issuer and console.settings.oidc_client_id),
        name=name,
    )
