"""Modules as the rest of the system sees them: read from a directory, started as a pool, served by name."""

from __future__ import annotations

import asyncio
import base64
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelport.artifacts import ModuleDefinition
from modelport.control.weights import ModelWeights
from modelport.core.errors import (
    ModelportError,
    ModuleNotFound,
    ModuleUnavailable,
    SetupFailed,
    VersionNotFound,
)
from modelport.core.manifests import ModelSpec
from modelport.core.settings import Settings
from modelport.runtime.files import FileChecker, sniff
from modelport.runtime.pool import PoolConfig, WorkerPool
from modelport.runtime.process import LogSink, WorkerLaunch
from modelport.runtime.sandbox import Confinement
from modelport.sdk import ApiSpec
from modelport.sdk.validation import ParsedRequest, parse_json

__all__ = [
    "ModuleRegistry",
    "ServedModule",
    "predict",
    "start_module",
    "warm_up",
]


@dataclass(eq=False)
class ServedModule:
    """One running version of a module."""

    definition: ModuleDefinition
    version: str
    pool: WorkerPool
    started: float = field(default_factory=time.time)
    in_flight: int = 0
    """Requests routed here and not yet answered; a version being replaced stops only once they are done."""
    weights: ModelWeights | None = None
    """Where the weights of a module whose `model.bucket` is set come from."""
    model_dirs: dict[str, Path] = field(default_factory=dict)
    """The local directory of every model key fetched so far, so a request lists the store only once."""
    output_dir: Path | None = None
    """Where its workers write file outputs; the gateway takes files from nowhere else."""
    home: Path | None = None
    """The workers' own directory (working directory, `HOME`, `TMPDIR`), removed when they stop."""

    async def drain(self, timeout: float) -> None:
        """Wait (up to `timeout` s) for the requests routed here to finish, then stop the workers."""
        deadline = time.monotonic() + timeout
        while self.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        try:
            await self.pool.close(grace=max(1.0, deadline - time.monotonic()))
        finally:
            if self.home is not None:
                shutil.rmtree(self.home, ignore_errors=True)

    @property
    def name(self) -> str:
        return self.definition.name

    @property
    def spec(self) -> ApiSpec:
        return self.definition.spec

    @property
    def default_model_key(self) -> str:
        return self.definition.manifest.spec.model.key

    async def model_path(self, model_key: str) -> str | None:
        """The local directory of `model_key`'s weights, fetched on first use; None when the module keeps
        its weights in its own tree. Raises `ModelNotFound`, `CorruptObject` or `StorageUnavailable`."""
        model = self.definition.manifest.spec.model
        if model.bucket is None or self.weights is None:
            return None
        path = self.model_dirs.get(model_key)
        if path is None or not path.is_dir():  # not fetched yet, or evicted from the cache since
            path = await self.weights.fetch(model.bucket, model.path, model_key)
            self.model_dirs[model_key] = path
        return str(path)


async def start_module(
    definition: ModuleDefinition,
    *,
    version: str,
    settings: Settings,
    replicas: int | None,
    log: LogSink,
    python: str | None = None,
    weights: ModelWeights | None = None,
    confined: bool = False,
) -> ServedModule:
    """Start the module's workers (with `python`, default this interpreter) and run its warm-up example;
    raises `SetupFailed` if either fails.

    A module whose `model.bucket` is set needs `weights`: its default model key's weights are fetched (and
    checked) before any worker starts, so a version with missing or corrupt weights never takes traffic.
    `confined` workers run in a directory of their own and reach only what they are handed
    (`runtime/sandbox.py`): the platform confines every module; `modelport dev` runs the developer's code
    as it is.
    """
    spec = definition.manifest.spec
    resources = spec.resources
    model_dirs = await _fetch_default_model(definition.name, spec.model, weights)
    count = replicas if replicas is not None else max(1, resources.replicas)
    home = Path(tempfile.mkdtemp(prefix=f"modelport-{definition.name}-")) if confined else None
    output_dir = (home or settings.data_dir) / "outputs"
    output_dir.mkdir(parents=True, exist_ok=True)
    models_dir = definition.directory / spec.model.path
    launch = WorkerLaunch(
        config={
            "module_dir": str(definition.directory),
            "entrypoint": spec.entrypoint,
            "load": definition.load,
            "spec": definition.spec.to_dict(),
            "default_model_key": spec.model.key,
            "models_dir": str(models_dir),
            "cache_size": spec.model.cache_size,
            "output_dir": str(output_dir.resolve()),
            "default_model_path": str(model_dirs[spec.model.key]) if model_dirs else None,
            "confinement": _confinement(definition, settings, weights, home, models_dir) if home else None,
        },
        threads=resources.threads or settings.threads_per_worker(count),
        env=dict(spec.env),
        python=python or sys.executable,
        home=str(home) if home else None,
    )
    pool = WorkerPool(
        PoolConfig(
            name=definition.name,
            launch=launch,
            output_names=definition.spec.output_names,
            replicas=count,
            max_batch_size=resources.max_batch_size,
            batch_wait=resources.batch_wait_ms / 1000,
            timeout=resources.timeout_seconds,
            max_queue=resources.max_queue,
        ),
        log=log,
    )
    try:
        await pool.start()
    except BaseException:
        if home is not None:
            shutil.rmtree(home, ignore_errors=True)
        raise
    served = ServedModule(
        definition, version, pool, weights=weights, model_dirs=model_dirs, output_dir=output_dir, home=home
    )
    if spec.example is not None:
        try:
            await warm_up(served, spec.example, settings=settings)
        except BaseException:
            await served.drain(5)
            raise
    return served


