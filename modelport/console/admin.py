"""The console's administration pages: users, groups, tokens, and the audit trail.

Who may do what is the identity API's rule (`gateway/identity_api.py`): users, groups and the audit trail are
for admins, and anyone else is told what the API tells them: 404 for a user or group other than their own,
403 for the rest. Everyone signed in sees and manages their own tokens, admins everyone's. Every change goes
through the identity service with the page's caller as the actor, so the audit trail records it exactly as
it records the API's changes.

A new token's secret is shown on the page that answers the form which made it, and never again: only its
digest is stored.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from modelport.console.web import Console, Page
from modelport.control.identity import Identity
from modelport.core.errors import (
    Forbidden,
    InvalidCursor,
    ModelportError,
    NotFound,
    ValidationFailed,
    field_error,
)
from modelport.core.manifests import check_group_path
from modelport.core.records import AuditEvent, TokenInfo, UserInfo
from modelport.core.roles import Role
from modelport.gateway.identity_api import MAX_ID

__all__ = ["AUDIT_PAGE", "routes"]

AUDIT_PAGE = 50
"""Audit events on one page; older ones are a link away."""

_NAME_MAX = 255
_PASSWORD_MIN, _PASSWORD_MAX = 8, 1024
_DAYS_MAX = 3650

Work = Callable[[Page, Mapping[str, Any]], Response]


@dataclass(frozen=True)
class _TokenRow:
    """A token as its page lists it: its info, whether it still works, and whether it is this session."""

    info: TokenInfo
    state: str
    current: bool


@dataclass(frozen=True)
class _AuditRow:
    """An audit event with its details written out as JSON."""

    event: AuditEvent
    details: str


def routes(console: Console) -> list[BaseRoute]:
    identity = console.services.identity

    def posted(work: Work) -> Callable[[Request], Awaitable[Response]]:
        """The form's CSRF token checked, then `work` in a worker thread (it uses the database)."""

        async def handler(request: Request) -> Response:
            page, form = await console.form(request)
            return await asyncio.to_thread(work, page, form)

        return handler

    # users

    def users_page(request: Request) -> Response:
        page = console.page(request)
        _admin_only(identity, page)
        return _users(console, page)

    def create_user(page: Page, form: Mapping[str, Any]) -> Response:
        _admin_only(identity, page)
        name = _text(form, "name")
        try:
            role = _role(form) or Role.USER
            password = _password(form)
            identity.create_user(
                name, role=role, groups=_all(form, "groups"), password=password, actor=page.actor()
            )
        except ModelportError as exc:
            if exc.status >= 500:
                raise
            return _users(console, page, problem=exc, draft=form)
        return _see(page, "/users")

    def user_page(request: Request) -> Response:
        page = console.page(request)
        _admin_only(identity, page)
        return _user(console, page, _id(page, "user_id", "user"))

    def update_user(page: Page, form: Mapping[str, Any]) -> Response:
        _admin_only(identity, page)
        user_id = _id(page, "user_id", "user")
        try:
            identity.update_user(
                user_id,
                role=_role(form),
                groups=_all(form, "groups"),
                password=_password(form),
                actor=page.actor(),
            )
        except ModelportError as exc:
            if exc.status >= 500 or isinstance(exc, NotFound):
                raise
            return _user(console, page, user_id, problem=exc)
        return _see(page, f"/users/{user_id}")

    def set_disabled(disabled: bool) -> Work:
        def change(page: Page, form: Mapping[str, Any]) -> Response:
            _admin_only(identity, page)
            identity.update_user(_id(page, "user_id", "user"), disabled=disabled, actor=page.actor())
            return _see(page, "/users")

        return change

    def delete_user(page: Page, form: Mapping[str, Any]) -> Response:
        _admin_only(identity, page)
        identity.delete_user(_id(page, "user_id", "user"), actor=page.actor())
        return _see(page, "/users")

    # groups

    def groups_page(request: Request) -> Response:
        page = console.page(request)
        _admin_only(identity, page)
        return _groups(console, page)

    def create_group(page: Page, form: Mapping[str, Any]) -> Response:
        _admin_only(identity, page)
        path = _text(form, "path")
        try:
            identity.create_group(_group(path), actor=page.actor())
        except ModelportError as exc:
            if exc.status >= 500:
                raise
            return _groups(console, page, problem=exc, typed=path)
        return _see(page, "/groups")

    def delete_group(page: Page, form: Mapping[str, Any]) -> Response:
        _admin_only(identity, page)
        identity.delete_group(_id(page, "group_id", "group"), actor=page.actor())
        return _see(page, "/groups")

    # tokens

    def tokens_page(request: Request) -> Response:
        page = console.page(request)
        return _tokens(console, page, request.query_params.get("user", ""))

    def create_token(page: Page, form: Mapping[str, Any]) -> Response:
        chosen = _text(form, "user")
        owner = _token_owner(page, chosen)
        try:
            name = _token_name(form)
            days = _days(form)
        except ModelportError as exc:
            return _tokens(console, page, chosen, problem=exc, draft=form)
        expires_at = identity.now() + timedelta(days=days) if days is not None else None
        made = identity.create_token(owner, name=name, expires_at=expires_at, actor=page.actor())
        return console.render(page, "admin_token_new.html", token=made, chosen=chosen)

    def revoke_token(page: Page, form: Mapping[str, Any]) -> Response:
        token_id = _id(page, "token_id", "token")
        try:
            info = identity.token(token_id)
        except NotFound:
            info = None
        if info is None or not (page.principal.is_admin or info.user_id == page.principal.user_id):
            raise NotFound(f"no token with id {token_id}")
        identity.revoke(token_id, actor=page.actor())
        chosen = _text(form, "user")
        return _see(page, "/tokens" + (f"?{urlencode({'user': chosen})}" if chosen else ""))

    # the audit trail

    def audit_page(request: Request) -> Response:
        page = console.page(request)
        _admin_only(identity, page)
        return _audit(console, page)

    return [
        Route("/users", users_page, methods=["GET"], name="users"),
        Route("/users", posted(create_user), methods=["POST"], name="users-create"),
        Route("/users/{user_id}", user_page, methods=["GET"], name="user"),
        Route("/users/{user_id}", posted(update_user), methods=["POST"], name="user-update"),
        Route("/users/{user_id}/disable", posted(set_disabled(True)), methods=["POST"], name="user-disable"),
        Route("/users/{user_id}/enable", posted(set_disabled(False)), methods=["POST"], name="user-enable"),
        Route("/users/{user_id}/delete", posted(delete_user), methods=["POST"], name="user-delete"),
        Route("/groups", groups_page, methods=["GET"], name="groups"),
        Route("/groups", posted(create_group), methods=["POST"], name="groups-create"),
        Route("/groups/{group_id}/delete", posted(delete_group), methods=["POST"], name="group-delete"),
        Route("/tokens", tokens_page, methods=["GET"], name="tokens"),
        Route("/tokens", posted(create_token), methods=["POST"], name="tokens-create"),
        Route("/tokens/{token_id}/revoke", posted(revoke_token), methods=["POST"], name="token-revoke"),
        Route("/audit", audit_page, methods=["GET"], name="audit"),
    ]


