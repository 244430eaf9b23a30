"""Jobs against crashes of real servers: a gateway killed (`kill -9`) with hundreds of jobs queued or running,
on SQLite and on PostgreSQL; a worker killed under a running job; and a gateway killed while another one on
the same PostgreSQL database shares its queue.

Every job runs the `jobs` fixture module (it sleeps `parameters.seconds` and answers its text and its worker's
pid). A job accepted is never lost and its outcome is recorded once: one row per job, its outputs its own
input, whatever ran twice because its gateway or worker died under it. Leases last 3 s, so the jobs of a dead
gateway are taken over soon after.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from drive import deploy, push, wait_built, wait_deployment
from manifests import module_copy
from platform_server import ADMIN_TOKEN, ServerProcess, alive
from postgres import Cluster

pytestmark = pytest.mark.slow

LEASE_SECONDS = 3
JOB_SECONDS = 0.05
CONCURRENCY = 16
SERVER_ENV = {
    "MODELPORT_JOB_LEASE_SECONDS": str(LEASE_SECONDS),
    "MODELPORT_JOB_RETRY_SECONDS": "0.2",
    "MODELPORT_JOB_CONCURRENCY": str(CONCURRENCY),
}
SHARED_JOB_SECONDS = 0.2
"""Longer jobs where two gateways run them, so that the kill finds many unfinished."""
FINISHED = ("succeeded", "failed", "canceled")


def gateway(data_dir: Path, database_url: str | None, **env: str) -> ServerProcess:
    server = ServerProcess(data_dir, token=ADMIN_TOKEN, database_url=database_url, env={**SERVER_ENV, **env})
    server.start()
    return server


def started(server: ServerProcess) -> ServerProcess:
    """`server`, started again if a test killed it and failed before it could restart it."""
    if server.process is None or server.process.poll() is not None:
        server.start()
    return server


def serve_jobs(server: ServerProcess, root: Path) -> None:
    """Push the `jobs` fixture as module `jobs` v1 and deploy it."""
    with server.client() as admin:
        assert push(admin, module_copy(root, "jobs", "jobs", None), version="v1").status_code == 201
        assert wait_built(admin, "jobs", "v1")["build_status"] == "ready"
        assert wait_deployment(admin, "jobs", deploy(admin, "jobs", "v1")["generation"])["status"] == "ready"


def wait_serving(server: ServerProcess, module: str, timeout: float = 60) -> None:
    """Until `server` itself serves `module` (a gateway started on a database that has its deployment)."""
    deadline = time.monotonic() + timeout
    with server.client() as client:
        while True:
            deployment = client.get(f"/api/v1/modules/{module}").json()["deployment"]
            if any(serving["ready"] for serving in deployment["serving"]):
                return
            assert time.monotonic() < deadline, f"{module} is not served: {deployment}"
            time.sleep(0.1)


def submit_many(
    server: ServerProcess, texts: list[str], *, seconds: float = JOB_SECONDS, threads: int = 8
) -> dict[str, str]:
    """Submit a job of each of `texts` from `threads` clients at once; returns each job's id → its text."""

    def submit(share: list[str]) -> dict[str, str]:
        accepted = {}
        with server.client() as client:
            for text in share:
                body = {"inputs": {"text": text}, "parameters": {"seconds": seconds}}
                answer = client.post("/api/v1/modules/jobs/jobs", json=body)
                assert answer.status_code == 202, answer.text
                accepted[answer.json()["id"]] = text
        return accepted

    with ThreadPoolExecutor(threads) as pool:
        shares = pool.map(submit, [texts[i::threads] for i in range(threads)])
        return {job_id: text for share in shares for job_id, text in share.items()}


def every_job(client: httpx.Client, **query: Any) -> list[dict[str, Any]]:
    """Every job the listing gives for `query`, over as many pages as it takes."""
    jobs: list[dict[str, Any]] = []
    cursor = None
    while True:
        params = {"limit": 1000, **query, **({"cursor": cursor} if cursor else {})}
        page = client.get("/api/v1/jobs", params=params)
        assert page.status_code == 200, page.text
        jobs += page.json()["jobs"]
        if not (cursor := page.json()["next_cursor"]):
            return jobs


def unfinished(client: httpx.Client) -> int:
    """How many of the module's jobs are queued or running."""
    return sum(len(every_job(client, module="jobs", status=status)) for status in ("queued", "running"))


def wait_all_finished(
    server: ServerProcess, accepted: dict[str, str], timeout: float
) -> list[dict[str, Any]]:
    """The module's jobs once every one of `accepted` has finished."""
    deadline = time.monotonic() + timeout
    with server.client() as client:
        while True:
            jobs = every_job(client, module="jobs")
            done = sum(job["status"] in FINISHED for job in jobs if job["id"] in accepted)
            if done == len(accepted):
                return jobs
            assert time.monotonic() < deadline, f"{done} of {len(accepted)} jobs finished in {timeout} s"
            time.sleep(0.25)


def assert_each_ran_once(jobs: list[dict[str, Any]], accepted: dict[str, str]) -> None:
    """One row per accepted job, each succeeded with its own input as its outputs."""
    ids = [job["id"] for job in jobs]
    assert len(ids) == len(set(ids)) == len(accepted)
    assert set(ids) == set(accepted)
    for job in jobs:
        assert job["status"] == "succeeded", job
        assert job["outputs"]["text"] == accepted[job["id"]], job
        assert 1 <= job["attempts"] <= job["max_attempts"], job


