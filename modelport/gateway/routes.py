"""Who may call each route: one rule per route, declared where the route is declared.

A route says who may call it with `dependencies=[allow(RULE)]` (on the route or on its router), and the
pure-ASGI layers in front of the application read that rule back from the route table instead of restating
paths: `Authenticate` lets a request without credentials through only to a route whose rule accepts
anonymous callers, `CallGate` checks the module's `Api` manifests on module routes and counts metered ones
against their rate limits, and `ApiCors` applies the module's or the bucket's CORS rules.

`RouteTable` refuses to be built over a route that declares no rule, or more than one, so a route cannot be
added without saying who may call it. A path that matches no route is treated as needing credentials.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from fastapi import Depends
from fastapi.routing import RouteContext, iter_route_contexts
from starlette.routing import BaseRoute, Match
from starlette.types import Scope

__all__ = [
    "ANYONE",
    "CONSOLE",
    "MODULE",
    "PIPELINE",
    "PIPELINE_CALL",
    "PREDICT",
    "PRESIGNED",
    "SIGNED_IN",
    "RouteMatch",
    "RouteTable",
    "Rule",
    "UndeclaredAccess",
    "allow",
]


@dataclass(frozen=True)
class Rule:
    """Who may call a route.

    `anonymous`: a request without credentials goes on (as the anonymous principal) for the route to accept
    or refuse; `module`: the route is about the module named by its `{module}` parameter, whose `Api`
    manifests decide who may call it; `metered`: each call counts against those manifests' rate limits;
    `presigned`: a request without credentials goes on if its query carries a signature, which the route
    checks; `pipeline`: as `module`, for the pipeline named by its `{pipeline}` parameter; `console`: a page
    of the web console, which sends callers without a session to its sign-in page and checks its forms'
    CSRF field itself.
    """

    name: str
    anonymous: bool
    module: bool = False
    metered: bool = False
    presigned: bool = False
    pipeline: bool = False
    console: bool = False

    @property
    def called(self) -> bool:
        """Whether an `Api` manifest decides who may call the route (a module's or a pipeline's)."""
        return self.module or self.pipeline

    async def __call__(self) -> None:
        """As a FastAPI dependency the rule does nothing: the middleware has already applied it."""


ANYONE = Rule("anyone", anonymous=True)
"""No credentials needed: liveness, readiness, the platform's documentation, the password exchange."""
SIGNED_IN = Rule("signed-in", anonymous=False)
"""A valid token; the route's own guard checks the role and what the caller may see."""
MODULE = Rule("module", anonymous=True, module=True)
"""Whoever the module's `Api` manifests let in, anonymous callers included if one allows them."""
PREDICT = Rule("predict", anonymous=True, module=True, metered=True)
"""As `MODULE`, and each call counts against the `Api` rate limits."""
PIPELINE = Rule("pipeline", anonymous=True, pipeline=True)
"""Whoever the pipeline's `Api` manifests let in, anonymous callers included if one allows them."""
PIPELINE_CALL = Rule("pipeline-call", anonymous=True, pipeline=True, metered=True)
"""As `PIPELINE`, and each call counts against the `Api` rate limits."""
CONSOLE = Rule("console", anonymous=True, console=True)
"""The web console's pages: a session cookie or nothing; the console signs in whoever has no session."""
PRESIGNED = Rule("presigned", anonymous=False, presigned=True)
"""A valid token, or a presigned URL's signature (checked by the route)."""


def allow(rule: Rule) -> Any:
    """The dependency that declares `rule` on a route or a router: `dependencies=[allow(SIGNED_IN)]`."""
    return Depends(rule)


class UndeclaredAccess(Exception):
    """A route says nothing about who may call it, or says it twice."""


@dataclass(frozen=True)
class RouteMatch:
    """The rule of the route a request is for, with the route's path parameters (empty without a route)."""

    rule: Rule
    route: RouteContext | None = None
    params: Mapping[str, Any] = field(default_factory=dict)


_NO_ROUTE = RouteMatch(SIGNED_IN)


class RouteTable:
    """The application's routes with their rules, matched exactly as the router matches them.

    `routes` are the application's (FastAPI includes routers lazily: they are read through
    `iter_route_contexts`, which gives each route its full path and all its dependencies). `others` gives the
    rules of routes that cannot carry a dependency (mounts, the OpenAPI document's route), by path. Matches
    are remembered per method and path (at most `cache_size` of them).
    """

    def __init__(
        self, routes: Iterable[BaseRoute], *, others: Mapping[str, Rule] | None = None, cache_size: int = 4096
    ) -> None:
        others = others or {}
        self.entries: list[tuple[RouteContext, Rule]] = [
            (route, _rule_of(route, others)) for route in iter_route_contexts(list(routes))
        ]
        self._match: Callable[[str, str], RouteMatch] = lru_cache(maxsize=cache_size)(self._find)

    def match(self, scope: Scope) -> RouteMatch:
        """The rule for this request: its route's by path and method, else the first route with its path."""
        return self._match(scope["method"], scope["path"])

    def route(self, path: str) -> RouteContext:
        """The first route declared at `path` (a path template such as `/api/v1/modules/{module}/predict`)."""
        return next(route for route, _ in self.entries if route.path == path)

    def rules(self) -> dict[tuple[str, str], Rule]:
        """Every declared rule by method and path as the OpenAPI document writes it (`{key}`, not
        `{key:path}`)."""
        table: dict[tuple[str, str], Rule] = {}
        for route, rule in self.entries:
            for method in route.methods or {"*"}:
                table[(method, route.path_format or "")] = rule
        return table

    def _find(self, method: str, path: str) -> RouteMatch:
        scope = {"type": "http", "method": method, "path": path, "root_path": ""}
        partial: RouteMatch | None = None
        for route, rule in self.entries:
            found, child = route.matches(scope)
            if found is Match.FULL:
                return RouteMatch(rule, route, child.get("path_params", {}))
            if found is Match.PARTIAL and partial is None:
                partial = RouteMatch(rule, route, child.get("path_params", {}))
        return partial or _NO_ROUTE


def _rule_of(route: RouteContext, others: Mapping[str, Rule]) -> Rule:
    path = getattr(route, "path", repr(route))
    dependencies = getattr(route, "dependencies", None) or []
    declared = [d.dependency for d in dependencies if isinstance(d.dependency, Rule)]
    if path in others:
        declared.append(others[path])
    if len(declared) != 1:
        problem = "declares no access rule" if not declared else "declares more than one access rule"
        raise UndeclaredAccess(f"route {path} {problem}: add dependencies=[allow(RULE)] where it is declared")
    return declared[0]
