"""Who may do what to a module: deny by default, and never tell callers about modules they may not see.

A module is *managed* (versions, deploys, logs, manifests) by admins and by developers in its owner group. It
is *called* (predict, its OpenAPI document, its try-it page) by those, and by whoever its `Api` manifests let
in: members of `access.groups` (exact full paths: `/x/team-a` is not `/team-a`) or anyone when
`access.anonymous`. A caller who may neither manage nor call a module is told it does not exist (404), the
same answer as for a module that really does not exist; one who may call but not manage it gets 403 on the
management routes.

Policies are read from the database, kept in memory and read again every `refresh_seconds` (changes made
through this process are read at once, through `reload`). Requests on the event loop never wait on the
database for a module in memory, so the modules known keep being served while the database is unavailable.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import ValidationError
from sqlalchemy import select

from modelport.control.cache import CacheRule
from modelport.control.identity import Principal
from modelport.control.policies import PolicyCache
from modelport.core.errors import Forbidden, ModuleNotFound, PipelineNotFound, Unauthorized
from modelport.core.manifests import (
    ApiCache,
    ApiJobs,
    ApiLogging,
    ApiManifest,
    Cors,
    DriftMonitoring,
    PipelineManifest,
    without_retired_fields,
)
from modelport.core.roles import Role
from modelport.db import ApiDefinition, Database, Module, PipelineDefinition

__all__ = [
    "ALLOW_ALL",
    "AccessPolicies",
    "ApiAccess",
    "ModulePolicy",
    "Permit",
    "PipelinePolicy",
    "check_call",
    "may_call",
    "may_manage",
]

log = logging.getLogger("modelport.access")

_DEFAULT_DRIFT = DriftMonitoring()
_DEFAULT_JOBS = ApiJobs()


@dataclass(frozen=True)
class ApiAccess:
    """What one `Api` manifest grants on its module."""

    name: str
    groups: frozenset[str]
    anonymous: bool
    rate: str | None
    cors: Cors
    sync_timeout: float | None = None
    """`syncTimeoutSeconds`: how long a synchronous call may take from its arrival."""
    logging: ApiLogging | None = None
    """`logging`: what the request log keeps of the module's calls (None: the manifest says nothing)."""
    drift: DriftMonitoring | None = None
    """`monitoring.drift`: how the module's drift is watched (None: the manifest says nothing)."""
    jobs: ApiJobs | None = None
    """`jobs`: how the module's asynchronous jobs are retried and timed (None: the manifest says nothing)."""
    cache: ApiCache | None = None
    """`cache`: how the module's answers are cached (None: the manifest says nothing)."""