def kill_with_jobs_unfinished(server: ServerProcess) -> int:
    """`kill -9` the server while some of its module's jobs are yet to finish; returns how many were."""
    with server.client() as client:
        left = unfinished(client)
    server.kill()
    assert left > 0, "every job had finished before the kill: nothing was left to recover"
    return left


def known_ids(server: ServerProcess) -> set[str]:
    with server.client() as client:
        return {job["id"] for job in every_job(client, module="jobs")}


def new_jobs(server: ServerProcess, accepted: dict[str, str], before: set[str]) -> list[dict[str, Any]]:
    """The module's jobs made since `before` (the ids there were), once each of `accepted` has finished."""
    return [job for job in wait_all_finished(server, accepted, timeout=60) if job["id"] not in before]


@pytest.fixture(scope="module")
def sqlite_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A gateway on SQLite serving `jobs`, for the tests that kill it or its worker."""
    root = tmp_path_factory.mktemp("jobs-crash")
    server = gateway(root / "server", None)
    try:
        serve_jobs(server, root)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def pg_gateway(tmp_path_factory: pytest.TempPathFactory, postgres: Cluster) -> Iterator[ServerProcess]:
    """A gateway on PostgreSQL serving `jobs`, for the tests that kill it; `.data_dir` is `.../a`."""
    root = tmp_path_factory.mktemp("jobs-crash-pg")
    server = gateway(root / "a", postgres.create_database(f"crash{uuid.uuid4().hex[:12]}"))
    try:
        serve_jobs(server, root)
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def crashing_gateway(request: pytest.FixtureRequest) -> ServerProcess:
    """A gateway serving `jobs`, on each database backend."""
    name = "sqlite_gateway" if request.param == "sqlite" else "pg_gateway"
    return started(request.getfixturevalue(name))


def test_a_killed_gateway_loses_no_job_and_records_each_once(crashing_gateway: ServerProcess) -> None:
    server = crashing_gateway
    before = known_ids(server)
    accepted = submit_many(server, [f"job-{i}" for i in range(500)])
    assert len(accepted) == 500
    left = kill_with_jobs_unfinished(server)
    server.start()
    jobs = new_jobs(server, accepted, before)
    assert_each_ran_once(jobs, accepted)
    again = [job for job in jobs if job["attempts"] > 1]
    print(f"\n{left} of 500 jobs unfinished at the kill; {len(again)} ran again")
    assert len(again) <= CONCURRENCY  # only those the killed gateway was running


def test_a_worker_killed_under_a_job_is_retried_and_the_job_succeeds(sqlite_gateway: ServerProcess) -> None:
    server = started(sqlite_gateway)
    wait_serving(server, "jobs")
    workers = server.children()
    assert workers, "the module's worker is not a child of the server"
    with server.client() as client:
        body = {"inputs": {"text": "survivor"}, "parameters": {"seconds": 2}}
        submitted = client.post("/api/v1/modules/jobs/jobs", json=body)
        assert submitted.status_code == 202, submitted.text
        location = submitted.headers["location"]
        deadline = time.monotonic() + 10
        while client.get(location).json()["status"] != "running":
            assert time.monotonic() < deadline, "the job did not start"
            time.sleep(0.05)
        time.sleep(0.5)  # the call is in the worker by now: it sleeps there for 2 s
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        done = client.get(location, params={"wait": 30}).json()
    assert done["status"] == "succeeded", done
    assert done["attempts"] == 2
    assert done["outputs"]["text"] == "survivor"
    assert done["outputs"]["pid"] not in workers
    assert not any(alive(pid) for pid in workers)


@pytest.fixture
def second_gateway(pg_gateway: ServerProcess, tmp_path: Path) -> Iterator[ServerProcess]:
    """Another gateway on the database of `pg_gateway`, serving `jobs` too (the deployment is in the
    database; the version's files are copied, as a volume the gateways share would hold them)."""
    started(pg_gateway)
    for folder in ("artifacts", "versions"):
        shutil.copytree(pg_gateway.data_dir / folder, tmp_path / "b" / folder)
    server = gateway(tmp_path / "b", pg_gateway.database_url)
    try:
        wait_serving(server, "jobs")
        yield server
    finally:
        server.stop()


def test_a_second_gateway_finishes_the_jobs_of_one_killed(
    pg_gateway: ServerProcess, second_gateway: ServerProcess
) -> None:
    first, second = pg_gateway, second_gateway
    workers = set(second.children())
    before = known_ids(first)
    accepted = submit_many(first, [f"shared-{i}" for i in range(300)], seconds=SHARED_JOB_SECONDS)
    kill_with_jobs_unfinished(first)
    with second.client() as client:
        orphans = {job["id"] for status in ("queued", "running") for job in every_job(client, status=status)}
    jobs = new_jobs(second, accepted, before)
    assert_each_ran_once(jobs, accepted)
    taken_over = [job for job in jobs if job["id"] in orphans]
    assert taken_over and all(job["outputs"]["pid"] in workers for job in taken_over)
    assert sum(job["attempts"] > 1 for job in jobs) <= CONCURRENCY
    print(f"\n{len(orphans)} of 300 jobs unfinished at the kill, finished by the second gateway")
