"""Deadlines of calls at the gateway: the `Api` manifests' `syncTimeoutSeconds`, clients that go away, and the
`Api` fields that never did anything (refused when applied, ignored in manifests stored before).

The platform here is the real composition root in this process (`tests/inprocess.py`) on SQLite, with two
modules whose calls sleep as long as asked: `bounded` (its `Api` is applied over HTTP) and `legacy` (its `Api`
is written to the database as an older schema stored it).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from drive import deploy, push, wait_built, wait_deployment
from inprocess import InProcessApp, platform_server
from manifests import FIXTURES, api
from platform_server import ADMIN_TOKEN

from modelport.app import PlatformServer
from modelport.core.errors import NotFound
from modelport.db import ApiDefinition

SLEEPS = '''
import time


def inference(parameters, inputs, output_fields, model_key, model=None):
    """Sleep for the record's seconds.

    :param inputs.seconds: How long to take
    :type inputs.seconds: float
    :param outputs.slept: The seconds slept
    :type outputs.slept: float
    """
    time.sleep(sum(r["seconds"] for r in inputs))
    return [{"slept": r["seconds"]} for r in inputs]
'''

LEGACY_API = {
    "apiVersion": "modelport/v1",
    "kind": "Api",
    "metadata": {"name": "legacy-api"},
    "spec": {
        "module": "legacy",
        "access": {"anonymous": True},
        "cache": {"ttlSeconds": 0},
        "canary": {"version": "v0", "percent": 5},
        "syncTimeoutSeconds": 0.5,
    },
}


def module_tree(root: Path, name: str, source: str, resources: str = "{}") -> Path:
    directory = root / name
    directory.mkdir(parents=True)
    (directory / "inference.py").write_text(source)
    (directory / "modelport.yaml").write_text(
        f"apiVersion: modelport/v1\nkind: Module\nmetadata: {{name: {name}}}\n"
        f"spec: {{resources: {resources}}}\n"
    )
    return directory


@dataclass
class Platform:
    server: PlatformServer
    served: InProcessApp

    def client(self, token: str = ADMIN_TOKEN) -> httpx.Client:
        return self.served.client({"Authorization": f"Bearer {token}"} if token else {})


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    root = tmp_path_factory.mktemp("deadlines")
    server = platform_server(root / "platform")
    with (
        InProcessApp(server.app, server.running) as served,
        served.client({"Authorization": f"Bearer {ADMIN_TOKEN}"}) as admin,
    ):
        for name in ("bounded", "legacy"):
            assert push(admin, module_tree(root / "modules", name, SLEEPS), version="v1").status_code == 201
            assert wait_built(admin, name, "v1")["build_status"] == "ready"
            generation = deploy(admin, name, "v1")["generation"]
            assert wait_deployment(admin, name, generation)["status"] == "ready"
        applied = admin.post(
            "/api/v1/apply", json={"documents": [api("bounded-api", "bounded", syncTimeoutSeconds=0.5)]}
        )
        assert applied.status_code == 200, applied.text
        with server.database.session() as session:
            session.add(ApiDefinition(name="legacy-api", module_name="legacy", manifest=LEGACY_API))
        server.services.policies.reload()
        yield Platform(server, served)


def sleep_for(client: httpx.Client, module: str, seconds: float) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = client.post(f"/api/v1/modules/{module}/predict", json={"inputs": {"seconds": seconds}})
    return response, time.monotonic() - started


def test_the_sync_timeout_of_an_applied_api_bounds_a_call(platform: Platform) -> None:
    with platform.client() as admin:
        response, took = sleep_for(admin, "bounded", 3)
    assert response.status_code == 504, response.text
    assert response.json()["error"]["code"] == "module_timeout"
    assert 0.5 <= took < 2.0


def test_an_api_stored_with_retired_fields_still_grants_access_and_sets_the_deadline(
    platform: Platform,
) -> None:
    with platform.client("") as anonymous:
        quick, _ = sleep_for(anonymous, "legacy", 0)
        slow, took = sleep_for(anonymous, "legacy", 3)
    assert quick.status_code == 200, quick.text
    assert slow.status_code == 504, slow.text
    assert 0.5 <= took < 2.0


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (
            "canary",
            {"version": "v2", "percent": 10},
            "unknown field 'canary': a canary is part of a deployment: "
            "use `modelport deploy MODULE VERSION --canary PERCENT`",
        ),
    ],
)
def test_an_api_with_a_field_that_never_worked_is_refused(
    platform: Platform, field: str, value: dict[str, Any], message: str
) -> None:
    document = api("retired-api", "bounded", **{field: value})
    with platform.client() as admin:
        response = admin.post("/api/v1/apply", json={"documents": [document]})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_manifest"
    (problem,) = error["details"]
    assert problem["field"] == f"spec.{field}"
    assert problem["message"].startswith(message)
    with pytest.raises(NotFound):
        platform.server.services.manifests.get("Api", "retired-api")


# A client that goes away


async def test_a_client_that_disconnects_while_queued_never_reaches_the_worker(tmp_path: Path, serve) -> None:
    directory = module_tree(
        tmp_path, "held", (FIXTURES / "held" / "inference.py").read_text(), "{maxBatchSize: 1}"
    )
    async with serve(directory) as served:
        pool = served.module.pool
        held = [asyncio.create_task(served.predict(inputs={"text": "hold-1"}))]
        await until(lambda: received(directory) == ["hold-1"])
        held.append(asyncio.create_task(served.predict(inputs={"text": "hold-2"})))
        await until(lambda: pool.busy == 2 and pool.queued == 0)  # the worker has both, one behind the other
        gone = asyncio.Event()
        answered: list[dict[str, Any]] = []
        call = asyncio.create_task(
            served.server.app(
                request_scope(served.predict_url()), disconnecting_receive(gone), sent_to(answered)
            )
        )
        await until(lambda: pool.queued == 1)
        gone.set()
        await asyncio.wait_for(call, 1)
        assert answered[0]["status"] == 499
        assert pool.queued == 0
        (directory / "release").touch()
        assert [r.status_code for r in await asyncio.gather(*held)] == [200, 200]
        assert (await served.predict(inputs={"text": "after"})).status_code == 200
        assert received(directory) == ["hold-1", "hold-2", "after"]


BODY = msgspec.json.encode({"inputs": {"text": "gone"}})


def request_scope(path: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("modelport.test", 80),
    }


def disconnecting_receive(gone: asyncio.Event) -> Callable[[], Any]:
    """The body in one message, then `http.disconnect` once `gone` is set, as a server delivers them."""
    messages = [{"type": "http.request", "body": BODY, "more_body": False}]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await gone.wait()
        return {"type": "http.disconnect"}

    return receive


def sent_to(answered: list[dict[str, Any]]) -> Callable[[dict[str, Any]], Any]:
    async def send(message: dict[str, Any]) -> None:
        answered.append(message)

    return send


def received(directory: Path) -> list[str]:
    log = directory / "received.log"
    return log.read_text().split() if log.exists() else []


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition did not hold in time"
        await asyncio.sleep(0.01)
