"""modelport as a user gets it: the wheel built, installed into a fresh venv outside the checkout, and
`modelport server --demo` run from there, building the gallery's requirements with the uv it depends on."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from platform_server import ADMIN_TOKEN
from uv import find_uv_bin

ROOT = Path(__file__).resolve().parent.parent
_SERVING = re.compile(r"serving on (http://\S+)")
_CACHES = shutil.ignore_patterns("__pycache__", "*.pyc", ".modelport")


def test_pyproject_lists_every_folder_of_the_package():
    """The packages are listed rather than found (see pyproject.toml): a folder left out of the list is left
    out of the wheel, though the checkout works."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    package = ROOT / "modelport"
    folders = {
        ".".join(path.relative_to(ROOT).parts)
        for path in [package, *package.rglob("*")]
        if path.is_dir()
        and "__pycache__" not in path.parts
        and any(file.is_file() and file.suffix != ".pyc" for file in path.iterdir())
    }
    assert folders - set(setuptools["packages"]) == set()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_installed_wheel_serves_the_demo_outside_the_checkout(tmp_path):
    wheel = _build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    assert "modelport/gallery/text-classifier/modelport.yaml" in names
    assert "modelport/gallery/digits/examples/seven.png" in names
    assert [name for name in names if name.startswith("modelport/gallery/") and "/tests/" in name] == []

    venv = tmp_path / "venv"
    _run(find_uv_bin(), "venv", "--python", sys.executable, str(venv), timeout=60)
    _run(find_uv_bin(), "pip", "install", "--python", str(venv / "bin" / "python"), str(wheel), timeout=180)
    uv = venv / "bin" / "uv"
    assert uv.is_file(), "the wheel does not depend on uv"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    data_dir = elsewhere / "data"

    with _server(venv, cwd=elsewhere, data_dir=data_dir) as (url, log):
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
            _wait_ready(client, "text-classifier", log, timeout=180)
            call = client.post(
                "/api/v1/modules/text-classifier/predict",
                json={"inputs": {"text": "the recipe needs butter, flour and an oven at 180 degrees"}},
            )
        assert call.status_code == 200, call.text
        assert call.json()["outputs"]["label"] == "cooking"
        assert "deploying digits" in log.read_text()
        # The console's templates, scripts and Russian catalog came with the wheel.
        with httpx.Client(base_url=url, timeout=30) as browser:
            page = browser.get("/ui/sign-in", headers={"Accept-Language": "ru"})
            assert page.status_code == 200 and "Войти" in page.text, page.text
            assert browser.get("/ui/static/uplot.min.js").status_code == 200

    # each environment was built with the venv's uv and links the server's own `modelport` package
    environments = [path.parent for path in data_dir.glob("environments/*/build.log")]
    assert environments
    for environment in environments:
        assert (environment / "build.log").read_text().startswith(f"$ {uv} venv "), environment
        served = (environment / "modelport-link" / "modelport").resolve()
        assert served.is_relative_to(venv.resolve()), served
        assert not served.is_relative_to(ROOT), served


def _build_wheel(tmp_path: Path) -> Path:
    """Build from a copy of the sources, so the shared checkout gets no `build/` and no stale files."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for name in ("modelport", "gallery"):
        shutil.copytree(ROOT / name, source / name, ignore=_CACHES)
    dist = tmp_path / "dist"
    _run(find_uv_bin(), "build", "--wheel", "--out-dir", str(dist), str(source), timeout=180)
    (wheel,) = dist.glob("modelport-*.whl")
    return wheel


def _environment() -> dict[str, str]:
    """This environment less what would lead a child back to the checkout or its settings."""
    dropped = {"VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"}
    return {k: v for k, v in os.environ.items() if k not in dropped and not k.startswith("MODELPORT_")}


def _run(*argv: str, timeout: float) -> None:
    result = subprocess.run(
        argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, env=_environment(), timeout=timeout
    )
    assert result.returncode == 0, f"{' '.join(argv)} failed:\n{result.stdout}{result.stderr}"


@contextmanager
def _server(venv: Path, *, cwd: Path, data_dir: Path) -> Iterator[tuple[str, Path]]:
    """`modelport server --demo` from the venv; yields its URL and its log. Ended by PID: SIGTERM, then
    SIGKILL after a deadline."""
    log = cwd / "server.log"
    command = [
        str(venv / "bin" / "modelport"),
        "server",
        "--demo",
        "--port",
        "0",
        "--data-dir",
        str(data_dir),
    ]
    env = {**_environment(), "MODELPORT_BOOTSTRAP_TOKEN": ADMIN_TOKEN, "COLUMNS": "200"}
    with open(log, "w") as output:
        process = subprocess.Popen(
            command, cwd=cwd, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT, env=env
        )
    try:
        yield _wait_serving(process, log, timeout=60), log
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def _wait_serving(process: subprocess.Popen[bytes], log: Path, *, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if match := _SERVING.search(log.read_text()):
            return match.group(1)
        assert process.poll() is None, f"the server exited during startup:\n{log.read_text()}"
        time.sleep(0.2)
    raise AssertionError(f"the server did not start within {timeout} s:\n{log.read_text()}")


def _wait_ready(client: httpx.Client, name: str, log: Path, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        modules = {m["name"]: m for m in client.get("/api/v1/modules").json()["modules"]}
        deployment = modules.get(name, {}).get("deployment") or {}
        if deployment.get("status") == "ready" and deployment.get("serving"):
            return
        assert deployment.get("status") != "failed", f"{deployment}\n{log.read_text()}"
        time.sleep(0.5)
    raise AssertionError(f"{name} was not ready within {timeout} s:\n{log.read_text()}")
