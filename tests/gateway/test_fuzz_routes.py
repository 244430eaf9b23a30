"""Every operation of the platform's own OpenAPI document, fuzzed (schemathesis) as an admin, as a user and
without credentials: no answer is a 5xx, none carries a Python traceback, and every error has the platform's
shape, `{"error": {"code", "message"}}`.

The platform is the real composition root served in this process on SQLite (`served_platform`), with the
`echo` fixture module deployed, a bucket holding objects, and an admin and a user of the fuzz's own. Path
and query parameters are drawn from the document; or name objects that exist, so that handlers are reached
past their 404s; or, where they are integers, lie past every database's INTEGER. Destructive operations
never break later examples:

- a `DELETE` that names an existing object names a throwaway made for it (the `scratch` module, user, group
  and token, the `scratch.txt` object), never `echo`, the bucket or the object that reads use;
- deleting or changing the fuzz's own users, or revoking their tokens, is left out (those draws are rejected):
  every later request of theirs would be a 401;
- deploys and rollbacks never name a real module: one that succeeds starts up to 64 worker processes and a
  rollout in the background, past this test's budget (`test_control_routes.py` deploys real versions).

Nothing here streams without end or long-polls: object downloads and file outputs are finite, read whole,
and draws that would follow a module's log (`follow=true`) are rejected.
Examples are derandomized, so every run sends the same requests.
"""

from __future__ import annotations

import importlib
import io
import pkgutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import pytest
import requests
import schemathesis
import schemathesis.specs.openapi
from drive import deploy, push, wait_built, wait_deployment
from hypothesis import strategies as st
from inprocess import InProcessApp, served_platform
from manifests import module_copy
from platform_server import ADMIN_TOKEN
from requests.adapters import HTTPAdapter
from schemathesis.checks import not_a_server_error
from urllib3 import HTTPResponse

# schemathesis imports much of its OpenAPI support lazily, deep inside a test's stack, where CPython 3.11.7's
# parser can fail a module that pytest rewrites ("AST constructor recursion depth mismatch", fixed in 3.11.8;
# pytest rewrites every module of a package that ships a pytest plugin). Imported here, each is parsed at the
# top of the stack.
for _module in pkgutil.walk_packages(schemathesis.specs.openapi.__path__, "schemathesis.specs.openapi."):
    importlib.import_module(_module.name)

pytestmark = pytest.mark.slow

BASE_URL = "http://testserver"
BUCKET = "fuzz"
FUZZ = hypothesis.settings(
    max_examples=20,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(hypothesis.HealthCheck),
)
# Past every database's INTEGER; an unbounded integer in the document is rarely drawn this large.
BEYOND_INTEGER = 2**63
# Operations whose drawn path and query parameters never name existing objects: see the module's docstring.
NAME_NOTHING = {("POST", "/api/v1/modules/{module}/deploy"), ("POST", "/api/v1/modules/{module}/rollback")}


class _InProcessAdapter(HTTPAdapter):
    """Hands `requests`' requests to the application served in this process, on its own event loop."""

    def __init__(self, client: httpx.Client) -> None:
        super().__init__()
        self.client = client

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        body = request.body.encode() if isinstance(request.body, str) else request.body or b""
        assert isinstance(body, bytes)
        answer = self.client.request(
            request.method or "GET", request.url or "/", headers=dict(request.headers), content=body
        )
        raw = HTTPResponse(
            body=io.BytesIO(answer.content),
            headers=list(answer.headers.multi_items()),
            status=answer.status_code,
            preload_content=False,
            request_method=request.method,
        )
        return self.build_response(request, raw)

    def close(self) -> None:
        self.client.close()


@dataclass
class World:
    """The platform, a session per caller, and the objects that drawn path parameters may name."""

    sessions: dict[str, requests.Session]
    own_users: set[int]
    own_tokens: set[int]
    existing: dict[str, Any]
    throwaway: dict[str, Any]


def session(served: InProcessApp, token: str | None) -> requests.Session:
    """A `requests` session whose requests reach `served`, with `token` if given."""
    made = requests.Session()
    made.mount(BASE_URL, _InProcessAdapter(served.client()))
    if token:
        made.headers["Authorization"] = f"Bearer {token}"
    return made


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessApp]:
    with served_platform(tmp_path_factory.mktemp("fuzz") / "platform") as platform:
        yield platform


