"""The identity routes: how to sign in, password exchange, who am I, users, groups, tokens, and the audit
trail.

Users, groups and the audit trail are for admins. Everyone signed in manages their own tokens; admins
everyone's. A caller who may not see an object gets 404 for it, exactly as if it did not exist; one who may
not use a route that names no object gets 403.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

from modelport.control.audit import Actor
from modelport.control.identity import caller_info
from modelport.control.platform import Services
from modelport.core.errors import Forbidden, NotFound
from modelport.core.manifests import check_group_path
from modelport.core.records import (
    AccessToken,
    AuditList,
    AuthConfig,
    CallerInfo,
    GroupInfo,
    GroupList,
    NewToken,
    OidcClient,
    TokenInfo,
    TokenList,
    UserInfo,
    UserList,
)
from modelport.core.roles import Role
from modelport.core.settings import Settings
from modelport.db.models import utcnow
from modelport.gateway.auth import client_address, principal_of
from modelport.gateway.context import request_id_of
from modelport.gateway.routes import ANYONE, SIGNED_IN, allow

__all__ = ["actor_of", "auth_config", "identity_router"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Ids are INTEGER columns, 32 bits on PostgreSQL: a larger number names nothing, and the database refuses it.
MAX_ID = 2**31 - 1
Id = Annotated[int, Path(ge=1, le=MAX_ID)]
Password = Annotated[str, Field(min_length=8, max_length=1024, description="At least 8 characters.")]


def _group_path(value: str) -> str:
    """A group path, refused in the words the command line uses (`'team-a' is not a group path: ...`)."""
    try:
        return check_group_path(value)
    except ValueError as exc:
        raise PydanticCustomError("group_path", str(exc)) from None


GroupPath = Annotated[
    str,
    AfterValidator(_group_path),
    Field(max_length=255, description="A full group path, starting with /.", examples=["/team/users"]),
]


class TokenRequest(_Strict):
    username: str = Field(min_length=1, max_length=255)
    password: str = Field(min_length=1, max_length=1024)


class NewUser(_Strict):
    name: str = Field(min_length=1, max_length=255)
    role: Role = Role.USER
    groups: list[GroupPath] = []
    password: Password | None = None


class UserChange(_Strict):
    role: Role | None = None
    groups: list[GroupPath] | None = None
    password: Password | None = None
    disabled: bool | None = None


class NewGroup(_Strict):
    path: GroupPath


class NewTokenRequest(_Strict):
    name: str = Field(min_length=1, max_length=255)
    expires_in_days: int | None = Field(None, ge=1, le=3650, description="Default: never expires.")
    user: int | None = Field(None, ge=1, le=MAX_ID, description="Make the token for this user (admins only).")


def actor_of(request: Request) -> Actor:
    return Actor(
        principal_of(request.scope).name,
        client=client_address(request.scope),
        request_id=request_id_of(request.scope),
    )


def auth_config(settings: Settings) -> AuthConfig:
    """What a browser application needs to sign in: the issuer and its public client, where both are set."""
    if settings.oidc_issuer and settings.oidc_client_id:
        return AuthConfig(oidc=OidcClient(issuer=settings.oidc_issuer, client_id=settings.oidc_client_id))
    return AuthConfig(oidc=None)


def identity_router(services: Services) -> APIRouter:
    identity, audit = services.identity, services.audit
    config = auth_config(services.settings)

    def admin_only(request: Request) -> None:
        """Before anything else, even validation: admins pass; others get 404 for users and groups they
        may not see (all but themselves and their own groups), and 403 for the rest."""
        principal = principal_of(request.scope)
        if principal.is_admin:
            return
        user_id = request.path_params.get("user_id")
        if user_id is not None and user_id != str(principal.user_id):
            raise NotFound(f"no user with id {user_id}")
        group_id = request.path_params.get("group_id")
        if group_id is not None and _group_path(group_id) not in principal.groups:
            raise NotFound(f"no group with id {group_id}")
        raise Forbidden("this needs the admin role")

    def _group_path(group_id: str) -> str | None:
        try:
            number = int(group_id)
            return identity.group(number).path if 1 <= number <= MAX_ID else None
        except (ValueError, NotFound):
            return None

    router = APIRouter(prefix="/api/v1")
    signed_in = APIRouter(dependencies=[allow(SIGNED_IN)])
    admin = APIRouter(dependencies=[Depends(admin_only)])

    @router.get(
        "/auth/config",
        dependencies=[allow(ANYONE)],
        response_model=AuthConfig,
        tags=["identity"],
        summary="How browser applications sign in",
        description="The OpenID Connect issuer and public client (authorization code with PKCE) that "
        "browser applications sign in with, or `null` where there is none (sign in with a modelport "
        "token). Public, and readable from any origin: it holds nothing secret.",
    )
    async def get_auth_config(response: Response) -> AuthConfig:
        response.headers["Access-Control-Allow-Origin"] = "*"
        return config

    @router.post(
        "/auth/token",
        dependencies=[allow(ANYONE)],
        response_model=AccessToken,
        tags=["identity"],
        summary="Exchange a password for a bearer token",
        description="Returns a short-lived bearer token. Wrong credentials: 401 `invalid_credentials`; "
        "too many failures for the account or the address: 429 `too_many_attempts` with `Retry-After`.",
    )
    def token(request: Request, body: TokenRequest) -> AccessToken:
        session = identity.login(body.username, body.password, client=client_address(request.scope))
        return session.access_token()

    @signed_in.get(
        "/auth/me", response_model=CallerInfo, tags=["identity"], summary="Who the token belongs to"
    )
    def me(request: Request) -> CallerInfo:
        return caller_info(principal_of(request.scope))

    # users

    @admin.get("/users", response_model=UserList, tags=["users"], summary="List users")
    def list_users(request: Request) -> UserList:
        return UserList(users=identity.users())

    @admin.post("/users", response_model=UserInfo, status_code=201, tags=["users"], summary="Create a user")
    def create_user(request: Request, body: NewUser) -> UserInfo:
        return identity.create_user(
            body.name, role=body.role, groups=body.groups, password=body.password, actor=actor_of(request)
        )

    @admin.get("/users/{user_id}", response_model=UserInfo, tags=["users"], summary="Get a user")
    def get_user(request: Request, user_id: Id) -> UserInfo:
        return identity.user(user_id)

    @admin.patch("/users/{user_id}", response_model=UserInfo, tags=["users"], summary="Change a user")
    def update_user(request: Request, user_id: Id, body: UserChange) -> UserInfo:
        return identity.update_user(
            user_id,
            role=body.role,
            groups=body.groups,
            password=body.password,
            disabled=body.disabled,
            actor=actor_of(request),
        )

    @admin.delete("/users/{user_id}", status_code=204, tags=["users"], summary="Delete a user and its tokens")
    def delete_user(request: Request, user_id: Id) -> Response:
        identity.delete_user(user_id, actor=actor_of(request))
        return Response(status_code=204)

    # groups

    @admin.get("/groups", response_model=GroupList, tags=["groups"], summary="List groups")
    def list_groups(request: Request) -> GroupList:
        return GroupList(groups=identity.groups())

    @admin.post(
        "/groups", response_model=GroupInfo, status_code=201, tags=["groups"], summary="Create a group"
    )
    def create_group(request: Request, body: NewGroup) -> GroupInfo:
        return identity.create_group(body.path, actor=actor_of(request))

    @admin.get("/groups/{group_id}", response_model=GroupInfo, tags=["groups"], summary="Get a group")
    def get_group(request: Request, group_id: Id) -> GroupInfo:
        return identity.group(group_id)

    @admin.delete("/groups/{group_id}", status_code=204, tags=["groups"], summary="Delete a group")
    def delete_group(request: Request, group_id: Id) -> Response:
        identity.delete_group(group_id, actor=actor_of(request))
        return Response(status_code=204)

    # tokens

    def own_token(request: Request, token_id: int) -> TokenInfo:
        principal = principal_of(request.scope)
        try:
            info = identity.token(token_id)
        except NotFound:
            info = None
        if info is None or not (principal.is_admin or info.user_id == principal.user_id):
            raise NotFound(f"no token with id {token_id}")
        return info

    @signed_in.get("/tokens", response_model=TokenList, tags=["tokens"], summary="List tokens")
    def list_tokens(
        request: Request,
        user: Annotated[
            int | None, Query(ge=1, le=MAX_ID, description="Only this user's tokens (admins only).")
        ] = None,
    ) -> TokenList:
        principal = principal_of(request.scope)
        if principal.is_admin:
            return TokenList(tokens=identity.tokens(user_id=user))
        if user is not None and user != principal.user_id:
            return TokenList(tokens=[])
        return TokenList(tokens=identity.tokens(user_id=principal.user_id))

    @signed_in.post(
        "/tokens",
        response_model=NewToken,
        status_code=201,
        tags=["tokens"],
        summary="Make a token",
        description="The response carries the token's secret; it is shown this once and never stored.",
    )
    def create_token(request: Request, body: NewTokenRequest) -> NewToken:
        principal = principal_of(request.scope)
        owner = principal.user_id
        if body.user is not None and body.user != owner:
            if not principal.is_admin:
                raise NotFound(f"no user with id {body.user}")
            owner = body.user
        assert owner is not None
        expires_at: datetime | None = None
        if body.expires_in_days is not None:
            expires_at = utcnow() + timedelta(days=body.expires_in_days)
        return identity.create_token(owner, name=body.name, expires_at=expires_at, actor=actor_of(request))

    @signed_in.get("/tokens/{token_id}", response_model=TokenInfo, tags=["tokens"], summary="Get a token")
    def get_token(request: Request, token_id: Id) -> TokenInfo:
        return own_token(request, token_id)

    @signed_in.delete("/tokens/{token_id}", status_code=204, tags=["tokens"], summary="Revoke a token")
    def revoke_token(request: Request, token_id: Id) -> Response:
        own_token(request, token_id)
        identity.revoke(token_id, actor=actor_of(request))
        return Response(status_code=204)

    # audit

    @admin.get(
        "/audit",
        response_model=AuditList,
        tags=["audit"],
        summary="The audit trail",
        description="Every change to the platform, newest first; page back with `before` (an event id).",
    )
    def list_audit(
        request: Request,
        actor: str | None = None,
        action: str | None = None,
        target: str | None = None,
        since: datetime | None = None,
        before: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> AuditList:
        if since is not None and since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        events = audit.events(
            actor=actor, action=action, target=target, since=since, before=before, limit=limit
        )
        return AuditList(events=events)

    signed_in.include_router(admin)
    router.include_router(signed_in)
    return router
