"""Who may call a module, and how often: the checks in front of the inference routes.

The principal comes from `Authenticate`; which routes are module routes, and which of them are metered, their
rules say (`gateway/routes.py`). A caller the module's `Api` manifests do not let in is told the
module does not exist (404; 401 when it sent no credentials). Metered calls count against each `Api` rate
limit that applies to the caller (`rateLimit.perCaller`), keyed by the `Api` and the caller; the tightest
decision's `RateLimit-*` headers go on the answer, and a call over a limit gets 429 with `Retry-After`.
The policies come from memory (`AccessPolicies.current`): no call waits on the database for a module known.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelport.control.access import AccessPolicies, ModulePolicy, check_call
from modelport.core.errors import ModelportError, TooManyRequests
from modelport.core.manifests import Cors
from modelport.gateway.auth import caller_key, principal_of
from modelport.gateway.errors import error_response
from modelport.gateway.ratelimit import Decision, RateLimiter
from modelport.gateway.routes import RouteTable

__all__ = ["CallGate", "metered"]


async def metered(limiter: RateLimiter, policy: ModulePolicy, scope: Scope) -> Decision | None:
    """Count one call of the request's caller against each `Api` rate limit of `policy` that applies to it;
    the tightest decision (the first refusal, else the one with the fewest calls left), or None where no
    limit applies. Every route that meters calls counts them here, under the same keys."""
    principal = principal_of(scope)
    decision: Decision | None = None
    for api, rate in policy.rates(principal):
        outcome = await limiter.hit(f"{api}:{caller_key(scope)}", rate)
        if decision is None or outcome.remaining < decision.remaining or not outcome.allowed:
            decision = outcome
        if not outcome.allowed:
            break
    return decision


class CallGate:
    """Refuses calls to modules the caller may not call, and calls over the caller's rate limits."""

    def __init__(
        self, app: ASGIApp, *, policies: AccessPolicies, limiter: RateLimiter, routes: RouteTable
    ) -> None:
        self.app, self.policies, self.limiter, self.routes = app, policies, limiter, routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = self.routes.match(scope) if scope["type"] == "http" else None
        if match is None or not match.rule.called:
            await self.app(scope, receive, send)
            return
        principal = principal_of(scope)
        try:
            if match.rule.pipeline:
                name = match.params["pipeline"]
                found = await self.policies.current_pipeline(name)
                policy = check_call(principal, name, found, what="pipeline")
            else:
                module = match.params["module"]
                policy = check_call(principal, module, await self.policies.current(module))
            decision = await metered(self.limiter, policy, scope) if match.rule.metered else None
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

    def cors(self, module: str, *, pipeline: bool = False) -> Cors | None:
        """The CORS rules of a module (or pipeline): those of its `Api`s (from memory: a preflight never
        waits)."""
        policy = self.policies.cached_pipeline(module) if pipeline else self.policies.cached(module)
        return None if policy is None else policy.cors()
