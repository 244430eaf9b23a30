"""The request log of a real `modelport server`: what a record holds about a call, who sees which calls over
HTTP and the command line, payload redaction down to the bytes on disk, and what a `kill -9` loses.

One server (SQLite) serves most tests; its world is made once: the module `alpha` (the `echo` fixture) owned
by `/team-a`, callable by `/callers` through an `Api` that captures payloads and redacts `inputs.text`;
`dev-a` a developer of `/team-a`, `dev-x` a developer of `/x/team-a`, `ann` and `bob` users in `/callers`.
Each of them (and the admin) has called `alpha` once before the tests run. One test runs its own server on
PostgreSQL, and the last one kills a server of its own.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from drive import deploy, push, wait_built, wait_deployment
from manifests import api, module_copy
from platform_server import ADMIN_TOKEN, ServerProcess
from postgres import Cluster
from typer.testing import CliRunner

from modelport.cli.main import app

pytestmark = pytest.mark.slow

PREDICT = "/api/v1/modules/alpha/predict"
FLUSH_SECONDS = 1.0  # the server's default request_log_flush_seconds
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


@dataclass
class World:
    server: ServerProcess
    tokens: dict[str, str] = field(default_factory=dict)
    calls: dict[str, str] = field(default_factory=dict)
    """The request id of each person's first call of `alpha`."""
    answers: dict[str, httpx.Response] = field(default_factory=dict)

    def client(self, who: str) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[who]}"}
        return httpx.Client(base_url=self.server.url, headers=headers, timeout=30)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("request-log")
    server = ServerProcess(root / "server", token=ADMIN_TOKEN)
    server.start()
    try:
        world = World(server, tokens={"admin": ADMIN_TOKEN})
        with server.client() as admin:
            make_world(world, admin, root)
        for who in ("admin", "dev-a", "dev-x", "ann", "bob"):
            with world.client(who) as caller:
                headers = {"traceparent": f"00-{TRACE}-00f067aa0ba902b7-01"}
                answer = caller.post(PREDICT, json={"inputs": {"text": f"hi {who}"}}, headers=headers)
            assert answer.status_code == (404 if who == "dev-x" else 200), answer.text
            world.calls[who], world.answers[who] = answer.headers["x-request-id"], answer
        for who in ("admin", "dev-a", "ann", "bob"):
            logged(world, world.calls[who])
        yield world
    finally:
        server.stop()


def make_world(world: World, admin: httpx.Client, root: Path) -> None:
    for path in ("/team-a", "/x/team-a", "/callers"):
        assert admin.post("/api/v1/groups", json={"path": path}).status_code == 201
    people = {"dev-a": ("developer", "/team-a"), "dev-x": ("developer", "/x/team-a")}
    people |= {"ann": ("user", "/callers"), "bob": ("user", "/callers")}
    for name, (role, group) in people.items():
        made = admin.post("/api/v1/users", json={"name": name, "role": role, "groups": [group]})
        assert made.status_code == 201, made.text
        token = admin.post("/api/v1/tokens", json={"name": "tests", "user": made.json()["id"]})
        world.tokens[name] = token.json()["token"]
    serve(admin, module_copy(root, "echo", "alpha", "/team-a"), "alpha")
    logging_spec = {"payloads": True, "redact": ["inputs.text"]}
    document = api("alpha-api", "alpha", access={"groups": ["/callers"]}, logging=logging_spec)
    applied = admin.post("/api/v1/apply", json={"documents": [document]})
    assert applied.status_code == 200, applied.text


def serve(admin: httpx.Client, directory: Path, module: str) -> None:
    """Push the module in `directory` as v1 and deploy it."""
    assert push(admin, directory, version="v1").status_code == 201
    assert wait_built(admin, module, "v1")["build_status"] == "ready"
    assert wait_deployment(admin, module, deploy(admin, module, "v1")["generation"])["status"] == "ready"


def logged(world: World, request_id: str, *, payload: bool = False, timeout: float = 15) -> dict[str, Any]:
    """The call's record once the request log has written it (and its payload, when asked)."""
    deadline = time.monotonic() + timeout
    with world.server.client() as admin:
        while True:
            found = admin.get(f"/api/v1/requests/{request_id}")
            if found.status_code == 200 and (not payload or found.json()["payload"] is not None):
                return dict(found.json())
            assert found.status_code in (200, 404), found.text
            assert time.monotonic() < deadline, f"request {request_id} was not logged in {timeout} s"
            time.sleep(0.1)


def listed(client: httpx.Client, **query: Any) -> set[str]:
    answer = client.get("/api/v1/requests", params={"limit": 1000, **query})
    assert answer.status_code == 200, answer.text
    return {record["id"] for record in answer.json()["requests"]}


def every_listed(client: httpx.Client, **query: Any) -> list[str]:
    """The ids of every call the query lists, over as many pages as it takes."""
    ids: list[str] = []
    cursor = None
    while True:
        params = {"limit": 1000, **query, **({"cursor": cursor} if cursor else {})}
        page = client.get("/api/v1/requests", params=params).json()
        ids += [record["id"] for record in page["requests"]]
        if not (cursor := page["next_cursor"]):
            return ids


