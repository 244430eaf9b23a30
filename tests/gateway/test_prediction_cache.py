"""The prediction cache through the platform: `X-Cache`, `Cache-Control`, scopes, versions, and one Redis that
two gateways share.

The platform is the real composition root in this process (`tests/inprocess.py`) on SQLite, serving `counter`,
a module whose worker answers with how many calls it has had: an answer that comes back with the same count
never reached the worker. Each test applies the `Api` it needs and asks its own questions.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from drive import deploy, push, wait_built, wait_deployment
from inprocess import InProcessApp, platform_server
from manifests import api
from platform_server import ADMIN_TOKEN
from test_ratelimit import RedisServer

from modelport.app import PlatformServer
from modelport.control.cache import PredictionCache, RedisStore
from modelport.control.calls import Calls, ModuleCall, Trace
from modelport.control.identity import Principal
from modelport.core.roles import Role
from modelport.sdk.validation import parse_json

COUNTER = '''
import itertools

_calls = itertools.count(1)


def inference(parameters, inputs, output_fields, model_key, model=None):
    """Answer with the text and how many calls this worker has had; fail on the text "boom".

    :param inputs.text: Text
    :type inputs.text: str
    :param parameters.suffix: Appended to the text
    :type parameters.suffix: str, optional, default ""
    :param outputs.text: The text and the suffix
    :type outputs.text: str
    :param outputs.call: The worker's count of calls, this one included
    :type outputs.call: int
    """
    call = next(_calls)
    if any(record["text"] == "boom" for record in inputs):
        raise ValueError("boom")
    return [{"text": r["text"] + p["suffix"], "call": call} for r, p in zip(inputs, parameters, strict=True)]
'''
GROUP = "/callers"


@dataclass
class Platform:
    server: PlatformServer
    served: InProcessApp
    root: Path
    tokens: dict[str, str] = field(default_factory=dict)
    users: dict[str, int] = field(default_factory=dict)

    def client(self, who: str = "admin") -> httpx.Client:
        token = ADMIN_TOKEN if who == "admin" else self.tokens[who]
        return self.served.client({"Authorization": f"Bearer {token}"})

    def cache(self, **cache: Any) -> None:
        """Apply the module's `Api` with `cache` (none: no cache)."""
        spec: dict[str, Any] = {"access": {"groups": [GROUP]}}
        if cache:
            spec["cache"] = cache
        with self.client() as admin:
            applied = admin.post("/api/v1/apply", json={"documents": [api("counter-api", "counter", **spec)]})
        assert applied.status_code == 200, applied.text


def module_tree(root: Path, version: str) -> Path:
    directory = root / version / "counter"
    directory.mkdir(parents=True)
    (directory / "inference.py").write_text(COUNTER)
    (directory / "modelport.yaml").write_text(
        "apiVersion: modelport/v1\nkind: Module\nmetadata: {name: counter}\n"
    )
    return directory


def release(admin: httpx.Client, root: Path, version: str) -> None:
    assert push(admin, module_tree(root, version), version=version).status_code == 201
    assert wait_built(admin, "counter", version)["build_status"] == "ready"
    assert (
        wait_deployment(admin, "counter", deploy(admin, "counter", version)["generation"])["status"]
        == "ready"
    )


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    root = tmp_path_factory.mktemp("cache")
    server = platform_server(root / "platform", request_log_flush_seconds=0.05)
    with InProcessApp(server.app, server.running) as served:
        platform = Platform(server, served, root)
        with platform.client() as admin:
            release(admin, root / "modules", "v1")
            assert admin.post("/api/v1/groups", json={"path": GROUP}).status_code == 201
            for name in ("alice", "bob"):
                user = admin.post("/api/v1/users", json={"name": name, "role": "user", "groups": [GROUP]})
                assert user.status_code == 201, user.text
                platform.users[name] = user.json()["id"]
                token = admin.post("/api/v1/tokens", json={"name": "tests", "user": user.json()["id"]})
                platform.tokens[name] = token.json()["token"]
        yield platform


def ask(platform: Platform, who: str, text: str, **options: Any) -> httpx.Response:
    headers = options.pop("headers", {})
    with platform.client(who) as client:
        return client.post(
            "/api/v1/modules/counter/predict", json={"inputs": {"text": text}, **options}, headers=headers
        )


def answered(response: httpx.Response) -> tuple[str | None, Any]:
    """(X-Cache, outputs) of a successful answer."""
    assert response.status_code == 200, response.text
    return response.headers.get("x-cache"), response.json()["outputs"]


