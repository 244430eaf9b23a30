"""Access control over a real socket: what `modelport server` adds to the application, end to end.

The rules themselves (group grants, 404 for what a caller may not see, checks generated from the OpenAPI
document, mass assignment, tokens, throttled logins, rate limits, CORS, the audit trail) are proved
in-process by `tests/gateway/test_access_control.py`. Here a few calls go through uvicorn, to show that a
grant, a preflight, a rate limit's headers and the caller's address survive the wire.

One server serves every test here; its world is made once: `mod-limited` callable by `/team-a` at 3 calls a
minute, and by browsers from one origin; `user-a` and `user-a2` in `/team-a`; `user-x` in `/x/team-a`.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from drive import deploy, push, wait_built, wait_deployment
from platform_server import ADMIN_TOKEN, ServerProcess

pytestmark = pytest.mark.slow

FIXTURES = Path(__file__).parents[1] / "fixtures" / "modules"
ORIGIN = "http://127.0.0.1:5173"
PREDICT = "/api/v1/modules/mod-limited/predict"


@dataclass
class World:
    url: str
    tokens: dict[str, str] = field(default_factory=dict)

    def client(self, who: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[who]}"} if who else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("access")
    server = ServerProcess(root / "server", token=ADMIN_TOKEN)
    server.start()
    try:
        world = World(server.url, tokens={"admin": ADMIN_TOKEN})
        with server.client() as admin:
            make_world(world, admin, root)
        yield world
    finally:
        server.stop()


def make_world(world: World, admin: httpx.Client, root: Path) -> None:
    for path in ["/team-a", "/x/team-a"]:
        response = admin.post("/api/v1/groups", json={"path": path})
        assert response.status_code == 201, response.text
    for name, group in {"user-a": "/team-a", "user-a2": "/team-a", "user-x": "/x/team-a"}.items():
        response = admin.post("/api/v1/users", json={"name": name, "role": "user", "groups": [group]})
        assert response.status_code == 201, response.text
        made = admin.post("/api/v1/tokens", json={"name": "tests", "user": response.json()["id"]})
        assert made.status_code == 201, made.text
        world.tokens[name] = made.json()["token"]
    directory = root / "mod-limited"
    shutil.copytree(FIXTURES / "echo", directory, ignore=shutil.ignore_patterns("__pycache__"))
    (directory / "modelport.yaml").write_text(
        "apiVersion: modelport/v1\nkind: Module\nmetadata: {name: mod-limited}\n"
    )
    pushed = push(admin, directory, version="v1")
    assert pushed.status_code == 201, pushed.text
    assert wait_built(admin, "mod-limited", "v1")["build_status"] == "ready"
    wait_deployment(admin, "mod-limited", deploy(admin, "mod-limited", "v1")["generation"])
    limited = {
        "apiVersion": "modelport/v1",
        "kind": "Api",
        "metadata": {"name": "limited-api"},
        "spec": {
            "module": "mod-limited",
            "access": {"groups": ["/team-a"]},
            "rateLimit": {"perCaller": "3/minute"},
            "restfulApi": {"cors": {"enabled": True, "allowOrigin": [ORIGIN]}},
        },
    }
    applied = admin.post("/api/v1/apply", json={"documents": [limited]})
    assert applied.status_code == 200, applied.text


def predict(client: httpx.Client) -> httpx.Response:
    return client.post(PREDICT, json={"inputs": {"text": "hi"}})


def test_a_group_grant_lets_members_call_and_hides_the_module_from_others(world: World) -> None:
    with world.client("user-a") as user_a, world.client("user-x") as user_x, world.client(None) as nobody:
        assert predict(user_a).status_code == 200
        hidden = predict(user_x)
        assert hidden.status_code == 404 and hidden.json()["error"]["code"] == "module_not_found"
        assert predict(nobody).status_code == 401


def test_a_rate_limited_call_is_429_with_its_headers(world: World) -> None:
    with world.client("user-a2") as caller:
        answers = [predict(caller) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert answers[0].headers["ratelimit-limit"] == "3"
    assert [a.headers["ratelimit-remaining"] for a in answers[:3]] == ["2", "1", "0"]
    assert answers[3].json()["error"]["code"] == "rate_limited"
    assert 1 <= int(answers[3].headers["retry-after"]) <= 60


def test_a_cors_preflight_echoes_a_listed_origin_only(world: World) -> None:
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    with world.client(None) as browser:
        allowed = browser.options(PREDICT, headers={"Origin": ORIGIN, **preflight})
        other = browser.options(PREDICT, headers={"Origin": "http://127.0.0.1:9999", **preflight})
    assert allowed.status_code == 204
    assert allowed.headers["access-control-allow-origin"] == ORIGIN
    assert "origin" in allowed.headers["vary"].lower()
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    assert "access-control-allow-origin" not in other.headers


def test_the_audit_trail_records_the_address_the_socket_saw(world: World) -> None:
    with world.client("admin") as admin:
        events = admin.get("/api/v1/audit", params={"limit": 1000}).json()["events"]
    assert {"group.create", "user.create", "version.push", "module.deploy"} <= {e["action"] for e in events}
    assert all(e["client"] == "127.0.0.1" for e in events)
