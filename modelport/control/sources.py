"""Git sources: modules whose manifest sets `source.autoDeploy` get each new highest tag pushed and deployed.

Each repository is kept as a bare mirror under the work directory (`<module>.git`), cloned once and fetched
with pruning after, so moved and deleted tags are seen. The highest tag (semver precedence when any tag is
a semantic version, else the newest) that is not yet a version of the module is checked out into a scratch
directory, packed as `modelport push` packs it, pushed and deployed. A tag that failed is remembered with
its commit and not tried again until a newer tag appears (or the tag moves). Git runs as a subprocess with
a time limit and packing runs in a thread, so polling never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from pydantic import ValidationError
from sqlalchemy import select

from modelport.artifacts import Artifact, PackError, check_version_name, pack, semver_key
from modelport.core.errors import ModelportError
from modelport.core.manifests import ModuleManifest, SourceSpec
from modelport.db import Database, Module, Version

__all__ = ["DeployFn", "GitSources", "PollOutcome", "PushFn"]

log = logging.getLogger("modelport.sources")

PushFn = Callable[[Artifact, str], Awaitable[str]]
"""Push an artifact on behalf of a user (`autodeploy`); returns the version's name."""
DeployFn = Callable[[str, str], Awaitable[None]]
"""Deploy version (second argument) of a module (first argument)."""

PUSHED_BY = "autodeploy"
_GIT_TIMEOUT = 120.0
_GIT_LOCATION = frozenset({"GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY"})
_CREDENTIALS = re.compile(r"(://)[^/@\s]+@")
_T = TypeVar("_T")


@dataclass(frozen=True)
class PollOutcome:
    """What polling one module's repository did: a tag pushed and deployed (`ok`), or why that failed.

    `tag` is None when the repository could not be fetched.
    """

    module: str
    tag: str | None
    ok: bool
    message: str


class _GitFailed(Exception):
    pass


class _StepFailed(Exception):
    def __init__(self, step: str, cause: Exception, *, within: Path | None) -> None:
        message = _describe(cause)
        if within is not None:  # paths in the scratch checkout, shown relative to the repository
            for prefix in {f"{within}{os.sep}", f"{within.resolve()}{os.sep}"}:
                message = message.replace(prefix, "")
        super().__init__(f"{step} failed: {message}")
        self.cause = cause


