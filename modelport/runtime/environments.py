"""Isolated Python environments for module versions, built with uv and cached by their requirements.

An environment holds the module's requirements, msgspec at the server's own version, and a link to the
server's `modelport` package (a `.pth` file), so `python -m modelport.runtime.worker` runs in it without the
server's other dependencies. Environments are keyed by the normalised requirements text, the Python version
and the worker's dependency versions; identical requirements build once.

A build happens in `<root>/<key>.tmp-<random>` and is renamed to `<root>/<key>` only when complete (its
marker file is written last), so a crash or a failed install never leaves a half-built environment behind.
Within one process, concurrent requests for a key wait on one build; across processes an `flock` on
`<root>/<key>.lock` does the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import importlib.metadata
import json
import os
import re
import secrets
import shutil
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from uv import find_uv_bin

import modelport
from modelport.core.errors import ModelportError
from modelport.runtime.isolation import build_environment, worker_environment

__all__ = ["BuildFailed", "Environment", "Environments", "normalise_requirements"]

BuildLog = Callable[[str], None]
"""Receives every line a build or an import check prints."""

_MARKER = "modelport-environment.json"
_LAYOUT = "1"  # bump when the recipe below changes, so old environments are rebuilt rather than reused
_WORKER_DEPENDENCIES = ("msgspec",)
_TAIL_LINES = 20
_COMMENT = re.compile(r"(^|\s)#.*$")  # pip's rule: `#` starts a comment at a line's start or after a space
_BOM = "\ufeff"
_KEY = re.compile(r"[0-9a-f]{64}")

_IMPORT_CHECK = """\
import importlib, sys
import modelport.runtime.worker
module_dir, entrypoint = sys.argv[1], sys.argv[2]
file_part, _, name = entrypoint.partition(":")
sys.path.insert(0, module_dir)
module = importlib.import_module(file_part.removesuffix(".py").replace("/", "."))
if not callable(getattr(module, name, None)):
    sys.exit(f"{file_part} defines no function `{name}`")
"""


class BuildFailed(ModelportError):
    """The module version's environment could not be built or its code could not be imported."""

    status, code, public = 400, "build_failed", True


@dataclass(frozen=True)
class Environment:
    """A finished environment: `python` is its interpreter, `log_path` the log of its build."""

    key: str
    path: Path
    python: str
    log_path: Path


def normalise_requirements(text: str) -> str:
    """The requirements as they count for the cache key.

    Comments, blank lines and surrounding whitespace go; runs of inner whitespace become one space. A leading
    byte order mark goes too, as pip drops it: some editors write one, and a file of only comments saved by
    them is still no requirements, which the base environment serves. The order of the lines is kept (it can
    matter to options such as `--index-url`), so reordered requirements build a second environment. Unpinned
    requirements resolve once, when their environment is built.
    """
    lines = (" ".join(_COMMENT.sub("", line).split()) for line in text.removeprefix(_BOM).splitlines())
    return "".join(f"{line}\n" for line in lines if line)


