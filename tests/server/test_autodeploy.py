"""Manifests and git sources against a real server: a new tag is pushed, built and deployed by itself."""

from __future__ import annotations

import time

from drive import tag_release
from platform_server import ADMIN_TOKEN, ServerProcess


def _module_manifest(repository, *, auto_deploy=True):
    return {
        "apiVersion": "modelport/v1",
        "kind": "Module",
        "metadata": {"name": "versioned"},
        "spec": {"source": {"git": str(repository), "autoDeploy": auto_deploy, "pollSeconds": 1}},
    }


def _wait_serving(client, version, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = client.get("/api/v1/modules/versioned")
        if response.status_code == 200:
            deployment = response.json()["deployment"]
            if deployment and deployment["version"] == version and deployment["status"] == "ready":
                return deployment
        time.sleep(0.2)
    raise AssertionError(f"versioned {version} was not deployed within {timeout} s")


def test_a_git_source_with_auto_deploy_releases_new_tags(tmp_path, git_module):
    repository = git_module("versioned", tag="v1.0.0")
    server = ServerProcess(
        tmp_path / "server", token=ADMIN_TOKEN, env={"MODELPORT_SOURCE_POLL_SECONDS": "0.2"}
    )
    server.start()
    try:
        with server.client() as client:
            dry = client.post(
                "/api/v1/apply", json={"documents": [_module_manifest(repository)], "dry_run": True}
            )
            assert dry.status_code == 200 and dry.json()["results"][0]["action"] == "created"
            assert client.get("/api/v1/modules").json() == {"modules": []}
            applied = client.post("/api/v1/apply", json={"documents": [_module_manifest(repository)]})
            assert applied.json()["results"][0]["action"] == "created"

            _wait_serving(client, "v1.0.0")
            tag_release(repository, "v1.1.0", release="two")
            _wait_serving(client, "v1.1.0")
            versions = client.get("/api/v1/modules/versioned/versions").json()["versions"]
            assert [(v["name"], v["pushed_by"], v["build_status"]) for v in versions] == [
                ("v1.1.0", "autodeploy", "ready"),
                ("v1.0.0", "autodeploy", "ready"),
            ]
            call = client.post("/api/v1/modules/versioned/predict", json={"inputs": {"text": "x"}})
            assert call.json()["outputs"]["release"] == "two"

            unchanged = client.post("/api/v1/apply", json={"documents": [_module_manifest(repository)]})
            assert unchanged.json()["results"][0]["action"] == "unchanged"
            bad = client.post(
                "/api/v1/apply",
                json={
                    "documents": [{**_module_manifest(repository), "spec": {"resources": {"replicas": -1}}}]
                },
            )
            assert bad.status_code == 422
            assert bad.json()["error"]["details"][0]["field"] == "spec.resources.replicas"

            deleted = client.post("/api/v1/delete", json={"documents": [_module_manifest(repository)]})
            assert deleted.json()["results"][0]["action"] == "deleted"
            assert client.get("/api/v1/modules/versioned").status_code == 404
            gone = client.post("/api/v1/modules/versioned/predict", json={"inputs": {"text": "x"}})
            deadline = time.monotonic() + 10
            while gone.status_code != 404 and time.monotonic() < deadline:
                time.sleep(0.1)
                gone = client.post("/api/v1/modules/versioned/predict", json={"inputs": {"text": "x"}})
            assert gone.status_code == 404
    finally:
        server.stop()
