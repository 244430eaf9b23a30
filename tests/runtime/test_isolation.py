"""Module code runs without the server's secrets: workers and builds get a minimal environment."""

from __future__ import annotations

import pytest

from modelport.runtime.isolation import build_environment, worker_environment
from modelport.runtime.sandbox import _outside

SECRETS = {
    "MODELPORT_BOOTSTRAP_TOKEN": "mp_canary-bootstrap",
    "MODELPORT_S3_ACCESS_KEY_ID": "canary-s3-key-id",
    "MODELPORT_S3_SECRET_ACCESS_KEY": "canary-s3-secret",
    "MODELPORT_DATABASE_URL": "postgresql://modelport:canary-password@db/modelport",
    "MODELPORT_REDIS_URL": "redis://:canary@cache:6379/0",
    "AWS_SECRET_ACCESS_KEY": "canary-aws-secret",
    "AWS_SESSION_TOKEN": "canary-aws-session",
    "DATABASE_URL": "postgresql://canary",
    "GITHUB_TOKEN": "canary-github",
}


async def test_a_module_reads_none_of_the_servers_secrets(fixture_module, serve, monkeypatch):
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("LANG", "C.UTF-8")
    asked = ",".join([*SECRETS, "GREETING", "LANG", "PATH"])
    async with serve(fixture_module("snoops")) as served:
        response = await served.predict(inputs={"names": asked})
    found = response.json()["outputs"]["found"]
    assert set(found) == {"GREETING", "LANG", "PATH"}, found
    assert found["GREETING"] == "hello"  # what the manifest declares
    assert not any(secret in str(found) for secret in SECRETS.values())


@pytest.mark.parametrize("make", [worker_environment, build_environment])
def test_secrets_never_reach_a_worker_or_a_build(make):
    server = {**SECRETS, "PATH": "/usr/bin", "CUDA_VISIBLE_DEVICES": "0", "LC_ALL": "C.UTF-8"}
    environment = make({"DECLARED": "1"}, server=server)
    assert environment == {
        "PATH": "/usr/bin",
        "CUDA_VISIBLE_DEVICES": "0",
        "LC_ALL": "C.UTF-8",
        "DECLARED": "1",
    }


def test_builds_also_get_what_reaching_a_package_index_needs():
    server = {
        **SECRETS,
        "UV_INDEX_URL": "https://pypi.example/simple",
        "UV_CACHE_DIR": "/cache/uv",
        "PIP_INDEX_URL": "https://pypi.example/simple",
        "HTTPS_PROXY": "http://proxy:3128",
    }
    environment = build_environment({}, server=server)
    assert environment == {k: v for k, v in server.items() if k not in SECRETS}
    assert worker_environment({}, server=server) == {}


def test_a_granted_directory_holding_a_private_one_is_granted_around_it(tmp_path):
    for name in ["project/src/pkg", "project/.modelport/objects", "project/docs", "elsewhere"]:
        (tmp_path / name).mkdir(parents=True)
    (tmp_path / "project" / "README.md").write_text("readme")
    private = [tmp_path / "project" / ".modelport"]
    granted = _outside([str(tmp_path / "project"), str(tmp_path / "project/.modelport/objects")], private)
    assert sorted(granted) == sorted([tmp_path / "project" / name for name in ("src", "docs", "README.md")])
    assert _outside([str(tmp_path / "elsewhere")], private) == [tmp_path / "elsewhere"]