class Environments:
    """The cache of built environments under `root`.

    `uv` is the uv command (default: the one the `uv` dependency installed, else the one on `PATH`);
    `python` is the interpreter environments are created from; `lock_timeout` bounds the wait for another
    process's build of the same environment; `build_timeout` bounds each uv step, whose process group is
    killed when it runs over (a hung index or a stuck source build). uv honours `UV_CACHE_DIR` and its other
    settings from the environment, so repeated builds reuse downloaded wheels.
    """

    def __init__(
        self,
        root: Path,
        *,
        uv: str | None = None,
        python: str = sys.executable,
        lock_timeout: float = 1800.0,
        build_timeout: float = 1800.0,
    ) -> None:
        self.root = root
        self.python = python
        self.lock_timeout = lock_timeout
        self.build_timeout = build_timeout
        self._uv = (uv,) if uv is not None else _find_uv()
        self._locks: dict[str, asyncio.Lock] = {}
        self._python_version: str | None = None

    async def key(self, requirements: str) -> str:
        """The cache key of an environment for these requirements."""
        identity = {
            "layout": _LAYOUT,
            "python": await self._interpreter_version(),
            "worker": {name: importlib.metadata.version(name) for name in _WORKER_DEPENDENCIES},
            "requirements": normalise_requirements(requirements),
        }
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()

    async def ensure(self, requirements: str, *, log: BuildLog) -> Environment:
        """The environment for `requirements` (no requirement lines: the base one), built first if needed.

        Raises `BuildFailed` with the failing step and the end of its log; nothing of a failed build is kept,
        so the next call tries again.
        """
        key = await self.key(requirements)
        if (environment := self._finished(key)) is not None:
            return environment
        async with self._locks.setdefault(key, asyncio.Lock()):
            if (environment := self._finished(key)) is not None:
                return environment
            self.root.mkdir(parents=True, exist_ok=True)
            with await self._file_lock(key, log):
                if (environment := self._finished(key)) is not None:
                    return environment
                return await self._build(key, normalise_requirements(requirements), log)

    async def check_import(
        self,
        environment: Environment,
        *,
        module_dir: Path,
        entrypoint: str,
        log: BuildLog,
        env: Mapping[str, str] | None = None,
        timeout: float = 120.0,
    ) -> None:
        """Import the worker and the module's entrypoint (`file.py:function`) in the environment, as a worker
        would; raises `BuildFailed` with the end of the traceback if that fails or takes over `timeout` s."""
        argv = [environment.python, "-c", _IMPORT_CHECK, str(module_dir), entrypoint]
        try:
            code, tail = await _run(
                argv, log=log, cwd=module_dir, env=worker_environment(env or {}), timeout=timeout
            )
        except TimeoutError:
            raise BuildFailed(f"importing {entrypoint} took longer than {timeout:.0f} s") from None
        if code != 0:
            raise BuildFailed(f"importing {entrypoint} failed:\n" + "\n".join(tail))

    def prune(self, keep: set[str]) -> list[str]:
        """Remove the finished environments whose keys are not in `keep`; returns the removed keys.

        Environments being built, or locked by another process, are left alone.
        """
        removed = []
        for path in sorted(self.root.iterdir()) if self.root.is_dir() else []:
            if path.name in keep or not _KEY.fullmatch(path.name) or not path.is_dir():
                continue
            with open(self.root / f"{path.name}.lock", "a") as lock:
                if _try_lock(lock):
                    shutil.rmtree(path)
                    removed.append(path.name)
        return removed

    # the cache

    def _finished(self, key: str) -> Environment | None:
        path = self.root / key
        if not (path / _MARKER).is_file():
            return None
        return Environment(key, path, str(path / "bin" / "python"), path / "build.log")

    async def _file_lock(self, key: str, log: BuildLog) -> IO[str]:
        """Hold `<key>.lock` exclusively (released when the returned file is closed)."""
        lock = open(self.root / f"{key}.lock", "a")  # noqa: SIM115 - closed by the caller's `with`
        deadline = time.monotonic() + self.lock_timeout
        try:
            if not _try_lock(lock):
                log(f"waiting for another process building environment {key}")
            while not _try_lock(lock):
                if time.monotonic() > deadline:
                    raise BuildFailed(
                        f"another process kept building environment {key} for over {self.lock_timeout:.0f} s"
                    )
                await asyncio.sleep(0.2)
        except BaseException:
            lock.close()
            raise
        return lock

    async def _interpreter_version(self) -> str:
        if self._python_version is None:
            argv = [self.python, "-c", "import sys; print(sys.version)"]
            code, lines = await _run(argv, log=lambda line: None, timeout=60)
            if code != 0:
                raise BuildFailed(f"cannot run the Python interpreter {self.python}:\n" + "\n".join(lines))
            self._python_version = "\n".join(lines)
        return self._python_version

    # the build

    async def _build(self, key: str, requirements: str, log: BuildLog) -> Environment:
        _remove_stale_builds(self.root, key)
        staging = self.root / f"{key}.tmp-{secrets.token_hex(4)}"  # uv creates it
        log_path = staging.with_name(staging.name + ".log")
        try:
            with open(log_path, "w", encoding="utf-8") as build_log:

                def both(line: str) -> None:
                    build_log.write(line + "\n")
                    build_log.flush()
                    log(line)

                await self._install(staging, requirements, both)
            os.rename(log_path, staging / "build.log")
            (staging / _MARKER).write_text(json.dumps({"key": key, "built": time.time()}) + "\n")
            os.rename(staging, self.root / key)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            log_path.unlink(missing_ok=True)
            raise
        environment = self._finished(key)
        assert environment is not None
        return environment

    async def _install(self, staging: Path, requirements: str, log: BuildLog) -> None:
        await self._uv_step(
            "creating the environment", ["venv", "--relocatable", "--python", self.python, str(staging)], log
        )
        listed = staging / "requirements.txt"
        listed.write_text(requirements, encoding="utf-8")
        worker = [f"{name}=={importlib.metadata.version(name)}" for name in _WORKER_DEPENDENCIES]
        python = str(staging / "bin" / "python")
        await self._uv_step(
            "installing the requirements",
            ["pip", "install", "--python", python, *worker, "-r", str(listed)],
            log,
        )
        _link_modelport(staging)
        log("linked the modelport package into the environment")

    async def _uv_step(self, step: str, arguments: list[str], log: BuildLog) -> None:
        argv = [*self._uv, *arguments, "--no-progress"]
        log(f"$ {' '.join(argv)}")
        try:
            code, tail = await _run(
                argv, log=log, cwd=self.root, env=build_environment({}), timeout=self.build_timeout
            )
        except TimeoutError:
            raise BuildFailed(
                f"{step} took longer than {self.build_timeout:g} s (MODELPORT_BUILD_TIMEOUT_SECONDS) "
                "and was stopped; check the requirements and the package index, or raise the limit"
            ) from None
        if code != 0:
            raise BuildFailed(f"{step} failed (uv exited with {code}):\n" + "\n".join(tail))


