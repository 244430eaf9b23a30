"""The frameworks under test: what each installs and how each serves each model.

Every framework runs one worker process on 127.0.0.1, with the same model file and the same payload shape,
`{"inputs": {<record>}}`, except where the framework's own API asks for another (noted in its `target`).
"""

from __future__ import annotations

import functools
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import platform_setup
from .envs import COMMON_REQUIREMENTS
from .models import Workload, sklearn_version
from .paths import Paths

# (interpreter of the framework's environment, model, port, paths) -> the server to start
TargetFactory = Callable[[Path, str, int, Paths], "Target"]
# (base URL, timeout in seconds) -> extra headers of every request; runs once the server is ready
Setup = Callable[[str, float], dict[str, str]]


@dataclass(frozen=True)
class Target:
    """A server to start and the request to load it with."""

    argv: list[str]
    cwd: Path
    ready_path: str
    predict_path: str
    body: Callable[[Workload], Any]
    env: dict[str, str] = field(default_factory=dict)
    setup: Setup | None = None


@dataclass(frozen=True)
class Framework:
    name: str
    label: str
    requirements: tuple[str, ...]  # empty: served from the harness's own environment
    versions_of: tuple[str, ...]  # distributions whose versions the report records
    target: TargetFactory
    variant: bool = False
    """A variant of another framework's server (other settings): measured only when asked for."""


def _inputs(workload: Workload) -> Any:
    return {"inputs": workload.record}


def _fastapi(python: Path, model: str, port: int, paths: Paths) -> Target:
    argv = [str(python), "-m", "uvicorn", "app:app", "--app-dir", str(paths.bench / "servers" / "fastapi")]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log"]
    return Target(argv, paths.work, "/healthz", "/predict", _inputs, {"BENCH_MODEL": model})


def _litserve(python: Path, model: str, port: int, paths: Paths) -> Target:
    argv = [str(python), str(paths.bench / "servers" / "litserve" / "server.py"), model, str(port)]
    return Target(argv, paths.work, "/health", "/predict", _inputs)


_BENTOML_SERVICES = {"echo": "Echo", "digits": "Digits", "digits-batched": "DigitsBatched"}


def _bentoml(python: Path, model: str, port: int, paths: Paths) -> Target:
    argv = [str(python.parent / "bentoml"), "serve", f"service:{_BENTOML_SERVICES[model]}"]
    argv += ["--host", "127.0.0.1", "--port", str(port)]
    env = {"BENTOML_HOME": str(paths.work / "bentoml"), "BENTOML_DO_NOT_TRACK": "true"}
    if model == "digits-batched":  # a batchable API takes a batch: a list of records in, a list out
        return Target(argv, paths.bench / "servers" / "bentoml", "/readyz", "/predict", _batch_of_one, env)
    return Target(argv, paths.bench / "servers" / "bentoml", "/readyz", "/predict", _inputs, env)


def _batch_of_one(workload: Workload) -> Any:
    return {"inputs": [workload.record]}


def _modelport(python: Path, model: str, port: int, paths: Paths) -> Target:
    module = paths.bench / "modules" / model
    argv = [str(python.parent / "modelport"), "dev", str(module), "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--workers", "1"]
    return Target(argv, paths.work, "/readyz", f"/api/v1/modules/{model}/predict", _inputs)


def _modelport_platform(
    python: Path,
    model: str,
    port: int,
    paths: Paths,
    *,
    variant: str = "",
    env: dict[str, str] | None = None,
    api: dict[str, Any] | None = None,
) -> Target:
    """`modelport server` with a fresh data directory; the module is pushed, deployed with one replica and
    opened to one user once the server is up, and every request carries that user's token. A `variant`
    runs with more settings (`env`) or more in its `Api` (`api`)."""
    root = paths.work / f"platform{variant}" / model
    shutil.rmtree(root, ignore_errors=True)
    requirements = [*COMMON_REQUIREMENTS, f"scikit-learn=={sklearn_version()}"]
    module = platform_setup.module_copy(paths.bench / "modules" / model, root / "module", requirements)
    argv = [str(python.parent / "modelport"), "server", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--data-dir", str(root / "data")]
    admin_token = f"mp_{secrets.token_urlsafe(32)}"
    setup = functools.partial(platform_setup.serve, module=module, admin_token=admin_token, api=api)
    settings = {"MODELPORT_BOOTSTRAP_TOKEN": admin_token, **(env or {})}
    return Target(argv, paths.work, "/readyz", f"/api/v1/modules/{model}/predict", _inputs, settings, setup)


FRAMEWORKS: dict[str, Framework] = {
    fw.name: fw
    for fw in (
        Framework(
            "fastapi",
            "FastAPI",
            ("fastapi>=0.115,<1", "uvicorn[standard]>=0.30,<1"),
            ("fastapi", "uvicorn"),
            _fastapi,
        ),
        Framework(
            "litserve", "LitServe", ("litserve>=0.2.10,<0.3",), ("litserve", "fastapi", "uvicorn"), _litserve
        ),
        Framework("bentoml", "BentoML", ("bentoml>=1.4,<2",), ("bentoml",), _bentoml),
        Framework("modelport", "modelport", (), ("modelport", "uvicorn"), _modelport),
        Framework(
            "modelport-platform", "modelport server", (), ("modelport", "uvicorn"), _modelport_platform
        ),
        Framework(
            "modelport-platform-nolog",
            "modelport server, request log off",
            (),
            ("modelport", "uvicorn"),
            functools.partial(_modelport_platform, variant="-nolog", env={"MODELPORT_REQUEST_LOG": "false"}),
            variant=True,
        ),
        Framework(
            "modelport-platform-payloads",
            "modelport server, every payload captured",
            (),
            ("modelport", "uvicorn"),
            functools.partial(
                _modelport_platform, variant="-payloads", api={"logging": {"payloads": True, "sampleRate": 1}}
            ),
            variant=True,
        ),
        Framework(
            "modelport-platform-cache",
            "modelport server, prediction cache",
            (),
            ("modelport", "uvicorn"),
            # wrk repeats one request, so every call after the first is a hit: the cost of the hit path.
            functools.partial(
                _modelport_platform, variant="-cache", api={"cache": {"ttlSeconds": 3600, "scope": "shared"}}
            ),
            variant=True,
        ),
    )
}