def _confinement(
    definition: ModuleDefinition,
    settings: Settings,
    weights: ModelWeights | None,
    home: Path,
    models_dir: Path,
) -> Confinement:
    """What a platform worker may reach: its code and, read only, its own bucket's weights and the files
    of the calls it gets (by name: it cannot list them); its own directory and `models/` to write; nothing
    else of the data directory."""
    models_dir.mkdir(parents=True, exist_ok=True)
    bucket = definition.manifest.spec.model.bucket
    read = [str(definition.directory)]
    if weights is not None and bucket is not None:
        read.append(str(weights.bucket_dir(bucket)))
    return Confinement(
        read=tuple(read),
        read_files=(str(_uploads(settings).resolve()),),
        write=(str(home), str(models_dir)),
        shared=tuple(str(path) for path in settings.worker_paths),
        private=(str(settings.data_dir.resolve()),),
    )


async def _fetch_default_model(name: str, model: ModelSpec, weights: ModelWeights | None) -> dict[str, Path]:
    """`{default key: local directory}` for a module whose weights live in a bucket; `{}` otherwise."""
    if model.bucket is None:
        return {}
    if weights is None:
        raise SetupFailed(
            f"module {name} keeps its weights in bucket {model.bucket!r}, which needs object storage; "
            "this server has none configured"
        )
    try:
        path = await weights.fetch(model.bucket, model.path, model.key)
    except ModelportError as exc:
        raise SetupFailed(
            f"fetching the weights of model key {model.key!r} (bucket {model.bucket!r}, "
            f"{model.path}/{model.key}/) failed: {exc.message}"
        ) from None
    return {model.key: path}


async def warm_up(served: ServedModule, example: dict[str, Any], *, settings: Settings) -> None:
    """Run the manifest's example through the whole request path; a failure is a setup failure."""
    directory = Path(tempfile.mkdtemp(dir=_uploads(settings)))
    try:
        request = parse_json(served.spec, _example_files(served.definition.directory, example))
        checker = FileChecker(
            directory=directory,
            max_upload_bytes=settings.max_upload_bytes,
            max_image_pixels=settings.max_image_pixels,
        )
        checker.resolve(served.spec, request)
        await predict(served, request)
    except Exception as exc:
        raise SetupFailed(f"warm-up example failed: {exc}") from None
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _example_files(directory: Path, example: dict[str, Any]) -> dict[str, Any]:
    """The example with `{"path": ...}` file values turned into data the validator accepts."""

    def convert(value: Any) -> Any:
        if isinstance(value, dict) and set(value) == {"path"}:
            path = directory / str(value["path"])
            encoded = base64.b64encode(path.read_bytes()).decode()
            return f"data:{sniff(path, 'application/octet-stream')};base64,{encoded}"
        return value

    inputs = example.get("inputs", {})
    records = inputs if isinstance(inputs, list) else [inputs]
    converted = [{k: convert(v) for k, v in r.items()} for r in records]
    return {**example, "inputs": converted if isinstance(inputs, list) else converted[0]}


