"""The drift route: a module version's recent calls compared with its reference, feature by feature.

Its owners' developers and admins read it, as they manage the module; a module the caller may not see is
404, one it may only call 403, before the query is even validated. The comparison reads the database, so the
route is a plain function, run in a worker thread.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from modelport.control.platform import Services
from modelport.core.records import DriftReport
from modelport.gateway.auth import principal_of
from modelport.gateway.routes import SIGNED_IN, allow

__all__ = ["drift_router"]


def drift_router(services: Services) -> APIRouter:
    policies, drift = services.policies, services.drift

    def guard(request: Request) -> None:
        """Before anything else, even validation: only who manages the module passes."""
        policies.require_manage(principal_of(request.scope), request.path_params["module"])

    router = APIRouter(prefix="/api/v1", tags=["drift"], dependencies=[allow(SIGNED_IN), Depends(guard)])

    @router.get(
        "/modules/{module}/drift",
        response_model=DriftReport,
        summary="A module version's drift",
        description="The version's last `windowCalls` sampled calls against its reference (its first "
        "`referenceCalls` calls, or the JSONL object its `Api` manifest names): each feature's PSI, and for "
        "numbers the KS statistic and p-value, with a verdict per feature and overall (`ok`, `drift`, "
        "`insufficient_data` while the reference or the window is incomplete). Without `version`, the "
        "active version; a version the module does not have is 404 `version_not_found`.",
    )
    def module_drift(
        module: str,
        version: Annotated[
            str | None,
            Query(min_length=1, max_length=64, description="The version (default: the active one)."),
        ] = None,
    ) -> DriftReport:
        return drift.report(module, version)

    return router
