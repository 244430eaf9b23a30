"""End to end: `modelport dev` as a real process on a free port, and `modelport predict` from the shell."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from dev_process import MODELPORT, DevProcess
from typer.testing import CliRunner

from modelport.cli.main import app


@pytest.fixture
def dev_process() -> Iterator[type[DevProcess]]:
    started: list[DevProcess] = []

    class Tracked(DevProcess):
        def __init__(self, directory: Path, *extra: str) -> None:
            super().__init__(directory, *extra)
            started.append(self)

    yield Tracked
    for process in started:
        process.stop()


def test_dev_serves_health_openapi_docs_and_predictions(fixture_module, dev_process):
    dev = dev_process(fixture_module("echo"))
    with httpx.Client(base_url=dev.url, timeout=10) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/readyz").status_code == 200
        assert client.get("/openapi.json").json()["openapi"].startswith("3.1")
        assert client.get("/api/v1/modules/echo/openapi.json").status_code == 200
        assert "swagger-ui" in client.get("/docs").text
        assert 'name="inputs.text"' in client.get("/").text
        response = client.post("/api/v1/modules/echo/predict", json={"inputs": {"text": "hi"}})
        assert response.json()["outputs"] == {"text": "hi", "length": 2}
        form = client.post(
            "/api/v1/modules/echo/predict", data={"inputs.text": "yo", "parameters.suffix": "!"}
        )
        assert form.json()["outputs"]["text"] == "yo!"
        bad = client.post("/api/v1/modules/echo/predict", json={"inputs": {"text": 1}})
        assert bad.status_code == 422
        assert bad.json()["error"]["details"] == [
            {"field": "inputs.text", "code": "type", "message": "expected a string"}
        ]


def test_dev_names_the_module_as_its_urls_do(fixture_module, dev_process):
    echo = fixture_module("echo")
    directory = echo.rename(echo.parent / "seed_image")
    dev = dev_process(directory)
    assert any(re.search(r"serving seed-image on http://", line) for line in dev.seen), dev.seen
    assert any(re.search(r"serving seed-image \(dev-\S+\) with 1 worker$", line) for line in dev.seen), (
        dev.seen
    )
    with httpx.Client(base_url=dev.url, timeout=10) as client:
        response = client.post("/api/v1/modules/seed-image/predict", json={"inputs": {"text": "hi"}})
    assert response.json()["outputs"]["text"] == "hi"


def test_dev_reloads_on_change_and_keeps_serving_through_a_broken_docstring(fixture_module, dev_process):
    directory = fixture_module("echo")
    source = directory / "inference.py"
    dev = dev_process(directory)
    with httpx.Client(base_url=dev.url, timeout=10) as client:
        first = client.post("/api/v1/modules/echo/predict", json={"inputs": {"text": "a"}}).json()["version"]

        source.write_text(
            source.read_text().replace(":type outputs.length: int", ":type outputs.length: integer")
        )
        error = dev.wait_for(r"error: .*inference\.py:(\d+): unknown type `integer`", timeout=20)
        assert (
            source.read_text()
            .splitlines()[int(error.group(1)) - 1]
            .strip()
            .startswith(":type outputs.length")
        )
        still = client.post("/api/v1/modules/echo/predict", json={"inputs": {"text": "a"}})
        assert still.status_code == 200 and still.json()["version"] == first

        source.write_text(
            source.read_text()
            .replace(":type outputs.length: integer", ":type outputs.length: int")
            .replace('r["text"] + p["suffix"]', 'r["text"].upper() + p["suffix"]')
        )
        dev.wait_for(r"serving echo \(dev-", timeout=30)
        after = client.post("/api/v1/modules/echo/predict", json={"inputs": {"text": "a"}}).json()
        assert after["outputs"]["text"] == "A"
        assert after["version"] != first


def test_dev_with_a_broken_module_waits_for_a_fix(fixture_module, dev_process):
    directory = fixture_module("echo")
    source = directory / "inference.py"
    source.write_text(
        source.read_text().replace(":type inputs.text: str", ":type inputs.text: str, frobnicate")
    )
    dev = dev_process(directory)
    assert any("inference.py:5: unknown modifier `frobnicate`" in line for line in dev.seen)
    with httpx.Client(base_url=dev.url, timeout=10) as client:
        assert client.get("/readyz").status_code == 503
        broken = client.post("/api/v1/modules/echo/predict", json={"inputs": {"text": "a"}})
        assert broken.status_code == 503
        assert "frobnicate" in broken.json()["error"]["message"]
        source.write_text(source.read_text().replace(", frobnicate", ""))
        dev.wait_for(r"serving echo", timeout=30)
        assert client.post("/api/v1/modules/echo/predict", json={"inputs": {"text": "a"}}).status_code == 200


def test_predict_runs_one_call_from_the_shell(fixture_module, tmp_path):
    result = subprocess.run(
        [*MODELPORT, "predict", str(fixture_module("echo")), "-i", "text=hello", "-p", "suffix=?"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["outputs"] == {"text": "hello?", "length": 5}


def test_predict_with_a_file_input(fixture_module, tmp_path):
    from PIL import Image

    image = tmp_path / "red.png"
    Image.new("RGB", (7, 3), "red").save(image)
    result = subprocess.run(
        [*MODELPORT, "predict", str(fixture_module("files")), "-i", f"image=@{image}", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    outputs = json.loads(result.stdout)["outputs"]
    assert outputs["width"] == 7
    assert outputs["info"]["image"]["content_type"] == "image/png"
    assert outputs["mirrored"]["content_type"] == "image/png"


def test_predict_reports_bad_input_with_exit_code_2(fixture_module):
    result = subprocess.run(
        [*MODELPORT, "predict", str(fixture_module("echo")), "-i", "txt=hello"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "inputs.txt" in result.stderr and "inputs.text" in result.stderr


@pytest.mark.parametrize(
    ("module", "inputs", "message"),
    [
        ("files", ["image=@{text}"], "inputs.image: the file is text/plain; expected image/png, image/jpeg"),
        ("typed", ["count=1", "payload={{oops"], "inputs.payload: expected json"),
        ("echo", ["text=@{missing}"], "missing.png is not a file"),
    ],
)
def test_predict_exits_2_for_every_kind_of_bad_input(fixture_module, tmp_path, module, inputs, message):
    """A file of the wrong type, a value that is not JSON, a file that is not there: all bad input."""
    text = tmp_path / "notes.txt"
    text.write_text("not an image\n")
    given = [f"--input={i.format(text=text, missing=tmp_path / 'missing.png')}" for i in inputs]
    result = subprocess.run(
        [*MODELPORT, "predict", str(fixture_module(module)), *given],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "500"},
    )
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_dev_refuses_a_directory_without_its_entrypoint(tmp_path, monkeypatch):
    def serve(*args: object, **kwargs: object) -> None:
        raise AssertionError("the dev server started")

    monkeypatch.setattr("modelport.app.run_dev_server", serve)
    monkeypatch.delenv("COLUMNS", raising=False)
    result = CliRunner().invoke(app, ["dev", str(tmp_path), "--port", "0"])
    assert result.exit_code == 2, result.output
    assert result.stderr == (
        f"error: {tmp_path} has no inference.py (the entrypoint inference.py:inference): give a module's "
        "directory, or create one with `modelport init NAME`\n"
    )

    (tmp_path / "inference.py").write_text("def inference(parameters, inputs, output_fields, model_key):\n")
    (tmp_path / "modelport.yaml").write_text(
        "apiVersion: modelport/v1\nkind: Module\nmetadata: {name: m}\nspec: {entrypoint: serve.py:predict}\n"
    )
    named = CliRunner().invoke(app, ["dev", str(tmp_path), "--port", "0"])
    assert named.exit_code == 2, named.output
    assert "has no serve.py (the entrypoint serve.py:predict)" in named.stderr


def test_predict_reports_module_errors_with_exit_code_1(fixture_module):
    result = subprocess.run(
        [*MODELPORT, "predict", str(fixture_module("raises")), "-i", "text=boom"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "cannot handle boom" in result.stderr


def _worker_pids(parent: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == parent and b"modelport.runtime.worker" in cmdline:
            pids.append(int(entry.name))
    return pids


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"


def test_workers_do_not_outlive_a_killed_server(fixture_module, dev_process):
    dev = dev_process(fixture_module("hangs"), "--workers", "2")
    workers = _worker_pids(dev.process.pid)
    assert len(workers) == 2
    # One worker is busy in a long call when the server dies: it must go too.
    with httpx.Client(base_url=dev.url, timeout=0.5) as client, pytest.raises(httpx.TimeoutException):
        client.post("/api/v1/modules/hangs/predict", json={"inputs": {"text": "hang"}})
    os.killpg(dev.process.pid, signal.SIGKILL)
    dev.process.wait()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not all(_gone(pid) for pid in workers):
        time.sleep(0.05)
    assert all(_gone(pid) for pid in workers)