@dataclass(frozen=True)
class ModulePolicy:
    module: str
    owner: str | None
    apis: tuple[ApiAccess, ...] = ()
    created: str = ""
    """When the module was made: tells it from one deleted before under the same name."""

    @property
    def sync_timeout(self) -> float | None:
        """The deadline of a synchronous call, from its arrival: the smallest any `Api` sets (None: none)."""
        return min((api.sync_timeout for api in self.apis if api.sync_timeout is not None), default=None)

    @functools.cached_property
    def payload_logging(self) -> ApiLogging | None:
        """The module's payload capture, its `Api`s' `logging` merged (None: no `Api` captures payloads);
        worked out once per policy read, as calls ask for it.

        Capture if any `Api` says so, at the largest sample rate and the smallest `maxBytes` of those that
        do; every path any `Api` redacts is redacted, since a field one `Api` calls sensitive is sensitive
        whichever `Api` let the call in."""
        declared = [api.logging for api in self.apis if api.logging is not None]
        capturing = [spec for spec in declared if spec.payloads]
        if not capturing:
            return None
        return ApiLogging.model_validate(
            {
                "payloads": True,
                "sampleRate": max(spec.sample_rate for spec in capturing),
                "redact": sorted({path for spec in declared for path in spec.redact}),
                "maxBytes": min(spec.max_bytes for spec in capturing),
            }
        )

    @functools.cached_property
    def cache(self) -> CacheRule | None:
        """The module's prediction cache, its `Api`s' `cache` merged (None: no `Api` caches its answers).

        On if any `Api` turns it on, with the smallest `ttlSeconds` and the largest `maxEntries` of those
        that do, and per caller if any says `caller`: that scope is the safer one, since a shared answer is
        one caller's answer given to another."""
        declared = [api.cache for api in self.apis if api.cache is not None]
        if not declared:
            return None
        return CacheRule(
            ttl=min(spec.ttl_seconds for spec in declared),
            max_entries=max(spec.max_entries for spec in declared),
            per_caller=any(spec.scope == "caller" for spec in declared),
            generation=self.created,
        )

    @property
    def drift(self) -> DriftMonitoring:
        """How the module's drift is watched: the `monitoring.drift` of its first `Api` (by name) that sets
        one, else the defaults (the first 500 calls against the last 500, PSI threshold 0.2)."""
        return next((api.drift for api in self.apis if api.drift is not None), _DEFAULT_DRIFT)

    @property
    def jobs(self) -> ApiJobs:
        """How the module's jobs run: the `jobs` of its first `Api` (by name) that sets one, else the
        defaults."""
        return next((api.jobs for api in self.apis if api.jobs is not None), _DEFAULT_JOBS)

    def cors(self) -> Cors | None:
        """The module's browser access: the origins every enabled `Api` of the module allows."""
        enabled = [api.cors for api in self.apis if api.cors.enabled]
        if not enabled:
            return None
        if len(enabled) == 1:
            return enabled[0]
        origins = sorted({origin for cors in enabled for origin in cors.allow_origin})
        credentials = any(cors.allow_credentials for cors in enabled)
        if "*" in origins:
            origins, credentials = ["*"], False
        return Cors.model_validate(
            {
                "enabled": True,
                "allowOrigin": origins,
                "allowCredentials": credentials,
                "allowHeaders": sorted({h for cors in enabled for h in cors.allow_headers}),
                "maxAgeSeconds": min(cors.max_age_seconds for cors in enabled),
            }
        )

    def rates(self, principal: Principal) -> list[tuple[str, str]]:
        """(api name, rate) of each rate limit that applies to `principal` calling the module."""
        return [
            (api.name, api.rate)
            for api in self.apis
            if api.rate is not None and (api.anonymous or api.groups & principal.groups or _staff(principal))
        ]


@dataclass(frozen=True)
class PipelinePolicy(ModulePolicy):
    """A pipeline's owner and `Api` grants (`module` is the pipeline's name), with its manifest."""

    manifest: PipelineManifest | None = None


_PIPELINE = "pipeline:"
"""Pipelines' policies are kept under this prefix (a name never holds a colon) beside the modules'."""


def may_manage(principal: Principal, policy: ModulePolicy) -> bool:
    if principal.role == Role.ADMIN:
        return True
    return principal.role == Role.DEVELOPER and policy.owner is not None and policy.owner in principal.groups


def may_call(principal: Principal, policy: ModulePolicy) -> bool:
    if may_manage(principal, policy):
        return True
    return any(api.anonymous or (api.groups & principal.groups) for api in policy.apis)


def _staff(principal: Principal) -> bool:
    return principal.role in (Role.ADMIN, Role.DEVELOPER)


