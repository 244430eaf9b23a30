"""The platform's services in one object: tokens, versions, deployments, manifests, git sources."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import func, select

from modelport.control.artifacts import Artifact
from modelport.control.deployments import Deployments
from modelport.control.identity import Tokens
from modelport.control.manifests import Change, Manifests
from modelport.control.modules import ModuleRegistry
from modelport.control.sources import GitSources
from modelport.control.versions import Versions
from modelport.core.errors import ModuleNotFound
from modelport.core.settings import Settings
from modelport.db import Database, Module, Version
from modelport.obs.logs import ModuleLogs
from modelport.runtime.environments import Environments

__all__ = ["Services"]


class Services:
    """Everything the gateway calls into, wired from one settings object."""

    def __init__(self, *, settings: Settings, database: Database, environments: Environments) -> None:
        self.settings = settings
        self.database = database
        self.registry = ModuleRegistry()
        self.logs = ModuleLogs(settings.data_dir / "logs")
        self.tokens = Tokens(database, cache_seconds=settings.token_cache_seconds)
        self.versions = Versions(
            database,
            data_dir=settings.data_dir,
            environments=environments,
            on_built=lambda module, version: self.deployments.wake(),
        )
        self.deployments = Deployments(
            database, versions=self.versions, registry=self.registry, settings=settings, logs=self.logs
        )
        self.manifests = Manifests(database, on_change=self._manifests_changed)
        self.sources = GitSources(
            database,
            work_dir=settings.data_dir / "sources",
            push=self._push_release,
            deploy=self._deploy_release,
        )
        self._background: set[asyncio.Task[None]] = set()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Resume unfinished builds and reconcile deployments for as long as the block runs."""
        stop = asyncio.Event()
        self.versions.resume()
        loops = [
            asyncio.create_task(self.deployments.run(stop), name="reconciler"),
            asyncio.create_task(
                self.sources.run(stop, interval=self.settings.source_poll_seconds), name="sources"
            ),
        ]
        try:
            yield
        finally:
            stop.set()
            self.deployments.wake()
            await asyncio.gather(*loops, *self._background, return_exceptions=True)
            await self.deployments.close()
            await self.versions.close()
            self.logs.close()

    # modules

    def modules(self) -> list[dict[str, Any]]:
        with self.database.session() as session:
            counts = dict(
                session.execute(select(Version.module_name, func.count()).group_by(Version.module_name)).all()
            )
            rows = session.scalars(select(Module).order_by(Module.name)).all()
            return [self._module_info(row, counts.get(row.name, 0)) for row in rows]

    def module(self, name: str) -> dict[str, Any]:
        with self.database.session() as session:
            row = session.get(Module, name)
            if row is None:
                raise ModuleNotFound(f"no module named {name!r}")
            count = session.scalar(select(func.count()).where(Version.module_name == name)) or 0
            return self._module_info(row, count)

    def _module_info(self, row: Module, versions: int) -> dict[str, Any]:
        return {
            "name": row.name,
            "owner": row.owner,
            "created_at": row.created_at.isoformat(),
            "versions": versions,
            "deployment": self.deployments.info(row.name),
        }

    # reactions

    def _manifests_changed(self, changes: list[Change]) -> None:
        for change in changes:
            if change.kind == "Module" and change.action == "deleted":
                task = asyncio.get_running_loop().create_task(self.deployments.forget(change.name))
                self._background.add(task)
                task.add_done_callback(self._background.discard)

    async def _push_release(self, artifact: Artifact, pushed_by: str) -> str:
        info, _ = await self.versions.push(
            artifact.name,
            artifact.version,
            artifact.data,
            pushed_by=pushed_by,
            commit=artifact.commit,
            tag=artifact.tag,
            digest=artifact.digest,
        )
        return str(info["name"])

    async def _deploy_release(self, module: str, version: str) -> None:
        self.deployments.deploy(module, version)
