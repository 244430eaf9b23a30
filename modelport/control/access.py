"""Who may do what to a module: deny by default, and never tell callers about modules they may not see.

A module is *managed* (versions, deploys, logs, manifests) by admins and by developers in its owner group. It
is *called* (predict, its OpenAPI document, its try-it page) by those, and by whoever its `Api` manifests let
in: members of `access.groups` (exact full paths: `/x/team-a` is not `/team-a`) or anyone when
`access.anonymous`. A caller who may neither manage nor call a module is told it does not exist (404), the
same answer as for a module that really does not exist; one who may call but not manage it gets 403 on the
management routes.

Policies are read from the database and kept for `refresh_seconds` (changes made through this process are
seen at once, through `invalidate`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import ValidationError
from sqlalchemy import select

from modelport.control.identity import Principal
from modelport.core.errors import Forbidden, ModuleNotFound, Unauthorized
from modelport.core.manifests import ApiManifest, Cors
from modelport.core.roles import Role
from modelport.db import ApiDefinition, Database, Module

__all__ = ["ALLOW_ALL", "AccessPolicies", "ApiAccess", "ModulePolicy", "Permit", "may_call", "may_manage"]


@dataclass(frozen=True)
class ApiAccess:
    """What one `Api` manifest grants on its module."""

    name: str
    groups: frozenset[str]
    anonymous: bool
    rate: str | None
    cors: Cors


@dataclass(frozen=True)
class ModulePolicy:
    module: str
    owner: str | None
    apis: tuple[ApiAccess, ...] = ()

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


_MISS_RELOAD_SECONDS = 0.05
"""A module missing from the cache reloads it at most this often: a new module is seen at once, and calls to
modules that do not exist cannot make every request read the database."""


class AccessPolicies:
    """Each module's owner and `Api` grants, read from the database and cached for `refresh_seconds`."""

    def __init__(
        self,
        database: Database,
        *,
        refresh_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.database = database
        self.refresh_seconds = refresh_seconds
        self.clock = clock
        self._policies: dict[str, ModulePolicy] = {}
        self._loaded_at: float | None = None
        self._lock = threading.Lock()

    def invalidate(self) -> None:
        self._loaded_at = None

    def policy(self, module: str) -> ModulePolicy | None:
        """The module's policy; None if there is no such module."""
        policy = self._current(self.refresh_seconds).get(module)
        if policy is None:  # perhaps made a moment ago by another request or process
            policy = self._current(_MISS_RELOAD_SECONDS).get(module)
        return policy

    def _current(self, max_age: float) -> dict[str, ModulePolicy]:
        now = self.clock()
        if self._loaded_at is None or now - self._loaded_at >= max_age:
            with self._lock:
                if self._loaded_at is None or now - self._loaded_at >= max_age:
                    self._policies = self._load()
                    self._loaded_at = now
        return self._policies

    def _load(self) -> dict[str, ModulePolicy]:
        with self.database.session() as session:
            owners = dict(session.execute(select(Module.name, Module.owner)).all())
            grants: dict[str, list[ApiAccess]] = {}
            for name, module, manifest in session.execute(
                select(ApiDefinition.name, ApiDefinition.module_name, ApiDefinition.manifest).order_by(
                    ApiDefinition.name
                )
            ):
                access = _api_access(name, manifest)
                if access is not None:
                    grants.setdefault(module, []).append(access)
        return {
            name: ModulePolicy(name, owner, tuple(grants.get(name, ()))) for name, owner in owners.items()
        }

    # Guards: each returns the policy or raises what the caller may be told.

    def require_call(self, principal: Principal, module: str) -> ModulePolicy:
        policy = self.policy(module)
        if policy is None or not may_call(principal, policy):
            _hidden(principal, module)
        assert policy is not None
        return policy

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


def _hidden(principal: Principal, module: str) -> None:
    if principal.is_anonymous:
        raise Unauthorized("send a bearer token as `Authorization: Bearer <token>`")
    raise ModuleNotFound(f"no module named {module!r}")


def _api_access(name: str, manifest: dict[str, object]) -> ApiAccess | None:
    try:
        api = ApiManifest.model_validate(manifest)
    except ValidationError:  # written by an older schema: it grants nothing until applied again
        return None
    return ApiAccess(
        name=name,
        groups=frozenset(api.spec.access.groups),
        anonymous=api.spec.access.anonymous,
        rate=api.spec.rate_limit.per_caller,
        cors=api.spec.restful_api.cors,
    )


class Permit:
    """What one principal may do to modules, asked by the services that change them."""

    def __init__(self, principal: Principal, policies: AccessPolicies) -> None:
        self.principal, self.policies = principal, policies

    def manage(self, module: str) -> None:
        """Raise unless the principal may manage `module` (404 when it may not even see it)."""
        self.policies.require_manage(self.principal, module)

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
