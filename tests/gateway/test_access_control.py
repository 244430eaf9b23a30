"""Access control of the platform's application: deny by default, group grants from `Api` manifests,
developers confined to the modules their groups own, 404 rather than 403 for what a caller may not see,
tokens, throttled logins, rate limits, CORS and the audit trail.

The application is the real composition root in this process (`start_platform_app`), reached through an ASGI
transport from 127.0.0.1; its modules run in real worker processes. One application serves every test here,
on one event loop (the module's), on each database backend; the world it holds is made once:

- `mod-a` owned by `/team-a`, callable by `/team-a`; `mod-b` owned by `/team-b`, callable by `/team-b`;
- `mod-open` callable by anyone; `mod-limited` callable by `/team-a` at 3 calls a minute, and by browsers
  from one origin; `mod-f` (a file output) callable by `/team-a` and `/team-b`;
- `dev-a`, `dev-b`: developers of `/team-a`, `/team-b`; `user-a`, `user-b`: users in those groups;
  `user-x`: a user in `/x/team-a`, which is not `/team-a`;
- buckets `bucket-a` and `bucket-b`, used by `/team-a` and `/team-b`, each holding an object `k`.

`tests/server/test_access.py` checks the few things that need a real socket.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from manifests import api, bucket, module_copy

from modelport.artifacts import pack

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

ORIGIN = "http://127.0.0.1:5173"


@dataclass
class World:
    platform: Any  # InProcessPlatform
    tokens: dict[str, str] = field(default_factory=dict)
    users: dict[str, int] = field(default_factory=dict)
    groups: dict[str, int] = field(default_factory=dict)

    def client(self, who: str | None) -> httpx.AsyncClient:
        """A client from 127.0.0.1 with `who`'s token, or with no credentials for None."""
        return self.platform.client(self.tokens[who] if who else "")


async def push(client: httpx.AsyncClient, directory: Path, *, version: str) -> httpx.Response:
    artifact = await asyncio.to_thread(pack, directory, version=version)
    return await client.post(
        f"/api/v1/modules/{artifact.name}/versions",
        params={"version": artifact.version, **({"commit": artifact.commit} if artifact.commit else {})},
        content=artifact.data,
        headers={"Content-Type": "application/gzip", "X-Content-Digest": artifact.digest},
    )


