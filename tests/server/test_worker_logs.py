"""Worker logs through a real server and the real command line: the lines of one request found by its
`X-Request-Id`, a followed log delivering a new call's line within a second, filters validated, the log
hidden from another group's developer, and a follow ended when the server stops. The event stream itself
(backlog, live lines sent once, heartbeats) is checked without a server.

One server (SQLite) serves every test here, with the `prints` fixture module deployed.
"""

from __future__ import annotations

import asyncio
import functools
import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from queue import Empty, Queue

import httpx
import pytest
from drive import deploy, push, wait_built, wait_deployment
from platform_server import ADMIN_TOKEN, ServerProcess

from modelport.core.errors import ValidationFailed
from modelport.core.protocol import REQUEST_TAG, REQUEST_TAG_END
from modelport.gateway.logs_api import log_events, parse_since
from modelport.obs.logs import LogEntry, ModuleLogs

pytestmark = pytest.mark.slow

FIXTURES = Path(__file__).parents[1] / "fixtures" / "modules"
MODULE = "prints"
PREDICT = f"/api/v1/modules/{MODULE}/predict"
LOGS = f"/api/v1/modules/{MODULE}/logs"


@dataclass
class World:
    server: ServerProcess
    developer: str
    """A token of a developer of another group than the module's."""

    def cli(self, *args: str, token: str = ADMIN_TOKEN) -> list[str]:
        return [sys.executable, "-m", "modelport", *args, "--url", self.server.url, "--token", token]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("worker-logs")
    server = ServerProcess(root / "server", token=ADMIN_TOKEN)
    server.start()
    try:
        with server.client() as admin:
            directory = root / MODULE
            shutil.copytree(FIXTURES / MODULE, directory, ignore=shutil.ignore_patterns("__pycache__"))
            (directory / "modelport.yaml").write_text(
                f"apiVersion: modelport/v1\nkind: Module\nmetadata: {{name: {MODULE}}}\n"
            )
            assert push(admin, directory, version="v1").status_code == 201
            assert wait_built(admin, MODULE, "v1")["build_status"] == "ready"
            deployment = wait_deployment(admin, MODULE, deploy(admin, MODULE, "v1")["generation"])
            assert deployment["status"] == "ready", deployment
            developer = make_developer(admin)
        yield World(server, developer)
    finally:
        server.stop()


def make_developer(admin: httpx.Client) -> str:
    assert admin.post("/api/v1/groups", json={"path": "/team-b"}).status_code == 201
    user = admin.post("/api/v1/users", json={"name": "dev-b", "role": "developer", "groups": ["/team-b"]})
    assert user.status_code == 201, user.text
    token = admin.post("/api/v1/tokens", json={"name": "tests", "user": user.json()["id"]})
    assert token.status_code == 201, token.text
    return str(token.json()["token"])


def call(client: httpx.Client, text: str) -> str:
    """Call the module; the request's id."""
    response = client.post(PREDICT, json={"inputs": {"text": text}})
    assert response.status_code == 200, response.text
    return response.headers["X-Request-Id"]


