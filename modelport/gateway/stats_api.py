"""The statistics route: a module's calls, errors, throughput and latency percentiles over a window.

Its owners (developers of its owner group) and admins may read them; a module the caller may not see is 404,
one it may only call 403, as on the other management routes. The route is a plain function, run in a worker
thread: the rollups are read from the database off the event loop.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from modelport.control.platform import Services
from modelport.control.stats import STEPS, WINDOWS
from modelport.core.records import ModuleStats
from modelport.gateway.auth import principal_of
from modelport.gateway.routes import SIGNED_IN, allow

__all__ = ["stats_router"]


def stats_router(services: Services) -> APIRouter:
    policies = services.policies

    def guard(request: Request, module: str) -> None:
        """Before the query is looked at: 404 for a module the caller may not see, 403 for one it may only
        call."""
        policies.require_manage(principal_of(request.scope), module)

    router = APIRouter(
        prefix="/api/v1", tags=["observability"], dependencies=[allow(SIGNED_IN), Depends(guard)]
    )

    @router.get(
        "/modules/{module}/stats",
        response_model=ModuleStats,
        summary="A module's call statistics",
        description="Calls, errors (5xx), error codes, throughput, batch sizes and latency percentiles "
        "(whole call, queue wait, computation; each within 1 %) over the last `window`, and a series of "
        "`step`s ending with the current one. A step must divide the window, and a series has at most "
        "10080 points; otherwise 422 names the field.",
    )
    def module_stats(
        module: str,
        window: Annotated[
            str, Query(description="How far back: 5m, 1h, 24h, 7d or 30d.", examples=list(WINDOWS))
        ] = "1h",
        step: Annotated[
            str, Query(description="The series' step: 1m, 5m or 1h.", examples=list(STEPS))
        ] = "1m",
        version: Annotated[str | None, Query(max_length=64, description="Only this version's calls.")] = None,
    ) -> ModuleStats:
        return services.stats.stats(module, window=window, step=step, version=version)

    return router