# Permissions, as the identity API checks them


def _admin_only(identity: Identity, page: Page) -> None:
    """Admins pass; anyone else gets 404 for a user or group other than their own, and 403 for the rest
    (the identity API's `admin_only`, checked before anything the request asks for)."""
    principal = page.principal
    if principal.is_admin:
        return
    params = page.request.path_params
    user_id = params.get("user_id")
    if user_id is not None and user_id != str(principal.user_id):
        raise NotFound(f"no user with id {user_id}")
    group_id = params.get("group_id")
    if group_id is not None and _group_path(identity, group_id) not in principal.groups:
        raise NotFound(f"no group with id {group_id}")
    raise Forbidden("this needs the admin role")


def _group_path(identity: Identity, group_id: str) -> str | None:
    number = _number(group_id)
    if number is None:
        return None
    try:
        return identity.group(number).path
    except NotFound:
        return None


def _token_owner(page: Page, chosen: str) -> int:
    """Whose token the form makes: the caller's, or (admins only) the chosen user's; 404 for anyone else."""
    owner = page.principal.user_id
    assert owner is not None
    if not chosen or chosen == "all":
        return owner
    number = _number(chosen)
    if number == owner:
        return owner
    if number is None or not page.principal.is_admin:
        raise NotFound(f"no user with id {chosen}")
    return number


