"""The control API's refusals and the routes the rollout tests leave out: limits, bad deploys, logs, replicas
from manifests, and what a module's record (and `modelport get modules`) says after a failed rollout.

The platform is the real composition root served in this process (its modules run in real worker
processes); the rollout and fault tests in `tests/server/` drive a real server process instead.
"""

from __future__ import annotations

import functools
import os
import time

import httpx
import pytest
from drive import deploy, push, push_and_deploy, tag_release, wait_built, wait_deployment
from inprocess import served_platform
from platform_server import ADMIN_TOKEN
from repos import git
from typer.testing import CliRunner

from modelport.artifacts import pack
from modelport.cli import platform as platform_cli
from modelport.cli.main import app
from modelport.client import Client


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
    lines = client.get("/api/v1/modules/versioned/logs", params={"tail": 50}).json()["lines"]
    loaded = [line for line in lines if line["line"] == "release one loaded model default"]
    assert {(line["version"], line["stream"]) for line in loaded} == {("v1", "stdout")}
    assert {line["replica"] for line in loaded} == {0, 1}  # each replica loads it
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


def pids_answering(client, module, calls=40):
    """The worker processes that answer `calls` calls, one after another."""
    url = f"/api/v1/modules/{module}/predict"
    return {client.post(url, json={"inputs": {"text": "x"}}).json()["outputs"]["pid"] for _ in range(calls)}


def active_workers(deployment):
    return [(s["version"], s["workers"], s["ready"]) for s in deployment["serving"] if s["role"] == "active"]


def test_applying_a_module_manifest_scales_the_running_deployment(platform_client, git_module):
    client = platform_client
    repository = git_module("versioned", tag="v1")
    deployed = push_and_deploy(client, repository, "versioned", "v1")
    manifest = {
        "apiVersion": "modelport/v1",
        "kind": "Module",
        "metadata": {"name": "versioned"},
        "spec": {"resources": {"replicas": 2}},
    }

    [result] = client.post("/api/v1/apply", json={"documents": [manifest]}).json()["results"]

    assert (result["action"], result["message"]) == ("configured", "scaled to 2 replicas")
    scaled = wait_deployment(client, "versioned", deployed["generation"] + 1)
    assert (scaled["status"], scaled["replicas"], scaled["version"]) == ("ready", 2, "v1"), scaled
    assert active_workers(scaled) == [("v1", 2, True)]
    assert len(pids_answering(client, "versioned")) == 2
    [event] = client.get("/api/v1/audit", params={"action": "module.scale"}).json()["events"]
    assert (event["target"], event["details"]) == ("module/versioned", {"replicas": 2, "previous": 1})


def test_a_module_first_deployed_after_its_manifest_was_applied_runs_the_manifest_replicas(
    platform_client, git_module
):
    client = platform_client
    repository = git_module("versioned", tag="v1")
    assert push(client, repository).status_code == 201
    manifest = {"kind": "Module", "metadata": {"name": "versioned"}, "spec": {"resources": {"replicas": 2}}}
    [result] = client.post("/api/v1/apply", json={"documents": [manifest]}).json()["results"]
    assert (result["action"], result["message"]) == ("configured", "")  # nothing to scale yet
    assert wait_built(client, "versioned", "v1")["build_status"] == "ready"

    first = wait_deployment(client, "versioned", deploy(client, "versioned", "v1")["generation"])

    assert (first["status"], first["replicas"]) == ("ready", 2), first
    assert active_workers(first) == [("v1", 2, True)]


def test_a_deploy_takes_the_replicas_its_version_manifest_changes_and_explicit_ones_win(
    platform_client, git_module
):
    client = platform_client
    repository = git_module("versioned", tag="v1")
    push_and_deploy(client, repository, "versioned", "v1")
    manifest = repository / "modelport.yaml"
    manifest.write_text(manifest.read_text().replace("replicas: 1", "replicas: 2"))
    tag_release(repository, "v2", release="two")
    assert push(client, repository).status_code == 201
    assert wait_built(client, "versioned", "v2")["build_status"] == "ready"

    second = wait_deployment(client, "versioned", deploy(client, "versioned", "v2")["generation"])
    assert (second["status"], second["version"], second["replicas"]) == ("ready", "v2", 2), second
    assert active_workers(second) == [("v2", 2, True)]

    explicit = deploy(client, "versioned", "v2", replicas=3)
    by_hand = wait_deployment(client, "versioned", explicit["generation"])
    assert (by_hand["status"], by_hand["replicas"]) == ("ready", 3), by_hand
    tag_release(repository, "v3", env={"NOTE": "three"})  # still `replicas: 2`: the count set by hand holds
    assert push(client, repository).status_code == 201
    assert wait_built(client, "versioned", "v3")["build_status"] == "ready"
    third = wait_deployment(client, "versioned", deploy(client, "versioned", "v3")["generation"])
    assert (third["status"], third["version"], third["replicas"]) == ("ready", "v3", 3), third


def test_a_failed_rollout_leaves_the_module_ready_and_says_which_version_failed(
    platform_client, git_module, monkeypatch
):
    client = platform_client
    repository = git_module("versioned", tag="v1")
    push_and_deploy(client, repository, "versioned", "v1")
    tag_release(repository, "v2", release="two", env={"WARMUP_FAILS": "1"})
    assert push(client, repository).status_code == 201
    assert wait_built(client, "versioned", "v2")["build_status"] == "ready"

    deployment = wait_deployment(client, "versioned", deploy(client, "versioned", "v2")["generation"])

    assert (deployment["status"], deployment["version"]) == ("ready", "v1"), deployment
    assert deployment["target_version"] is None
    assert active_workers(deployment) == [("v1", 1, True)]
    rollout = deployment["rollout"]
    assert (rollout["version"], rollout["status"]) == ("v2", "failed"), rollout
    assert rollout["message"].startswith("warm-up example failed: "), rollout
    call = client.post("/api/v1/modules/versioned/predict", json={"inputs": {"text": "x"}})
    assert (call.status_code, call.json()["outputs"]["release"]) == (200, "one")

    modules = client.get("/api/v1/modules").json()
    assert modules["modules"][0]["deployment"] == client.get("/api/v1/modules/versioned").json()["deployment"]
    answer = httpx.MockTransport(lambda request: httpx.Response(200, json=modules))
    monkeypatch.setattr(platform_cli, "Client", functools.partial(Client, transport=answer))
    table = CliRunner().invoke(
        app, ["get", "modules"], env={"MODELPORT_URL": "http://testserver", "MODELPORT_TOKEN": ADMIN_TOKEN}
    )
    assert table.exit_code == 0, table.output
    assert table.stdout.splitlines() == [
        "NAME\tSERVING\tCANARY\tREPLICAS\tSTATUS\tROLLOUT\tMESSAGE",
        f"versioned\tv1\t-\t1\tready\tv2 failed: {rollout['message']}\t",
    ]

    again = wait_deployment(client, "versioned", deploy(client, "versioned", "v1")["generation"])
    assert (again["status"], again["rollout"]) == ("ready", None)  # the next change starts afresh
