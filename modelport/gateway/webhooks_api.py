"""The webhook routes: the caller's signing secret, told (when it was made) or made anew (shown once).

Every signed-in caller with an account has a secret of their own; job webhooks are signed with it. The
routes are plain functions, so the database is read in worker threads.
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from modelport.control.platform import Services
from modelport.core.errors import Forbidden
from modelport.core.records import WebhookSecret
from modelport.gateway.auth import principal_of
from modelport.gateway.identity_api import actor_of
from modelport.gateway.routes import SIGNED_IN, allow

__all__ = ["webhooks_router"]


def webhooks_router(services: Services) -> APIRouter:
    webhooks = services.webhooks
    router = APIRouter(prefix="/api/v1", tags=["webhooks"], dependencies=[allow(SIGNED_IN)])

    @router.get(
        "/webhooks/secret",
        response_model=WebhookSecret,
        summary="When your webhook signing secret was made",
        description="The secret itself is shown only when it is made; `secret` is null here. 404 "
        "`webhook_secret_not_found` until you make one.",
    )
    def get_secret(request: Request) -> WebhookSecret:
        user_id = _user_id(request)
        return webhooks.secret_info(user_id)

    @router.post(
        "/webhooks/secret",
        response_model=WebhookSecret,
        summary="Make or rotate your webhook signing secret",
        description="Answers the new secret (`whsec_…`, Standard Webhooks), shown only now: keep it to "
        "verify your webhooks' `webhook-signature`. After a rotation, messages are signed with the previous "
        "secret too for 24 hours, so that receivers can switch without missing one.",
    )
    def rotate_secret(request: Request) -> WebhookSecret:
        user_id = _user_id(request)
        return webhooks.rotate(user_id, actor=actor_of(request))

    return router


def _user_id(request: Request) -> int:
    user_id = principal_of(request.scope).user_id
    if user_id is None:
        raise Forbidden("only callers with an account have webhook secrets: sign in")
    return user_id
