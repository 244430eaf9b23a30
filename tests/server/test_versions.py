"""Pushing and building versions against a real server: immutability, build outcomes, auth."""

from __future__ import annotations

import httpx
from drive import push, wait_built
from platform_server import ADMIN_TOKEN
from repos import git

from modelport.artifacts import pack


def test_requests_without_a_valid_token_are_refused(platform):
    with httpx.Client(base_url=platform.url) as anonymous:
        assert anonymous.get("/healthz").status_code == 200
        assert anonymous.get("/readyz").status_code == 200
        assert anonymous.get("/openapi.json").status_code == 200
        for method, path in [
            ("GET", "/api/v1/modules"),
            ("POST", "/api/v1/modules/echo/versions?version=v1"),
            ("POST", "/api/v1/modules/echo/deploy"),
            ("POST", "/api/v1/modules/echo/predict"),
            ("GET", "/api/v1/modules/echo/openapi.json"),
        ]:
            for headers in (
                {},
                {"Authorization": "Bearer mp_wrong"},
                {"Authorization": f"Basic {ADMIN_TOKEN}"},
            ):
                response = anonymous.request(method, path, headers=headers)
                assert response.status_code == 401, (method, path, headers)
                expected = "invalid_token" if headers else "unauthorized"  # bad credentials, or none
                assert response.json()["error"]["code"] == expected
                assert response.headers["www-authenticate"].startswith("Bearer")
        lower_case = anonymous.get("/api/v1/modules", headers={"Authorization": f"bearer {ADMIN_TOKEN}"})
        assert lower_case.status_code == 200


def test_a_pushed_version_records_its_origin_and_builds(platform, client, git_module):
    directory = git_module("echo", tag="v1.0.0", module_name="echo")
    response = push(client, directory)
    assert response.status_code == 201, response.text
    info = response.json()
    commit = git(directory, "rev-parse", "HEAD").strip()
    assert info["name"] == "v1.0.0" and info["commit"] == commit and info["pushed_by"] == "admin"
    assert info["digest"].startswith("sha256:")
    built = wait_built(client, "echo", "v1.0.0")
    assert built["build_status"] == "ready", built
    detail = client.get("/api/v1/modules/echo/versions/v1.0.0").json()
    assert [f["name"] for f in detail["spec"]["inputs"]] == ["text"]
    assert detail["manifest"]["metadata"]["name"] == "echo"
    log = client.get("/api/v1/modules/echo/logs", params={"build": "v1.0.0"}).text
    assert "importing inference.py:inference" in log and "succeeded" in log
    listed = client.get("/api/v1/modules/echo/versions").json()["versions"]
    assert [v["name"] for v in listed] == ["v1.0.0"]


def test_versions_are_immutable(platform, client, git_module):
    directory = git_module("echo", module_name="echo")
    assert push(client, directory).status_code == 201
    again = push(client, directory)
    assert again.status_code == 200 and again.json()["name"] == "v1"
    (directory / "inference.py").write_text((directory / "inference.py").read_text() + "\n# changed\n")
    git(directory, "commit", "-q", "-am", "change")
    git(directory, "tag", "-f", "v1")
    conflict = push(client, directory)
    assert conflict.status_code == 409
    assert conflict.json()["error"]["code"] == "version_exists"
    assert len(client.get("/api/v1/modules/echo/versions").json()["versions"]) == 1


def test_requirements_that_fail_to_install_fail_the_build_with_its_log(platform, client, git_module):
    directory = git_module("echo", module_name="echo")
    (directory / "requirements.txt").write_text("./no-such-package-here\n")
    git(directory, "add", "-A")
    git(directory, "commit", "-q", "-m", "requirements")
    git(directory, "tag", "v2")
    assert push(client, directory, version="v2").status_code == 201
    built = wait_built(client, "echo", "v2")
    assert built["build_status"] == "failed"
    assert "no-such-package-here" in built["build_error"]
    log = client.get("/api/v1/modules/echo/logs", params={"build": "v2"}).text
    assert "no-such-package-here" in log and "failed" in log
    refused = client.post("/api/v1/modules/echo/deploy", json={"version": "v2"})
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "version_failed"


def test_a_module_that_cannot_be_read_is_refused_and_nothing_is_stored(platform, client, tmp_path):
    artifact = pack(_module(tmp_path), version="v1")
    wrong_name = client.post(
        "/api/v1/modules/other/versions", params={"version": "v1"}, content=artifact.data
    )
    assert wrong_name.status_code == 400 and wrong_name.json()["error"]["code"] == "invalid_module"
    garbage = client.post("/api/v1/modules/echo/versions", params={"version": "v1"}, content=b"not a tarball")
    assert garbage.status_code == 400 and garbage.json()["error"]["code"] == "invalid_module"
    damaged = client.post(
        "/api/v1/modules/echo/versions",
        params={"version": "v1"},
        content=artifact.data,
        headers={"X-Content-Digest": "sha256:" + "0" * 64},
    )
    assert damaged.status_code == 400
    bad_name = client.post(
        "/api/v1/modules/echo/versions", params={"version": "../v1"}, content=artifact.data
    )
    assert bad_name.status_code == 400
    assert client.get("/api/v1/modules").json() == {"modules": []}


def _module(tmp_path):
    directory = tmp_path / "echo"
    directory.mkdir()
    (directory / "modelport.yaml").write_text(
        "apiVersion: modelport/v1\nkind: Module\nmetadata: {name: echo}\n"
    )
    (directory / "inference.py").write_text(
        "def inference(parameters, inputs, output_fields, model_key, model=None):\n"
        '    """Echo.\n\n    :param inputs.text: text\n    :param outputs.text: text\n    """\n'
        "    return [{'text': r['text']} for r in inputs]\n"
    )
    return directory


def test_every_route_is_in_the_servers_valid_openapi_document(platform):
    from openapi_spec_validator import validate

    with httpx.Client(base_url=platform.url) as anonymous:
        document = anonymous.get("/openapi.json").json()
    validate(document)
    operations = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    assert {
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/api/v1/modules"),
        ("GET", "/api/v1/modules/{module}"),
        ("DELETE", "/api/v1/modules/{module}"),
        ("GET", "/api/v1/modules/{module}/versions"),
        ("POST", "/api/v1/modules/{module}/versions"),
        ("GET", "/api/v1/modules/{module}/versions/{version}"),
        ("POST", "/api/v1/modules/{module}/deploy"),
        ("POST", "/api/v1/modules/{module}/rollback"),
        ("GET", "/api/v1/modules/{module}/logs"),
        ("POST", "/api/v1/modules/{module}/predict"),
        ("GET", "/api/v1/modules/{module}/openapi.json"),
        ("POST", "/api/v1/apply"),
        ("POST", "/api/v1/delete"),
    } <= operations