def test_a_record_holds_the_calls_ids_replica_batch_latencies_and_bytes(world: World) -> None:
    record = logged(world, world.calls["ann"])
    answer = world.answers["ann"]
    assert record["id"] == answer.headers["x-request-id"]
    assert record["trace_id"] == TRACE == answer.headers["traceparent"].split("-")[1]
    assert (record["module"], record["version"], record["caller"], record["status"]) == (
        "alpha",
        "v1",
        "ann",
        200,
    )
    assert record["replica"] == 0 and record["batch_size"] >= 1 and record["records"] == 1
    assert record["total_ms"] >= record["compute_ms"] > 0 and record["total_ms"] >= record["queue_ms"] >= 0
    assert record["request_bytes"] == len(answer.request.content)
    assert record["response_bytes"] == len(answer.content)
    assert record["client"] == "127.0.0.1" and record["payload_key"].startswith("payloads/alpha/")
    assert record["logs_url"] == f"/api/v1/modules/alpha/logs?request_id={record['id']}"


def test_owners_and_admins_see_the_modules_calls_users_their_own_others_nothing(world: World) -> None:
    everyone = {world.calls[who] for who in ("admin", "dev-a", "ann", "bob")}
    with world.client("admin") as admin, world.client("dev-a") as owner:
        assert everyone <= listed(admin, module="alpha") and everyone <= listed(admin)
        assert everyone <= listed(owner, module="alpha") and everyone <= listed(owner)
        assert owner.get(f"/api/v1/requests/{world.calls['bob']}").status_code == 200
    with world.client("ann") as ann:
        assert listed(ann) == listed(ann, module="alpha") == {world.calls["ann"]}
        assert ann.get(f"/api/v1/requests/{world.calls['ann']}").json()["payload"] is not None
        hidden = ann.get(f"/api/v1/requests/{world.calls['bob']}")
        assert hidden.status_code == 404 and hidden.json()["error"]["code"] == "not_found"
    with world.client("dev-x") as stranger:
        assert listed(stranger) == set()
        for who in ("admin", "dev-a", "ann", "bob"):
            assert stranger.get(f"/api/v1/requests/{world.calls[who]}").status_code == 404
        by_name = stranger.get("/api/v1/requests", params={"module": "alpha"})
        assert by_name.status_code == 404 and by_name.json()["error"]["code"] == "module_not_found"
    with httpx.Client(base_url=world.server.url) as nobody:
        assert nobody.get("/api/v1/requests").status_code == 401


def test_the_filters_and_their_refusals_over_http(world: World) -> None:
    with world.client("ann") as ann:
        failed = ann.post(PREDICT, json={"inputs": {}})
    assert failed.status_code == 422
    logged(world, failed.headers["x-request-id"])
    with world.client("dev-a") as owner:
        assert listed(owner, module="alpha", status="4xx", code="validation_failed") == {
            failed.headers["x-request-id"]
        }
        assert world.calls["bob"] in listed(owner, module="alpha", status="200", caller="bob", since="1h")
        assert listed(owner, module="alpha", min_latency_ms=60_000) == set()
        for query, name in (
            ({"status": "5oo"}, "status"),
            ({"since": "later"}, "since"),
            ({"limit": 0}, "limit"),
        ):
            refused = owner.get("/api/v1/requests", params=query)
            assert refused.status_code == 422, refused.text
            assert [d["field"] for d in refused.json()["error"]["details"]] == [name]
        first = owner.get("/api/v1/requests", params={"module": "alpha", "limit": 1}).json()
        assert len(first["requests"]) == 1 and first["next_cursor"]
        rest = owner.get(
            "/api/v1/requests", params={"module": "alpha", "cursor": first["next_cursor"]}
        ).json()
        assert first["requests"][0]["id"] not in {r["id"] for r in rest["requests"]}
        edited = owner.get("/api/v1/requests", params={"cursor": first["next_cursor"][:-3] + "AAA"})
        assert edited.status_code == 400 and edited.json()["error"]["code"] == "invalid_cursor"


def test_a_redacted_field_is_nowhere_on_disk_and_shows_redacted(world: World) -> None:
    canary, marker = f"canary-{uuid.uuid4().hex}", f"marker-{uuid.uuid4().hex}"
    body = {
        "inputs": [{"text": f"{canary}-1"}, {"text": f"{canary}-2"}],
        "parameters": {"suffix": marker},
        "output_fields": ["length"],
    }
    with world.client("ann") as ann:
        answer = ann.post(PREDICT, json=body)
    assert answer.status_code == 200, answer.text
    record = logged(world, answer.headers["x-request-id"], payload=True)
    assert record["payload"]["inputs"] == [{"text": "[redacted]"}, {"text": "[redacted]"}]
    assert record["payload"]["parameters"] == {"suffix": marker}
    assert record["payload"]["outputs"] == [{"length": len(canary) + 2}] * 2
    found = files_holding(world.server.data_dir, [canary.encode(), marker.encode()])
    assert found[canary.encode()] == []  # the database and its WAL, objects, logs: nowhere
    assert found[marker.encode()] != []  # what is not redacted is kept: the search reads the payloads
    assert not any(canary in line for line in world.server.output)


