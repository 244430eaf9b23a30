"""The control API's refusals and the routes the rollout tests leave out: limits, bad deploys, logs.

The platform is the real composition root served in this process (its modules run in real worker
processes); the rollout and fault tests in `tests/server/` drive a real server process instead.
"""

from __future__ import annotations

import os
import time

import pytest
from drive import deploy, push, push_and_deploy, tag_release, wait_deployment
from inprocess import served_platform
from platform_server import ADMIN_TOKEN
from repos import git

from modelport.artifacts import pack


def test_artifacts_have_their_own_body_limit(tmp_path, git_module):
    repository = git_module("versioned", tag="v1")
    (repository / "weights.bin").write_bytes(os.urandom(20_000))  # incompressible: the artifact stays large
    git(repository, "add", "-A")
    git(repository, "commit", "-q", "-m", "weights")
    git(repository, "tag", "-f", "v1")
    limits = {"max_body_bytes": 4096, "max_artifact_bytes": 2_000_000}
    with (
        served_platform(tmp_path / "platform", **limits) as served,
        served.client({"Authorization": f"Bearer {ADMIN_TOKEN}"}) as client,
    ):
        artifact = pack(repository, version=None)
        assert artifact.size > 4096
        assert push(client, repository).status_code == 201
        too_big = client.post(
            "/api/v1/modules/versioned/versions", params={"version": "v9"}, content=b"x" * 2_000_001
        )
        assert too_big.status_code == 413 and too_big.json()["error"]["code"] == "payload_too_large"
        predict = client.post("/api/v1/modules/versioned/predict", json={"inputs": {"text": "x" * 5000}})
        assert predict.status_code == 413
        assert [v["name"] for v in client.get("/api/v1/modules/versioned/versions").json()["versions"]] == [
            "v1"
        ]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"version": "v9"}, 404, "version_not_found"),
        ({"version": "v1", "replicas": 0}, 422, "validation_failed"),
        ({"version": "v1", "canary_percent": 101}, 422, "validation_failed"),
        ({"version": "v1", "owner": "someone"}, 422, "validation_failed"),
        ({}, 422, "validation_failed"),
    ],
)
def test_bad_deploys_are_refused_and_change_nothing(platform_client, git_module, body, status, code):
    client = platform_client
    repository = git_module("versioned", tag="v1")
    push_and_deploy(client, repository, "versioned", "v1")
    before = client.get("/api/v1/modules/versioned").json()["deployment"]
    response = client.post("/api/v1/modules/versioned/deploy", json=body)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    if status == 422:
        assert response.json()["error"]["details"]
    assert client.get("/api/v1/modules/versioned").json()["deployment"] == before


def test_deploys_to_missing_modules_and_canaries_without_a_version_are_refused(platform_client, git_module):
    client = platform_client
    missing = client.post("/api/v1/modules/nothing/deploy", json={"version": "v1"})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "module_not_found"
    assert client.post("/api/v1/modules/nothing/rollback").status_code == 404
    repository = git_module("versioned", tag="v1")
    assert push(client, repository).status_code == 201
    canary = client.post("/api/v1/modules/versioned/deploy", json={"version": "v1", "canary_percent": 10})
    assert canary.status_code == 409 and canary.json()["error"]["code"] == "conflict"
    pinned = client.post("/api/v1/modules/versioned/predict?version=v1", json={"inputs": {"text": "x"}})
    assert pinned.status_code == 404 and pinned.json()["error"]["code"] == "module_not_found"


def test_replicas_logs_pins_and_delete(platform_client, git_module):
    client = platform_client
    repository = git_module("versioned", tag="v1")
    push_and_deploy(client, repository, "versioned", "v1")
    scaled = wait_deployment(client, "versioned", deploy(client, "versioned", "v1", replicas=2)["generation"])
    assert scaled["status"] == "ready" and scaled["replicas"] == 2
    assert [(s["version"], s["workers"]) for s in scaled["serving"] if s["role"] == "active"] == [("v1", 2)]
    pids = {
        client.post("/api/v1/modules/versioned/predict", json={"inputs": [{"text": "x"}]}).json()["outputs"][
            0
        ]["pid"]
        for _ in range(40)
    }
    assert len(pids) == 2

    not_running = client.post("/api/v1/modules/versioned/predict?version=v7", json={"inputs": {"text": "x"}})
    assert not_running.status_code == 404 and not_running.json()["error"]["code"] == "version_not_found"
    logs = client.get("/api/v1/modules/versioned/logs", params={"tail": 50}).text
    assert "v1 stdout: release one loaded model default" in logs
    assert client.get("/api/v1/modules/nothing/logs").status_code == 404

    tag_release(repository, "v2", release="two")
    assert push(client, repository).status_code == 201
    assert client.delete("/api/v1/modules/versioned").status_code == 204
    assert client.get("/api/v1/modules/versioned").status_code == 404
    assert client.get("/api/v1/modules/versioned/versions").status_code == 404
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        gone = client.post("/api/v1/modules/versioned/predict", json={"inputs": {"text": "x"}})
        if gone.status_code == 404:
            break
        time.sleep(0.1)
    assert gone.status_code == 404
    assert client.delete("/api/v1/modules/versioned").status_code == 404