# Pages


def _users(
    console: Console,
    page: Page,
    *,
    problem: ModelportError | None = None,
    draft: Mapping[str, Any] | None = None,
) -> Response:
    identity = console.services.identity
    return console.render(
        page,
        "admin_users.html",
        status=problem.status if problem else 200,
        users=identity.users(),
        groups=[group.path for group in identity.groups()],
        roles=list(Role),
        problem=problem.public_message() if problem else None,
        draft=_draft(draft),
    )


def _user(console: Console, page: Page, user_id: int, *, problem: ModelportError | None = None) -> Response:
    identity = console.services.identity
    user = identity.user(user_id)
    return console.render(
        page,
        "admin_user.html",
        status=problem.status if problem else 200,
        user=user,
        groups=[group.path for group in identity.groups()],
        roles=list(Role),
        problem=problem.public_message() if problem else None,
    )


def _groups(
    console: Console, page: Page, *, problem: ModelportError | None = None, typed: str = ""
) -> Response:
    return console.render(
        page,
        "admin_groups.html",
        status=problem.status if problem else 200,
        groups=console.services.identity.groups(),
        problem=problem.public_message() if problem else None,
        typed=typed,
    )


def _tokens(
    console: Console,
    page: Page,
    chosen: str,
    *,
    problem: ModelportError | None = None,
    draft: Mapping[str, Any] | None = None,
) -> Response:
    """The tokens of the caller, or for admins of the chosen user (`all`: everyone's). A non-admin who names
    another user sees no tokens, as the API answers."""
    identity = console.services.identity
    principal = page.principal
    users: list[UserInfo] = identity.users() if principal.is_admin else []
    wanted = _number(chosen) if chosen else principal.user_id
    if principal.is_admin and chosen == "all":
        tokens = identity.tokens()
    elif wanted is not None and (principal.is_admin or wanted == principal.user_id):
        tokens = identity.tokens(user_id=wanted)
    else:
        tokens = []
    owner = next((user for user in users if user.id == wanted), None)
    now = identity.now()
    rows = [
        _TokenRow(info, _token_state(info, now), info.id == principal.token_id) for info in reversed(tokens)
    ]
    return console.render(
        page,
        "admin_tokens.html",
        status=problem.status if problem else 200,
        tokens=rows,
        users=users,
        chosen=chosen,
        owner=owner,
        problem=problem.public_message() if problem else None,
        draft=_draft(draft),
    )


def _audit(console: Console, page: Page) -> Response:
    query = page.request.query_params
    filters = {key: query.get(key, "").strip() for key in ("actor", "action", "target", "since")}
    problem: ModelportError | None = None
    older: str | None = None
    try:
        since = _since(filters["since"])
        cursor = _cursor(query.get("cursor", ""))
        events = console.services.audit.events(
            actor=filters["actor"] or None,
            action=filters["action"] or None,
            target=filters["target"] or None,
            since=since,
            before=cursor,
            limit=AUDIT_PAGE + 1,
        )
    except (ValidationFailed, InvalidCursor) as exc:
        problem, events = exc, []
    rows = [_AuditRow(event, _details(event.details)) for event in events[:AUDIT_PAGE]]
    shown = {key: value for key, value in filters.items() if value}
    if len(events) > AUDIT_PAGE:
        older = urlencode({**shown, "cursor": str(rows[-1].event.id)})
    return console.render(
        page,
        "admin_audit.html",
        status=problem.status if problem else 200,
        events=rows,
        filters=filters,
        newest=urlencode(shown) if "cursor" in query else None,
        older=older,
        problem=problem.public_message() if problem else None,
    )


