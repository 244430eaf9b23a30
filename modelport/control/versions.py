"""Versions: immutable, content-addressed module artifacts, and the builds that make them runnable.

A pushed artifact arrives as a file (`spool` writes one from a stream, hashing it on the way, so that no
artifact is ever held in memory), is stored once under `artifacts/` by its digest and unpacked under
`versions/<module>/<name>`; its row records who pushed it, its git tag and commit, its parsed `ApiSpec` and
its manifest. A build then gives it an environment for its requirements and imports its entrypoint there; the
outcome and the whole log are kept.

Pushes and builds run on the event loop; what they read and write in the database, they do in worker threads.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from modelport.artifacts import ModuleDefinition, PackError, check_version_name, read_module, unpack
from modelport.control.access import ALLOW_ALL, Permit
from modelport.control.audit import Actor, AuditTrail
from modelport.control.history import History
from modelport.core.errors import (
    BadRequest,
    InvalidModule,
    ModelportError,
    ModuleNotFound,
    VersionExists,
    VersionNotFound,
)
from modelport.core.manifests import ManifestError, Metadata
from modelport.core.records import VersionDetail, VersionInfo
from modelport.core.states import BuildStatus
from modelport.db import Database, Module, Version
from modelport.obs.redact import redact
from modelport.runtime.environments import BuildFailed, Environment, Environments
from modelport.sdk.source import SourceError

__all__ = ["ArtifactFile", "BuiltVersion", "Versions", "version_info"]

log = logging.getLogger("modelport.versions")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class ArtifactFile:
    """An artifact written to a file, with the digest and size taken as it was written."""

    path: Path
    digest: str
    size: int


@dataclass(frozen=True)
class BuiltVersion:
    """A version ready to run: its module read from its source directory, and its environment."""

    name: str
    definition: ModuleDefinition
    environment: Environment


def version_info(version: Version) -> VersionInfo:
    return VersionInfo(
        module=version.module_name,
        name=version.name,
        digest=version.digest,
        size=version.size,
        commit=version.commit,
        tag=version.tag,
        pushed_by=version.pushed_by,
        pushed_at=version.pushed_at.isoformat(),
        build_status=version.build_status.value,
        build_error=version.build_error,
        environment=version.environment,
    )


class Versions:
    """Push, list and build versions. Builds run in the background, `max_builds` at a time."""

    def __init__(
        self,
        database: Database,
        *,
        audit: AuditTrail,
        data_dir: Path,
        environments: Environments,
        on_built: Callable[[str, str], None] | None = None,
        max_builds: int = 2,
        history: History | None = None,
    ) -> None:
        self.database = database
        self.audit = audit
        self.environments = environments
        self.artifacts = data_dir / "artifacts"
        self.sources = data_dir / "versions"
        self.incoming = data_dir / "tmp"
        self._on_built = on_built
        self.history = history
        self._slots = asyncio.Semaphore(max_builds)
        self._builds: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._live_logs: dict[tuple[str, str], list[str]] = {}

    # pushing

    @asynccontextmanager
    async def spool(self, chunks: AsyncIterable[bytes] | bytes) -> AsyncIterator[ArtifactFile]:
        """Write an artifact arriving in `chunks` (or given whole) to a file under the data directory, hashing
        it on the way and holding at most a megabyte or so of it in memory; the file is gone when the block
        ends (`push` moves a new version's into the store)."""
        self.incoming.mkdir(parents=True, exist_ok=True)
        handle = tempfile.NamedTemporaryFile(dir=self.incoming, prefix="artifact-", delete=False)  # noqa: SIM115
        path, digest = Path(handle.name), hashlib.sha256()
        try:
            with handle:
                if isinstance(chunks, bytes):
                    await asyncio.to_thread(_append, handle, digest, chunks)
                else:
                    buffer = bytearray()
                    async for chunk in chunks:
                        buffer += chunk
                        if len(buffer) >= _CHUNK:
                            await asyncio.to_thread(_append, handle, digest, buffer)
                            buffer = bytearray()
                    await asyncio.to_thread(_append, handle, digest, buffer)
                await asyncio.to_thread(_sync, handle)
                size = handle.tell()
            yield ArtifactFile(path, f"sha256:{digest.hexdigest()}", size)
        finally:
            path.unlink(missing_ok=True)

    async def push(
        self,
        module: str,
        name: str,
        artifact: ArtifactFile,
        *,
        actor: Actor,
        permit: Permit | None = ALLOW_ALL,
        commit: str | None = None,
        tag: str | None = None,
        digest: str | None = None,
    ) -> tuple[VersionInfo, bool]:
        """Store a version from its `artifact` (see `spool`) and start its build; returns its info and whether
        it is new.

        Pushing identical content under an existing name is a no-op; different content is `VersionExists`.
        `permit` checks that the pusher may manage the module, or create it: a new module is owned by its
        manifest's `spec.owner` (or the developer's only group). A new version is recorded as pushed by
        `actor` (`autodeploy` for git sources), and so is its entry in the audit trail.
        """
        _check_names(module, name)
        actual = artifact.digest
        exists = await asyncio.to_thread(self._may_push, module, permit)
        if digest is not None and digest != actual:
            raise BadRequest(f"the upload's digest is {actual}, not {digest}: it was damaged in transit")
        existing = await asyncio.to_thread(self._find, module, name, actual)
        if existing is not None:
            return existing, False
        definition, owner = await asyncio.to_thread(
            functools.partial(self._store, creating=not exists), module, name, artifact, permit
        )
        record = functools.partial(
            self._record, module, name, artifact, definition, owner=owner, actor=actor, commit=commit, tag=tag
        )
        try:
            info = await asyncio.to_thread(record)
        except IntegrityError:  # a concurrent push of the same name won the race
            existing = await asyncio.to_thread(self._find, module, name, actual)
            if existing is None:
                raise
            return existing, False
        if self.history is not None:  # before the build starts, so that its event comes after
            details = {"tag": tag, "commit": commit, "digest": actual, "size": artifact.size}
            event = functools.partial(self.history.record, version=name, actor=actor.name, details=details)
            await asyncio.to_thread(event, module, "push")
        self.start_build(module, name)
        await asyncio.to_thread(
            self.audit.record, actor, "version.push", f"module/{module}", version=name, digest=actual
        )
        return info, True

    def _may_push(self, module: str, permit: Permit | None) -> bool:
        """Whether the module exists; if it does, `permit` must let the pusher manage it."""
        with self.database.session() as session:
            exists = session.get(Module, module) is not None
        if exists and permit is not None:
            permit.manage(module)
        return exists

    def _record(
        self,
        module: str,
        name: str,
        artifact: ArtifactFile,
        definition: ModuleDefinition,
        *,
        owner: str | None,
        actor: Actor,
        commit: str | None,
        tag: str | None,
    ) -> VersionInfo:
        """Write the version's row, and its module's for a new module."""
        with self.database.session() as session:
            if session.get(Module, module) is None:
                session.add(Module(name=module, owner=owner))
                session.flush()
            row = Version(
                module_name=module,
                name=name,
                digest=artifact.digest,
                size=artifact.size,
                commit=commit,
                tag=tag,
                pushed_by=actor.name,
                spec=definition.spec.to_dict(),
                manifest=definition.manifest.model_dump(mode="json", by_alias=True),
            )
            session.add(row)
            session.flush()
            return version_info(row)

    def _find(self, module: str, name: str, digest: str) -> VersionInfo | None:
        with self.database.session() as session:
            row = session.scalars(
                select(Version).where(Version.module_name == module, Version.name == name)
            ).one_or_none()
            if row is None:
                return None
            if row.digest != digest:
                raise VersionExists(
                    f"{module} {name} was already pushed with different content ({row.digest}); "
                    "versions are immutable: tag a new one"
                )
            return version_info(row)

    def _store(
        self, module: str, name: str, artifact: ArtifactFile, permit: Permit | None, *, creating: bool
    ) -> tuple[ModuleDefinition, str | None]:
        """Unpack, read and keep the artifact, and tell who would own a new module; a bad artifact raises
        `InvalidModule` and one the pusher may not create raises `Forbidden`, and neither writes anything."""
        self.sources.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".push-", dir=self.sources))
        try:
            try:
                unpack(artifact.path, staging / "module")
                definition = read_module(staging / "module", name=module)
            except (PackError, ManifestError, SourceError) as exc:
                raise InvalidModule(str(exc)) from None
            if definition.name != module:
                raise InvalidModule(
                    f"the artifact is module {definition.name!r} (its metadata.name), not {module!r}"
                )
            owner = definition.manifest.spec.owner
            if creating and permit is not None:
                owner = permit.new_owner(owner)
            _keep(artifact.path, self.artifact_path(artifact.digest))
            target = self.source_dir(module, name)
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():  # left by a push that crashed before its row was written
                shutil.rmtree(target)
            (staging / "module").replace(target)
            return read_module(target, name=module), owner
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def artifact_path(self, digest: str) -> Path:
        return self.artifacts / f"{digest.replace(':', '-')}.tar.gz"

    def source_dir(self, module: str, name: str) -> Path:
        return self.sources / module / name

    # reading

    def list(self, module: str) -> list[VersionInfo]:
        with self.database.session() as session:
            if session.get(Module, module) is None:
                raise ModuleNotFound(f"no module named {module!r}")
            rows = session.scalars(
                select(Version)
                .where(Version.module_name == module)
                .order_by(Version.pushed_at.desc(), Version.id.desc())
            )
            return [version_info(row) for row in rows]

    def get(self, module: str, name: str) -> VersionInfo:
        with self.database.session() as session:
            return version_info(self._row(session, module, name))

    def detail(self, module: str, name: str) -> VersionDetail:
        """The version with its parsed API and its manifest."""
        with self.database.session() as session:
            row = self._row(session, module, name)
            return VersionDetail(**version_info(row).model_dump(), spec=row.spec, manifest=row.manifest)

    def build_log(self, module: str, name: str) -> str:
        live = self._live_logs.get((module, name))
        if live is not None:
            return "".join(f"{line}\n" for line in live)
        with self.database.session() as session:
            return self._row(session, module, name).build_log

    def _row(self, session: Any, module: str, name: str) -> Version:
        row: Version | None = session.scalars(
            select(Version).where(Version.module_name == module, Version.name == name)
        ).one_or_none()
        if row is None:
            if session.get(Module, module) is None:
                raise ModuleNotFound(f"no module named {module!r}")
            raise VersionNotFound(f"module {module!r} has no version {name!r}")
        return row

    # building

    def resume(self) -> None:
        """Start the builds that a stopped server left pending or unfinished."""
        with self.database.session() as session:
            rows = session.execute(
                select(Version.module_name, Version.name).where(
                    Version.build_status.in_([BuildStatus.PENDING, BuildStatus.BUILDING])
                )
            ).all()
        for module, name in rows:
            self.start_build(module, name)

    def start_build(self, module: str, name: str) -> None:
        key = (module, name)
        if key not in self._builds or self._builds[key].done():
            self._builds[key] = asyncio.create_task(self._build(module, name), name=f"build {module} {name}")

    async def built(self, module: str, name: str) -> BuiltVersion:
        """The version ready to run, waiting for its build; raises `BuildFailed` if the build failed."""
        task = self._builds.get((module, name))
        if task is not None:
            await asyncio.shield(task)
        info = await asyncio.to_thread(self.get, module, name)
        if info.build_status != "ready":
            if info.build_status != "failed":
                self.start_build(module, name)
                return await self.built(module, name)
            raise BuildFailed(f"version {name} failed to build: {info.build_error}")
        definition = read_module(self.source_dir(module, name), name=module)
        requirements = _requirements(definition)
        environment = await self.environments.ensure(requirements, log=lambda line: None)
        return BuiltVersion(name, definition, environment)

    async def close(self) -> None:
        tasks = [t for t in self._builds.values() if not t.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _build(self, module: str, name: str) -> None:
        lines = self._live_logs.setdefault((module, name), [])
        lines.clear()
        await asyncio.to_thread(self._set_build, module, name, status=BuildStatus.PENDING, log="")
        async with self._slots:
            await asyncio.to_thread(self._set_build, module, name, status=BuildStatus.BUILDING, log="")
            started = time.monotonic()
            status, error, environment = BuildStatus.FAILED, "", None
            try:
                environment = await self._run_build(module, name, lines.append)
                status = BuildStatus.READY
                lines.append(f"build of {module} {name} succeeded")
            except ModelportError as exc:
                error = exc.message
                lines.append(f"build of {module} {name} failed: {error}")
            except Exception as exc:  # a bug or an I/O failure: the version fails, the server goes on
                log.exception("building %s %s failed", module, name)
                error = f"unexpected error: {exc}"
                lines.append(f"build of {module} {name} failed: {error}")
            took = time.monotonic() - started
            await asyncio.to_thread(
                self._set_build,
                module,
                name,
                status=status,
                log="".join(f"{line}\n" for line in lines),
                error=error or None,
                environment=environment.key if environment else None,
            )
            self._live_logs.pop((module, name), None)
            if self.history is not None:
                await asyncio.to_thread(_record_build, self.history, module, name, status, took, error)
        if self._on_built is not None:
            self._on_built(module, name)

    async def _run_build(self, module: str, name: str, log_line: Callable[[str], None]) -> Environment:
        source = self.source_dir(module, name)
        try:
            definition = await asyncio.to_thread(read_module, source, name=module)
        except (ManifestError, SourceError) as exc:
            raise BuildFailed(str(exc)) from None
        spec = definition.spec
        log_line(f"module {module} {name}: {spec.title or '(no title)'}")
        for group in ("inputs", "parameters", "outputs"):
            fields = ", ".join(f.name for f in spec.group(group)) or "none"
            log_line(f"  {group}: {fields}")
        requirements = _requirements(definition)
        log_line(
            f"requirements: {len(requirements.splitlines())} line(s)" if requirements else "no requirements"
        )
        environment = await self.environments.ensure(requirements, log=log_line)
        log_line(f"environment {environment.key[:12]} at {environment.path}")
        log_line(f"importing {definition.manifest.spec.entrypoint}")
        await self.environments.check_import(
            environment,
            module_dir=source,
            entrypoint=definition.manifest.spec.entrypoint,
            log=log_line,
            env=definition.manifest.spec.env,
        )
        return environment

    def _set_build(
        self,
        module: str,
        name: str,
        *,
        status: BuildStatus,
        log: str,
        error: str | None = None,
        environment: str | None = None,
    ) -> None:
        with self.database.session() as session:
            row = self._row(session, module, name)
            row.build_status, row.build_log = status, redact(log)
            row.build_error = None if error is None else redact(error)
            row.environment = environment


def _record_build(
    history: History, module: str, name: str, status: BuildStatus, seconds: float, error: str
) -> None:
    """The build's event in the history: its outcome, how long it ran, and why it failed."""
    outcome = "succeeded" if status == BuildStatus.READY else "failed"
    details = {"error": error or None}
    history.record(module, "build", version=name, outcome=outcome, seconds=seconds, details=details)


def _requirements(definition: ModuleDefinition) -> str:
    path = definition.directory / (definition.manifest.spec.requirements or "requirements.txt")
    return path.read_text(encoding="utf-8") if path.is_file() else ""


def _check_names(module: str, name: str) -> None:
    try:
        Metadata(name=module)
    except ValueError:
        raise BadRequest(f"{module!r} is not a valid module name") from None
    try:
        check_version_name(name)
    except PackError as exc:
        raise BadRequest(exc.message) from None


def _append(handle: IO[bytes], digest: hashlib._Hash, data: bytes | bytearray) -> None:
    handle.write(data)
    digest.update(data)


def _sync(handle: IO[bytes]) -> None:
    handle.flush()
    os.fsync(handle.fileno())


def _keep(source: Path, path: Path) -> None:
    """Move a spooled artifact, already written and synced, into place in one rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():  # content-addressed: the same name is the same bytes
        source.replace(path)
