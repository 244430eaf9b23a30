"""`modelport dev`: serve one module directory and reload it when its files change.

A reload starts the new workers first and switches routing only once they are ready, so a broken edit (a
docstring that does not parse, an import error, a failing `load`) is reported and the previous version keeps
serving until the author fixes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Callable
from pathlib import Path

from watchfiles import DefaultFilter, awatch

from modelport.artifacts import read_module
from modelport.control.modules import ModuleRegistry, start_module
from modelport.core.errors import SetupFailed
from modelport.core.manifests import ManifestError
from modelport.core.settings import Settings
from modelport.runtime.process import LogSink
from modelport.sdk.source import SourceError

__all__ = ["DevModule"]

log = logging.getLogger("modelport.dev")


class _ModuleFilter(DefaultFilter):
    """Ignore the module's own model cache and output files, not just the usual noise."""

    def __init__(self, ignored: tuple[Path, ...]) -> None:
        super().__init__()
        self._ignored = tuple(str(p) for p in ignored)

    def __call__(self, change: object, path: str) -> bool:
        return super().__call__(change, path) and not path.startswith(self._ignored)  # type: ignore[arg-type]


class DevModule:
    """One module directory, served from a registry and reloaded on change."""

    def __init__(
        self,
        directory: Path,
        *,
        registry: ModuleRegistry,
        settings: Settings,
        workers: int | None,
        log_sink: LogSink,
        report: Callable[[str], None],
    ) -> None:
        self.directory = directory.resolve()
        self.registry = registry
        self.settings = settings
        self.workers = workers
        self._log_sink = log_sink
        self._report = report
        self.name = self.directory.name
        self.generation = 0
        self._lock = asyncio.Lock()

    async def load(self) -> bool:
        """Read, start and switch to the module as it is on disk now; False (and a report) if that fails."""
        async with self._lock:
            try:
                definition = read_module(self.directory)
            except (ManifestError, SourceError) as exc:
                return self._fail(str(exc))
            self.name = definition.name
            self.generation += 1
            version = f"dev-{self.generation}-{_digest(self.directory)}"
            try:
                served = await start_module(
                    definition,
                    version=version,
                    settings=self.settings,
                    replicas=self.workers,
                    log=self._log_sink,
                )
            except SetupFailed as exc:
                return self._fail(f"{definition.name}: {exc.message}")
            previous = self.registry.swap(served)
            workers = f"{len(served.pool.pids)} worker" + ("" if len(served.pool.pids) == 1 else "s")
            self._report(f"serving {served.name} ({version}) with {workers}")
        if previous is not None:
            await previous.pool.close()
        return True

    def _fail(self, message: str) -> bool:
        self._report(f"error: {message}")
        with contextlib.suppress(Exception):
            self.registry.get(self.name)
            self._report("the previous version keeps serving; fix the module and save to reload")
            return False
        self.registry.problems[self.name] = message
        self._report("waiting for a fix; save a file to reload")
        return False

    async def watch(self, stop: asyncio.Event) -> None:
        ignored = (self.directory / "models", self.directory / ".modelport")
        async for _changes in awatch(self.directory, watch_filter=_ModuleFilter(ignored), stop_event=stop):
            self._report("change detected; reloading")
            await self.load()

    async def close(self) -> None:
        served = self.registry.remove(self.name)
        if served is not None:
            await served.pool.close(grace=5)


def _digest(directory: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(directory.rglob("*.py")):
        if "models" not in path.relative_to(directory).parts:
            digest.update(path.read_bytes())
    return digest.hexdigest()[:8]
