"""The metadata database unavailable under load, against a real server: PostgreSQL stopped and started again
or hanging (neither answering nor refusing), and SQLite with a write lock held by another connection.

Callers and modules known before keep being served from memory; what needs the database (a token never seen,
a management write) answers 503 with `Retry-After` at once or after the short lock wait, never 500; and the
server recovers by itself when the database is back.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from drive import Call, Load, deploy, push, wait_built, wait_deployment
from manifests import api, bucket, module_copy
from platform_server import ADMIN_TOKEN, ServerProcess, alive, children_of
from postgres import Cluster

pytestmark = pytest.mark.slow

LOCK_WAIT = 5.0  # the server's SQLite lock wait, in seconds
OUTAGE = 10.0  # seconds PostgreSQL stays down under load


@dataclass
class Platform:
    server: ServerProcess
    caller: str  # a user's token, verified before the database went away
    caller_token_id: int
    unseen: str  # a token made before, never used


def serve_echo(server: ServerProcess, root: Path) -> Platform:
    """The `echo` module deployed, callable by the group `/callers` through an `Api`; one user in it whose
    token has called it once."""
    with server.client() as admin:
        assert admin.post("/api/v1/groups", json={"path": "/callers"}).status_code == 201
        made = admin.post("/api/v1/users", json={"name": "caller", "role": "user", "groups": ["/callers"]})
        assert made.status_code == 201, made.text
        user = made.json()["id"]
        token = admin.post("/api/v1/tokens", json={"name": "load", "user": user}).json()
        unseen = admin.post("/api/v1/tokens", json={"name": "unseen", "user": user}).json()["token"]
        assert push(admin, module_copy(root, "echo", "echo", None), version="v1").status_code == 201
        assert wait_built(admin, "echo", "v1")["build_status"] == "ready"
        assert wait_deployment(admin, "echo", deploy(admin, "echo", "v1")["generation"])["status"] == "ready"
        applied = admin.post(
            "/api/v1/apply", json={"documents": [api("echo-api", "echo", access={"groups": ["/callers"]})]}
        )
        assert applied.status_code == 200, applied.text
    assert call(server, token["token"]).status_code == 200
    return Platform(server, token["token"], token["id"], unseen)


def call(server: ServerProcess, token: str) -> httpx.Response:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        return client.post(
            "/api/v1/modules/echo/predict",
            json={"inputs": {"text": "x"}},
            headers={"Authorization": f"Bearer {token}"},
        )


def logged_ids(server: ServerProcess, wanted: set[str], timeout: float = 30) -> set[str]:
    """Which of the `wanted` request ids the request log holds, once it holds them all or `timeout` s pass."""
    deadline, found = time.time() + timeout, set()
    with server.client() as admin:
        while True:
            found, cursor = set(), None
            while True:
                params = {"module": "echo", "limit": "1000", **({"cursor": cursor} if cursor else {})}
                page = admin.get("/api/v1/requests", params=params)
                assert page.status_code == 200, page.text
                found |= {row["id"] for row in page.json()["requests"]} & wanted
                cursor = page.json()["next_cursor"]
                if cursor is None or found == wanted:
                    break
            if found == wanted or time.time() > deadline:
                return found
            time.sleep(0.5)


def make_token(server: ServerProcess, name: str, timeout: float = 30) -> httpx.Response:
    """A management write: the admin makes itself a token."""
    with server.client(timeout=timeout) as admin:
        return admin.post("/api/v1/tokens", json={"name": name})


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "database_unavailable"
    assert int(response.headers["retry-after"]) >= 1


def figures(answers: list[Call]) -> str:
    latencies = sorted(a.seconds for a in answers)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    counts = {
        status: sum(a.status == status for a in answers) for status in sorted({a.status for a in answers})
    }
    median, top = statistics.median(latencies), latencies[-1]
    return (
        f"{len(answers)} calls answered, by status {counts}; latency median {median * 1000:.1f} ms, "
        f"p99 {p99 * 1000:.1f} ms, max {top * 1000:.1f} ms"
    )


# PostgreSQL stopped and started again


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    """A PostgreSQL server of this test's own: the test stops it."""
    cluster = Cluster()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def stop_postgres(cluster: Cluster) -> None:
    """Immediate shutdown (SIGQUIT) of the server the cluster started, by its process id."""
    pid = int((cluster.data / "postmaster.pid").read_text().split()[0])
    os.kill(pid, signal.SIGQUIT)
    deadline = time.time() + 10
    while alive(pid):
        assert time.time() < deadline, "PostgreSQL did not stop"
        time.sleep(0.02)


def start_postgres(cluster: Cluster) -> None:
    """Start the stopped server again on its data directory and port, as `Cluster.start` first did."""
    options = f"-p {cluster.port} -k {cluster.directory} -c listen_addresses=127.0.0.1 -c fsync=off"
    log = cluster.directory / "log"
    cluster._run(cluster.bin / "pg_ctl", "-D", cluster.data, "-o", options, "-l", log, "-w", "start")


