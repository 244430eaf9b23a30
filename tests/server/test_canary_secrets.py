"""A pass through sign-in, tokens, calls and refusals with known secrets: none of them may appear in the
server's output, in any file it wrote (logs, the database with its WAL, artifacts), or in any answer."""

from __future__ import annotations

import secrets
from pathlib import Path

import httpx
import pytest
from drive import deploy, push, wait_built, wait_deployment
from manifests import api, module_copy
from platform_server import ServerProcess

pytestmark = pytest.mark.slow


def test_known_secrets_leave_no_trace(tmp_path: Path) -> None:
    canary = "CANARY" + secrets.token_hex(8)
    admin_token = f"mp_{canary}admin0123456789"
    password = f"{canary}-password"
    wrong_password = f"{canary}-wrong"
    forged = f"mp_{canary}forged0123456789"
    cookie = f"{canary}-cookie"
    secrets_seen: list[str] = [admin_token, password, wrong_password, forged, cookie]
    bodies: list[str] = []

    server = ServerProcess(tmp_path / "server", token=admin_token)
    server.start()
    try:
        url = server.url

        def answer(response: httpx.Response) -> httpx.Response:
            bodies.append(response.text + "\n" + "\n".join(f"{k}: {v}" for k, v in response.headers.items()))
            return response

        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin_token}"}) as admin:
            assert push(admin, module_copy(tmp_path, "echo", "mod-s", None), version="v1").status_code == 201
            assert wait_built(admin, "mod-s", "v1")["build_status"] == "ready"
            wait_deployment(admin, "mod-s", deploy(admin, "mod-s", "v1")["generation"])
            documents = [api("s-api", "mod-s", access={"groups": ["/team"]})]
            answer(admin.post("/api/v1/apply", json={"documents": documents}))
            answer(admin.post("/api/v1/groups", json={"path": "/team"}))
            answer(
                admin.post("/api/v1/users", json={"name": "ana", "groups": ["/team"], "password": password})
            )
            answer(admin.post("/api/v1/users", json={"name": "eve", "password": password, "is_admin": True}))

        with httpx.Client(base_url=url) as anyone:
            session = answer(
                anyone.post("/api/v1/auth/token", json={"username": "ana", "password": password})
            )
            session_token = session.json()["access_token"]
            secrets_seen.append(session_token)
            answer(anyone.post("/api/v1/auth/token", json={"username": "ana", "password": wrong_password}))
            answer(anyone.post("/api/v1/auth/token", json={"username": wrong_password, "password": password}))
            answer(
                anyone.post("/api/v1/auth/token", content=f'{{"username": "ana", "password": "{password}"')
            )
            bearer = {"Authorization": f"Bearer {session_token}", "Cookie": f"session={cookie}"}
            made = answer(anyone.post("/api/v1/tokens", json={"name": "ci"}, headers=bearer))
            api_token = made.json()["token"]
            secrets_seen.append(api_token)
            with_token = {"Authorization": f"Bearer {api_token}"}
            called = answer(
                anyone.post(
                    "/api/v1/modules/mod-s/predict", json={"inputs": {"text": "hi"}}, headers=with_token
                )
            )
            assert called.status_code == 200
            answer(
                anyone.post("/api/v1/modules/mod-s/predict", json={"inputs": {"txt": 1}}, headers=with_token)
            )
            answer(anyone.delete(f"/api/v1/tokens/{made.json()['id']}", headers=with_token))
            refused = answer(anyone.get("/api/v1/auth/me", headers=with_token))
            assert refused.status_code == 401
            for header in [f"Bearer {forged}", f"Basic {forged}", forged, f"Bearer {forged} {password}"]:
                assert (
                    answer(anyone.get("/api/v1/auth/me", headers={"Authorization": header})).status_code
                    == 401
                )
            answer(anyone.get(f"/api/v1/modules/mod-s/openapi.json?token={forged}"))
    finally:
        server.stop()

    # The answers that had to carry a secret did so on purpose: the session and the new token, once each.
    shown = [session_token, api_token]
    for body in bodies:
        for secret in secrets_seen:
            if secret in shown and body.count(secret) == 1 and secret in (session.text + made.text):
                continue
            assert secret not in body, (secret, body[:300])
    output = "".join(server.output)
    files = [p for p in (tmp_path / "server").rglob("*") if p.is_file()]
    assert files
    for secret in secrets_seen:
        assert secret not in output, secret
        for path in files:
            assert secret.encode() not in path.read_bytes(), (secret, path)
