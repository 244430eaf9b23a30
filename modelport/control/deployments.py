"""Deployments: each module's desired state in the database, and the reconciler that makes it run.

A deployment names the active version, a target version being rolled out, an optional canary and the replica
count. Every change bumps its `generation`; the reconciler works until `observed_generation` catches up.

Switching is surge-first: the target starts beside the active version and must pass readiness (workers up,
model loaded, warm-up example answered) before the registry routes to it, in one assignment. The replaced
version drains its in-flight work and stays warm for a grace period, so a rollback to it is instant; then it
stops. A target that fails to build or start never takes traffic: the active version keeps serving, so the
deployment stays `ready`, and its rollout reports which version failed and why (`failed` is kept for a
deployment that nothing serves). A version whose workers crash-loop is marked failed and its predecessor
restored.

Replicas: `deploy` with `replicas` sets them. Without, the first deploy takes them from the manifest (an
applied `Module` manifest's, else the version's) and a later one changes them only when the new version's
manifest asks for another number than the manifest of the version it replaces, so that a count set by hand
survives deploys that leave it alone. Applying a `Module` manifest that sets them scales the deployment
(`scale`).

The reconciler runs on the event loop but reads and writes the database in worker threads, so a database that
is slow, locked or gone holds up the reconciler, never the requests served beside it. `deploy` and `rollback`
are for worker threads too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from modelport.control.audit import SYSTEM, Actor, AuditTrail
from modelport.control.history import History
from modelport.control.modules import ModuleRegistry, ServedModule, start_module
from modelport.control.versions import Versions
from modelport.control.weights import ModelWeights
from modelport.core.errors import (
    BadRequest,
    Conflict,
    ModelportError,
    ModuleNotFound,
    NoPreviousVersion,
    VersionFailed,
    VersionNotFound,
)
from modelport.core.records import DeploymentInfo, RolloutInfo, ServingInfo, ServingRole
from modelport.core.settings import Settings
from modelport.core.states import BuildStatus, DeploymentStatus
from modelport.db import Database, Deployment, Module, ModuleEvent, Version
from modelport.db.database import failure, unavailable
from modelport.db.models import utcnow
from modelport.obs.logs import ModuleLogs

__all__ = ["Deployments", "scale"]

log = logging.getLogger("modelport.deployments")


@dataclass(frozen=True)
class _Desired:
    generation: int
    active: str | None
    target: str | None
    canary: str | None
    percent: int
    replicas: int
    observed: int


class Deployments:
    """The deployment API (deploy, rollback, delete) and its reconciler (`run`)."""

    def __init__(
        self,
        database: Database,
        *,
        audit: AuditTrail,
        versions: Versions,
        registry: ModuleRegistry,
        settings: Settings,
        logs: ModuleLogs,
        weights: ModelWeights | None = None,
        check_weights: Callable[[str, str], None] | None = None,
        history: History | None = None,
    ) -> None:
        self.database = database
        self.audit = audit
        self.versions = versions
        self.registry = registry
        self.settings = settings
        self.logs = logs
        self.weights = weights
        self.check_weights = check_weights
        """Raises `SetupFailed` unless module (first argument) may load weights from bucket (second)."""
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None  # the reconciler's, once it runs
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._warm: dict[str, tuple[ServedModule, float]] = {}
        self._stopping: set[asyncio.Task[None]] = set()
        self._forgetting: set[asyncio.Task[None]] = set()
        self._retry_at: dict[str, float] = {}
        self._failed: set[str] = set()  # modules whose current reconcile pass reported a failure
        self._notes: dict[str, str] = {}
        self.history = history

    # the API

    def deploy(
        self,
        module: str,
        version: str,
        *,
        replicas: int | None = None,
        canary_percent: int | None = None,
        actor: Actor,
        reason: str | None = None,
    ) -> DeploymentInfo:
        """Record a new desired state; the reconciler carries it out. Returns the deployment's info. It waits
        on the database: call it in a worker thread.

        Without `replicas` (and outside a canary), the manifests decide them as the module's docstring says.
        The change is recorded in the audit trail as `actor`'s, with `reason` when the platform deploys by
        itself (a new git tag).
        """
        if replicas is not None and not 1 <= replicas <= 64:
            raise BadRequest("replicas must be between 1 and 64")
        if canary_percent is not None and not 0 <= canary_percent <= 100:
            raise BadRequest("canary_percent must be between 0 and 100")
        with self.database.session() as session:
            self._deployable(session, module, version)
            row = self._row(session, module)
            was = _Was.of(row)
            if replicas is None and canary_percent is None:
                replicas = _manifest_replicas(session, row, version)
            if canary_percent is not None:
                if row.active_version is None:
                    raise Conflict(f"{module} has no active version yet: deploy one before a canary")
                if canary_percent == 0 or version == (row.target_version or row.active_version):
                    row.canary_version, row.canary_percent = None, 0
                else:
                    row.canary_version, row.canary_percent = version, canary_percent
            else:
                row.target_version = None if version == row.active_version else version
                row.canary_version, row.canary_percent = None, 0
            if replicas is not None:
                row.replicas = replicas
            _bump(row)
            session.flush()
            info = self._info(row)
            canary = canary_percent is not None
            event = self._deploy_event(session, version, was, info, canary=canary, actor=actor, reason=reason)
        self.wake()
        asked = {"replicas": replicas, "canary_percent": canary_percent, "reason": reason}
        given = {key: value for key, value in asked.items() if value is not None}
        self.audit.record(actor, "module.deploy", f"module/{module}", version=version, **given)
        if self.history is not None and event is not None:
            self.history.notify(event)
        return info

    def _deploy_event(
        self,
        session: Session,
        version: str,
        was: _Was,
        info: DeploymentInfo,
        *,
        canary: bool,
        actor: Actor,
        reason: str | None,
    ) -> ModuleEvent | None:
        """The history's `deploy` event, or its `canary` event (set, changed or removed) for a canary, added
        to the deploy's own transaction."""
        if self.history is None:
            return None
        details: dict[str, Any] = {"generation": info.generation, "replicas": info.replicas, "reason": reason}
        if was.replicas != info.replicas:
            details["previous_replicas"] = was.replicas
        module, who = info.module, actor.name
        if not canary:
            return self.history.add(
                session,
                module,
                "deploy",
                version=version,
                from_version=was.serving,
                actor=who,
                details=details,
            )
        if was.canary is None and info.canary_version is None:
            return None  # no canary before, none now: nothing changed
        action = "removed" if info.canary_version is None else "set" if was.canary is None else "changed"
        details.update(action=action, percent=info.canary_percent, previous_percent=was.percent or None)
        return self.history.add(
            session,
            module,
            "canary",
            version=info.canary_version or was.canary,
            from_version=was.canary if was.canary != info.canary_version else None,
            actor=who,
            details=details,
        )

    def rollback(self, module: str, *, actor: Actor) -> DeploymentInfo:
        """Switch back to the version that served before the active one (in a worker thread, as `deploy`)."""
        with self.database.session() as session:
            row = self._row(session, module, create=False)
            if row is None or row.previous_version is None:
                raise NoPreviousVersion(f"{module} has no previous version to roll back to")
            self._deployable(session, module, row.previous_version)
            target, replaced = row.previous_version, row.active_version
            row.target_version = target
            row.canary_version, row.canary_percent = None, 0
            _bump(row)
            info = self._info(row)
            event = None
            if self.history is not None:  # in the rollback's transaction: its switch cannot come first
                details = {"generation": info.generation}
                event = self.history.add(
                    session,
                    module,
                    "rollback",
                    version=target,
                    from_version=replaced,
                    actor=actor.name,
                    details=details,
                )
        self.wake()
        self.audit.record(actor, "module.rollback", f"module/{module}", version=target, replaced=replaced)
        if self.history is not None and event is not None:
            self.history.notify(event)
        return info

    async def delete(self, module: str, *, actor: Actor) -> None:
        """Stop serving `module` and forget it, its versions and its deployment."""
        await asyncio.to_thread(self._delete_row, module, actor)
        await self.forget(module)

    def _delete_row(self, module: str, actor: Actor) -> None:
        with self.database.session() as session:
            row = session.get(Module, module)
            if row is None:
                raise ModuleNotFound(f"no module named {module!r}")
            session.delete(row)
        self.audit.record(actor, "module.delete", f"module/{module}")

    async def forget(self, module: str) -> None:
        """Stop every running version of a module that no longer exists."""
        task = self._tasks.pop(module, None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        running = list(self.registry.versions(module).values())
        self.registry.remove(module)
        warm = self._warm.pop(module, None)
        if warm is not None:
            running.append(warm[0])
        await asyncio.gather(*(s.drain(self.settings.drain_seconds) for s in set(running)))

    def forget_soon(self, module: str) -> None:
        """`forget` the module on the reconciler's event loop; from that loop or from any thread (a manifest
        deleted the module)."""
        self._soon(lambda: self._forgetting_task(self.forget(module)))

    def _forgetting_task(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._forgetting.add(task)
        task.add_done_callback(self._forgetting.discard)

    def info(self, module: str) -> DeploymentInfo | None:
        with self.database.session() as session:
            row = session.get(Deployment, module)
            return self._info(row) if row is not None else None

    def infos(self) -> dict[str, DeploymentInfo]:
        """Every module's deployment, by module, read at once (a list of modules asks once, not per
        module)."""
        with self.database.session() as session:
            return {row.module_name: self._info(row) for row in session.scalars(select(Deployment))}

    def wake(self) -> None:
        """Have the reconciler look at the deployments now; from its event loop or from any thread."""
        self._soon(self._wake.set)

    def _soon(self, callback: Callable[[], None]) -> None:
        """Run `callback` on the reconciler's event loop: now when called there, soon from another thread."""
        loop = self._loop
        if loop is None or _running_loop() is loop:
            callback()
            return
        with contextlib.suppress(RuntimeError):  # the loop has closed: nothing is left to do there
            loop.call_soon_threadsafe(callback)

    # the reconciler

    async def run(self, stop: asyncio.Event) -> None:
        """Reconcile every module whenever something changes, and at least every second. The deployments are
        read in a worker thread; while they cannot be, the versions running keep running."""
        self._loop = asyncio.get_running_loop()
        failing = False
        while not stop.is_set():
            self._wake.clear()
            try:
                wanted = await asyncio.to_thread(self._wanted)
            except Exception as exc:
                if not failing:
                    log.warning(
                        "cannot read the deployments (%s); the running versions keep serving",
                        failure(exc),
                        exc_info=not unavailable(exc),
                    )
                failing = True
            else:
                if failing:
                    log.warning("the deployments are read again")
                failing = False
                self._schedule(wanted)
            self._stop_expired_warm()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 1.0)

    async def settle(self) -> None:
        """Wait until the reconcile work scheduled so far is done (for a clean shutdown and for tests)."""
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def close(self) -> None:
        """Stop reconciling and stop every running version, letting in-flight calls finish."""
        await asyncio.gather(*self._forgetting, return_exceptions=True)
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        served: set[ServedModule] = set()
        for name in self.registry.names():
            served.update(self.registry.versions(name).values())
            self.registry.remove(name)
        served.update(s for s, _ in self._warm.values())
        self._warm.clear()
        await asyncio.gather(*(s.drain(self.settings.drain_seconds) for s in served))
        await asyncio.gather(*self._stopping, return_exceptions=True)

    def _wanted(self) -> dict[str, _Desired]:
        with self.database.session() as session:
            rows = session.scalars(select(Deployment)).all()
            return {row.module_name: self._desired(row) for row in rows}

    def _schedule(self, wanted: dict[str, _Desired]) -> None:
        now = time.monotonic()
        for module, desired in wanted.items():
            task = self._tasks.get(module)
            if task is not None and not task.done():
                continue
            if self._retry_at.get(module, 0) > now:
                continue
            if self._needs_work(module, desired):
                self._tasks[module] = asyncio.create_task(self._reconcile(module), name=f"reconcile {module}")

    def _needs_work(self, module: str, desired: _Desired) -> bool:
        active = self._active(module)
        if desired.target is not None:
            return True
        if desired.active is not None and (
            active is None
            or active.version != desired.active
            or active.pool.config.replicas != desired.replicas
        ):
            return True
        if active is not None and active.pool.failure is not None:
            return True
        canary, percent = self.registry.canary(module)
        want_canary = desired.canary if desired.percent > 0 else None
        if (canary.version if canary else None) != want_canary or (
            want_canary and percent != desired.percent
        ):
            return True
        return desired.observed < desired.generation

    async def _reconcile(self, module: str) -> None:
        self._failed.discard(module)
        try:
            desired = await self._load(module)
            if desired is None:
                return
            await self._reconcile_active(module, desired)
            desired = await self._load(module)
            if desired is None:
                return
            await self._reconcile_canary(module, desired)
            await self._check_crash_loop(module)
            await self._finish(module, desired.generation)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._retry_at[module] = time.monotonic() + 5
            if unavailable(exc):
                log.warning("reconciling %s stopped: the database is unavailable (%s)", module, failure(exc))
                return
            log.exception("reconciling %s failed", module)
            await self._report(module, DeploymentStatus.FAILED, f"unexpected error: {exc}")
        finally:
            self.wake()

    async def _reconcile_active(self, module: str, desired: _Desired) -> None:
        active = self._active(module)
        if active is None and desired.active is not None and desired.target is not None:
            # After a restart mid-rollout: serve the old version again before trying the new one.
            await self._switch(module, desired.active, desired, is_target=False)
            desired = await self._load(module) or desired
            active = self._active(module)
        want = desired.target or desired.active
        if want is None:
            return
        if active is not None and active.version == want and active.pool.config.replicas == desired.replicas:
            if desired.target is not None:
                await self._promote(module, desired.target)
            return
        await self._switch(module, want, desired, is_target=desired.target is not None)

    async def _switch(self, module: str, version: str, desired: _Desired, *, is_target: bool) -> None:
        await self._report(module, DeploymentStatus.PROGRESSING, f"starting {version}")
        try:
            served = await self._start(module, version, desired.replicas)
        except ModelportError as exc:
            log.warning("deployment of %s: %s did not start: %s", module, version, exc.message)
            if is_target:
                await self._abandon_target(module, version, exc.message)
            elif (active := self._active(module)) is not None:  # rescaling: the running workers keep serving
                self._retry_at[module] = time.monotonic() + 10
                reason = exc.message
                if active.version == version:
                    reason = f"scaling to {_replicas(desired.replicas)}: {reason}"
                await self._fail_rollout(module, version, reason)
            else:
                self._retry_at[module] = time.monotonic() + 10
                await self._report(module, DeploymentStatus.FAILED, f"{version} did not start: {exc.message}")
            return
        replaced = self.registry.swap(served)
        swapped = utcnow()
        if is_target and await self._promote(module, version):  # recorded once, by the gateway that promoted
            previous = replaced.version if replaced is not None else None
            await asyncio.to_thread(self._record_switch, module, version, previous, swapped)
        if replaced is not None and replaced is not served:
            self._retire(module, replaced)
        log.info("%s now serves %s", module, version)

    def _record_switch(self, module: str, version: str, previous: str | None, swapped: datetime) -> None:
        """The history's `switch` event: `version` took over from `previous` at `swapped`, so long after it
        was asked for (its deploy or rollback event, written with the request, on whichever gateway)."""
        if self.history is None:
            return
        requested = self.history.requested_at(module, version)
        seconds = max(0.0, (swapped - requested).total_seconds()) if requested is not None else None
        self.history.record(
            module, "switch", version=version, from_version=previous, outcome="succeeded", seconds=seconds
        )

    async def _reconcile_canary(self, module: str, desired: _Desired) -> None:
        if self._active(module) is None:
            return
        current, percent = self.registry.canary(module)
        want = desired.canary if desired.percent > 0 else None
        if current is not None and current.version == want:
            if percent != desired.percent:
                self.registry.set_canary(module, current, desired.percent)
            return
        if want is None:
            if current is not None:
                self.registry.set_canary(module, None, 0)
                self._retire(module, current)
            return
        await self._report(module, DeploymentStatus.PROGRESSING, f"starting canary {want}")
        try:
            served = await self._start(module, want, desired.replicas)
        except ModelportError as exc:
            self._failed.add(module)
            reason = f"as the canary: {exc.message}"
            await asyncio.to_thread(self._abandon_canary, module, want, reason)
            return
        replaced = self.registry.set_canary(module, served, desired.percent)
        if replaced is not None:
            self._retire(module, replaced)

    async def _check_crash_loop(self, module: str) -> None:
        active = self._active(module)
        if active is None or active.pool.failure is None:
            return
        message = f"{active.version} is failing: {active.pool.failure}"
        note = await asyncio.to_thread(self._restore_previous, module, active.version, message)
        if note is not None:
            self._notes[module] = note
        active.pool.failure = None

    # starting and stopping versions

    async def _start(self, module: str, version: str, replicas: int) -> ServedModule:
        warm = self._warm.get(module)
        if warm is not None and warm[0].version == version and warm[0].pool.ready:
            served = warm[0]
            if served.pool.config.replicas == replicas:
                del self._warm[module]
                return served
        canary, _ = self.registry.canary(module)
        if canary is not None and canary.version == version and canary.pool.config.replicas == replicas:
            return canary  # promoting the canary: the registry's swap takes it out of the canary slot
        built = await self.versions.built(module, version)
        bucket = built.definition.manifest.spec.model.bucket
        if bucket is not None and self.check_weights is not None:
            await asyncio.to_thread(self.check_weights, module, bucket)
        return await start_module(
            built.definition,
            version=version,
            settings=self.settings,
            replicas=replicas,
            log=self.logs.sink(module, version),
            python=built.environment.python,
            weights=self.weights,
            confined=True,
        )

    def _retire(self, module: str, served: ServedModule) -> None:
        """Keep `served` warm for the grace period (pinned requests still reach it), then stop it."""
        previous = self._warm.pop(module, None)
        if previous is not None and previous[0] is not served:
            self._stop(previous[0])
        if self.settings.rollback_grace_seconds > 0 and served.pool.ready:
            self._warm[module] = (served, time.monotonic() + self.settings.rollback_grace_seconds)
        else:
            self._stop(served)

    def _stop(self, served: ServedModule) -> None:
        self.registry.unpin(served)
        task = asyncio.create_task(served.drain(self.settings.drain_seconds))
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    def _stop_expired_warm(self) -> None:
        now = time.monotonic()
        for module, (served, deadline) in list(self._warm.items()):
            if deadline <= now:
                del self._warm[module]
                self._stop(served)

    # the database side: each `async` method does its work in a worker thread

    async def _load(self, module: str) -> _Desired | None:
        return await asyncio.to_thread(self._read_desired, module)

    def _read_desired(self, module: str) -> _Desired | None:
        with self.database.session() as session:
            row = session.get(Deployment, module)
            return self._desired(row) if row is not None else None

    @staticmethod
    def _desired(row: Deployment) -> _Desired:
        return _Desired(
            generation=row.generation,
            active=row.active_version,
            target=row.target_version,
            canary=row.canary_version,
            percent=row.canary_percent,
            replicas=row.replicas,
            observed=row.observed_generation,
        )

    async def _promote(self, module: str, version: str) -> bool:
        """Make `version` the active one; returns whether it was not already."""
        return await asyncio.to_thread(self._write_promotion, module, version)

    def _write_promotion(self, module: str, version: str) -> bool:
        with self.database.session() as session:
            row = session.get(Deployment, module)
            if row is None:
                return False
            promoted = row.active_version != version
            if promoted:
                row.previous_version = row.active_version
                row.active_version = version
            if row.target_version == version:
                row.target_version = None
            if row.canary_version == version:
                row.canary_version, row.canary_percent = None, 0
            return promoted

    async def _abandon_target(self, module: str, version: str, reason: str) -> None:
        """Give up the target `version`, which did not start for `reason`; the generation is carried out."""
        self._failed.add(module)
        serving = self._active(module) is not None
        await asyncio.to_thread(self._write_abandoned_target, module, version, reason, serving)

    def _write_abandoned_target(self, module: str, version: str, reason: str, serving: bool) -> None:
        with self.database.session() as session:
            row = session.get(Deployment, module)
            if row is None or row.target_version != version:
                return  # a newer change replaced this target: its own pass reports
            row.target_version = None
            row.observed_generation = row.generation
            _write_failure(row, version, reason, serving=serving)
            active = row.active_version
        self._record_failure(module, version, reason, active=active, role="target")

    def _abandon_canary(self, module: str, version: str, reason: str) -> None:
        with self.database.session() as session:
            row = session.get(Deployment, module)
            if row is None or row.canary_version != version:
                return
            row.canary_version, row.canary_percent = None, 0
            row.observed_generation = row.generation
            _write_failure(row, version, reason, serving=True)
            active = row.active_version
        self._record_failure(module, version, reason, active=active, role="canary")

    async def _fail_rollout(self, module: str, version: str, reason: str) -> None:
        """Report that `version` did not start for `reason` while the active version keeps serving."""
        self._failed.add(module)
        await asyncio.to_thread(self._write_failed_rollout, module, version, reason)

    def _write_failed_rollout(self, module: str, version: str, reason: str) -> None:
        with self.database.session() as session:
            row = session.get(Deployment, module)
            if row is None or not _write_failure(row, version, reason, serving=True):
                return  # retried in the same generation: reported already
            active = row.active_version
        self._record_failure(module, version, reason, active=active, role="scale")

    def _record_failure(
        self, module: str, version: str, reason: str, *, active: str | None, role: str
    ) -> None:
        """The history's `failure` event: `version` did not roll out while `active` kept serving (None:
        nothing did). Its `role`: the `target` of a deploy, the `canary`, the active version when rescaled
        (`scale`) or failing as it served (`active`)."""
        if self.history is not None:
            details = {"reason": reason, "role": role}
            self.history.record(module, "failure", version=version, from_version=active, details=details)

    def _restore_previous(self, module: str, failing: str, message: str) -> str | None:
        """Record that version `failing` of the active pool is failing and, when the version before it is
        known, make that the target again; returns the message to report once it serves (None: none)."""
        with self.database.session() as session:
            row = session.get(Deployment, module)
            if row is None:
                return None
            note, reason, restored = None, message, None
            if row.previous_version and row.previous_version != failing and row.target_version is None:
                row.target_version = restored = row.previous_version
                message += f"; rolled back to {row.previous_version}"
                _bump(row)
                note = message
            row.status, row.message = DeploymentStatus.FAILED, message
            generation = row.generation
        self._record_failure(module, failing, reason, active=None, role="active")
        if restored is not None and self.history is not None:
            details = {"generation": generation, "reason": reason}
            self.history.record(
                module, "rollback", version=restored, from_version=failing, actor=SYSTEM.name, details=details
            )
        return note

    async def _finish(self, module: str, generation: int) -> None:
        """Mark `generation` carried out (ready unless this pass failed) if no newer one arrived."""
        failed = module in self._failed
        self._failed.discard(module)
        ready = not failed and self._active(module) is not None
        note = self._notes.get(module, "")
        if await asyncio.to_thread(self._write_finished, module, generation, ready, note):
            self._notes.pop(module, None)
        if not failed:
            self._retry_at.pop(module, None)

    def _write_finished(self, module: str, generation: int, ready: bool, note: str) -> bool:
        """Whether the deployment was marked ready (with `note` as its message)."""
        with self.database.session() as session:
            row = session.get(Deployment, module)
            if row is None or row.generation != generation or row.target_version is not None:
                return False
            if ready:
                row.status, row.message = DeploymentStatus.READY, note
                if row.failed_version == row.active_version:  # it failed to scale, and now serves as asked
                    row.failed_version = row.failure = None
            row.observed_generation = generation
            return ready

    async def _report(self, module: str, status: str, message: str) -> None:
        if status == DeploymentStatus.FAILED:
            self._failed.add(module)
        await asyncio.to_thread(self._write_status, module, status, message)

    def _write_status(self, module: str, status: str, message: str) -> None:
        with self.database.session() as session:
            row = session.get(Deployment, module)
            if row is not None:
                row.status, row.message = status, message

    def _row(self, session: Any, module: str, *, create: bool = True) -> Any:
        row = session.get(Deployment, module)
        if row is None and create:
            row = Deployment(
                module_name=module,
                replicas=1,
                generation=0,
                observed_generation=0,
                canary_percent=0,
                status=DeploymentStatus.PENDING,
                message="",
            )
            session.add(row)
        return row

    @staticmethod
    def _deployable(session: Any, module: str, version: str) -> None:
        if session.get(Module, module) is None:
            raise ModuleNotFound(f"no module named {module!r}")
        row = session.scalars(
            select(Version).where(Version.module_name == module, Version.name == version)
        ).one_or_none()
        if row is None:
            raise VersionNotFound(f"module {module!r} has no version {version!r}")
        if row.build_status == BuildStatus.FAILED:
            raise VersionFailed(f"{module} {version} failed to build: {row.build_error}")

    def _active(self, module: str) -> ServedModule | None:
        return self.registry.active(module)

    def _info(self, row: Deployment) -> DeploymentInfo:
        serving = []
        active = self._active(row.module_name)
        if active is not None:
            serving.append(_serving(active, "active"))
        canary, _ = self.registry.canary(row.module_name)
        if canary is not None:
            serving.append(_serving(canary, "canary"))
        warm = self._warm.get(row.module_name)
        if warm is not None:
            serving.append(_serving(warm[0], "previous"))
        return DeploymentInfo(
            module=row.module_name,
            version=row.active_version,
            target_version=row.target_version,
            previous_version=row.previous_version,
            canary_version=row.canary_version,
            canary_percent=row.canary_percent,
            replicas=row.replicas,
            generation=row.generation,
            observed_generation=row.observed_generation,
            status=row.status,
            message=row.message,
            updated_at=row.updated_at.isoformat() if row.updated_at else None,
            serving=serving,
            rollout=self._rollout(row, canary),
        )

    @staticmethod
    def _rollout(row: Deployment, canary: ServedModule | None) -> RolloutInfo | None:
        """The version that failed to roll out in this generation, else the one rolling out, if any."""
        if row.failed_version is not None:
            return RolloutInfo(version=row.failed_version, status="failed", message=row.failure or "")
        starting = row.target_version
        canary_starting = canary is None or canary.version != row.canary_version
        if starting is None and row.canary_version and canary_starting:
            starting = row.canary_version
        if starting is None:
            return None
        return RolloutInfo(version=starting, status="progressing", message=row.message)


def scale(session: Session, module: str, replicas: int, *, write: bool = True) -> int | None:
    """Scale a deployed module to `replicas` in `session`, as a new generation for the reconciler (wake it
    once the session commits); returns the replicas it had, or None when nothing changes: it runs that many
    already, or it is not deployed (its first deploy reads an applied manifest's replicas itself). With
    `write=False` only the answer is computed."""
    row = session.get(Deployment, module)
    if row is None or row.replicas == replicas or (row.active_version or row.target_version) is None:
        return None
    before = row.replicas
    if write:
        row.replicas = replicas
        _bump(row)
    return before


def _bump(row: Deployment) -> None:
    """Make `row` a new generation: a change the reconciler has yet to carry out, with no failure yet."""
    row.generation = (row.generation or 0) + 1
    row.status, row.message = DeploymentStatus.PROGRESSING, ""
    row.failed_version = row.failure = None
    row.updated_at = utcnow()


def _write_failure(row: Deployment, version: str, reason: str, *, serving: bool) -> bool:
    """Record that `version` did not roll out, for `reason`: the deployment is `ready` if a version still
    serves, `failed` (with the reason as its message) if none does. Returns whether this is news: False when
    this generation already failed so."""
    news = (row.failed_version, row.failure) != (version, reason)
    row.failed_version, row.failure = version, reason
    if serving:
        row.status, row.message = DeploymentStatus.READY, ""
    else:
        row.status, row.message = DeploymentStatus.FAILED, f"{version} did not start: {reason}"
    return news


@dataclass(frozen=True)
class _Was:
    """What a deployment asked for before a change: the version to serve, the canary, the replicas."""

    serving: str | None
    canary: str | None
    percent: int
    replicas: int

    @classmethod
    def of(cls, row: Deployment) -> _Was:
        return cls(
            row.target_version or row.active_version, row.canary_version, row.canary_percent, row.replicas
        )


def _manifest_replicas(session: Session, row: Deployment, version: str) -> int | None:
    """The replicas a deploy of `version` without explicit ones runs; None keeps the deployment's.

    The first deploy takes an applied `Module` manifest's replicas, else the version's manifest's. A later
    deploy takes the version's only when they differ from those of the version it replaces."""
    wanted = _version_replicas(session, row.module_name, version)
    current = row.target_version or row.active_version
    if current is None:
        module = session.get(Module, row.module_name)
        applied = _replicas_of(module.manifest if module is not None else None)
        return applied or wanted
    return wanted if wanted != _version_replicas(session, row.module_name, current) else None


def _version_replicas(session: Session, module: str, version: str) -> int:
    manifest = session.scalars(
        select(Version.manifest).where(Version.module_name == module, Version.name == version)
    ).one_or_none()
    return _replicas_of(manifest) or 1


def _replicas_of(manifest: dict[str, Any] | None) -> int | None:
    """The replicas a stored manifest document sets (at least 1), or None if it sets none."""
    try:
        replicas = (manifest or {})["spec"]["resources"]["replicas"]
    except (KeyError, TypeError):
        return None
    return max(1, replicas) if isinstance(replicas, int) else None


def _replicas(count: int) -> str:
    return f"{count} replica" if count == 1 else f"{count} replicas"


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _serving(served: ServedModule, role: ServingRole) -> ServingInfo:
    return ServingInfo(
        version=served.version, role=role, workers=len(served.pool.pids), ready=served.pool.ready
    )