def test_known_callers_are_served_while_postgresql_is_down_and_everything_recovers(
    tmp_path: Path, cluster: Cluster
) -> None:
    url = cluster.create_database("outage")
    server = ServerProcess(tmp_path / "server", token=ADMIN_TOKEN, database_url=url)
    server.start()
    try:
        platform = serve_echo(server, tmp_path)
        with Load(server.url, platform.caller, "echo") as load:
            load.wait_for_answers(16, sent_after=0)
            stop_postgres(cluster)
            down = time.time()
            assert_unavailable(call(server, platform.unseen))  # cannot tell: not 401
            assert_unavailable(make_token(server, "while-down"))
            load.wait_for_answers(16, sent_after=down)
            while time.time() - down < OUTAGE:
                time.sleep(0.05)
            up = time.time()
            start_postgres(cluster)
            deadline = time.time() + 30
            while (made := make_token(server, "after")).status_code != 201:
                assert made.status_code == 503, made.text
                assert time.time() < deadline, "the server did not recover within 30 s of the restart"
                time.sleep(0.1)
            recovered = time.time() - up
            load.wait_for_answers(16, sent_after=time.time())
        during = load.between(down, up)
        print(f"PostgreSQL down {up - down:.1f} s: {figures(during)}")
        print(f"a management write succeeded {recovered:.1f} s after PostgreSQL started again")
        assert during and all(a.status == 200 for a in during), {a.status for a in during}
        assert all(a.status == 200 for a in load.calls), "a call of the known caller failed"
        assert call(server, platform.unseen).status_code == 200
        # The calls answered while the database was down waited in the request log's buffer: none is lost.
        logged = logged_ids(server, {c.request_id for c in during if c.request_id})
        print(f"{len(logged)} of {len(during)} calls answered during the outage are in the request log")
        assert len(logged) == len(during)
        with server.client() as admin:
            assert admin.delete(f"/api/v1/tokens/{platform.caller_token_id}").status_code == 204
        assert call(server, platform.caller).status_code == 401  # revoked: on the next request
    finally:
        server.stop()
    assert "Exception in ASGI application" not in "".join(server.output)  # no request crashed


# SQLite with a write lock held by another connection


def test_predictions_flow_while_another_connection_holds_the_sqlite_write_lock(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "server", token=ADMIN_TOKEN)
    server.start()
    try:
        platform = serve_echo(server, tmp_path)
        holder = sqlite3.connect(tmp_path / "server" / "modelport.db", isolation_level=None, timeout=30)
        with closing(holder), Load(server.url, platform.caller, "echo") as load:
            load.wait_for_answers(16, sent_after=0)
            holder.execute("BEGIN IMMEDIATE")  # another process writing, for as long as it likes
            locked = time.time()
            answered: list[httpx.Response] = []
            writer = threading.Thread(
                target=lambda: answered.append(make_token(server, "locked", timeout=15))
            )
            writer.start()
            assert call(server, platform.unseen).status_code == 200  # reading is not held up
            writer.join(20)
            waited = time.time() - locked
            load.wait_for_answers(16, sent_after=locked)
            holder.execute("ROLLBACK")
            released = time.time()
        during = load.between(locked, released)
        print(f"SQLite write lock held {released - locked:.1f} s: {figures(during)}")
        print(f"the management write answered in {waited:.1f} s")
        assert answered, "the management write did not answer within 20 s"
        assert_unavailable(answered[0])
        assert LOCK_WAIT - 0.5 < waited < 3 * LOCK_WAIT
        assert during and all(a.status == 200 for a in during)
        assert max(a.seconds for a in during) < LOCK_WAIT / 2
        assert make_token(server, "unlocked").status_code == 201
    finally:
        server.stop()
    assert "Exception in ASGI application" not in "".join(server.output)


def test_management_calls_waiting_on_the_sqlite_write_lock_do_not_hold_up_predictions(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "server", token=ADMIN_TOKEN)
    server.start()
    try:
        platform = serve_echo(server, tmp_path)
        more = api("echo-more", "echo", access={"anonymous": True})
        writes: dict[str, Callable[[httpx.Client], httpx.Response]] = {
            "deploy": lambda admin: admin.post("/api/v1/modules/echo/deploy", json={"version": "v1"}),
            "apply": lambda admin: admin.post("/api/v1/apply", json={"documents": [more]}),
            "push": lambda admin: push(admin, tmp_path / "echo", version="v2"),
        }
        answered: dict[str, tuple[float, httpx.Response]] = {}

        def write(name: str) -> None:
            with server.client(timeout=15) as admin:
                sent = time.time()
                response = writes[name](admin)
                answered[name] = (time.time() - sent, response)

        holder = sqlite3.connect(tmp_path / "server" / "modelport.db", isolation_level=None, timeout=30)
        with closing(holder), Load(server.url, platform.caller, "echo") as load:
            load.wait_for_answers(16, sent_after=0)
            holder.execute("BEGIN IMMEDIATE")  # another process writing, for as long as it likes
            locked = time.time()
            writers = [threading.Thread(target=write, args=(name,)) for name in writes]
            for writer in writers:
                writer.start()
            for writer in writers:
                writer.join(20)
            load.wait_for_answers(16, sent_after=time.time())
            holder.execute("ROLLBACK")
            released = time.time()
        during = load.between(locked, released)
        print(f"SQLite write lock held {released - locked:.1f} s, a deploy, an apply and a push waiting:")
        print(f"  {figures(during)}")
        for name, (seconds, _) in sorted(answered.items()):
            print(f"the {name} answered in {seconds:.1f} s")
        assert sorted(answered) == sorted(writes), "a management call did not answer within 20 s"
        for seconds, response in answered.values():
            assert_unavailable(response)
            assert LOCK_WAIT - 0.5 < seconds < 3 * LOCK_WAIT
        assert during and all(a.status == 200 for a in during)
        # A call waiting on the lock would take the whole 5 s; a busy 2-core machine delays some by a second.
        assert max(a.seconds for a in during) < LOCK_WAIT / 2
        with server.client() as admin:
            assert [writes[name](admin).status_code for name in writes] == [202, 200, 201]
    finally:
        server.stop()
    assert "Exception in ASGI application" not in "".join(server.output)


