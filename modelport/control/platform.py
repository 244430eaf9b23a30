"""The platform's services in one object: tokens, versions, deployments, and the modules they serve."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import func, select

from modelport.control.deployments import Deployments
from modelport.control.identity import Tokens
from modelport.control.modules import ModuleRegistry
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

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Resume unfinished builds and reconcile deployments for as long as the block runs."""
        stop = asyncio.Event()
        self.versions.resume()
        reconciler = asyncio.create_task(self.deployments.run(stop), name="reconciler")
        try:
            yield
        finally:
            stop.set()
            self.deployments.wake()
            await asyncio.gather(reconciler, return_exceptions=True)
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
