"""The platform's services in one object: identity and access, versions, deployments, manifests, git sources,
storage, the audit trail, calls, the prediction cache and what observes them, jobs, batches and webhooks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

from sqlalchemy import func, select

from modelport.artifacts import Artifact
from modelport.control.access import AccessPolicies, Permit
from modelport.control.audit import SYSTEM, Actor, AuditTrail
from modelport.control.batches import Batches
from modelport.control.cache import CacheRule, PredictionCache, open_store
from modelport.control.calls import Calls
from modelport.control.deployments import Deployments
from modelport.control.drift import Drift
from modelport.control.history import History
from modelport.control.identity import TOKEN_PREFIX, Identity, Principal
from modelport.control.jobs import Jobs
from modelport.control.manifests import Manifests
from modelport.control.modules import ModuleRegistry
from modelport.control.oidc import OidcVerifier
from modelport.control.pipelines import Pipelines
from modelport.control.request_files import RequestFiles
from modelport.control.requests import RequestLog
from modelport.control.sources import GitSources
from modelport.control.stats import Stats
from modelport.control.storage import Storage
from modelport.control.versions import ArtifactFile, Versions
from modelport.control.webhooks import Webhooks
from modelport.control.weights import ModelWeights
from modelport.core.errors import ModuleNotFound, SetupFailed
from modelport.core.records import ApplyResult, DeploymentInfo, ModuleInfo, VersionInfo
from modelport.core.settings import Settings
from modelport.db import Database, Module, Version
from modelport.obs.logs import ModuleLogs
from modelport.obs.metrics import Metrics
from modelport.runtime.environments import Environments
from modelport.runtime.files import WORK_FILES_SECONDS, remove_stale
from modelport.storage import ObjectStore

__all__ = ["Services"]

log = logging.getLogger("modelport.platform")


class Services:
    """Everything the gateway calls into, wired from one settings object."""

    def __init__(
        self, *, settings: Settings, database: Database, environments: Environments, store: ObjectStore
    ) -> None:
        self.settings = settings
        self.database = database
        self.store = store
        self.request_files = RequestFiles(
            store,
            bucket=settings.request_bucket,
            readable=self._readable,
        )
        self.weights = ModelWeights(
            store,
            cache_dir=settings.data_dir / "model-cache",
            max_bytes=settings.model_cache_bytes,
            in_use=self._weights_in_use,
        )
        self.registry = ModuleRegistry()
        self.logs = ModuleLogs(
            settings.data_dir / "logs", max_bytes=settings.log_max_bytes, backups=settings.log_backups
        )
        self.audit = AuditTrail(database)
        self.metrics = Metrics(
            running=self._running_versions,
            dropped=lambda: self.request_log.dropped,
            drift=lambda: self.drift.scores(),
        )
        self.history = History(database, on_event=self.metrics.module_event)
        self.storage = Storage(database, store, audit=self.audit, settings=settings)
        self.identity = Identity(
            database,
            audit=self.audit,
            session_seconds=settings.session_seconds,
            login_attempts=settings.login_attempts,
        )
        self.webhooks = Webhooks(database, settings=settings, audit=self.audit)
        self.oidc = OidcVerifier.from_settings(settings)
        self.policies = AccessPolicies(database)
        self.cache = PredictionCache(open_store(settings.redis_url), rules=self._cache_rule)
        self.calls = Calls(
            registry=self.registry,
            settings=settings,
            files=self.request_files,
            sync_timeout=self._sync_timeout,
            cache=self.cache,
        )
        self.request_log = RequestLog(database, settings=settings, store=store, policies=self.policies)
        self.calls.observers.append(self.request_log)
        self.stats = Stats(
            database, minute_days=settings.stats_minute_days, hour_days=settings.stats_hour_days
        )
        self.calls.observers.append(self.stats)
        self.calls.observers.append(self.metrics)
        self.versions = Versions(
            database,
            audit=self.audit,
            data_dir=settings.data_dir,
            environments=environments,
            on_built=lambda module, version: self.deployments.wake(),
            history=self.history,
        )
        self.deployments = Deployments(
            database,
            audit=self.audit,
            versions=self.versions,
            registry=self.registry,
            settings=settings,
            logs=self.logs,
            weights=self.weights,
            check_weights=self._may_load_weights,
            history=self.history,
        )
        self.manifests = Manifests(
            database, audit=self.audit, store=store, on_change=self._manifests_changed, history=self.history
        )
        self.sources = GitSources(
            database,
            work_dir=settings.data_dir / "sources",
            push=self._push_release,
            deploy=self._deploy_release,
        )
        self.drift = Drift(
            database,
            registry=self.registry,
            policies=self.policies,
            storage=self.storage,
            store=store,
            settings=settings,
        )
        self.calls.observers.append(self.drift)
        self.calls.file_observers.append(self.drift)
        self.jobs = Jobs(
            database,
            calls=self.calls,
            registry=self.registry,
            policies=self.policies,
            files=self.request_files,
            settings=settings,
            check_webhook=lambda url: self.webhooks.check(url),
            has_secret=lambda user_id: self.webhooks.has_secret(user_id),
            on_finished=lambda: self.webhooks.wake(),
        )
        self.batches = Batches(
            self.jobs, calls=self.calls, storage=self.storage, store=store, settings=settings
        )
        self.pipelines = Pipelines(calls=self.calls, policies=self.policies, jobs=self.jobs)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Resume unfinished builds and reconcile deployments for as long as the block runs; keep the identity
        revision, the access policies and the buckets' policies in memory, so that requests need not wait on
        the database."""
        stop = asyncio.Event()
        await asyncio.to_thread(self.storage.start)
        await asyncio.to_thread(self.policies.reload)
        await asyncio.to_thread(self.storage.policies.reload)
        self.versions.resume()
        self.request_log.start()
        loops = [
            asyncio.create_task(self.identity.watch(stop), name="identity"),
            asyncio.create_task(self.deployments.run(stop), name="reconciler"),
            asyncio.create_task(
                self.sources.run(stop, interval=self.settings.source_poll_seconds), name="sources"
            ),
            asyncio.create_task(self._sweep_storage(stop), name="storage"),
            asyncio.create_task(self.drift.run(stop), name="drift"),
            asyncio.create_task(self.stats.run(stop), name="stats"),
            asyncio.create_task(self.jobs.run(stop), name="jobs"),
            asyncio.create_task(self.webhooks.run(stop), name="webhooks"),
        ]
        try:
            yield
        finally:
            stop.set()
            self.deployments.wake()
            await asyncio.gather(*loops, return_exceptions=True)
            await self.deployments.close()
            await asyncio.to_thread(self.request_log.close)  # writes the calls answered while draining
            await self.stats.close()  # the calls answered while draining
            await asyncio.to_thread(self.drift.close)  # the samples of calls answered while draining
            if self.oidc is not None:
                await self.oidc.close()
            await self.versions.close()
            await self.policies.settle()
            await self.storage.policies.settle()
            await self.cache.close()
            await asyncio.to_thread(self.identity.close)
            self.logs.close()
            self.store.close()

    async def _sweep_storage(self, stop: asyncio.Event) -> None:
        """Delete objects past their retention and recount usage, every `storage_sweep_seconds`; remove the
        work files that crashed requests and failed calls left behind."""
        while not stop.is_set():
            try:
                await asyncio.to_thread(self.storage.sweep)
            except Exception:
                log.exception("sweeping the object store failed; trying again later")
            try:
                await asyncio.to_thread(self.sweep_work_files)
            except OSError:
                log.exception("removing stale work files failed; trying again later")
            try:
                await asyncio.to_thread(self.jobs.sweep)
            except Exception:
                log.exception("sweeping finished jobs failed; trying again later")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.storage_sweep_seconds)

    def sweep_work_files(self, *, now: float | None = None) -> int:
        """Remove request uploads and call outputs older than any call may run; returns how many went."""
        now = time.time() if now is None else now
        return sum(
            remove_stale(self.settings.data_dir / folder, older_than=WORK_FILES_SECONDS, now=now)
            for folder in ("uploads", "outputs")
        )

    def _sync_timeout(self, module: str) -> float | None:
        policy = self.policies.cached(module)  # from memory: a call never waits on the database
        return None if policy is None else policy.sync_timeout

    def _cache_rule(self, module: str) -> CacheRule | None:
        policy = self.policies.cached(module)  # from memory: a cache hit never waits on the database
        return None if policy is None else policy.cache

    def _running_versions(self) -> list[tuple[str, str, int, int]]:
        """(module, version, calls in flight, worker restarts) of every running version, for `/metrics`."""
        return [(s.name, s.version, s.in_flight, s.pool.restarts) for s in self.registry.running()]

    def _weights_in_use(self) -> list[Path]:
        return [path for served in self.registry.running() for path in served.model_dirs.values()]

    def _may_load_weights(self, module: str, bucket: str) -> None:
        """A module loads weights only from a bucket its owner group may read (modules without an owner are
        the admins', who may read every bucket): a developer cannot read another group's bucket through
        its module's `load`."""
        with self.database.session() as session:
            owner = session.scalar(select(Module.owner).where(Module.name == module))
        policy = self.storage.policy(bucket)
        if policy is None:
            raise SetupFailed(f"module {module} keeps its weights in bucket {bucket!r}, which does not exist")
        if owner is not None and owner not in policy.groups | policy.read_groups:
            raise SetupFailed(
                f"module {module} is owned by {owner}, which may not read bucket {bucket!r}; "
                f"list {owner} in the bucket's access.readGroups"
            )

    def _readable(self, principal: Principal, bucket: str) -> None:
        self.storage.require(principal, bucket, write=False)

    # identity

    async def authenticate(self, token: str) -> Principal | None:
        """The principal a bearer token stands for: a modelport token, or an access token of the OIDC
        issuer; None if it is neither (`InvalidToken` when a JWT fails verification, `DatabaseUnavailable`
        when it must be looked up and cannot be)."""
        if token.startswith(TOKEN_PREFIX):
            return await self.identity.authenticate(token)
        if self.oidc is None or token.count(".") != 2:
            return None
        return await self.identity.authenticate_oidc(await self.oidc.verify(token))

    # modules

    def modules(self, principal: Principal) -> list[ModuleInfo]:
        """The modules `principal` may manage."""
        with self.database.session() as session:
            counts = dict(
                session.execute(select(Version.module_name, func.count()).group_by(Version.module_name)).all()
            )
            rows = session.scalars(select(Module).order_by(Module.name)).all()
        visible = set(self.policies.visible(principal, [row.name for row in rows]))
        deployments = self.deployments.infos()
        return [
            self._module_info(row, counts.get(row.name, 0), deployments.get(row.name))
            for row in rows
            if row.name in visible
        ]

    async def push_version(
        self,
        module: str,
        version: str,
        artifact: ArtifactFile,
        *,
        principal: Principal,
        actor: Actor,
        commit: str | None = None,
        tag: str | None = None,
        digest: str | None = None,
    ) -> tuple[VersionInfo, bool]:
        """Push a version as `principal` (who must manage the module, or may create it); returns its info
        and whether it is new. A new module is visible to its owners at once."""
        info, created = await self.versions.push(
            module,
            version,
            artifact,
            actor=actor,
            permit=Permit(principal, self.policies),
            commit=commit,
            tag=tag,
            digest=digest,
        )
        if created:
            await asyncio.to_thread(self.policies.reload)
        return info, created

    async def delete_module(self, module: str, *, actor: Actor) -> None:
        """Stop serving `module` and forget it; nobody may call it from now on."""
        await self.deployments.delete(module, actor=actor)
        await asyncio.to_thread(self.history.record, module, "delete", actor=actor.name)
        await asyncio.to_thread(self.policies.reload)

    def module(self, name: str) -> ModuleInfo:
        with self.database.session() as session:
            row = session.get(Module, name)
            if row is None:
                raise ModuleNotFound(f"no module named {name!r}")
            count = session.scalar(select(func.count()).where(Version.module_name == name)) or 0
            return self._module_info(row, count, self.deployments.info(name))

    def _module_info(self, row: Module, versions: int, deployment: DeploymentInfo | None) -> ModuleInfo:
        return ModuleInfo(
            name=row.name,
            owner=row.owner,
            created_at=row.created_at.isoformat(),
            deployment=deployment,
            versions=versions,
        )

    # reactions

    def _manifests_changed(self, changes: list[ApplyResult]) -> None:
        """In the thread that applied the change, before it is answered: the next request sees it, preflights
        too."""
        self.policies.reload()
        if any(change.kind == "Storage" for change in changes):
            self.storage.policies.reload()
        for change in changes:
            if change.kind == "Module" and change.action == "deleted":
                self.deployments.forget_soon(change.name)
        if any(change.kind == "Module" for change in changes):  # one may have scaled its deployment
            self.deployments.wake()

    async def _push_release(self, artifact: Artifact, pushed_by: str) -> str:
        async with self.versions.spool(artifact.data) as spooled:
            info, _ = await self.versions.push(
                artifact.name,
                artifact.version,
                spooled,
                actor=Actor(pushed_by),
                commit=artifact.commit,
                tag=artifact.tag,
                digest=artifact.digest,
            )
        return info.name

    async def _deploy_release(self, module: str, version: str) -> None:
        await asyncio.to_thread(self.deployments.deploy, module, version, actor=SYSTEM, reason="git tag")