# PostgreSQL hanging: neither answering nor refusing


def test_predictions_flow_while_postgresql_hangs(tmp_path: Path, cluster: Cluster) -> None:
    server = ServerProcess(
        tmp_path / "server", token=ADMIN_TOKEN, database_url=cluster.create_database("hang")
    )
    server.start()
    try:
        platform = serve_echo(server, tmp_path)
        with Load(server.url, platform.caller, "echo") as load:
            load.wait_for_answers(16, sent_after=0)
            with frozen(cluster):
                hung = time.time()
                while time.time() - hung < 3:  # the reconciler reads the deployments every second
                    time.sleep(0.05)
                thawed = time.time()
            load.wait_for_answers(16, sent_after=time.time())
        during = [a for a in load.calls if hung <= a.sent < thawed]  # answered while or after it hung
        print(f"PostgreSQL hanging {thawed - hung:.1f} s: {figures(during)}")
        assert during and all(a.status == 200 for a in during)
        assert max(a.seconds for a in during) < 1.0  # a stalled event loop holds calls until it answers
        assert make_token(server, "after").status_code == 201
    finally:
        server.stop()
    assert "Exception in ASGI application" not in "".join(server.output)


@contextmanager
def frozen(cluster: Cluster) -> Iterator[None]:
    """Every process of the cluster's server stopped (SIGSTOP), then continued: connections open, silent."""
    postmaster = int((cluster.data / "postmaster.pid").read_text().split()[0])
    pids = [postmaster, *children_of(postmaster)]
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


# Browser access to buckets while PostgreSQL is down

ORIGIN = "https://app.example.com"


def test_bucket_cors_is_answered_from_memory_while_postgresql_is_down(
    tmp_path: Path, cluster: Cluster
) -> None:
    server = ServerProcess(
        tmp_path / "server", token=ADMIN_TOKEN, database_url=cluster.create_database("bucket_cors")
    )
    server.start()
    try:
        document = bucket("photos", "/team")
        document["spec"]["cors"] = {"enabled": True, "allowOrigin": ["https://old.example.com"]}
        with server.client() as admin:
            assert admin.post("/api/v1/groups", json={"path": "/team"}).status_code == 201
            assert admin.post("/api/v1/apply", json={"documents": [document]}).status_code == 200
            assert preflight(server, "photos").headers.get("access-control-allow-origin") is None
            document["spec"]["cors"]["allowOrigin"] = [ORIGIN]
            assert admin.post("/api/v1/apply", json={"documents": [document]}).status_code == 200
        allowed = preflight(server, "photos")  # a change made through this server counts at once
        assert allowed.status_code == 204, allowed.text
        assert allowed.headers["access-control-allow-origin"] == ORIGIN
        stop_postgres(cluster)
        known = preflight(server, "photos")
        unknown = preflight(server, "elsewhere")
        with httpx.Client(base_url=server.url, timeout=30) as browser:
            fetched = browser.get(
                "/api/v1/storage/photos/objects/cat.png",
                headers={"Origin": ORIGIN, "Authorization": f"Bearer {ADMIN_TOKEN}"},
            )
            listed = browser.get("/api/v1/storage/elsewhere", headers={"Origin": ORIGIN})
        assert known.status_code == 204, known.text
        assert known.headers["access-control-allow-origin"] == ORIGIN
        assert_unavailable(unknown)  # whether it exists, nobody can tell
        assert_unavailable(listed)
        assert fetched.status_code == 503, fetched.text  # the object's access needs the database
        assert fetched.headers["access-control-allow-origin"] == ORIGIN  # so the page can read why
    finally:
        server.stop()
    assert "Exception in ASGI application" not in "".join(server.output)


def preflight(server: ServerProcess, name: str) -> httpx.Response:
    """A browser's preflight for uploading an object to bucket `name` from `ORIGIN`."""
    with httpx.Client(base_url=server.url, timeout=30) as browser:
        return browser.options(
            f"/api/v1/storage/{name}/objects/cat.png",
            headers={
                "Origin": ORIGIN,
                "Access-Control-Request-Method": "PUT",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