def _find_uv() -> tuple[str, ...]:
    """The `uv` binary of the `uv` package modelport depends on: `find_uv_bin` knows where each install scheme
    (a venv, `--user`, `--prefix`, `--target`) puts it, which need not be next to `sys.executable`."""
    try:
        return (find_uv_bin(),)
    except FileNotFoundError:
        pass
    if on_path := shutil.which("uv"):
        return (on_path,)
    return (sys.executable, "-m", "uv")  # fails the build with uv's own list of the places it looked


def _link_modelport(environment: Path) -> None:
    """Make `import modelport` find the server's package, and nothing else of the server's environment.

    The `.pth` names a directory inside the environment that holds only a link to the package: pointing it at
    the package's parent would expose every other package installed beside a non-editable modelport. The path
    is relative to site-packages, so the environment stays relocatable.
    """
    package = Path(modelport.__file__).resolve().parent
    holder = environment / "modelport-link"
    holder.mkdir()
    (holder / "modelport").symlink_to(package, target_is_directory=True)
    (site_packages,) = environment.glob("lib/python*/site-packages")
    relative = os.path.relpath(holder, site_packages)
    (site_packages / "_modelport.pth").write_text(relative + "\n", encoding="utf-8")


def _try_lock(lock: IO[str]) -> bool:
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _remove_stale_builds(root: Path, key: str) -> None:
    """What builds that died with their process left (the caller holds the key's lock): staging directories,
    their logs, and a directory without its marker."""
    for stale in [*root.glob(f"{key}.tmp-*"), root / key]:
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        elif stale.exists():
            stale.unlink()


async def _run(
    argv: list[str],
    *,
    log: BuildLog,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> tuple[int, list[str]]:
    """Run a command, handing each output line to `log`; returns its exit code and its last lines."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=cwd,
        env=env,
        start_new_session=True,
    )
    tail: deque[str] = deque(maxlen=_TAIL_LINES)
    try:
        async with asyncio.timeout(timeout):
            assert process.stdout is not None
            async for raw in process.stdout:
                line = raw.decode("utf-8", "replace").rstrip()
                tail.append(line)
                log(line)
            code = await process.wait()
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
    return code, list(tail)