def files_holding(root: Path, needles: list[bytes]) -> dict[bytes, list[Path]]:
    """The files under `root` that hold each of `needles`."""
    found: dict[bytes, list[Path]] = {needle: [] for needle in needles}
    for directory, _, names in os.walk(root):
        for name in names:
            path = Path(directory, name)
            if not path.is_file() or path.is_symlink():
                continue
            data = path.read_bytes()
            for needle in needles:
                if needle in data:
                    found[needle].append(path)
    return found


def test_the_command_line_lists_and_describes_calls(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELPORT_URL", world.server.url)
    monkeypatch.setenv("MODELPORT_TOKEN", world.tokens["dev-a"])
    runner = CliRunner()
    listing = runner.invoke(
        app, ["get", "requests", "alpha", "--caller", "bob", "--status", "2xx", "-o", "json"]
    )
    assert listing.exit_code == 0, listing.output
    assert world.calls["bob"] in listing.stdout
    table = runner.invoke(app, ["get", "requests", "alpha", "--since", "1h", "--limit", "1"])
    assert table.exit_code == 0, table.output
    assert table.stdout.splitlines()[0].split("\t")[:3] == ["TIME", "ID", "MODULE"]
    assert "more: --cursor " in table.stderr
    shown = runner.invoke(app, ["describe", "request", world.calls["ann"]])
    assert shown.exit_code == 0, shown.output
    assert '"text": "[redacted]"' in shown.stdout
    assert f"modelport logs alpha --request-id {world.calls['ann']}" in shown.stdout
    refused = runner.invoke(app, ["get", "requests", "alpha", "--status", "teapot"])
    assert refused.exit_code == 2 and "status" in refused.stderr


def test_on_postgresql_calls_are_logged_and_paged(tmp_path: Path, postgres: Cluster) -> None:
    server = ServerProcess(
        tmp_path / "server", token=ADMIN_TOKEN, database_url=postgres.create_database("rlog")
    )
    server.start()
    try:
        with server.client() as admin:
            serve(admin, module_copy(tmp_path, "echo", "echo", None), "echo")
            ids = [
                admin.post("/api/v1/modules/echo/predict", json={"inputs": {"text": "x"}}).headers[
                    "x-request-id"
                ]
                for _ in range(3)
            ]
            deadline = time.monotonic() + 15
            while len(listed(admin, module="echo")) < 3:
                assert time.monotonic() < deadline, "the calls were not logged"
                time.sleep(0.1)
            pages, cursor = [], None
            while True:
                page = admin.get(
                    "/api/v1/requests",
                    params={"module": "echo", "limit": 2, **({"cursor": cursor} if cursor else {})},
                ).json()
                pages.append([record["id"] for record in page["requests"]])
                if not (cursor := page["next_cursor"]):
                    break
        assert pages == [ids[::-1][:2], ids[::-1][2:]]
    finally:
        server.stop()


def test_a_killed_server_loses_at_most_the_calls_of_one_flush_interval(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "server", token=ADMIN_TOKEN)
    server.start()
    try:
        with server.client() as admin:
            serve(admin, module_copy(tmp_path, "echo", "echo", None), "echo")
        answered: list[tuple[str, float]] = []
        stop = threading.Event()

        def call_until_stopped() -> None:
            headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
            with httpx.Client(base_url=server.url, headers=headers, timeout=10) as client:
                while not stop.is_set():
                    try:
                        answer = client.post("/api/v1/modules/echo/predict", json={"inputs": {"text": "x"}})
                    except httpx.HTTPError:
                        return  # the server is gone
                    if answer.status_code == 200:
                        answered.append((answer.headers["x-request-id"], time.monotonic()))

        callers = [threading.Thread(target=call_until_stopped) for _ in range(4)]
        for caller in callers:
            caller.start()
        deadline = time.monotonic() + 30
        while len(answered) < 200 or time.monotonic() < deadline - 27:  # at least 3 s of calls
            assert time.monotonic() < deadline, "the calls were too slow"
            time.sleep(0.05)
        killed_at = time.monotonic()
        server.kill()
        stop.set()
        for caller in callers:
            caller.join(30)
        server.start()
        with server.client() as admin:
            kept = set(every_listed(admin, module="echo"))
        lost = [at for request_id, at in answered if request_id not in kept]
        last_interval = [at for _, at in answered if at > killed_at - FLUSH_SECONDS]
        oldest = killed_at - min(lost, default=killed_at)
        print(
            f"\nkill -9: {len(lost)} of {len(answered)} calls lost (answered up to {oldest:.2f} s before it),"
        )
        print(f"{len(last_interval)} calls answered in the last interval")
        assert all(at > killed_at - FLUSH_SECONDS - 0.5 for at in lost)
        assert len(lost) <= len([at for _, at in answered if at > killed_at - FLUSH_SECONDS - 0.5])
    finally:
        server.stop()
