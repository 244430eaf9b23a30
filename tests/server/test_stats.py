"""Call statistics end to end: a real `modelport server` counts the calls it answers, writes them within
seconds, and answers `GET /api/v1/modules/{module}/stats` (and `modelport stats`) to the module's owners and
admins only.

One server serves every test here; its world is made once: `mod-a` owned by `/team-a` and callable by its
members, `dev-a` and `dev-b` developers of `/team-a` and `/team-b`, `user-a` and `user-b` users of each,
and seven calls of `mod-a` (one of them invalid).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from drive import deploy, push, wait_built, wait_deployment
from manifests import api, module_copy
from platform_server import ADMIN_TOKEN, ServerProcess
from typer.testing import CliRunner

from modelport.cli.main import app
from modelport.cli.stats import sparkline

pytestmark = pytest.mark.slow

STATS = "/api/v1/modules/mod-a/stats"
CALLS = 7


@dataclass
class World:
    url: str
    tokens: dict[str, str] = field(default_factory=dict)

    def client(self, who: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[who]}"} if who else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("stats")
    server = ServerProcess(root / "server", token=ADMIN_TOKEN)
    server.start()
    try:
        world = World(server.url, tokens={"admin": ADMIN_TOKEN})
        with world.client("admin") as admin:
            make_world(world, admin, root)
        yield world
    finally:
        server.stop()


def make_world(world: World, admin: httpx.Client, root: Path) -> None:
    for path in ["/team-a", "/team-b"]:
        assert admin.post("/api/v1/groups", json={"path": path}).status_code == 201
    people = {
        "dev-a": ("developer", "/team-a"),
        "dev-b": ("developer", "/team-b"),
        "user-a": ("user", "/team-a"),
        "user-b": ("user", "/team-b"),
    }
    for name, (role, group) in people.items():
        made = admin.post("/api/v1/users", json={"name": name, "role": role, "groups": [group]})
        assert made.status_code == 201, made.text
        token = admin.post("/api/v1/tokens", json={"name": "tests", "user": made.json()["id"]})
        assert token.status_code == 201, token.text
        world.tokens[name] = token.json()["token"]
    pushed = push(admin, module_copy(root, "echo", "mod-a", "/team-a"), version="v1")
    assert pushed.status_code == 201, pushed.text
    assert wait_built(admin, "mod-a", "v1")["build_status"] == "ready"
    assert wait_deployment(admin, "mod-a", deploy(admin, "mod-a", "v1")["generation"])["status"] == "ready"
    applied = admin.post(
        "/api/v1/apply", json={"documents": [api("a-api", "mod-a", access={"groups": ["/team-a"]})]}
    )
    assert applied.status_code == 200, applied.text
    predict = "/api/v1/modules/mod-a/predict"
    for index in range(CALLS - 1):
        assert admin.post(predict, json={"inputs": {"text": f"call {index}"}}).status_code == 200
    assert admin.post(predict, json={"inputs": {}}).status_code == 422


def stats_of(client: httpx.Client, **params: str) -> dict[str, Any]:
    """The stats once every call of the world is written (they are, within a second or two)."""
    deadline = time.monotonic() + 30
    while True:
        response = client.get(STATS, params=params)
        assert response.status_code == 200, response.text
        found: dict[str, Any] = response.json()
        if found["calls"] >= CALLS or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def test_the_calls_answered_show_in_the_modules_stats(world: World) -> None:
    with world.client("dev-a") as owner:
        found = stats_of(owner, window="5m", step="1m")
        assert (found["module"], found["window"], found["step"], found["version"]) == (
            "mod-a",
            "5m",
            "1m",
            None,
        )
        assert (found["calls"], found["errors"], found["error_rate"]) == (CALLS, 0, 0.0)
        assert found["codes"] == {"ok": CALLS - 1, "validation_failed": 1}
        assert found["batch_sizes"] == {"1": CALLS - 1}
        assert found["throughput_rps"] > 0
        latency = found["latency_ms"]
        assert 0 < latency["p50"] <= latency["p90"] <= latency["p95"] <= latency["p99"]
        assert latency["total"] == {q: latency[q] for q in ("p50", "p90", "p95", "p99")}
        assert latency["compute"]["p50"] is not None and latency["queue"]["p50"] is not None
        series = found["series"]
        assert len(series) == 5 and sum(point["calls"] for point in series) == CALLS
        assert all(point["start"].endswith(":00+00:00") for point in series)
        pinned = owner.get(STATS, params={"window": "5m", "step": "1m", "version": "v1"}).json()
        assert pinned["calls"] == CALLS
        assert owner.get(STATS, params={"window": "5m", "version": "v9"}).json()["calls"] == 0


def test_only_owners_and_admins_see_a_modules_stats(world: World) -> None:
    expected = {"admin": 200, "dev-a": 200, "user-a": 403, "dev-b": 404, "user-b": 404, None: 401}
    seen = {}
    for who in expected:
        with world.client(who) as client:
            seen[who] = client.get(STATS).status_code
    assert seen == expected
    with world.client("dev-a") as owner:
        assert owner.get("/api/v1/modules/no-such-module/stats").status_code == 404


@pytest.mark.parametrize(
    ("params", "field_name"),
    [({"window": "2h"}, "window"), ({"window": "5m", "step": "1h"}, "step"), ({"step": "1s"}, "step")],
)
def test_a_window_or_step_not_served_is_422_naming_it(
    world: World, params: dict[str, str], field_name: str
) -> None:
    with world.client("dev-a") as owner:
        response = owner.get(STATS, params=params)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_failed"
    assert [detail["field"] for detail in error["details"]] == [field_name]


def test_the_stats_command_prints_tables_and_sparklines(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELPORT_CONFIG_DIR", str(tmp_path / "config"))
    login = ["--url", world.url, "--token", world.tokens["dev-a"]]
    with world.client("dev-a") as owner:
        stats_of(owner, window="5m", step="1m")
    runner = CliRunner()
    as_json = runner.invoke(app, ["stats", "mod-a", "--window", "5m", "--step", "1m", "-o", "json", *login])
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.stdout)["calls"] == CALLS
    table = runner.invoke(app, ["stats", "mod-a", "--window", "5m", "--step", "1m", *login])
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert lines[0].split("\t") == ["CALLS", "ERRORS", "ERROR RATE", "REQ/S"]
    assert lines[1].split("\t")[:3] == [str(CALLS), "0", "0.00%"]
    assert [line.split("\t")[0] for line in lines[3:7]] == ["LATENCY", "total", "queue", "compute"]
    sparklines = {line.split()[0]: line for line in lines if line.startswith(("req/s", "p95 ms"))}
    assert set(sparklines) == {"req/s", "p95"}
    assert any(block in sparklines["req/s"] for block in "▁▂▃▄▅▆▇█")
    refused = runner.invoke(app, ["stats", "mod-a", "--window", "2h", *login])
    assert refused.exit_code == 2
    assert "window" in refused.stderr


def test_sparklines_scale_to_the_largest_value_and_fold_long_series() -> None:
    assert sparkline([0, 1, 2, 4, 8]) == "▁▂▃▅█"
    assert sparkline([None, 3.0, None]) == " █ "
    assert sparkline([0.0, 0.0]) == "▁▁"
    folded = sparkline([float(i % 10) for i in range(1000)], width=100)
    assert folded == "█" * 100  # each block the largest of the ten it holds
