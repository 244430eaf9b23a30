"""Driving a real platform server: push, build, deploy, and load from concurrent clients."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from repos import git

from modelport.artifacts import pack


def push(client: httpx.Client, directory: Path, *, version: str | None = None) -> httpx.Response:
    artifact = pack(directory, version=version)
    return client.post(
        f"/api/v1/modules/{artifact.name}/versions",
        params={"version": artifact.version, **({"commit": artifact.commit} if artifact.commit else {})},
        content=artifact.data,
        headers={"Content-Type": "application/gzip", "X-Content-Digest": artifact.digest},
    )


def wait_built(client: httpx.Client, module: str, version: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = client.get(f"/api/v1/modules/{module}/versions/{version}").json()
        if info["build_status"] in ("ready", "failed"):
            return info
        time.sleep(0.1)
    raise AssertionError(f"{module} {version} did not finish building in {timeout} s")


def deploy(client: httpx.Client, module: str, version: str, **options: Any) -> dict[str, Any]:
    response = client.post(f"/api/v1/modules/{module}/deploy", json={"version": version, **options})
    assert response.status_code == 202, response.text
    return response.json()


def wait_deployment(
    client: httpx.Client, module: str, generation: int, timeout: float = 60
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        deployment = client.get(f"/api/v1/modules/{module}").json()["deployment"]
        if deployment["observed_generation"] >= generation and deployment["status"] in ("ready", "failed"):
            return deployment
        time.sleep(0.05)
    raise AssertionError(f"the deployment of {module} did not settle in {timeout} s")


def push_and_deploy(client: httpx.Client, directory: Path, module: str, version: str) -> dict[str, Any]:
    assert push(client, directory).status_code == 201
    assert wait_built(client, module, version)["build_status"] == "ready"
    deployment = wait_deployment(client, module, deploy(client, module, version)["generation"])
    assert deployment["status"] == "ready", deployment
    return deployment


def tag_release(
    repository: Path, tag: str, *, release: str | None = None, env: dict[str, str] | None = None
) -> None:
    """Commit a change to the `versioned` fixture (its RELEASE and manifest env) and tag it."""
    if release is not None:
        source = repository / "inference.py"
        source.write_text(source.read_text().replace('RELEASE = "one"', f'RELEASE = "{release}"'))
    if env is not None:
        manifest = repository / "modelport.yaml"
        lines = "".join(f"    {k}: {v!r}\n" for k, v in env.items())
        manifest.write_text(manifest.read_text().replace("spec:\n", f"spec:\n  env:\n{lines}", 1))
    git(repository, "commit", "-q", "-am", f"release {tag}")
    git(repository, "tag", tag)


@dataclass
class Call:
    sent: float
    received: float
    status: int
    version: str | None
    release: str | None
    pid: int | None
    retry_after: str | None
    code: str | None
    request_id: str | None = None

    @property
    def seconds(self) -> float:
        return self.received - self.sent


@dataclass
class Load:
    """`clients` threads calling a module in a loop until stopped; every call is recorded."""

    url: str
    token: str
    module: str
    clients: int = 8
    calls: list[Call] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Load:
        for _ in range(self.clients):
            thread = threading.Thread(target=self._run, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def wait_for_answers(self, count: int, *, sent_after: float = 0.0, timeout: float = 30) -> None:
        """Until `count` calls sent after `sent_after` (a `time.time()`) have been answered."""
        deadline = time.monotonic() + timeout
        while sum(c.sent > sent_after for c in list(self.calls)) < count:
            assert time.monotonic() < deadline, f"fewer than {count} calls answered within {timeout} s"
            time.sleep(0.02)

    def _run(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=30) as client:
            while not self._stop.is_set():
                sent = time.time()
                response = client.post(
                    f"/api/v1/modules/{self.module}/predict", json={"inputs": {"text": "x"}}
                )
                body = response.json()
                outputs = body.get("outputs", {})
                self.calls.append(
                    Call(
                        sent,
                        time.time(),
                        response.status_code,
                        response.headers.get("x-model-version"),
                        outputs.get("release"),
                        outputs.get("pid"),
                        response.headers.get("retry-after"),
                        body.get("error", {}).get("code"),
                        response.headers.get("x-request-id"),
                    )
                )

    def between(self, start: float, end: float) -> list[Call]:
        """The calls sent after `start` and answered before `end` (`time.time()` instants)."""
        return [c for c in list(self.calls) if c.sent >= start and c.received <= end]

    def failures(self) -> list[Call]:
        return [c for c in self.calls if c.status != 200]
