"""The identity calls of `Client` against a scripted transport: the exact requests they send and what they
return, the password exchange that needs no token, and refusals that say when to try again."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from pydantic_core import to_jsonable_python as plain
from recording import Recorder

from modelport.client import ApiError, Client

USER = {
    "id": 7,
    "name": "ann",
    "role": "developer",
    "groups": ["/team/users"],
    "source": "local",
    "disabled": False,
    "created_at": "2024-05-01T10:00:00+00:00",
    "last_login_at": None,
}
GROUP = {"id": 3, "path": "/team/users", "members": ["ann"], "created_at": "2024-05-01T10:00:00+00:00"}
TOKEN = {
    "id": 11,
    "name": "ci",
    "user": "ann",
    "user_id": 7,
    "prefix": "mp_abcdefg",
    "kind": "api",
    "created_at": "2024-05-01T10:00:00+00:00",
    "expires_at": None,
    "revoked_at": None,
}


def test_exchange_password_sends_no_token() -> None:
    answer = {
        "access_token": "mp_session",
        "token_type": "bearer",
        "expires_in": 3600,
        "expires_at": "2024-05-01T11:00:00+00:00",
    }
    seen = Recorder(lambda r: httpx.Response(200, json=answer))
    got = Client.exchange_password(
        "http://platform.test/base/", "ann", "s3cret pass", transport=httpx.MockTransport(seen)
    )
    assert plain(got) == answer
    assert seen.sent() == [
        ("POST", "/base/api/v1/auth/token", {"username": "ann", "password": "s3cret pass"})
    ]
    assert "Authorization" not in seen.requests[0].headers


def test_wrong_credentials_are_an_api_error_without_the_password() -> None:
    body = {
        "error": {"code": "invalid_credentials", "message": "wrong user name or password", "details": None}
    }
    transport = httpx.MockTransport(lambda r: httpx.Response(401, json=body))
    with pytest.raises(ApiError) as caught:
        Client.exchange_password("http://platform.test", "ann", "s3cret", transport=transport)
    assert (caught.value.status, caught.value.code) == (401, "invalid_credentials")
    assert "s3cret" not in str(caught.value)


def test_too_many_attempts_say_when_to_try_again() -> None:
    body = {"error": {"code": "too_many_attempts", "message": "too many failed logins", "details": None}}
    transport = httpx.MockTransport(lambda r: httpx.Response(429, json=body, headers={"Retry-After": "30"}))
    with pytest.raises(ApiError) as caught:
        Client.exchange_password("http://platform.test", "ann", "s3cret", transport=transport)
    assert caught.value.code == "too_many_attempts"
    assert caught.value.message == "too many failed logins; try again in 30 s"


def test_me_sends_the_token(client_for: Any) -> None:
    caller = {"id": 7, "name": "ann", "role": "developer", "groups": [], "source": "local", "token_id": 11}
    client, seen = client_for(lambda r: httpx.Response(200, json=caller))
    assert plain(client.me()) == caller
    assert seen.sent() == [("GET", "/base/api/v1/auth/me", None)]
    assert seen.requests[0].headers["Authorization"] == "Bearer tok"


def test_user_calls(client_for: Any) -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.method == "DELETE":
            return httpx.Response(204)
        if request.url.path.endswith("/users") and request.method == "GET":
            return httpx.Response(200, json={"users": [USER]})
        return httpx.Response(201 if request.method == "POST" else 200, json=USER)

    client, seen = client_for(handle)
    assert plain(client.users()) == [USER]
    assert plain(client.user(7)) == USER
    assert plain(client.create_user("ann")) == USER
    client.create_user("bob", role="admin", groups=["/ops"], password="pw")
    assert plain(client.update_user(7, disabled=True)) == USER
    client.update_user(7, role="user", groups=[], password="new")
    assert client.delete_user(7) is None
    assert seen.sent() == [
        ("GET", "/base/api/v1/users", None),
        ("GET", "/base/api/v1/users/7", None),
        ("POST", "/base/api/v1/users", {"name": "ann"}),
        (
            "POST",
            "/base/api/v1/users",
            {"name": "bob", "role": "admin", "groups": ["/ops"], "password": "pw"},
        ),
        ("PATCH", "/base/api/v1/users/7", {"disabled": True}),
        ("PATCH", "/base/api/v1/users/7", {"role": "user", "groups": [], "password": "new"}),
        ("DELETE", "/base/api/v1/users/7", None),
    ]


def test_group_calls(client_for: Any) -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.method == "DELETE":
            return httpx.Response(204)
        if request.url.path.endswith("/groups") and request.method == "GET":
            return httpx.Response(200, json={"groups": [GROUP]})
        return httpx.Response(201 if request.method == "POST" else 200, json=GROUP)

    client, seen = client_for(handle)
    assert plain(client.groups()) == [GROUP]
    assert plain(client.group(3)) == GROUP
    assert plain(client.create_group("/team/users")) == GROUP
    assert client.delete_group(3) is None
    assert seen.sent() == [
        ("GET", "/base/api/v1/groups", None),
        ("GET", "/base/api/v1/groups/3", None),
        ("POST", "/base/api/v1/groups", {"path": "/team/users"}),
        ("DELETE", "/base/api/v1/groups/3", None),
    ]


def test_token_calls(client_for: Any) -> None:
    created = TOKEN | {"token": "mp_secret"}

    def handle(request: httpx.Request) -> httpx.Response:
        if request.method == "DELETE":
            return httpx.Response(204)
        if request.method == "POST":
            return httpx.Response(201, json=created)
        return httpx.Response(200, json={"tokens": [TOKEN]})

    client, seen = client_for(handle)
    assert plain(client.tokens()) == [TOKEN]
    client.tokens(user=7)
    assert plain(client.create_token("ci")) == created
    client.create_token("ci", expires_in_days=30, user=7)
    assert client.revoke_token(11) is None
    assert seen.sent() == [
        ("GET", "/base/api/v1/tokens", None),
        ("GET", "/base/api/v1/tokens?user=7", None),
        ("POST", "/base/api/v1/tokens", {"name": "ci"}),
        ("POST", "/base/api/v1/tokens", {"name": "ci", "expires_in_days": 30, "user": 7}),
        ("DELETE", "/base/api/v1/tokens/11", None),
    ]


def test_audit_sends_only_the_filters_given(client_for: Any) -> None:
    event = {
        "id": 5,
        "at": "2024-05-01T10:00:00+00:00",
        "actor": "admin",
        "action": "user.create",
        "target": "user/ann",
        "client": "127.0.0.1",
        "request_id": "r1",
        "details": {"role": "user"},
    }
    client, seen = client_for(lambda r: httpx.Response(200, json={"events": [event]}))
    assert plain(client.audit()) == [event]
    client.audit(actor="admin", action="user.create", target="user/ann", before=9, limit=5)
    client.audit(since=datetime(2024, 5, 1, 10, 0, tzinfo=UTC))
    client.audit(since="2024-05-01")
    params = [dict(r.url.params) for r in seen.requests]
    assert params == [
        {},
        {"actor": "admin", "action": "user.create", "target": "user/ann", "before": "9", "limit": "5"},
        {"since": "2024-05-01T10:00:00+00:00"},
        {"since": "2024-05-01"},
    ]
    assert {r.url.path for r in seen.requests} == {"/base/api/v1/audit"}


@pytest.mark.parametrize(
    ("call", "status", "code"),
    [
        (lambda c: c.create_user("ann"), 409, "conflict"),
        (lambda c: c.update_user(7, role="boss"), 422, "validation_failed"),
        (lambda c: c.users(), 403, "forbidden"),
        (lambda c: c.revoke_token(99), 404, "not_found"),
    ],
)
def test_refusals_keep_the_servers_code(client_for: Any, call: Any, status: int, code: str) -> None:
    body = {"error": {"code": code, "message": "no", "details": None}}
    client, _ = client_for(lambda r: httpx.Response(status, json=body))
    with pytest.raises(ApiError) as caught:
        call(client)
    assert (caught.value.status, caught.value.code) == (status, code)