class GitSources:
    """Polls the git sources of modules with `autoDeploy` and releases their new tags."""

    def __init__(
        self,
        database: Database,
        *,
        work_dir: Path,
        push: PushFn,
        deploy: DeployFn,
        clock: Callable[[], float] = time.monotonic,
        git_timeout: float = _GIT_TIMEOUT,
    ) -> None:
        self.database = database
        self.work_dir = work_dir
        self._push = push
        self._deploy = deploy
        self._clock = clock
        self._git_timeout = git_timeout
        self._due: dict[str, float] = {}
        self._tried: dict[str, tuple[str, str]] = {}  # module → (tag, commit) last released or failed
        self._lock = asyncio.Lock()

    async def run(self, stop: asyncio.Event, interval: float = 5.0) -> None:
        """Poll every `interval` seconds until `stop` is set; each module keeps its own `pollSeconds`."""
        while not stop.is_set():
            try:
                await self.poll_once()
            except Exception:
                log.exception("polling git sources failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)

    async def poll_once(self) -> list[PollOutcome]:
        """Poll the modules whose interval has elapsed; an outcome per tag tried or repository not fetched."""
        async with self._lock:
            sources = await asyncio.to_thread(self._sources)
            for gone in set(self._due) - set(sources):
                self._due.pop(gone, None)
                self._tried.pop(gone, None)
            outcomes: list[PollOutcome] = []
            for module, source in sources.items():
                now = self._clock()
                if self._due.get(module, now) > now:
                    continue
                self._due[module] = now + source.poll_seconds
                outcome = await self._poll(module, source)
                if outcome is not None:
                    outcomes.append(outcome)
            return outcomes

    def _sources(self) -> dict[str, SourceSpec]:
        """The auto-deployed sources of the stored module manifests, by module name."""
        with self.database.session() as session:
            rows = session.execute(select(Module.name, Module.manifest).order_by(Module.name)).all()
        sources: dict[str, SourceSpec] = {}
        for name, stored in rows:
            try:
                manifest = ModuleManifest.model_validate(stored)
            except ValidationError:
                continue
            source = manifest.spec.source
            if source is not None and source.auto_deploy and manifest.metadata.name == name:
                sources[name] = source
        return sources

    async def _poll(self, module: str, source: SourceSpec) -> PollOutcome | None:
        tag: str | None = None
        try:
            mirror = await self._step("fetching " + _redact(source.git), self._mirror(module, source.git))
            latest = _latest(await self._step("listing tags", self._tags(mirror)))
            if latest is None or latest == self._tried.get(module):
                return None
            tag, commit = latest
            if await asyncio.to_thread(self._has_version, module, tag):
                return None
            self._tried[module] = latest
            version = await self._release(module, source, mirror, tag)
        except Exception as exc:  # one module's failure never stops the others
            if not isinstance(exc, _StepFailed):
                log.exception("polling the source of %s failed", module)
            outcome = PollOutcome(module, tag, ok=False, message=_redact(str(exc) or type(exc).__name__))
            log.warning("auto-deploy of %s: %s", module, outcome.message)
            return outcome
        outcome = PollOutcome(module, tag, ok=True, message=f"pushed and deployed {version} ({commit[:12]})")
        log.info("auto-deploy of %s: %s", module, outcome.message)
        return outcome

    async def _release(self, module: str, source: SourceSpec, mirror: Path, tag: str) -> str:
        """Check `tag` out, pack the module at `source.path`, push it and deploy it; the version's name."""
        scratch_root = self.work_dir / "checkouts"
        scratch_root.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f"{module}-", dir=scratch_root))
        try:
            checkout = scratch / module  # a module without a manifest is named after its directory
            args = ("clone", "--quiet", "-c", "advice.detachedHead=false", "--branch", tag)
            await self._step(f"checking out {tag}", self._git(*args, "--", str(mirror), str(checkout)))
            artifact = await self._step(
                f"packing {tag}",
                asyncio.to_thread(_pack, module, checkout, source.path, tag),
                within=checkout,
            )
            version = await self._step(f"pushing {tag}", self._push(artifact, PUSHED_BY))
            await self._step(f"deploying {version}", self._deploy(module, version))
            return version
        finally:
            await asyncio.to_thread(shutil.rmtree, scratch, True)

    async def _step(self, step: str, work: Awaitable[_T], *, within: Path | None = None) -> _T:
        try:
            return await work
        except Exception as exc:
            raise _StepFailed(step, exc, within=within) from exc

    def _has_version(self, module: str, name: str) -> bool:
        with self.database.session() as session:
            found = session.scalar(
                select(Version.id).where(Version.module_name == module, Version.name == name)
            )
            return found is not None

    # git

    async def _mirror(self, module: str, url: str) -> Path:
        """The module's bare mirror, cloned the first time and fetched (pruning gone refs) after."""
        mirror = self.work_dir / f"{module}.git"
        location = _location(url)
        if mirror.is_dir():
            await self._git("remote", "set-url", "origin", location, cwd=mirror)
            await self._git("fetch", "--quiet", "--prune", "origin", cwd=mirror)
            return mirror
        self.work_dir.mkdir(parents=True, exist_ok=True)
        staging = self.work_dir / f".{module}.{uuid.uuid4().hex}.git"
        try:
            await self._git("clone", "--quiet", "--mirror", "--", location, str(staging))
            staging.rename(mirror)
        finally:
            await asyncio.to_thread(shutil.rmtree, staging, True)
        return mirror

    async def _tags(self, mirror: Path) -> list[tuple[str, str]]:
        """(tag, commit) of every tag, newest first; annotated tags are peeled to their commit."""
        output = await self._git(
            "for-each-ref",
            "--sort=-creatordate",
            "--format=%(refname:strip=2)%00%(objectname)%00%(*objectname)",
            "refs/tags",
            cwd=mirror,
        )
        tags = []
        for line in output.splitlines():
            name, target, peeled = line.split("\0")
            tags.append((name, peeled or target))
        return tags

    async def _git(self, *args: str, cwd: Path | None = None) -> str:
        """Run git without prompts, with a plain locale and a time limit; its stdout."""
        env = {k: v for k, v in os.environ.items() if k not in _GIT_LOCATION}
        env.update(LC_ALL="C", GIT_TERMINAL_PROMPT="0")
        env.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
        process = await asyncio.create_subprocess_exec(
            "git",
            "-c",
            "protocol.ext.allow=never",
            *args,
            cwd=cwd,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            stdout, stderr = await asyncio.wait_for(process.communicate(), self._git_timeout)
        except TimeoutError:
            raise _GitFailed(f"`git {args[0]}` took longer than {self._git_timeout:g} s") from None
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        if process.returncode != 0:
            raise _GitFailed(f"`git {args[0]}`: {stderr.decode(errors='replace').strip()}")
        return stdout.decode(errors="replace")


def _pack(module: str, checkout: Path, path: str, tag: str) -> Artifact:
    directory = (checkout / path).resolve()
    if not directory.is_relative_to(checkout.resolve()):  # a committed link pointing out of the checkout
        raise PackError(f"{path} leads outside the repository")
    artifact = pack(directory, version=tag)
    if artifact.name != module:
        raise PackError(
            f"the repository's module is {artifact.name!r} (its metadata.name or directory), not {module!r}"
        )
    return artifact


def _latest(tags: list[tuple[str, str]]) -> tuple[str, str] | None:
    """The highest semver tag if any tag is one, else the newest; tags unfit as version names are skipped."""
    usable = [(name, commit) for name, commit in tags if _is_version_name(name)]
    semver = [(name, commit) for name, commit in usable if semver_key(name) is not None]
    if semver:
        return max(semver, key=lambda tag: (semver_key(tag[0]), tag[0]))
    return usable[0] if usable else None


def _is_version_name(tag: str) -> bool:
    try:
        check_version_name(tag)
    except PackError:
        return False
    return True


def _location(url: str) -> str:
    """A local repository path made absolute (git resolves relative ones from its cwd); URLs as they are."""
    if "://" not in url and Path(url).expanduser().exists():
        return str(Path(url).expanduser().resolve())
    return url


def _describe(exc: Exception) -> str:
    if isinstance(exc, ModelportError):
        return exc.message
    return str(exc) or type(exc).__name__


def _redact(text: str) -> str:
    """Hide credentials written into repository URLs (`https://user:token@host/...`)."""
    return _CREDENTIALS.sub(r"\1***@", text)