def _see(page: Page, where: str) -> Response:
    """After a change: the page at `where` (HTMX is told in `HX-Redirect`; a plain form follows a 303)."""
    location = page.request.scope.get("root_path", "") + where
    if page.request.headers.get("hx-request") == "true":
        return Response(status_code=204, headers={"HX-Redirect": location})
    return RedirectResponse(location, status_code=303)


# Form fields, checked as the API's request models check them


def _text(form: Mapping[str, Any], key: str) -> str:
    value = form.get(key)
    return value.strip() if isinstance(value, str) else ""


def _all(form: Mapping[str, Any], key: str) -> list[str]:
    values = form.getlist(key) if isinstance(form, FormData) else [form.get(key)]
    return [value.strip() for value in values if isinstance(value, str) and value.strip()]


def _draft(form: Mapping[str, Any] | None) -> dict[str, Any]:
    """What a refused form had in it, to fill the form again (never a password)."""
    if form is None:
        return {}
    return {
        "name": _text(form, "name"),
        "role": _text(form, "role"),
        "groups": _all(form, "groups"),
        "days": _text(form, "days"),
    }


def _role(form: Mapping[str, Any]) -> Role | None:
    """The form's role; None where it names none."""
    text = _text(form, "role")
    if not text:
        return None
    try:
        return Role(text)
    except ValueError:
        choices = ", ".join(role.value for role in Role)
        raise _invalid("role", "enum", f"must be one of {choices}") from None


def _password(form: Mapping[str, Any]) -> str | None:
    """The form's new password, or None where it leaves the password as it is."""
    value = form.get("password")
    if not isinstance(value, str) or not value:
        return None
    if not _PASSWORD_MIN <= len(value) <= _PASSWORD_MAX:
        raise _invalid("password", "length", f"must have {_PASSWORD_MIN} to {_PASSWORD_MAX} characters")
    return value


def _token_name(form: Mapping[str, Any]) -> str:
    name = _text(form, "name")
    if not 1 <= len(name) <= _NAME_MAX:
        raise _invalid("name", "length", f"must have 1 to {_NAME_MAX} characters")
    return name


def _days(form: Mapping[str, Any]) -> int | None:
    text = _text(form, "days")
    if not text:
        return None
    if not text.isdigit() or not 1 <= int(text) <= _DAYS_MAX:
        raise _invalid("days", "out_of_range", f"must be a whole number of days from 1 to {_DAYS_MAX}")
    return int(text)


def _group(path: str) -> str:
    """A full group path, refused in the API's words (and with its status) where it is not one."""
    try:
        return check_group_path(path)
    except ValueError as exc:
        raise _invalid("path", "group_path", str(exc)) from None


def _since(text: str) -> datetime | None:
    """The audit filter's start: a date or a date and time, in UTC unless it names its zone."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise _invalid(
            "since", "datetime", "must be a date or a date and time, like 2026-12-01T09:30"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _cursor(text: str) -> int | None:
    if not text:
        return None
    number = _number(text)
    if number is None:
        raise InvalidCursor("the cursor is not one this page gave out: start from the newest events")
    return number


def _invalid(field: str, code: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"{field}: {message}", details=[field_error(field, code, message)])


def _id(page: Page, key: str, noun: str) -> int:
    """The object id in the path; 404 where it cannot name one."""
    text = str(page.request.path_params[key])
    number = _number(text)
    if number is None:
        raise NotFound(f"no {noun} with id {text}")
    return number


def _number(text: str) -> int | None:
    """An id as a positive integer column holds one, else None."""
    if not (text.isascii() and text.isdigit() and len(text) <= len(str(MAX_ID))):
        return None
    return int(text) if 1 <= int(text) <= MAX_ID else None


def _token_state(info: TokenInfo, now: datetime) -> str:
    if info.revoked_at is not None:
        return "revoked"
    if info.expires_at is not None:
        expires = datetime.fromisoformat(info.expires_at)
        if (expires if expires.tzinfo else expires.replace(tzinfo=UTC)) <= now:
            return "expired"
    return "active"


def _details(details: dict[str, Any]) -> str:
    return json.dumps(details, ensure_ascii=False, sort_keys=True, default=str) if details else ""
