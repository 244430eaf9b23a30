"""The publication history route: a module's timeline of pushes, builds, deploys, switches, canaries,
rollbacks, scales, failures and its deletion, newest first.

Its owners' developers and admins read it, as they manage the module; a module the caller may not see is
404, one it may only call 403, before the query is even validated. Admins also read the history of a module
deleted since, and every event recorded under its name; its owners see the events since it was created.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from modelport.control.history import EVENT_KINDS, MAX_LIMIT
from modelport.control.platform import Services
from modelport.core.records import HistoryList
from modelport.gateway.auth import principal_of
from modelport.gateway.routes import SIGNED_IN, allow

__all__ = ["history_router"]

_KINDS = ", ".join(EVENT_KINDS)


def history_router(services: Services) -> APIRouter:
    policies, history = services.policies, services.history

    def guard(request: Request) -> None:
        """Before anything else, even validation: who manages the module passes, and an admin also for a
        module that no longer exists but has a history."""
        principal = principal_of(request.scope)
        module = request.path_params["module"]
        if principal.is_admin and policies.policy(module) is None and history.known(module):
            return
        policies.require_manage(principal, module)

    router = APIRouter(prefix="/api/v1", tags=["history"], dependencies=[allow(SIGNED_IN), Depends(guard)])

    @router.get(
        "/modules/{module}/history",
        response_model=HistoryList,
        summary="A module's publication history",
        description="Pushes, builds, deploys, switches, canaries, rollbacks, scales, failures and the "
        "module's deletion, newest first. Page back with `cursor` (a page's `next_cursor`). A bad value is "
        "422 `validation_failed` naming the field.",
    )
    def module_history(
        request: Request,
        module: str,
        since: Annotated[datetime | None, Query(description="Events at or after this time.")] = None,
        until: Annotated[datetime | None, Query(description="Events before this time.")] = None,
        kind: Annotated[
            list[str] | None,
            Query(description=f"Only these kinds ({_KINDS}); repeat it or separate them with commas."),
        ] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
        cursor: Annotated[
            str | None, Query(max_length=64, description="`next_cursor` of the page before.")
        ] = None,
    ) -> HistoryList:
        kinds = [name.strip() for value in kind or () for name in value.split(",") if name.strip()]
        everything = principal_of(request.scope).is_admin
        return history.timeline(
            module, since=since, until=until, kinds=kinds, limit=limit, cursor=cursor, current=not everything
        )

    return router
