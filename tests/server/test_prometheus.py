"""A real Prometheus scrapes a real `modelport server` with an admin's bearer token and sees every call.

The `prometheus` binary (Debian's package; `scripts/install-system-deps.sh` installs it) runs on 127.0.0.1
with a scrape interval of one second and its storage in a temporary directory; the test stops it by its PID.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from drive import deploy, push, wait_built, wait_deployment
from manifests import module_copy
from platform_server import ADMIN_TOKEN, ServerProcess

pytestmark = pytest.mark.slow

CALLS = 7
WAIT_SECONDS = 30.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("prometheus-server")
    process = ServerProcess(root / "server", token=ADMIN_TOKEN)
    process.start()
    try:
        with process.client() as admin:
            assert push(admin, module_copy(root, "echo", "scraped", None), version="v1").status_code == 201
            assert wait_built(admin, "scraped", "v1")["build_status"] == "ready"
            deployment = wait_deployment(admin, "scraped", deploy(admin, "scraped", "v1")["generation"])
            assert deployment["status"] == "ready", deployment
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def prometheus(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail(
            "the prometheus binary is not on PATH: run scripts/install-system-deps.sh (Debian: prometheus)"
        )
    root = tmp_path_factory.mktemp("prometheus")
    target = server.url.removeprefix("http://")
    (root / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: modelport\n"
        "    scrape_timeout: 1s\n"
        f"    authorization: {{credentials: {ADMIN_TOKEN}}}\n"
        f"    static_configs: [{{targets: ['{target}']}}]\n"
    )
    address = f"127.0.0.1:{free_port()}"
    log = (root / "prometheus.log").open("w")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={root / 'prometheus.yml'}",
            f"--storage.tsdb.path={root / 'data'}",
            f"--web.listen-address={address}",
        ],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://{address}"
        wait_until(lambda: _ready(url, process), lambda: f"Prometheus did not start:\n{_log(root)}")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        log.close()


def _ready(url: str, process: subprocess.Popen[bytes]) -> bool:
    if process.poll() is not None:
        raise AssertionError(f"Prometheus exited with {process.returncode}")
    try:
        return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def _log(root: Path) -> str:
    return (root / "prometheus.log").read_text()[-4000:]


def wait_until(
    condition: Callable[[], bool], message: Callable[[], str], timeout: float = WAIT_SECONDS
) -> None:
    """Poll `condition` until it holds; past `timeout` fail with `message()` (read then, not before)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.25)
    raise AssertionError(message())


def query(prometheus: str, expression: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": expression}, timeout=5).json()
    assert answer["status"] == "success", answer
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


def scalar(prometheus: str, expression: str) -> float | None:
    result = query(prometheus, expression)
    return float(result[0]["value"][1]) if result else None


def test_prometheus_scrapes_every_call_with_a_bearer_token(server: ServerProcess, prometheus: str) -> None:
    with server.client() as client:
        for number in range(CALLS):
            answer = client.post(
                "/api/v1/modules/scraped/predict", json={"inputs": {"text": f"call {number}"}}
            )
            assert answer.status_code == 200, answer.text
        refused = client.post("/api/v1/modules/scraped/predict", json={"inputs": {}})
        assert refused.status_code == 422
        assert client.post("/api/v1/modules/nope/predict", json={"inputs": {"text": "x"}}).status_code == 404

    expression = 'sum(modelport_requests_total{module="scraped",code="ok"})'
    wait_until(
        lambda: scalar(prometheus, expression) == CALLS,
        lambda: (
            f"Prometheus did not see {CALLS} calls in {WAIT_SECONDS} s: {query(prometheus, expression)}; "
            f"targets: {httpx.get(f'{prometheus}/api/v1/targets').json()['data']['activeTargets']}"
        ),
    )
    assert scalar(prometheus, 'up{job="modelport"}') == 1
    refusals = 'modelport_requests_total{module="scraped",code="validation_failed",status="4xx"}'
    assert scalar(prometheus, refusals) == 1
    assert (
        scalar(prometheus, 'modelport_request_duration_seconds_count{module="scraped",version="v1"}')
        == CALLS + 1
    )
    assert scalar(prometheus, 'sum(modelport_batch_size_count{module="scraped"})') == CALLS
    assert scalar(prometheus, 'modelport_in_flight{module="scraped",version="v1"}') == 0
    assert scalar(prometheus, 'modelport_worker_restarts_total{module="scraped",version="v1"}') == 0
    # A call naming no module made no series.
    assert query(prometheus, '{__name__=~"modelport_.+",module="nope"}') == []