async def wait_built(client: httpx.AsyncClient, module: str, version: str, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status: str = (await client.get(f"/api/v1/modules/{module}/versions/{version}")).json()[
            "build_status"
        ]
        if status in ("ready", "failed"):
            return status
        await asyncio.sleep(0.05)
    raise AssertionError(f"{module} {version} did not finish building in {timeout} s")


async def deploy_and_wait(client: httpx.AsyncClient, module: str, version: str, timeout: float = 60) -> None:
    response = await client.post(f"/api/v1/modules/{module}/deploy", json={"version": version})
    assert response.status_code == 202, response.text
    generation = response.json()["generation"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        deployment = (await client.get(f"/api/v1/modules/{module}")).json()["deployment"]
        if deployment["observed_generation"] >= generation and deployment["status"] in ("ready", "failed"):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the deployment of {module} did not settle in {timeout} s")


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world_database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A fresh, empty database for the module's world, on each backend modelport supports."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('access-db') / 'modelport.db'}"
    cluster = request.getfixturevalue("postgres")
    url: str = cluster.create_database(f"t{uuid.uuid4().hex[:12]}")
    return url


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(
    tmp_path_factory: pytest.TempPathFactory, start_platform_app: Any, world_database_url: str
) -> AsyncIterator[World]:
    root = tmp_path_factory.mktemp("access")
    # As `tests/platform_server.py` starts `modelport server`: old versions stop at once, drains are short.
    async with start_platform_app(root / "platform", database_url=world_database_url) as platform:
        world = World(platform, tokens={"admin": platform.token})
        async with world.client("admin") as admin:
            await make_world(world, admin, root)
        yield world


async def make_world(world: World, admin: httpx.AsyncClient, root: Path) -> None:
    for path in ["/team-a", "/team-b", "/x/team-a"]:
        response = await admin.post("/api/v1/groups", json={"path": path})
        assert response.status_code == 201, response.text
        world.groups[path] = response.json()["id"]
    people = {
        "dev-a": ("developer", "/team-a"),
        "dev-b": ("developer", "/team-b"),
        "user-a": ("user", "/team-a"),
        "user-b": ("user", "/team-b"),
        "user-x": ("user", "/x/team-a"),
    }
    for name, (role, group) in people.items():
        response = await admin.post(
            "/api/v1/users",
            json={"name": name, "role": role, "groups": [group], "password": f"password-{name}"},
        )
        assert response.status_code == 201, response.text
        world.users[name] = response.json()["id"]
        made = await admin.post("/api/v1/tokens", json={"name": "tests", "user": world.users[name]})
        assert made.status_code == 201, made.text
        world.tokens[name] = made.json()["token"]
    modules = {
        "mod-a": ("echo", "/team-a"),
        "mod-b": ("echo", "/team-b"),
        "mod-open": ("echo", None),
        "mod-limited": ("echo", None),
        "mod-f": ("report", None),
    }
    for name, (fixture, owner) in modules.items():
        pushed = await push(admin, module_copy(root, fixture, name, owner), version="v1")
        assert pushed.status_code == 201, pushed.text
    for name in modules:
        assert await wait_built(admin, name, "v1") == "ready"
    await asyncio.gather(*(deploy_and_wait(admin, name, "v1") for name in modules))
    documents = [
        api("a-api", "mod-a", access={"groups": ["/team-a"]}),
        api("b-api", "mod-b", access={"groups": ["/team-b"]}),
        api("open-api", "mod-open", access={"anonymous": True}),
        api(
            "limited-api",
            "mod-limited",
            access={"groups": ["/team-a"]},
            rateLimit={"perCaller": "3/minute"},
            restfulApi={"cors": {"enabled": True, "allowOrigin": [ORIGIN]}},
        ),
        api("f-api", "mod-f", access={"groups": ["/team-a", "/team-b"]}),
        bucket("bucket-a", "/team-a"),
        bucket("bucket-b", "/team-b"),
    ]
    applied = await admin.post("/api/v1/apply", json={"documents": documents})
    assert applied.status_code == 200, applied.text
    for name in ("bucket-a", "bucket-b"):
        stored = await admin.put(f"/api/v1/storage/{name}/objects/k", content=name.encode())
        assert stored.status_code == 201, stored.text


async def predict(client: httpx.AsyncClient, module: str) -> httpx.Response:
    return await client.post(f"/api/v1/modules/{module}/predict", json={"inputs": {"text": "hi"}})


# Group access


async def test_members_call_their_module_and_nobody_else_learns_it_exists(world: World) -> None:
    async with (
        world.client("user-a") as user_a,
        world.client("user-x") as user_x,
        world.client(None) as nobody,
    ):
        assert (await predict(user_a, "mod-a")).status_code == 200
        assert (await user_a.get("/api/v1/modules/mod-a/openapi.json")).status_code == 200
        missing = await predict(user_a, "no-such-module")
        for response in [await predict(user_a, "mod-b"), await predict(user_x, "mod-a")]:
            assert response.status_code == 404
            assert response.json()["error"]["code"] == missing.json()["error"]["code"] == "module_not_found"
        # Without credentials: 401 whether the module exists or not.
        assert (await predict(nobody, "mod-a")).status_code == 401
        assert (await predict(nobody, "no-such-module")).status_code == 401


MODULE_ROUTES = [
    ("POST", "/api/v1/modules/{m}/predict", {"inputs": {"text": "hi"}}),
    ("GET", "/api/v1/modules/{m}/openapi.json", None),
    ("GET", "/api/v1/modules/{m}/try", None),
    ("GET", "/api/v1/modules/{m}", None),
    ("DELETE", "/api/v1/modules/{m}", None),
    ("GET", "/api/v1/modules/{m}/versions", None),
    ("POST", "/api/v1/modules/{m}/versions?version=v9", None),
    ("GET", "/api/v1/modules/{m}/versions/v9", None),
    ("POST", "/api/v1/modules/{m}/deploy", {"version": "v9"}),
    ("POST", "/api/v1/modules/{m}/rollback", None),
    ("GET", "/api/v1/modules/{m}/logs", None),
]


@pytest.mark.parametrize("who", ["user-a", "dev-a", "user-x"])
async def test_a_module_outside_the_callers_groups_is_404_on_every_route_and_method(
    world: World, who: str
) -> None:
    async with world.client(who) as client:
        for method, path, body in MODULE_ROUTES:
            response = await client.request(method, path.format(m="mod-b"), json=body)
            assert response.status_code == 404, (method, path, response.text)
    async with world.client("admin") as admin:  # and nothing happened to it
        assert (await admin.get("/api/v1/modules/mod-b")).json()["deployment"]["status"] == "ready"


async def test_developers_manage_only_the_modules_their_groups_own(world: World, tmp_path: Path) -> None:
    async with world.client("dev-a") as dev_a, world.client("user-a") as user_a:
        assert [m["name"] for m in (await dev_a.get("/api/v1/modules")).json()["modules"]] == ["mod-a"]
        assert (await dev_a.get("/api/v1/modules/mod-a/versions")).status_code == 200
        assert (await dev_a.post("/api/v1/modules/mod-a/deploy", json={"version": "v1"})).status_code == 202
        # A user may call mod-a, so it may know that it exists, but not manage it.
        assert (await user_a.get("/api/v1/modules/mod-a")).status_code == 403
        # A new module pushed by a developer belongs to the developer's group.
        made = await push(dev_a, module_copy(tmp_path, "echo", "dev-made", None), version="v1")
        assert made.status_code == 201, made.text
        assert (await dev_a.get("/api/v1/modules/dev-made")).json()["owner"] == "/team-a"
        # Giving a module to another group, or an Api onto someone else's module, is refused.
        stolen = await push(dev_a, module_copy(tmp_path / "x", "echo", "dev-stolen", "/team-b"), version="v1")
        assert stolen.status_code == 403
        onto_b = await dev_a.post(
            "/api/v1/apply", json={"documents": [api("sneaky", "mod-b", access={"anonymous": True})]}
        )
        assert onto_b.status_code == 404
    async with world.client("admin") as admin:
        assert (await admin.get("/api/v1/modules/dev-stolen")).status_code == 404
        async with world.client(None) as nobody:
            assert (await predict(nobody, "mod-b")).status_code == 401
        assert (await admin.delete("/api/v1/modules/dev-made")).status_code == 204


# Function-level and object-level access, generated from the OpenAPI document


async def operations(world: World) -> list[tuple[str, str, dict[str, Any]]]:
    async with world.client(None) as nobody:
        document = (await nobody.get("/openapi.json")).json()
    return [
        (method.upper(), path + required_query(operation), operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in ("get", "post", "put", "patch", "delete")
    ]


def required_query(operation: dict[str, Any]) -> str:
    """A query string with the operation's required query parameters (the version, for a push)."""
    names = [p["name"] for p in operation.get("parameters", []) if p["in"] == "query" and p.get("required")]
    return "?" + "&".join(f"{name}=v9" for name in names) if names else ""


SELF_SERVICE = ("/api/v1/auth/", "/api/v1/tokens", "/api/v1/webhooks/")
OPEN = ("/healthz", "/readyz")


def fill(path: str, world: World, owner: str) -> str:
    """The path with the ids of objects `owner` (a user name) has or may see."""
    group = "/team-a" if owner.endswith("-a") else "/team-b"
    values = {
        "module": "mod-a" if owner.endswith("-a") else "mod-b",
        "version": "v1",
        "user_id": str(world.users[owner]),
        "group_id": str(world.groups[group]),
        "token_id": "1",
        "name": "out.png",
        "bucket": "bucket-b",  # for user-a: a bucket of another group
        "key": "k",
        "request_id": "0" * 32,  # a call nobody made
        "job_id": "0" * 32,  # a job nobody submitted
        "pipeline": "pipe-b",  # a pipeline nobody applied
    }
    return re.sub(r"{(\w+)}", lambda m: values[m.group(1)], path)


async def test_every_control_route_refuses_the_user_role_and_callers_without_a_token(world: World) -> None:
    checked = 0
    async with world.client("user-a") as user, world.client(None) as nobody:
        for method, path, operation in await operations(world):
            inference = "inference" in operation.get("tags", [])
            if path in OPEN or path.startswith(SELF_SERVICE) or inference:
                continue
            url = fill(path, world, "user-a")
            body = {} if method in ("POST", "PATCH", "PUT") else None
            if "storage" in operation.get("tags", []):
                # Buckets are used by the groups their manifests name, whatever the role: another group's
                # bucket does not exist for this user, and the list holds only its own group's.
                response = await user.request(method, url, json=body)
                expected = 200 if path == "/api/v1/storage" else 404
                assert response.status_code == expected, (method, path, response.status_code, response.text)
                if path == "/api/v1/storage":
                    assert [b["name"] for b in response.json()["buckets"]] == ["bucket-a"]
                assert (await nobody.request(method, url)).status_code == 401, (method, path)
                continue
            if "jobs" in operation.get("tags", []):
                # Everyone signed in submits and follows jobs, whatever the role: a user lists only its own,
                # a job it did not submit does not exist for it, and an empty body is refused as such.
                response = await user.request(method, url, json=body)
                expected = {"/api/v1/jobs": 200}.get(path, 422 if method in ("PUT", "POST") else 404)
                if path.endswith("/cancel"):
                    expected = 404
                assert response.status_code == expected, (method, path, response.status_code, response.text)
                if path == "/api/v1/jobs":
                    assert {job["caller"] for job in response.json()["jobs"]} <= {"user-a"}
                anonymous = await nobody.request(method, url, json=body)
                # An anonymous caller reads (and cancels) its job by id: one nobody submitted is 404.
                reads_by_id = (method, path) in (
                    ("GET", "/api/v1/jobs/{job_id}"),
                    ("POST", "/api/v1/jobs/{job_id}/cancel"),
                )
                assert anonymous.status_code == (404 if reads_by_id else 401), (method, path)
                continue
            if "pipelines" in operation.get("tags", []):
                # Everyone signed in lists the pipelines it may call: none of another group's.
                response = await user.request(method, url)
                expected = 200 if path == "/api/v1/pipelines" else 404
                assert response.status_code == expected, (method, path, response.status_code, response.text)
                if path == "/api/v1/pipelines":
                    assert response.json() == {"pipelines": []}
                assert (await nobody.request(method, url)).status_code == 401, (method, path)
                continue
            if "requests" in operation.get("tags", []):
                # Everyone signed in reads the request log, whatever the role: a user lists only its own
                # calls, and a call it did not make does not exist for it.
                response = await user.request(method, url)
                expected = 200 if path == "/api/v1/requests" else 404
                assert response.status_code == expected, (method, path, response.status_code, response.text)
                if path == "/api/v1/requests":
                    assert {r["caller"] for r in response.json()["requests"]} <= {"user-a"}
                assert (await nobody.request(method, url)).status_code == 401, (method, path)
                continue
            response = await user.request(method, url, json=body)
            assert response.status_code == 403, (method, path, response.status_code, response.text)
            assert (await nobody.request(method, url)).status_code == 401, (method, path)
            checked += 1
        # Self-service and inference routes (file outputs included) need credentials too, but for anonymous
        # APIs (and the password exchange).
        for method, path, operation in await operations(world):
            inference = "inference" in operation.get("tags", [])
            public = path in ("/api/v1/auth/token", "/api/v1/auth/config")
            if (path.startswith(SELF_SERVICE) and not public) or inference:
                response = await nobody.request(method, fill(path, world, "user-a"))
                assert response.status_code == 401, (method, path)
    assert checked >= 15


async def test_ids_of_one_user_replayed_by_another_are_404_or_empty(world: World) -> None:
    # dev-a's objects: its module and version, its token, itself, its group, an output file it made.
    async with world.client("dev-a") as dev_a:
        token = (await dev_a.post("/api/v1/tokens", json={"name": "mine"})).json()
        output = await call_files(dev_a)
        request_id = await logged_call(dev_a)
        job = await dev_a.post("/api/v1/modules/mod-a/jobs", json={"inputs": {"text": "mine"}})
        assert job.status_code == 202, job.text
        step = {"name": "only", "module": "mod-a", "inputs": {"text": "$.inputs.text"}}
        piped = {"steps": [step], "outputs": {"text": "$.steps.only.outputs.text"}}
        document = {
            "apiVersion": "modelport/v1",
            "kind": "Pipeline",
            "metadata": {"name": "pipe-a"},
            "spec": piped,
        }
        applied = await dev_a.post("/api/v1/apply", json={"documents": [document]})
        assert applied.status_code == 200, applied.text
    ids = {
        "pipeline": "pipe-a",
        "request_id": request_id,
        "module": "mod-a",
        "version": "v1",
        "user_id": str(world.users["dev-a"]),
        "group_id": str(world.groups["/team-a"]),
        "token_id": str(token["id"]),
        "name": output.rsplit("/", 1)[1],
        "bucket": "bucket-a",
        "key": "k",
        "job_id": job.json()["id"],
    }
    async with world.client("dev-b") as dev_b, world.client("user-b") as user_b:
        assert (await dev_b.get(output)).status_code == 404
        checked = 0
        for method, path, _ in await operations(world):
            if "{" not in path or method == "PUT":  # PUT creates a job of the caller's own id
                continue
            url = re.sub(r"{(\w+)}", lambda m: ids[m.group(1)], path)
            for client in (dev_b, user_b):
                body = {"version": ids["version"]} if path.endswith("/deploy") else {"inputs": {"text": "x"}}
                response = await client.request(method, url, json=body if method == "POST" else None)
                assert response.status_code == 404, (method, path, response.status_code, response.text)
                checked += 1
        tokens = await dev_b.get("/api/v1/tokens", params={"user": world.users["dev-a"]})
        assert tokens.json() == {"tokens": []}
        assert [m["name"] for m in (await dev_b.get("/api/v1/modules")).json()["modules"]] == ["mod-b"]
    assert checked >= 20
    async with world.client("dev-a") as dev_a:  # and dev-a's objects are untouched
        assert (await dev_a.get(f"/api/v1/tokens/{token['id']}")).json()["revoked_at"] is None
        assert (await dev_a.get(output)).status_code == 200
        assert (await dev_a.get("/api/v1/storage/bucket-a/objects/k")).content == b"bucket-a"


async def logged_call(client: httpx.AsyncClient) -> str:
    """The request id of a call the client makes, once the request log shows it to the client."""
    response = await client.post("/api/v1/modules/mod-f/predict", json={"inputs": {"text": "private"}})
    assert response.status_code == 200, response.text
    request_id = response.headers["x-request-id"]
    deadline = time.monotonic() + 15
    while (await client.get(f"/api/v1/requests/{request_id}")).status_code != 200:
        assert time.monotonic() < deadline, "the call was not logged in time"
        await asyncio.sleep(0.05)
    return request_id


async def call_files(client: httpx.AsyncClient) -> str:
    response = await client.post("/api/v1/modules/mod-f/predict", json={"inputs": {"text": "private"}})
    assert response.status_code == 200, response.text
    url: str = response.json()["outputs"]["report"]["url"]
    return url


# Mass assignment


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/v1/users", {"name": "eve", "is_admin": True}),
        ("POST", "/api/v1/users", {"name": "eve", "role": "root"}),
        ("POST", "/api/v1/groups", {"path": "/eve", "owner": "eve"}),
        ("POST", "/api/v1/tokens", {"name": "t", "role": "admin"}),
        ("POST", "/api/v1/tokens", {"name": "t", "is_admin": True}),
        ("POST", "/api/v1/modules/mod-a/deploy", {"version": "v1", "owner": "/team-b"}),
        ("PATCH", "/api/v1/users/{me}", {"is_admin": True}),
        ("POST", "/api/v1/auth/token", {"username": "dev-a", "password": "password-dev-a", "role": "admin"}),
    ],
)
async def test_extra_fields_are_refused_and_change_nothing(
    world: World, method: str, path: str, body: dict[str, Any]
) -> None:
    async with world.client("admin") as admin:

        async def state() -> tuple[Any, ...]:
            paths = ("/api/v1/users", "/api/v1/groups", "/api/v1/tokens")
            return tuple([(await admin.get(path)).json() for path in paths])

        before = await state()
        response = await admin.request(method, path.replace("{me}", str(world.users["user-a"])), json=body)
        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == "validation_failed"
        assert await state() == before


# Tokens and passwords


async def test_tokens_revoked_fail_on_the_next_request_and_passwords_are_throttled(world: World) -> None:
    async with world.client("user-b") as user_b, world.client(None) as nobody:
        made = await user_b.post("/api/v1/tokens", json={"name": "ci", "expires_in_days": 30})
        assert made.status_code == 201
        secret, token_id = made.json()["token"], made.json()["id"]
        assert made.json()["prefix"] == secret[:10] and made.json()["user"] == "user-b"
        me = await nobody.get("/api/v1/auth/me", headers={"Authorization": f"bearer {secret}"})
        assert me.json()["name"] == "user-b" and me.json()["groups"] == ["/team-b"]
        assert (await user_b.delete(f"/api/v1/tokens/{token_id}")).status_code == 204
        refused = await nobody.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {secret}"})
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_token"
        assert "invalid_token" in refused.headers["www-authenticate"]

        login = {"username": "user-b", "password": "password-user-b"}
        session = await nobody.post("/api/v1/auth/token", json=login)
        assert session.status_code == 200
        assert session.json()["token_type"] == "bearer" and session.json()["expires_in"] == 3600
        bearer = {"Authorization": f"Bearer {session.json()['access_token']}"}
        assert (await nobody.get("/api/v1/auth/me", headers=bearer)).json()["name"] == "user-b"

        codes = []
        for _ in range(6):
            wrong = await nobody.post("/api/v1/auth/token", json={"username": "user-b", "password": "nope"})
            codes.append(wrong.status_code)
        assert codes[:5] == [401] * 5 and codes[5] == 429
        assert int(wrong.headers["retry-after"]) >= 1 and wrong.json()["error"]["code"] == "too_many_attempts"


# Anonymous APIs, rate limits, CORS


async def test_anonymous_apis_answer_without_credentials_and_bad_credentials_still_fail(world: World) -> None:
    async with world.client(None) as nobody:
        assert (await predict(nobody, "mod-open")).status_code == 200
        bad = await nobody.post(
            "/api/v1/modules/mod-open/predict",
            json={"inputs": {"text": "x"}},
            headers={"Authorization": "Bearer junk"},
        )
        assert bad.status_code == 401


async def test_rate_limits_count_per_caller_per_api(world: World) -> None:
    async with world.client("user-a") as user_a, world.client("dev-a") as dev_a:
        answers = [await predict(user_a, "mod-limited") for _ in range(4)]
        assert [a.status_code for a in answers] == [200, 200, 200, 429]
        assert answers[0].headers["ratelimit-limit"] == "3"
        assert [a.headers["ratelimit-remaining"] for a in answers[:3]] == ["2", "1", "0"]
        refused = answers[3]
        assert refused.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert (await predict(dev_a, "mod-limited")).status_code == 200  # another caller has its own budget
        assert (await predict(user_a, "mod-a")).status_code == 200  # and other APIs are not limited


async def test_cors_preflights_echo_listed_origins_only(world: World) -> None:
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    async with world.client(None) as browser:
        allowed = await browser.options(
            "/api/v1/modules/mod-limited/predict", headers={"Origin": ORIGIN, **preflight}
        )
        assert allowed.status_code == 204
        assert allowed.headers["access-control-allow-origin"] == ORIGIN
        assert "origin" in allowed.headers["vary"].lower()
        assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
        other = await browser.options(
            "/api/v1/modules/mod-limited/predict", headers={"Origin": "http://127.0.0.1:9999", **preflight}
        )
        assert "access-control-allow-origin" not in other.headers
        elsewhere = await browser.options(
            "/api/v1/modules/mod-a/predict", headers={"Origin": ORIGIN, **preflight}
        )
        assert "access-control-allow-origin" not in elsewhere.headers


# Audit


async def test_every_change_is_in_the_audit_trail(world: World) -> None:
    async with world.client("admin") as admin, world.client("dev-a") as dev_a:
        assert (await dev_a.post("/api/v1/modules/mod-a/deploy", json={"version": "v1"})).status_code == 202
        events = (await admin.get("/api/v1/audit", params={"limit": 1000})).json()["events"]
        actions = {(e["actor"], e["action"], e["target"]) for e in events}
        assert ("admin", "group.create", "group/team-a") in actions
        assert ("admin", "user.create", "user/dev-a") in actions
        assert ("admin", "api.create", "api/a-api") in actions
        assert ("admin", "module.deploy", "module/mod-a") in actions
        assert ("admin", "version.push", "module/mod-a") in actions
        assert ("dev-a", "module.deploy", "module/mod-a") in actions
        assert all(e["client"] == "127.0.0.1" for e in events)
        assert [e["id"] for e in events] == sorted((e["id"] for e in events), reverse=True)
        only = (await admin.get("/api/v1/audit", params={"actor": "dev-a"})).json()["events"]
        assert only and {e["actor"] for e in only} == {"dev-a"}
        assert (await dev_a.get("/api/v1/audit")).status_code == 403
        before = {"limit": 2, "before": events[0]["id"]}
        page = (await admin.get("/api/v1/audit", params=before)).json()["events"]
        assert [e["id"] for e in page] == [e["id"] for e in events[1:3]]


async def test_the_openapi_document_declares_bearer_auth(world: World) -> None:
    async with world.client(None) as nobody:
        document = (await nobody.get("/openapi.json")).json()
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert {
        "/api/v1/users",
        "/api/v1/groups",
        "/api/v1/tokens",
        "/api/v1/audit",
        "/api/v1/auth/token",
    } <= set(document["paths"])