def wait_for_line(client: httpx.Client, text: str, **query: str) -> list[dict[str, object]]:
    """The log lines (JSON) once one reads `text`: the gateway reads the workers' pipes as they write."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lines = client.get(LOGS, params=query).json()["lines"]
        if any(line["line"] == text for line in lines):
            return list(lines)
        time.sleep(0.05)
    raise AssertionError(f"{text!r} never reached the log")


def test_the_cli_prints_the_lines_of_one_request_and_no_other(world: World) -> None:
    with world.server.client() as admin:
        mine, other = call(admin, "alpha"), call(admin, "beta")
        lines = wait_for_line(admin, "stdout line for beta")
    assert not any(REQUEST_TAG in str(line["line"]) or REQUEST_TAG_END in str(line["line"]) for line in lines)
    done = subprocess.run(
        world.cli("logs", MODULE, "--request-id", mine), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    printed = done.stdout.splitlines()
    assert any(line.endswith(" v1/0 stdout stdout line for alpha") for line in printed), printed
    assert any(line.endswith(" v1/0 stderr stderr line") for line in printed), printed
    assert not any("beta" in line or "printed at import" in line for line in printed), printed
    stamp = printed[0].split(" ", 1)[0]
    assert datetime.fromisoformat(stamp) > datetime.now(UTC) - timedelta(minutes=5)

    as_json = subprocess.run(
        world.cli("logs", MODULE, "--request-id", other, "-o", "json"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert as_json.returncode == 0, as_json.stderr
    records = json.loads(as_json.stdout)
    assert records and all(record["request_ids"] == [other] for record in records)
    assert {record["line"] for record in records} >= {"stdout line for beta", "stderr line"}


def test_the_route_answers_text_filters_and_refuses_bad_parameters(world: World) -> None:
    with world.server.client() as admin:
        call(admin, "gamma")
        wait_for_line(admin, "stdout line for gamma")
        text = admin.get(LOGS, params={"tail": 3}, headers={"Accept": "text/plain"})
        assert text.headers["content-type"].startswith("text/plain")
        assert len(text.text.splitlines()) == 3 and " v1/0 " in text.text
        assert admin.get(LOGS, params={"since": "1m", "replica": 0, "version": "v1"}).json()["lines"]
        assert admin.get(LOGS, params={"version": "v9"}).json() == {"lines": []}
        assert admin.get(LOGS, params={"replica": 5}).json() == {"lines": []}
        future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        assert admin.get(LOGS, params={"since": future}).json() == {"lines": []}
        for name, value in (("tail", "0"), ("tail", "100001"), ("replica", "-1"), ("since", "yesterday")):
            refused = admin.get(LOGS, params={name: value})
            assert refused.status_code == 422, (name, refused.text)
            error = refused.json()["error"]
            assert error["code"] == "validation_failed"
            assert [detail["field"] for detail in error["details"]] == [f"query.{name}"]
        assert admin.get("/api/v1/modules/nothing/logs").status_code == 404
        assert "succeeded" in admin.get(LOGS, params={"build": "v1"}).text  # the build log, as before


def test_another_groups_developer_cannot_see_the_log(world: World) -> None:
    headers = {"Authorization": f"Bearer {world.developer}"}
    with httpx.Client(base_url=world.server.url, headers=headers) as dev:
        for query in ({}, {"follow": "true"}, {"build": "v1"}):
            hidden = dev.get(LOGS, params=query)
            assert hidden.status_code == 404 and hidden.json()["error"]["code"] == "module_not_found"
    done = subprocess.run(
        world.cli("logs", MODULE, "-f", token=world.developer), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1 and "(module_not_found)" in done.stderr


def test_a_followed_log_shows_a_new_calls_line_within_a_second(world: World) -> None:
    with following(world, "--tail", "1") as (follower, lines):
        assert lines.get(timeout=30) is not None  # the backlog's line: the follow is on
        with world.server.client() as admin:
            sent = time.monotonic()
            call(admin, "delta")
        arrived = _wait_for(lines, "stdout line for delta")
        assert arrived - sent < 1.0
        follower.send_signal(signal.SIGINT)  # Ctrl+C ends it quietly
        assert follower.wait(30) == 0


def test_stopping_the_server_ends_a_follow_at_once(world: World) -> None:
    with following(world) as (follower, lines):
        assert lines.get(timeout=30) is not None
        started = time.monotonic()
        assert world.server.stop() in (0, -signal.SIGTERM)
        assert time.monotonic() - started < 8  # not held for the drain period (10 s) by the open stream
        assert follower.wait(30) == 1
        assert follower.stderr is not None and "the server ended the log stream" in follower.stderr.read()


Arrivals = Queue[tuple[float, str] | None]


@contextmanager
def following(world: World, *options: str) -> Iterator[tuple[subprocess.Popen[str], Arrivals]]:
    """`modelport logs MODULE -f` running, with each line of its stdout and when it arrived
    (`time.monotonic()`), None at the end; interrupted (Ctrl+C) if still running when the block ends."""
    command = world.cli("logs", MODULE, "-f", *options)
    # Ctrl+C interrupts the command as in a terminal, even where the suite runs with SIGINT ignored (a
    # background job), which the command would otherwise inherit.
    interruptible = functools.partial(signal.signal, signal.SIGINT, signal.SIG_DFL)
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=interruptible
    ) as process:
        arrivals: Arrivals = Queue()

        def read() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                arrivals.put((time.monotonic(), line))
            arrivals.put(None)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            yield process, arrivals
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()  # the block's exit waits for the process without a limit
                raise
            finally:
                reader.join(10)


def _wait_for(lines: Arrivals, text: str) -> float:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            item = lines.get(timeout=0.2)
        except Empty:
            continue
        assert item is not None, "the follow ended"
        arrived, line = item
        if line.rstrip("\n").endswith(text):
            return arrived
    raise AssertionError(f"{text!r} was not printed")


# The event stream, without a server


def test_since_is_a_time_or_a_span_before_now() -> None:
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert parse_since("10m", now=now) == now - timedelta(minutes=10)
    assert parse_since("2d", now=now) == now - timedelta(days=2)
    assert parse_since("2026-01-01T00:00:00Z", now=now) == datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_since("2026-01-01T01:00:00+01:00", now=now) == datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_since("2026-01-01T00:00:00", now=now) == datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_since(None, now=now) is None
    for bad in ("10", "m", "10 minutes", "-5m", ""):
        with pytest.raises(ValidationFailed) as refused:
            parse_since(bad, now=now)
        assert refused.value.details[0]["field"] == "query.since"


async def test_events_send_the_backlog_then_each_new_line_once_with_heartbeats(tmp_path: Path) -> None:
    logs = ModuleLogs(tmp_path)
    sink = logs.sink("echo", "v1")
    sink(0, "stdout", "before")
    loop = asyncio.get_running_loop()

    def backlog() -> list[LogEntry]:
        """Read as a line is written meanwhile, on the loop: it is in the backlog and the follower's queue."""
        written = threading.Event()
        loop.call_soon_threadsafe(lambda: (sink(1, "stderr", "during"), written.set()))
        assert written.wait(5)
        return logs.read("echo")

    events = log_events(logs.follow("echo"), backlog, heartbeat=0.05)
    received = [await anext(events) for _ in range(3)]
    assert received[0] == b": following\n\n"
    assert [b'"line":"before"' in received[1], b'"line":"during"' in received[2]] == [True, True]
    sink(0, "stdout", "after")
    assert b'"line":"after"' in await anext(events)  # "during" is not sent again
    assert await anext(events) == b": heartbeat\n\n"
    logs.end_follows()
    with pytest.raises(StopAsyncIteration):
        await anext(events)
    assert logs._followers == {}
    logs.close()


async def test_a_lost_line_count_is_a_gap_event(tmp_path: Path) -> None:
    logs = ModuleLogs(tmp_path, follow_buffer=2)
    with logs.follow("echo") as follower:
        events = log_events(nullcontext(follower), list, heartbeat=10)
        assert await anext(events) == b": following\n\n"
        for number in range(5):
            logs.sink("echo", "v1")(0, "stdout", f"line {number}")
        follower.close()
        sent = [chunk async for chunk in events]
    assert [chunk.startswith(b"data: {") for chunk in sent[:2]] == [True, True]
    assert b'"line":"line 0"' in sent[0] and b'"line":"line 1"' in sent[1]
    assert sent[2:] == [b'event: gap\ndata: {"dropped":3}\n\n']  # lines 2 to 4 were lost
    logs.close()
