"""Deployments under load against a real server: surge-first switches, broken versions, rollback, canary."""

from __future__ import annotations

import time

import pytest
from drive import Load, deploy, push, push_and_deploy, tag_release, wait_built, wait_deployment
from platform_server import alive


def test_a_rolling_deploy_under_load_fails_no_request(platform, client, git_module, tmp_path):
    marker = tmp_path / "shared" / "warm-ups"
    repository = git_module("versioned", tag="v1")
    push_and_deploy(client, repository, "versioned", "v1")
    tag_release(repository, "v2", release="two", env={"WARMUP_MARKER": str(marker), "LOAD_SECONDS": "1"})
    assert push(client, repository).status_code == 201
    assert wait_built(client, "versioned", "v2")["build_status"] == "ready"

    with Load(platform.url, platform.token, "versioned", clients=8) as load:
        load.wait_for_answers(2 * load.clients)  # the old version under load before the deploy
        started = time.time()
        deployment = wait_deployment(client, "versioned", deploy(client, "versioned", "v2")["generation"])
        switched = time.time()
        load.wait_for_answers(2 * load.clients, sent_after=switched)

    assert deployment["status"] == "ready" and deployment["version"] == "v2", deployment
    assert deployment["previous_version"] == "v1"
    assert load.failures() == []
    warmed_up = float(marker.read_text().split()[1])
    new = [c for c in load.calls if c.release == "two"]
    old = [c for c in load.calls if c.release == "one"]
    assert new and old
    assert all(c.version == "v2" for c in new) and all(c.version == "v1" for c in old)
    assert min(c.received for c in new) > warmed_up, "the new version answered before its warm-up passed"
    assert all(c.release == "two" for c in load.calls if c.sent > switched)
    old_pids = {c.pid for c in old}
    deadline = time.monotonic() + 15
    while any(alive(pid) for pid in old_pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(pid) for pid in old_pids), "the old version's workers are still running"
    print(f"switch took {switched - started:.2f} s; {len(load.calls)} calls, 0 failed")


BROKEN = {
    "import_error": ({}, "import nonexistent_package_xyz\n"),
    "load_raises": ({"LOAD_FAILS": "1"}, ""),
    "warm_up_fails": ({"WARMUP_FAILS": "1"}, ""),
}


@pytest.mark.parametrize("breakage", sorted(BROKEN))
def test_a_broken_version_never_takes_traffic(platform, client, git_module, breakage):
    repository = git_module("versioned", tag="v1")
    push_and_deploy(client, repository, "versioned", "v1")
    env, prefix = BROKEN[breakage]
    if prefix:
        source = repository / "inference.py"
        source.write_text(prefix + source.read_text())
    tag_release(repository, "v2", release="two", env=env or None)
    assert push(client, repository).status_code == 201

    with Load(platform.url, platform.token, "versioned", clients=4) as load:
        load.wait_for_answers(2 * load.clients)
        response = client.post("/api/v1/modules/versioned/deploy", json={"version": "v2"})
        if response.status_code == 409:  # the build had already failed
            reason = response.json()["error"]["message"]
        else:
            deployment = wait_deployment(client, "versioned", response.json()["generation"])
            assert deployment["status"] == "ready", deployment  # v1 serves on
            assert deployment["version"] == "v1" and deployment["target_version"] is None
            assert (deployment["rollout"]["version"], deployment["rollout"]["status"]) == ("v2", "failed")
            reason = deployment["rollout"]["message"]
        load.wait_for_answers(2 * load.clients, sent_after=time.time())  # still served after the failure

    expected = {
        "import_error": "nonexistent_package_xyz",
        "load_raises": "corrupt",
        "warm_up_fails": "warm-up",
    }
    assert expected[breakage] in reason, reason
    assert load.calls and load.failures() == []
    assert {c.release for c in load.calls} == {"one"}
    module = client.get("/api/v1/modules/versioned").json()
    assert [s["version"] for s in module["deployment"]["serving"]] == ["v1"]


def test_rollback_restores_the_previous_version(platform, client, git_module):
    repository = git_module("versioned", tag="v1")
    push_and_deploy(client, repository, "versioned", "v1")
    assert client.post("/api/v1/modules/versioned/rollback").json()["error"]["code"] == "no_previous_version"
    tag_release(repository, "v2", release="two")
    push_and_deploy(client, repository, "versioned", "v2")
    with Load(platform.url, platform.token, "versioned", clients=4) as load:
        load.wait_for_answers(2 * load.clients)
        response = client.post("/api/v1/modules/versioned/rollback")
        assert response.status_code == 202
        deployment = wait_deployment(client, "versioned", response.json()["generation"])
        load.wait_for_answers(2 * load.clients, sent_after=time.time())
    assert deployment["status"] == "ready"
    assert (deployment["version"], deployment["previous_version"]) == ("v1", "v2")
    assert load.failures() == []
    call = client.post("/api/v1/modules/versioned/predict", json={"inputs": {"text": "x"}})
    assert call.headers["x-model-version"] == "v1" and call.json()["outputs"]["release"] == "one"
    [event] = client.get("/api/v1/audit", params={"action": "module.rollback"}).json()["events"]
    assert event["details"] == {"version": "v1", "replaced": "v2"}


def test_a_canary_takes_its_share_of_calls(platform, client, git_module):
    repository = git_module("versioned", tag="v1")
    push_and_deploy(client, repository, "versioned", "v1")
    tag_release(repository, "v2", release="two")
    assert push(client, repository).status_code == 201
    assert wait_built(client, "versioned", "v2")["build_status"] == "ready"
    deployment = wait_deployment(
        client, "versioned", deploy(client, "versioned", "v2", canary_percent=10)["generation"]
    )
    assert deployment["status"] == "ready"
    assert (deployment["version"], deployment["canary_version"]) == ("v1", "v2")

    versions = [
        client.post("/api/v1/modules/versioned/predict", json={"inputs": {"text": "x"}}).headers[
            "x-model-version"
        ]
        for _ in range(2000)
    ]
    share = versions.count("v2") / len(versions) * 100
    assert 7 <= share <= 13, share
    pinned = client.post("/api/v1/modules/versioned/predict?version=v2", json={"inputs": {"text": "x"}})
    assert pinned.json()["outputs"]["release"] == "two"

    promoted = wait_deployment(client, "versioned", deploy(client, "versioned", "v2")["generation"])
    assert (promoted["version"], promoted["canary_version"]) == ("v2", None)
    call = client.post("/api/v1/modules/versioned/predict", json={"inputs": {"text": "x"}})
    assert call.headers["x-model-version"] == "v2"
