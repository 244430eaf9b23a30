"""One virtual environment per framework under `bench/.envs/<name>`, made with `python3 -m venv` and `uv`."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

from .paths import Paths

INSTALL_TIMEOUT_S = 900
# Every environment gets the model's libraries; scikit-learn is pinned to the harness's own version
# (see models.py).
COMMON_REQUIREMENTS = ("numpy>=1.26,<3", "joblib>=1.3,<2")


class EnvError(RuntimeError):
    """A framework environment could not be created or installed."""


def ensure_env(name: str, requirements: tuple[str, ...], sklearn_version: str, paths: Paths) -> Path:
    """The interpreter of `bench/.envs/<name>`, created and installed unless it already holds `requirements`.

    A framework with no requirements runs from the harness's own environment.
    """
    if not requirements:
        return Path(sys.executable)
    wanted = [*requirements, *COMMON_REQUIREMENTS, f"scikit-learn=={sklearn_version}"]
    env = paths.envs / name
    python = env / "bin" / "python"
    stamp = env / ".bench-requirements"
    digest = hashlib.sha256(json.dumps(wanted).encode()).hexdigest()
    if python.exists() and stamp.exists() and stamp.read_text(encoding="utf-8") == digest:
        return python
    paths.logs.mkdir(parents=True, exist_ok=True)
    log = paths.logs / f"install-{name}.log"
    base = shutil.which("python3") or sys.executable
    _run([base, "-m", "venv", str(env)], log)
    _run([_uv(paths), "pip", "install", "--python", str(python), *wanted], log)
    stamp.write_text(digest, encoding="utf-8")
    return python


def versions(python: Path, distributions: tuple[str, ...]) -> dict[str, str]:
    """The installed versions of `distributions` in the environment of `python` (missing ones left out)."""
    script = (
        "import importlib.metadata as m, json, sys\n"
        "found = {}\n"
        "for name in sys.argv[1:]:\n"
        "    try: found[name] = m.version(name)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(found))\n"
    )
    try:
        out = subprocess.run(
            [str(python), "-c", script, *distributions],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        found: dict[str, str] = json.loads(out)
    except (OSError, subprocess.SubprocessError, ValueError):
        return {}
    return found


def _uv(paths: Paths) -> str:
    uv = paths.tools / "uv"
    if uv.exists():
        return str(uv)
    found = shutil.which("uv")
    if found is None:
        raise EnvError(
            "`uv` not found next to the harness's interpreter nor on PATH; install it: pip install uv"
        )
    return found


def _run(argv: list[str], log: Path) -> None:
    with log.open("a", encoding="utf-8") as out:
        out.write(f"$ {' '.join(argv)}\n")
        out.flush()
        try:
            result = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, timeout=INSTALL_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise EnvError(f"`{argv[0]}` ran past {INSTALL_TIMEOUT_S} s; see {log}") from None
    if result.returncode != 0:
        raise EnvError(f"`{' '.join(argv[:3])} ...` failed with exit code {result.returncode}; see {log}")
