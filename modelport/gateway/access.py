"""Who may call a module, and how often: the checks in front of the inference routes.

The principal comes from `Authenticate`. A caller the module's `Api` manifests do not let in is told the
module does not exist (404; 401 when it sent no credentials). Calls to predict count against each `Api` rate
limit that applies to the caller (`rateLimit.perCaller`), keyed by the `Api` and the caller; the tightest
decision's `RateLimit-*` headers go on the answer, and a call over a limit gets 429 with `Retry-After`.
"""

from __future__ import annotations

import re

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelport.control.access import AccessPolicies
from modelport.core.errors import ModelportError, TooManyRequests
from modelport.core.manifests import Cors
from modelport.gateway.auth import caller_key, principal_of
from modelport.gateway.errors import error_response
from modelport.gateway.ratelimit import Decision, RateLimiter

__all__ = ["CallGate", "module_of"]

_MODULE_PATH = re.compile(r"^/api/v1/modules/([^/]+)/(predict|openapi\.json|try|outputs/[^/]+)$")
_ANY_MODULE_PATH = re.compile(r"^/api/v1/modules/([^/]+)/")


def module_of(path: str) -> str | None:
    """The module an inference path is about."""
    match = _ANY_MODULE_PATH.match(path)
    return match.group(1) if match else None


class CallGate:
    """Refuses calls to modules the caller may not call, and calls over the caller's rate limits."""

    def __init__(self, app: ASGIApp, *, policies: AccessPolicies, limiter: RateLimiter) -> None:
        self.app, self.policies, self.limiter = app, policies, limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = _MODULE_PATH.match(scope["path"]) if scope["type"] == "http" else None
        if match is None:
            await self.app(scope, receive, send)
            return
        principal = principal_of(scope)
        try:
            policy = self.policies.require_call(principal, match.group(1))
            decision: Decision | None = None
            if match.group(2) == "predict":
                for api, rate in policy.rates(principal):
                    outcome = await self.limiter.hit(f"{api}:{caller_key(scope)}", rate)
                    if decision is None or outcome.remaining < decision.remaining or not outcome.allowed:
                        decision = outcome
                    if not outcome.allowed:
                        break
        except ModelportError as exc:
            await error_response(exc)(scope, receive, send)
            return
        if decision is not None and not decision.allowed:
            response = error_response(
                TooManyRequests("too many requests for this API; slow down", retry_after=decision.reset_after)
            )
            response.headers.update(decision.headers())
            await response(scope, receive, send)
            return
        if decision is None:
            await self.app(scope, receive, send)
            return
        headers = decision.headers()

        async def send_with_limits(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).update(headers)
            await send(message)

        await self.app(scope, receive, send_with_limits)

    def cors(self, path: str) -> Cors | None:
        """The CORS rules for a path: those of the `Api`s of the module it is about."""
        module = module_of(path)
        if module is None:
            return None
        policy = self.policies.policy(module)
        return None if policy is None else policy.cors()
