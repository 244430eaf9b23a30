"""`GET /metrics`: the platform's Prometheus metrics, for an admin's token, or for anyone when
`MODELPORT_METRICS_PUBLIC` is set (the rule is chosen when the application is built)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from modelport.control.platform import Services
from modelport.core.errors import Forbidden
from modelport.gateway.auth import principal_of
from modelport.gateway.routes import ANYONE, SIGNED_IN, allow
from modelport.obs.metrics import CONTENT_TYPE

__all__ = ["metrics_router"]


def _admin(request: Request) -> None:
    """Metrics name every module and its traffic: only admins may scrape them."""
    if not principal_of(request.scope).is_admin:
        raise Forbidden("scraping the metrics needs the admin role (or MODELPORT_METRICS_PUBLIC=true)")


def metrics_router(services: Services) -> APIRouter:
    public = services.settings.metrics_public
    guards = [allow(ANYONE)] if public else [allow(SIGNED_IN), Depends(_admin)]
    router = APIRouter(tags=["observability"], dependencies=guards)
    metrics = services.metrics

    @router.get(
        "/metrics",
        response_class=Response,
        summary="Prometheus metrics",
        description="Every metric of the platform in the Prometheus text format: calls by module, version "
        "and error code, their durations, batch sizes, calls in flight, worker restarts, build and deploy "
        "durations, drift scores.",
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    async def scrape() -> Response:
        return Response(await metrics.scrape(), headers={"Content-Type": CONTENT_TYPE})

    return router
