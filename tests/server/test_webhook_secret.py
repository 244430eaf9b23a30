"""The webhook secret routes on the platform's application, on each database backend: every caller has a
secret of their own, shown once when it is made or rotated, and callers without an account have none."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from inprocess import InProcessApp, served_platform
from platform_server import ADMIN_TOKEN

from modelport.core.errors import ModelportError
from modelport.gateway.app import on_error
from modelport.gateway.webhooks_api import webhooks_router

SECRET = "/api/v1/webhooks/secret"


@pytest.fixture
def served(tmp_path: Path, database_url: str) -> Iterator[InProcessApp]:
    with served_platform(tmp_path / "platform", database_url=database_url) as platform:
        yield platform


def client(served: InProcessApp, token: str | None) -> httpx.Client:
    return served.client({"Authorization": f"Bearer {token}"} if token else {})


def code(response: httpx.Response) -> Any:
    return response.json()["error"]["code"]


def test_a_secret_is_shown_once_and_rotation_replaces_it(served: InProcessApp) -> None:
    with client(served, ADMIN_TOKEN) as admin:
        missing = admin.get(SECRET)
        assert (missing.status_code, code(missing)) == (404, "webhook_secret_not_found")

        made = admin.post(SECRET)
        assert made.status_code == 200, made.text
        first = made.json()
        assert first["secret"].startswith("whsec_") and len(first["secret"]) == len("whsec_") + 44

        told = admin.get(SECRET)
        assert told.status_code == 200
        assert told.json() == {"secret": None, "created_at": first["created_at"]}

        rotated = admin.post(SECRET).json()
        assert rotated["secret"].startswith("whsec_") and rotated["secret"] != first["secret"]
        assert admin.get(SECRET).json() == {"secret": None, "created_at": rotated["created_at"]}

        # Another caller's secret is their own.
        user = admin.post("/api/v1/users", json={"name": "ann"}).json()
        token = admin.post("/api/v1/tokens", json={"name": "hooks", "user": user["id"]}).json()["token"]
    with client(served, token) as ann:
        assert code(ann.get(SECRET)) == "webhook_secret_not_found"
        theirs = ann.post(SECRET).json()["secret"]
        assert theirs not in (first["secret"], rotated["secret"])


def test_callers_without_an_account_have_no_secret(served: InProcessApp) -> None:
    with client(served, None) as anonymous:
        for method in ("GET", "POST"):
            response = anonymous.request(method, SECRET)
            assert (response.status_code, code(response)) == (401, "unauthorized")


async def test_a_principal_without_an_account_is_refused_by_the_routes() -> None:
    """Past authentication, a principal without a user (the anonymous one, here) gets no secret."""
    app = FastAPI(exception_handlers={ModelportError: on_error})

    def unreachable(user_id: int) -> None:
        raise AssertionError("the route asked for a secret")

    webhooks = SimpleNamespace(secret_info=unreachable, rotate=unreachable)
    app.include_router(webhooks_router(SimpleNamespace(webhooks=webhooks)))  # type: ignore[arg-type]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as anonymous:
        for method in ("GET", "POST"):
            response = await anonymous.request(method, SECRET)
            assert (response.status_code, code(response)) == (403, "forbidden")