@pytest.fixture(scope="module")
def world(served: InProcessApp, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with served.client({"Authorization": f"Bearer {ADMIN_TOKEN}"}) as admin:
        world = make_world(served, admin, tmp_path_factory.mktemp("modules"))
    yield world
    for made in world.sessions.values():
        made.close()


def make_world(served: InProcessApp, admin: httpx.Client, root: Path) -> World:
    def made(response: httpx.Response) -> Any:
        assert response.status_code in (200, 201), response.text
        return response.json()

    for name in ("echo", "scratch"):
        assert push(admin, module_copy(root, "echo", name, None), version="v1").status_code == 201
        assert wait_built(admin, name, "v1")["build_status"] == "ready"
    deployment = wait_deployment(admin, "echo", deploy(admin, "echo", "v1")["generation"])
    assert deployment["status"] == "ready", deployment
    storage = {"apiVersion": "modelport/v1", "kind": "Storage", "metadata": {"name": BUCKET}, "spec": {}}
    made(admin.post("/api/v1/apply", json={"documents": [storage]}))
    for key in ("kept.txt", "scratch.txt"):
        made(admin.put(f"/api/v1/storage/{BUCKET}/objects/{key}", content=b"hello"))
    users = {
        name: made(admin.post("/api/v1/users", json={"name": name, "role": role}))
        for name, role in (("fuzz-admin", "admin"), ("fuzz-user", "user"), ("scratch", "user"))
    }
    tokens = {
        name: made(admin.post("/api/v1/tokens", json={"name": "fuzz", "user": user["id"]}))
        for name, user in users.items()
    }
    group = made(admin.post("/api/v1/groups", json={"path": "/scratch"}))
    scratch = {
        "user_id": users["scratch"]["id"],
        "group_id": group["id"],
        "token_id": tokens["scratch"]["id"],
    }
    callers = {
        "admin": tokens["fuzz-admin"]["token"],
        "user": tokens["fuzz-user"]["token"],
        "anonymous": None,
    }
    return World(
        sessions={who: session(served, token) for who, token in callers.items()},
        own_users={users[name]["id"] for name in ("fuzz-admin", "fuzz-user")},
        own_tokens={tokens[name]["id"] for name in ("fuzz-admin", "fuzz-user")},
        existing={
            "module": "echo",
            "version": "v1",
            "build": "v1",
            "bucket": BUCKET,
            "key": "kept.txt",
            **scratch,
        },
        throwaway={"module": "scratch", "key": "scratch.txt", **scratch},
    )


@pytest.fixture(scope="module")
def platform_schema(served: InProcessApp, world: World) -> schemathesis.BaseSchema:
    with served.client() as client:
        document = client.get("/openapi.json").json()
    schema = schemathesis.openapi.from_dict(document)
    # Artifacts are opaque bytes to the fuzz, as objects are.
    schemathesis.serializer.alias("application/gzip", "application/octet-stream")

    def naming(context: schemathesis.HookContext, params: dict[str, Any] | None) -> st.SearchStrategy[Any]:
        """The drawn parameters; or the same with each one that can name an existing object naming it; or
        with each integer `BEYOND_INTEGER`."""
        operation = context.operation
        assert operation is not None
        method = operation.method.upper()
        if params is None:
            return st.just(params)
        huge = {name: BEYOND_INTEGER if type(value) is int else value for name, value in params.items()}
        if (method, operation.path) in NAME_NOTHING:
            return st.sampled_from([params, huge])
        existing = world.existing | (world.throwaway if method == "DELETE" else {})
        named = {name: existing.get(name, value) for name, value in params.items()}
        return st.sampled_from([params, named, huge])

    schema.hook("flatmap_path_parameters")(naming)
    schema.hook("flatmap_query")(naming)
    return schema


fuzzed = schemathesis.pytest.from_fixture("platform_schema")


@pytest.fixture(autouse=True)
def _node_id(request: pytest.FixtureRequest) -> None:
    """The lazy schema's runner reads the item's `_nodeid`, which pytest 9.2's items no longer have."""
    request.node._nodeid = request.node.nodeid


def harms_a_caller(case: schemathesis.Case, world: World) -> bool:
    """Deleting or changing the fuzz's own users, or revoking their tokens."""
    method, params = case.method.upper(), case.path_parameters or {}
    if case.path == "/api/v1/users/{user_id}" and method in ("DELETE", "PATCH"):
        return str(params.get("user_id")) in {str(i) for i in world.own_users}
    if case.path == "/api/v1/tokens/{token_id}" and method == "DELETE":
        return str(params.get("token_id")) in {str(i) for i in world.own_tokens}
    return False


def no_traceback(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case
) -> None:
    assert b"Traceback (most recent call last)" not in response.content, "the body carries a Python traceback"


def error_shape(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case
) -> None:
    if response.status_code < 400 or case.method.upper() == "HEAD":
        return
    try:
        body = response.json()
    except ValueError as exc:
        raise AssertionError(
            f"the {response.status_code} body is not JSON: {response.content[:200]!r}"
        ) from exc
    error = body.get("error") if isinstance(body, dict) else None
    assert isinstance(error, dict), f"the body has no `error` object: {body!r}"
    assert isinstance(error.get("code"), str) and error["code"], f"the error has no code: {body!r}"
    assert isinstance(error.get("message"), str) and error["message"], f"the error has no message: {body!r}"


def follows_a_log(case: schemathesis.Case) -> bool:
    """A log follow that the server would accept: an event stream without end, which the fuzz cannot read
    whole (`tests/server/test_worker_logs.py` follows logs)."""
    follow = str((case.query or {}).get("follow", "")).lower()
    return case.path == "/api/v1/modules/{module}/logs" and follow in ("true", "1", "yes", "on", "t", "y")


def call(case: schemathesis.Case, world: World, who: str) -> None:
    if harms_a_caller(case, world) or follows_a_log(case):
        hypothesis.reject()
    case.call_and_validate(
        session=world.sessions[who], base_url=BASE_URL, checks=[not_a_server_error, no_traceback, error_shape]
    )


@fuzzed.parametrize()
@FUZZ
def test_an_admins_requests_never_fail_on_the_server(case: schemathesis.Case, world: World) -> None:
    call(case, world, "admin")


@fuzzed.parametrize()
@FUZZ
def test_a_users_requests_never_fail_on_the_server(case: schemathesis.Case, world: World) -> None:
    call(case, world, "user")


@fuzzed.parametrize()
@FUZZ
def test_anonymous_requests_never_fail_on_the_server(case: schemathesis.Case, world: World) -> None:
    call(case, world, "anonymous")
