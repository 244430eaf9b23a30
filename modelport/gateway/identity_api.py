"""The identity routes: password exchange, who am I, users, groups, tokens, and the audit trail.

Users, groups and the audit trail are for admins. Everyone signed in manages their own tokens; admins
everyone's. A caller who may not see an object gets 404 for it, exactly as if it did not exist; one who may
not use a route that names no object gets 403.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from modelport.control.audit import Actor
from modelport.control.identity import Principal
from modelport.control.platform import Services
from modelport.core.errors import Forbidden, NotFound, Unauthorized
from modelport.db import Role
from modelport.db.models import utcnow
from modelport.gateway.auth import client_address, principal_of

__all__ = ["actor_of", "identity_router"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


RoleName = Literal["admin", "developer", "user"]
Password = Annotated[str, Field(min_length=8, max_length=1024, description="At least 8 characters.")]
GroupPath = Annotated[str, Field(min_length=2, max_length=255, pattern=r"^/", examples=["/team/users"])]


class TokenRequest(_Strict):
    username: str = Field(min_length=1, max_length=255)
    password: str = Field(min_length=1, max_length=1024)


class SessionToken(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 - the scheme, not a secret
    expires_in: int
    expires_at: str


class Me(BaseModel):
    id: int
    name: str
    role: RoleName
    groups: list[str]
    source: str
    token_id: int | None


class UserInfo(BaseModel):
    id: int
    name: str
    role: RoleName
    groups: list[str]
    source: str
    disabled: bool
    created_at: str
    last_login_at: str | None


class UserList(BaseModel):
    users: list[UserInfo]


class NewUser(_Strict):
    name: str = Field(min_length=1, max_length=255)
    role: RoleName = "user"
    groups: list[GroupPath] = []
    password: Password | None = None


class UserChange(_Strict):
    role: RoleName | None = None
    groups: list[GroupPath] | None = None
    password: Password | None = None
    disabled: bool | None = None


class GroupInfo(BaseModel):
    id: int
    path: str
    members: list[str]
    created_at: str


class GroupList(BaseModel):
    groups: list[GroupInfo]


class NewGroup(_Strict):
    path: GroupPath


class TokenInfo(BaseModel):
    id: int
    name: str
    user: str
    user_id: int
    prefix: str
    kind: str
    created_at: str
    expires_at: str | None
    revoked_at: str | None


class NewTokenInfo(TokenInfo):
    token: str = Field(description="The token's secret: shown this once, never again.")


class TokenList(BaseModel):
    tokens: list[TokenInfo]


class NewToken(_Strict):
    name: str = Field(min_length=1, max_length=255)
    expires_in_days: int | None = Field(None, ge=1, le=3650, description="Default: never expires.")
    user: int | None = Field(None, description="Make the token for this user (admins only).")


class AuditEventInfo(BaseModel):
    id: int
    at: str
    actor: str
    action: str
    target: str
    client: str | None
    request_id: str | None
    details: dict[str, Any]


class AuditList(BaseModel):
    events: list[AuditEventInfo]


def actor_of(request: Request) -> Actor:
    return Actor(
        principal_of(request.scope).name,
        client=client_address(request.scope),
        request_id=request.headers.get("x-request-id"),
    )


def _signed_in(request: Request) -> Principal:
    principal = principal_of(request.scope)
    if principal.user_id is None:
        raise Unauthorized("send a token as `Authorization: Bearer <token>`")
    return principal


def identity_router(services: Services) -> APIRouter:
    identity, audit = services.identity, services.audit

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
            return str(identity.group(int(group_id))["path"])
        except (ValueError, NotFound):
            return None

    router = APIRouter(prefix="/api/v1")
    admin = APIRouter(dependencies=[Depends(admin_only)])

    @router.post(
        "/auth/token",
        response_model=SessionToken,
        tags=["identity"],
        summary="Exchange a password for a bearer token",
        description="Returns a short-lived bearer token. Wrong credentials: 401 `invalid_credentials`; "
        "too many failures for the account or the address: 429 `too_many_attempts` with `Retry-After`.",
    )
    def token(request: Request, body: TokenRequest) -> dict[str, Any]:
        client = client_address(request.scope)
        try:
            session = identity.login(body.username, body.password, client=client)
        except Unauthorized:
            # A name that is no user's may be a password typed into the wrong field: it is not recorded.
            known = identity.find_user(body.username) is not None
            name = body.username if known else "(unknown user)"
            audit.record(Actor(name, client=client), "auth.login_failed", f"user/{name}")
            raise
        audit.record(Actor(body.username, client=client), "auth.login", f"user/{body.username}")
        return {
            "access_token": session.token,
            "expires_in": identity.session_seconds,
            "expires_at": session.expires_at.isoformat(),
        }

    @router.get("/auth/me", response_model=Me, tags=["identity"], summary="Who the token belongs to")
    def me(request: Request) -> dict[str, Any]:
        principal = _signed_in(request)
        return {
            "id": principal.user_id,
            "name": principal.name,
            "role": str(principal.role),
            "groups": sorted(principal.groups),
            "source": principal.source,
            "token_id": principal.token_id,
        }

    # users

    @admin.get("/users", response_model=UserList, tags=["users"], summary="List users")
    def list_users(request: Request) -> dict[str, Any]:
        return {"users": identity.users()}

    @admin.post("/users", response_model=UserInfo, status_code=201, tags=["users"], summary="Create a user")
    def create_user(request: Request, body: NewUser) -> dict[str, Any]:
        user = identity.create_user(
            body.name, role=Role(body.role), groups=body.groups, password=body.password
        )
        audit.record(
            actor_of(request), "user.create", f"user/{user['name']}", role=body.role, groups=body.groups
        )
        return user

    @admin.get("/users/{user_id}", response_model=UserInfo, tags=["users"], summary="Get a user")
    def get_user(request: Request, user_id: int) -> dict[str, Any]:
        return identity.user(user_id)

    @admin.patch("/users/{user_id}", response_model=UserInfo, tags=["users"], summary="Change a user")
    def update_user(request: Request, user_id: int, body: UserChange) -> dict[str, Any]:
        user = identity.update_user(
            user_id,
            role=Role(body.role) if body.role else None,
            groups=body.groups,
            password=body.password,
            disabled=body.disabled,
        )
        changed = body.model_dump(exclude_unset=True, exclude={"password"})
        if body.password is not None:
            changed["password_changed"] = True
        audit.record(actor_of(request), "user.update", f"user/{user['name']}", **changed)
        return user

    @admin.delete("/users/{user_id}", status_code=204, tags=["users"], summary="Delete a user and its tokens")
    def delete_user(request: Request, user_id: int) -> Response:
        name = identity.user(user_id)["name"]
        identity.delete_user(user_id)
        audit.record(actor_of(request), "user.delete", f"user/{name}")
        return Response(status_code=204)

    # groups

    @admin.get("/groups", response_model=GroupList, tags=["groups"], summary="List groups")
    def list_groups(request: Request) -> dict[str, Any]:
        return {"groups": identity.groups()}

    @admin.post(
        "/groups", response_model=GroupInfo, status_code=201, tags=["groups"], summary="Create a group"
    )
    def create_group(request: Request, body: NewGroup) -> dict[str, Any]:
        group = identity.create_group(body.path)
        audit.record(actor_of(request), "group.create", f"group{body.path}")
        return group

    @admin.get("/groups/{group_id}", response_model=GroupInfo, tags=["groups"], summary="Get a group")
    def get_group(request: Request, group_id: int) -> dict[str, Any]:
        return identity.group(group_id)

    @admin.delete("/groups/{group_id}", status_code=204, tags=["groups"], summary="Delete a group")
    def delete_group(request: Request, group_id: int) -> Response:
        path = identity.group(group_id)["path"]
        identity.delete_group(group_id)
        audit.record(actor_of(request), "group.delete", f"group{path}")
        return Response(status_code=204)

    # tokens

    def own_token(request: Request, token_id: int) -> dict[str, Any]:
        principal = _signed_in(request)
        try:
            info = identity.token(token_id)
        except NotFound:
            info = None
        if info is None or not (principal.is_admin or info["user_id"] == principal.user_id):
            raise NotFound(f"no token with id {token_id}")
        return info

    @router.get("/tokens", response_model=TokenList, tags=["tokens"], summary="List tokens")
    def list_tokens(
        request: Request,
        user: Annotated[int | None, Query(description="Only this user's tokens (admins only).")] = None,
    ) -> dict[str, Any]:
        principal = _signed_in(request)
        if principal.is_admin:
            return {"tokens": identity.tokens(user_id=user)}
        if user is not None and user != principal.user_id:
            return {"tokens": []}
        return {"tokens": identity.tokens(user_id=principal.user_id)}

    @router.post(
        "/tokens",
        response_model=NewTokenInfo,
        status_code=201,
        tags=["tokens"],
        summary="Make a token",
        description="The response carries the token's secret; it is shown this once and never stored.",
    )
    def create_token(request: Request, body: NewToken) -> dict[str, Any]:
        principal = _signed_in(request)
        owner = principal.user_id
        if body.user is not None and body.user != owner:
            if not principal.is_admin:
                raise NotFound(f"no user with id {body.user}")
            owner = body.user
        assert owner is not None
        expires_at: datetime | None = None
        if body.expires_in_days is not None:
            expires_at = utcnow() + timedelta(days=body.expires_in_days)
        secret, info = identity.issue(owner, name=body.name, expires_at=expires_at)
        audit.record(
            actor_of(request),
            "token.create",
            f"token/{info['id']}",
            name=body.name,
            user=info["user"],
            expires_at=info["expires_at"],
        )
        return {**info, "token": secret}

    @router.get("/tokens/{token_id}", response_model=TokenInfo, tags=["tokens"], summary="Get a token")
    def get_token(request: Request, token_id: int) -> dict[str, Any]:
        return own_token(request, token_id)

    @router.delete("/tokens/{token_id}", status_code=204, tags=["tokens"], summary="Revoke a token")
    def revoke_token(request: Request, token_id: int) -> Response:
        info = own_token(request, token_id)
        identity.revoke(token_id)
        audit.record(
            actor_of(request), "token.revoke", f"token/{token_id}", name=info["name"], user=info["user"]
        )
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
        before: int | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        if since is not None and since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        return {
            "events": audit.events(
                actor=actor, action=action, target=target, since=since, before=before, limit=limit
            )
        }

    router.include_router(admin)
    return router