def logged(platform: Platform, request_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    with platform.client() as admin:
        while time.monotonic() < deadline:
            found = admin.get(f"/api/v1/requests/{request_id}")
            if found.status_code == 200:
                return dict(found.json())
            time.sleep(0.05)
    raise AssertionError(f"call {request_id} was not logged within 10 s")


def test_the_same_request_is_answered_from_the_cache_as_a_new_call(platform: Platform) -> None:
    platform.cache(ttlSeconds=300)

    miss = ask(platform, "alice", "first", parameters={"suffix": "!"})
    hit = ask(platform, "alice", "first", parameters={"suffix": "!"})

    assert answered(miss)[0] == "miss"
    assert answered(hit) == ("hit", answered(miss)[1])
    body, before = hit.json(), miss.json()
    assert body["request_id"] == hit.headers["x-request-id"] != before["request_id"]
    assert {k: v for k, v in body.items() if k != "request_id"} == {
        k: v for k, v in before.items() if k != "request_id"
    }
    assert hit.headers["x-model-version"] == "v1"
    record = logged(platform, hit.headers["x-request-id"])  # a hit is a call like any other
    assert (record["status"], record["replica"], record["batch_size"]) == (200, None, 0)
    assert record["queue_ms"] == record["compute_ms"] == 0
    assert answered(ask(platform, "alice", "first"))[0] == "miss"  # other parameters
    assert answered(ask(platform, "alice", "first", output_fields=["text"]))[0] == "miss"
    batch = [ask(platform, "alice", "", inputs=[{"text": "a"}, {"text": "b"}]) for _ in range(2)]
    assert [answered(b)[0] for b in batch] == ["miss", "hit"]
    assert answered(batch[1])[1] == answered(batch[0])[1]


def test_no_cache_asks_the_module_again_and_no_store_keeps_nothing(platform: Platform) -> None:
    platform.cache(ttlSeconds=300)
    _, kept = answered(ask(platform, "alice", "refresh"))

    refreshed = answered(ask(platform, "alice", "refresh", headers={"Cache-Control": "no-cache"}))
    assert refreshed[0] == "miss" and refreshed[1]["call"] > kept["call"]
    assert answered(ask(platform, "alice", "refresh")) == ("hit", refreshed[1])  # the refreshed answer

    private = answered(ask(platform, "alice", "private", headers={"Cache-Control": "no-store"}))
    assert private[0] == "miss"
    again = answered(ask(platform, "alice", "private"))
    assert again[0] == "miss" and again[1]["call"] > private[1]["call"]


def test_errors_are_never_cached(platform: Platform) -> None:
    platform.cache(ttlSeconds=300)
    for _ in range(2):
        failed = ask(platform, "alice", "boom")
        assert failed.status_code == 500, failed.text
        assert failed.headers["x-cache"] == "miss"


def test_caller_scope_keeps_answers_apart_and_shared_scope_shares_them(platform: Platform) -> None:
    platform.cache(ttlSeconds=300, scope="caller")
    _, alices = answered(ask(platform, "alice", "scoped"))
    bob = answered(ask(platform, "bob", "scoped"))
    assert bob[0] == "miss" and bob[1]["call"] > alices["call"]
    assert answered(ask(platform, "alice", "scoped")) == ("hit", alices)

    platform.cache(ttlSeconds=300, scope="shared")
    _, first = answered(ask(platform, "alice", "everyone's"))
    assert answered(ask(platform, "bob", "everyone's")) == ("hit", first)


def test_an_api_without_a_cache_sends_every_call_to_the_worker_and_no_header(platform: Platform) -> None:
    platform.cache()
    answers = [ask(platform, "alice", "uncached") for _ in range(2)]

    assert [a.headers.get("x-cache") for a in answers] == [None, None]
    assert answered(answers[1])[1]["call"] > answered(answers[0])[1]["call"]


def test_two_gateways_share_answers_through_one_redis(platform: Platform) -> None:
    platform.cache(ttlSeconds=300)
    redis = RedisServer(platform.root)
    services = platform.server.services
    gateways = [
        Calls(
            registry=services.registry,
            settings=services.settings,
            files=services.request_files,
            cache=PredictionCache(RedisStore(redis.url), rules=services.cache.rules),
        )
        for _ in range(2)
    ]
    alice = Principal(user_id=platform.users["alice"], name="alice", role=Role.USER)

    async def call(calls: Calls) -> tuple[str | None, list[dict[str, Any]]]:
        made = ModuleCall(request_id=f"{id(calls):032x}", trace=Trace.continuing(None), principal=alice)
        served = calls.route(made, "counter")
        outputs = await calls.run(made, parse_json(served.spec, {"inputs": {"text": "shared by two"}}))
        return made.cache, outputs

    try:
        first, second = (platform.served.run(call(gateway)) for gateway in gateways)
    finally:
        for gateway in gateways:
            assert gateway.cache is not None
            platform.served.run(gateway.cache.close())
        redis.stop()

    assert first[0] == "miss"
    assert second == ("hit", first[1])


def test_a_new_version_never_answers_with_the_old_ones_answers(platform: Platform) -> None:
    platform.cache(ttlSeconds=300, scope="shared")
    old = [ask(platform, "alice", "versioned") for _ in range(2)]
    assert [answered(o)[0] for o in old] == ["miss", "hit"]

    with platform.client() as admin:
        release(admin, platform.root / "modules", "v2")
    new = ask(platform, "alice", "versioned")

    assert answered(new) == ("miss", {"text": "versioned", "call": 1})  # the new version's first call
    assert new.headers["x-model-version"] == "v2"
    assert answered(ask(platform, "bob", "versioned")) == ("hit", answered(new)[1])
