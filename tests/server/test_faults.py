"""Faults against a real server: a worker killed under load, the server killed and restarted mid-rollout."""

from __future__ import annotations

import os
import signal
import time

from drive import Load, deploy, push, push_and_deploy, tag_release, wait_built, wait_deployment
from platform_server import ADMIN_TOKEN, ServerProcess, alive


def test_a_worker_killed_under_load_is_replaced_and_only_its_calls_fail(platform, client, git_module):
    repository = git_module("versioned", tag="v1")
    push_and_deploy(client, repository, "versioned", "v1")
    victim = client.post("/api/v1/modules/versioned/predict", json={"inputs": {"text": "x"}}).json()[
        "outputs"
    ]["pid"]

    with Load(platform.url, platform.token, "versioned", clients=8) as load:
        load.wait_for_answers(2 * load.clients)  # the load running when the worker dies
        killed = time.time()
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if any(c.status == 200 and c.pid not in (None, victim) for c in list(load.calls)):
                break
            time.sleep(0.05)
        load.wait_for_answers(2 * load.clients, sent_after=time.time())  # and served after the recovery

    recovered = min(c.received for c in load.calls if c.status == 200 and c.pid != victim)
    assert recovered - killed < 5, f"recovery took {recovered - killed:.1f} s"
    failures = load.failures()
    assert len(failures) <= 8, f"{len(failures)} calls failed; at most the victim's in-flight calls may"
    for call in failures:
        assert call.status == 503 and call.retry_after is not None, call
        assert call.received - call.sent < 5, "a call hung"
    assert not alive(victim)
    print(f"recovered in {recovered - killed:.2f} s; {len(failures)} of {len(load.calls)} calls failed")


def test_a_server_killed_mid_rollout_restarts_cleanly(tmp_path, database_url, git_module):
    server = ServerProcess(tmp_path / "server", token=ADMIN_TOKEN, database_url=database_url)
    server.start()
    try:
        with server.client() as client:
            repository = git_module("versioned", tag="v1")
            push_and_deploy(client, repository, "versioned", "v1")
            tag_release(repository, "v2", release="two", env={"LOAD_SECONDS": "3"})
            assert push(client, repository).status_code == 201
            assert wait_built(client, "versioned", "v2")["build_status"] == "ready"
            deploy(client, "versioned", "v2")
            deadline = time.monotonic() + 10
            while len(server.children()) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)  # until the new version's worker is starting beside the old one
            workers = server.children()
            assert len(workers) >= 2
        server.kill()
        deadline = time.monotonic() + 5
        while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(alive(pid) for pid in workers), "workers outlived the killed server"

        server.start()
        with server.client() as client:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                deployment = client.get("/api/v1/modules/versioned").json()["deployment"]
                if deployment["target_version"] is None and deployment["status"] == "ready":
                    break
                time.sleep(0.1)
            assert deployment["status"] == "ready", deployment
            assert deployment["version"] in ("v1", "v2")
            call = client.post("/api/v1/modules/versioned/predict", json={"inputs": {"text": "x"}})
            assert call.status_code == 200
            assert call.headers["x-model-version"] == deployment["version"]
            assert {s["version"] for s in deployment["serving"]} == {deployment["version"]}
        workers = server.children()
        assert server.stop() in (0, -signal.SIGTERM)
        assert not any(alive(pid) for pid in workers), "workers outlived the stopped server"
    finally:
        server.stop()


def test_a_restarted_server_serves_its_deployments_again(tmp_path, git_module):
    server = ServerProcess(tmp_path / "server", token=ADMIN_TOKEN)
    server.start()
    try:
        with server.client() as client:
            repository = git_module("versioned", tag="v1")
            push_and_deploy(client, repository, "versioned", "v1")
            tag_release(repository, "v2", release="two")
            push_and_deploy(client, repository, "versioned", "v2")
        assert server.stop() in (0, -signal.SIGTERM)
        server.start()
        with server.client() as client:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                call = client.post("/api/v1/modules/versioned/predict", json={"inputs": {"text": "x"}})
                if call.status_code == 200:
                    break
                time.sleep(0.1)
            assert call.json()["outputs"]["release"] == "two"
            deployment = client.get("/api/v1/modules/versioned").json()["deployment"]
            assert (deployment["version"], deployment["previous_version"]) == ("v2", "v1")
            rollback = client.post("/api/v1/modules/versioned/rollback")
            assert wait_deployment(client, "versioned", rollback.json()["generation"])["version"] == "v1"
    finally:
        server.stop()


def test_a_crash_looping_version_is_marked_failed_and_the_previous_one_restored(
    platform, client, git_module, tmp_path
):
    repository = git_module("versioned", tag="v1")
    push_and_deploy(client, repository, "versioned", "v1")
    tag_release(repository, "v2", release="two", env={"CRASH_MARKER": str(tmp_path / "shared" / "crashed")})
    push_and_deploy(client, repository, "versioned", "v2")

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        deployment = client.get("/api/v1/modules/versioned").json()["deployment"]
        if deployment["version"] == "v1" and deployment["status"] == "ready":
            break
        time.sleep(0.2)
    assert (deployment["version"], deployment["status"]) == ("v1", "ready"), deployment
    assert "v2 is failing" in deployment["message"] and "rolled back to v1" in deployment["message"]
    call = client.post("/api/v1/modules/versioned/predict", json={"inputs": {"text": "x"}})
    assert call.status_code == 200 and call.json()["outputs"]["release"] == "one"
    history = client.get("/api/v1/modules/versioned/history", params={"kind": "failure,rollback,switch"})
    events = [(e["kind"], e["from_version"], e["version"], e["actor"]) for e in history.json()["events"]]
    assert events[:3] == [
        ("switch", "v2", "v1", None),
        ("rollback", "v2", "v1", "system"),  # the platform's own, for the crash loop
        ("failure", None, "v2", None),
    ], events