def _uploads(settings: Settings) -> Path:
    path = settings.data_dir / "uploads"
    path.mkdir(parents=True, exist_ok=True)
    return path


async def predict(
    served: ServedModule, request: ParsedRequest, *, deadline: float | None = None
) -> list[dict[str, Any]]:
    """Run the request through the module. `deadline` (a `time.monotonic()` instant) is when the caller is
    answered at the latest, 504 if the module has not answered by then; None: the pool's `sync_timeout`
    from now."""
    model_key = request.model_key or served.default_model_key
    return await served.pool.predict(
        request.records,
        parameters=request.parameters,
        model_key=model_key,
        output_fields=request.output_fields,
        model_path=await served.model_path(model_key),
        deadline=deadline,
    )


class _Route:
    """Where one module's requests go: the active version, and a canary taking `percent` of them."""

    __slots__ = ("active", "calls", "canary", "percent")

    def __init__(self, active: ServedModule) -> None:
        self.active = active
        self.canary: ServedModule | None = None
        self.percent = 0
        self.calls = 0

    def choose(self) -> ServedModule:
        if self.canary is None or self.percent <= 0:
            return self.active
        # Smooth weighting: of every 100 consecutive calls exactly `percent` go to the canary, spread evenly.
        self.calls += 1
        if (self.calls * self.percent) // 100 != ((self.calls - 1) * self.percent) // 100:
            return self.canary
        return self.active


class ModuleRegistry:
    """The modules being served, by name, with their canaries and the other versions kept running.

    Every change is one assignment, so routing switches atomically between two requests.
    """

    def __init__(self) -> None:
        self._routes: dict[str, _Route] = {}
        self._pinned: dict[str, dict[str, ServedModule]] = {}
        self.problems: dict[str, str] = {}

    def get(self, name: str, version: str | None = None) -> ServedModule:
        """The version to serve a request for `name` (`version` pins one that is running)."""
        route = self._routes.get(name)
        if route is None:
            if name in self.problems:
                raise ModuleUnavailable(self.problems[name], retry_after=5)
            raise ModuleNotFound(f"no module named {name!r}")
        if version is None:
            return route.choose()
        served = self._pinned.get(name, {}).get(version)
        if served is None:
            raise VersionNotFound(f"version {version!r} of {name!r} is not running")
        return served

    def names(self) -> list[str]:
        return sorted({*self._routes, *self.problems})

    def served(self) -> list[ServedModule]:
        """The active version of every module."""
        return [route.active for route in self._routes.values()]

    def active(self, name: str) -> ServedModule | None:
        route = self._routes.get(name)
        return route.active if route else None

    def running(self) -> list[ServedModule]:
        """Every running version that requests may reach: active, canary, pinned or kept warm."""
        return [served for versions in self._pinned.values() for served in versions.values()]

    def versions(self, name: str) -> dict[str, ServedModule]:
        """Every running version of `name` that requests may pin."""
        return dict(self._pinned.get(name, {}))

    def canary(self, name: str) -> tuple[ServedModule | None, int]:
        route = self._routes.get(name)
        return (route.canary, route.percent) if route else (None, 0)

    def swap(self, served: ServedModule) -> ServedModule | None:
        """Make `served` the active version of its module; returns the one it replaced."""
        route = self._routes.get(served.name)
        previous = route.active if route else None
        if route is None:
            self._routes[served.name] = _Route(served)
        else:
            route.active = served
            if route.canary is served:
                route.canary, route.percent = None, 0
        self._pin(served)
        self.problems.pop(served.name, None)
        return previous

    def set_canary(self, name: str, served: ServedModule | None, percent: int) -> ServedModule | None:
        """Route `percent` of `name`'s calls to `served` (None: no canary); returns the canary it replaced."""
        route = self._routes[name]
        previous = route.canary
        if served is not None:
            self._pin(served)
        route.canary, route.percent, route.calls = served, (percent if served else 0), 0
        return previous

    def unpin(self, served: ServedModule) -> None:
        """Stop routing pinned requests to `served` (it is about to stop)."""
        pinned = self._pinned.get(served.name, {})
        if pinned.get(served.version) is served:
            del pinned[served.version]

    def remove(self, name: str) -> ServedModule | None:
        route = self._routes.pop(name, None)
        self._pinned.pop(name, None)
        return route.active if route else None

    def _pin(self, served: ServedModule) -> None:
        self._pinned.setdefault(served.name, {})[served.version] = served
