"""Make a running `modelport server` serve one bench module to one caller, as a real deployment does.

The admin pushes the module as version v1, deploys it with one replica, and applies an `Api` that opens it
to the group `/bench`; a `user` in that group gets a token. Every loaded request carries that token, so the
measurement includes token authentication (a database lookup of its digest) and the access check.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .servers import ServerError, post_json, request

VERSION = "v1"
GROUP = "/bench"
POLL_S = 0.2


def module_copy(source: Path, destination: Path, requirements: list[str]) -> Path:
    """Copy the module and give it a `requirements.txt`: the platform builds each version its own
    environment, which holds only what the module asks for (`modelport dev` runs in the harness's own)."""
    shutil.copytree(source, destination, ignore=shutil.ignore_patterns("__pycache__", ".modelport"))
    (destination / "requirements.txt").write_text("\n".join(requirements) + "\n", encoding="utf-8")
    return destination


def serve(
    base_url: str, timeout: float, *, module: Path, admin_token: str, api: dict[str, Any] | None = None
) -> dict[str, str]:
    """Push, build, deploy and open `module` within `timeout` seconds; the headers of its caller. `api` is
    added to the spec of the `Api` that opens it (payload capture, say)."""
    deadline = time.monotonic() + timeout
    admin = {"Authorization": f"Bearer {admin_token}"}
    name = _push_and_build(base_url, admin, module, deadline)
    url = f"{base_url}/api/v1/modules/{name}"
    deploy = {"version": VERSION, "replicas": 1}
    generation = _expect(202, *post_json(f"{url}/deploy", deploy, headers=admin), "deploy")["generation"]

    def settled(info: dict[str, Any]) -> bool:
        deployment = info["deployment"]
        finished = deployment["status"] in ("ready", "failed")
        return bool(finished and deployment["observed_generation"] >= generation)

    deployment = _poll(url, admin, deadline, settled)["deployment"]
    if deployment["status"] != "ready":
        raise ServerError(f"the deployment of {name} failed: {deployment['message']}")
    return {"Authorization": f"Bearer {_caller_token(base_url, admin, name, api or {})}"}


def _push_and_build(base_url: str, admin: dict[str, str], module: Path, deadline: float) -> str:
    """Push `module` as VERSION and wait for its build; the module's name."""
    from modelport.artifacts import pack  # the harness runs in the project's environment

    artifact = pack(module, version=VERSION, use_git=False)
    url = f"{base_url}/api/v1/modules/{artifact.name}/versions"
    headers = {**admin, "Content-Type": "application/gzip", "X-Content-Digest": artifact.digest}
    _expect(201, *request("POST", f"{url}?version={VERSION}", artifact.data, headers), "push")
    built = _poll(f"{url}/{VERSION}", admin, deadline, lambda v: v["build_status"] in ("ready", "failed"))
    if built["build_status"] != "ready":
        raise ServerError(f"the build of {artifact.name} {VERSION} failed: {built['build_error']}")
    return artifact.name


def _caller_token(base_url: str, admin: dict[str, str], module: str, api_spec: dict[str, Any]) -> str:
    """A `user` in GROUP, an `Api` that opens `module` to GROUP, and that user's token."""
    api = f"{base_url}/api/v1"
    _expect(201, *post_json(f"{api}/groups", {"path": GROUP}, headers=admin), "create the group")
    user = {"name": "bench", "role": "user", "groups": [GROUP]}
    made = _expect(201, *post_json(f"{api}/users", user, headers=admin), "create the user")
    document = {
        "apiVersion": "modelport/v1",
        "kind": "Api",
        "metadata": {"name": f"{module}-api"},
        "spec": {"module": module, "access": {"groups": [GROUP]}, **api_spec},
    }
    _expect(200, *post_json(f"{api}/apply", {"documents": [document]}, headers=admin), "apply the Api")
    token = {"name": "bench", "user": made["id"]}
    return str(_expect(201, *post_json(f"{api}/tokens", token, headers=admin), "create the token")["token"])


def _expect(expected: int, status: int, answer: Any, what: str) -> Any:
    if status != expected:
        raise ServerError(f"{what}: HTTP {status} {str(answer)[:300]}")
    return answer


def _poll(url: str, headers: dict[str, str], deadline: float, done: Callable[[Any], bool]) -> Any:
    """GET `url` until `done(answer)`; a ServerError at the deadline."""
    while True:
        answer = _expect(200, *request("GET", url, None, headers), f"GET {url}")
        if done(answer):
            return answer
        if time.monotonic() > deadline:
            raise ServerError(f"not settled in time: GET {url} answers {str(answer)[:300]}")
        time.sleep(POLL_S)
