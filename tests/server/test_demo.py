"""`modelport server --demo` (what `make run` starts): the gallery pushed, built, deployed and callable."""

from __future__ import annotations

import time

from platform_server import ADMIN_TOKEN, ServerProcess


def _wait_all_ready(client, names, timeout=240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        modules = {m["name"]: m for m in client.get("/api/v1/modules").json()["modules"]}
        deployments = [modules.get(name, {}).get("deployment") or {} for name in names]
        if all(d.get("status") == "ready" and d.get("serving") for d in deployments):
            return modules
        failed = [d for d in deployments if d.get("status") == "failed"]
        assert not failed, failed
        time.sleep(0.5)
    raise AssertionError(f"the demo modules were not ready within {timeout} s")


def test_the_demo_serves_the_gallery_and_restarts_without_pushing_again(tmp_path):
    server = ServerProcess(tmp_path / "demo", token=ADMIN_TOKEN, args=("--demo",))
    server.start()
    try:
        with server.client() as client:
            modules = _wait_all_ready(client, ["digits", "text-classifier"])
            versions = {name: m["deployment"]["version"] for name, m in modules.items()}
            call = client.post(
                "/api/v1/modules/text-classifier/predict",
                json={"inputs": {"text": "the recipe needs butter, flour and an oven at 180 degrees"}},
            )
            assert call.status_code == 200, call.text
            assert call.json()["outputs"]["label"] == "cooking"
            assert call.headers["x-model-version"] == versions["text-classifier"]
        output = "".join(server.output)
        assert "deploying digits" in output and "API docs:" in output
        server.stop()

        server.start()
        with server.client() as client:
            modules = _wait_all_ready(client, ["digits", "text-classifier"], timeout=120)
            assert {name: m["deployment"]["version"] for name, m in modules.items()} == versions
            assert all(m["versions"] == 1 for m in modules.values())
        assert "deploying" not in "".join(server.output)
    finally:
        server.stop()