class AccessPolicies:
    """Each module's owner and `Api` grants, read from the database and kept in memory.

    Threads read through `policy` and the guards, which read the database themselves when memory is older than
    `refresh_seconds` or lacks the module. The event loop reads through `current` and `cached`, which never
    wait on the database for a module in memory: a read that is due runs in a worker thread meanwhile. While
    the database is unavailable the policies in memory keep serving, and a module missing from them is
    `DatabaseUnavailable` (whether it exists, nobody can tell).
    """

    def __init__(
        self,
        database: Database,
        *,
        refresh_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.database = database
        self._cache = PolicyCache(
            self._load, what="the access policies", refresh_seconds=refresh_seconds, clock=clock
        )

    def reload(self) -> None:
        """Read every policy now, in the calling thread (after a change made through this process)."""
        self._cache.reload()

    def policy(self, module: str) -> ModulePolicy | None:
        """The module's policy; None if there is no such module. For threads: the database is read here when
        a read is due."""
        return self._cache.get(module)

    async def current(self, module: str) -> ModulePolicy | None:
        """The module's policy for the event loop; None if there is no such module (see `PolicyCache`)."""
        return await self._cache.current(module)

    def cached(self, module: str) -> ModulePolicy | None:
        """The module's policy in memory, for code on the event loop that cannot wait (CORS, a call's
        deadline)."""
        return self._cache.cached(module)

    async def settle(self) -> None:
        await self._cache.settle()

    # Pipelines: their owner, `Api` grants and manifest, kept beside the modules' policies.

    def pipeline(self, name: str) -> PipelinePolicy | None:
        """The pipeline's policy; None if there is no such pipeline (for threads)."""
        policy = self._cache.get(_PIPELINE + name)
        return policy if isinstance(policy, PipelinePolicy) else None

    async def current_pipeline(self, name: str) -> PipelinePolicy | None:
        """The pipeline's policy for the event loop; None if there is no such pipeline."""
        policy = await self._cache.current(_PIPELINE + name)
        return policy if isinstance(policy, PipelinePolicy) else None

    def cached_pipeline(self, name: str) -> PipelinePolicy | None:
        """The pipeline's policy in memory, for code on the event loop that cannot wait."""
        policy = self._cache.cached(_PIPELINE + name)
        return policy if isinstance(policy, PipelinePolicy) else None

    def known_pipelines(self) -> list[str]:
        """The names of the pipelines in memory (for the event loop: never waits on the database)."""
        return [name[len(_PIPELINE) :] for name in self._cache.names() if name.startswith(_PIPELINE)]

    def modules(self) -> list[ModulePolicy]:
        """Every module's policy, by name (for threads)."""
        policies = self._cache.snapshot()
        return sorted(
            (p for p in policies.values() if not isinstance(p, PipelinePolicy)), key=lambda p: p.module
        )

    def pipelines(self) -> list[PipelinePolicy]:
        """Every pipeline's policy, by name (for threads)."""
        policies = self._cache.snapshot()
        return sorted((p for p in policies.values() if isinstance(p, PipelinePolicy)), key=lambda p: p.module)

    def require_pipeline_call(self, principal: Principal, name: str) -> PipelinePolicy:
        policy = self.pipeline(name)
        check_call(principal, name, policy, what="pipeline")
        assert policy is not None
        return policy

    def _load(self) -> dict[str, ModulePolicy]:
        with self.database.session() as session:
            modules = session.execute(select(Module.name, Module.owner, Module.created_at)).all()
            pipelines = session.execute(
                select(PipelineDefinition.name, PipelineDefinition.owner, PipelineDefinition.manifest)
            ).all()
            grants: dict[str, list[ApiAccess]] = {}
            for name, module, pipeline, manifest in session.execute(
                select(
                    ApiDefinition.name,
                    ApiDefinition.module_name,
                    ApiDefinition.pipeline_name,
                    ApiDefinition.manifest,
                ).order_by(ApiDefinition.name)
            ):
                access = _api_access(name, manifest)
                if access is not None:
                    grants.setdefault(module if module is not None else _PIPELINE + pipeline, []).append(
                        access
                    )
        policies = {
            name: ModulePolicy(name, owner, tuple(grants.get(name, ())), created=created.isoformat())
            for name, owner, created in modules
        }
        for name, owner, manifest in pipelines:
            try:
                parsed = PipelineManifest.model_validate(manifest)
            except ValidationError:  # written by an older schema: not served until applied again
                log.warning("pipeline %r no longer matches the Pipeline schema; apply it again", name)
                continue
            policies[_PIPELINE + name] = PipelinePolicy(
                name, owner, tuple(grants.get(_PIPELINE + name, ())), manifest=parsed
            )
        return policies

    # Guards: each returns the policy or raises what the caller may be told.

    def require_call(self, principal: Principal, module: str) -> ModulePolicy:
        return check_call(principal, module, self.policy(module))

    def require_manage(self, principal: Principal, module: str) -> ModulePolicy:
        policy = self.policy(module)
        if policy is None or not (may_manage(principal, policy) or may_call(principal, policy)):
            _hidden(principal, module)
        assert policy is not None
        if not may_manage(principal, policy):
            raise Forbidden(f"managing module {module!r} needs an admin or a developer of its owner group")
        return policy

    def visible(self, principal: Principal, modules: list[str]) -> list[str]:
        """The modules of `modules` the principal may manage."""
        return [m for m in modules if (p := self.policy(m)) is not None and may_manage(principal, p)]


def check_call(
    principal: Principal, module: str, policy: ModulePolicy | None, *, what: str = "module"
) -> ModulePolicy:
    """`policy`, the module's (or the pipeline's, `what`), if `principal` may call it; otherwise what the
    caller may be told."""
    if policy is None or not may_call(principal, policy):
        _hidden(principal, module, what)
    assert policy is not None
    return policy


def _hidden(principal: Principal, module: str, what: str = "module") -> None:
    if principal.is_anonymous:
        raise Unauthorized("send a bearer token as `Authorization: Bearer <token>`")
    if what == "pipeline":
        raise PipelineNotFound(f"no pipeline named {module!r}")
    raise ModuleNotFound(f"no module named {module!r}")


def _api_access(name: str, manifest: dict[str, object]) -> ApiAccess | None:
    try:
        api = ApiManifest.model_validate(without_retired_fields(manifest))
    except ValidationError:  # written by an older schema: it grants nothing until applied again
        return None
    return ApiAccess(
        name=name,
        groups=frozenset(api.spec.access.groups),
        anonymous=api.spec.access.anonymous,
        rate=api.spec.rate_limit.per_caller,
        cors=api.spec.restful_api.cors,
        sync_timeout=api.spec.sync_timeout_seconds,
        logging=api.spec.logging,
        drift=api.spec.monitoring.drift,
        jobs=api.spec.jobs,
        cache=api.spec.cache,
    )


class Permit:
    """What one principal may do to modules, asked by the services that change them."""

    def __init__(self, principal: Principal, policies: AccessPolicies) -> None:
        self.principal, self.policies = principal, policies

    def manage(self, module: str) -> None:
        """Raise unless the principal may manage `module` (404 when it may not even see it)."""
        self.policies.require_manage(self.principal, module)

    def call(self, module: str) -> None:
        """Raise unless the principal may call `module` (a pipeline it makes may only call those)."""
        self.policies.require_call(self.principal, module)

    def manage_pipeline(self, name: str) -> None:
        """Raise unless the principal may manage the pipeline `name` (404 when it may not even see it)."""
        policy = self.policies.pipeline(name)
        if policy is None or not (may_manage(self.principal, policy) or may_call(self.principal, policy)):
            _hidden(self.principal, name, "pipeline")
        assert policy is not None
        if not may_manage(self.principal, policy):
            raise Forbidden(f"managing pipeline {name!r} needs an admin or a developer of its owner group")

    def new_owner(self, declared: str | None) -> str | None:
        """The owner group of a module the principal creates, or whose owner it changes to `declared`.

        Admins may name any group, or none (a module only admins manage). Developers must name one of
        their groups; with no name, their only group is taken.
        """
        principal = self.principal
        if principal.role == Role.ADMIN:
            return declared
        if principal.role != Role.DEVELOPER:
            raise Forbidden("creating modules needs the developer or admin role")
        if declared is not None:
            if declared not in principal.groups:
                raise Forbidden(f"you may only give modules to your own groups, and {declared!r} is not one")
            return declared
        if len(principal.groups) == 1:
            return next(iter(principal.groups))
        raise Forbidden(
            "name the group that will own the module in its manifest (`spec.owner`); "
            f"yours: {', '.join(sorted(principal.groups)) or 'none'}"
        )


ALLOW_ALL = None
"""Passed instead of a `Permit` by the platform's own acts (git sources, the demo)."""
