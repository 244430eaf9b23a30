"""Cross-origin access per `Api` (and per bucket, from `Storage` manifests), as pure ASGI middleware around
the whole gateway.

It sits outside authentication because browsers send preflights without credentials. Only requests that
carry an `Origin` on a path whose `Api` enables CORS are touched: allowed origins get their exact origin
echoed back, others get no `Access-Control-*` header at all, so the browser keeps the response from the page.
When the rules cannot be known (a bucket the database must be asked about while it is unavailable), the
request is answered with that error, without `Access-Control-*` headers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelport.core.errors import Forbidden, ModelportError
from modelport.core.manifests import Cors
from modelport.gateway.errors import error_response

__all__ = ["ApiCors"]

ALLOWED_METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS"})
SAFE_HEADERS = frozenset({"authorization", "content-type", "prefer", "idempotency-key", "x-request-id"})
"""Request headers every CORS-enabled `Api` accepts, on top of its manifest's `allowHeaders`."""
EXPOSED_HEADERS = (
    "X-Request-Id, X-Model-Version, Retry-After, "
    "RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset, RateLimit-Policy, "
    "ETag, Content-Range, X-Checksum-Sha256"
)
_PREFLIGHT_VARY = ("Origin", "Access-Control-Request-Method", "Access-Control-Request-Headers")


class ApiCors:
    """Answers preflights and adds CORS headers following `await policy(scope)`, the `Cors` of the request's
    route (its module's `Api`s, or its bucket's `Storage` manifest), asked only of requests with an `Origin`.

    A request without a policy, or with a disabled one, passes through untouched. Bodies are never buffered.
    """

    def __init__(self, app: ASGIApp, *, policy: Callable[[Scope], Awaitable[Cors | None]]) -> None:
        self.app, self.policy = app, policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        try:
            cors = await self.policy(scope) if origin is not None else None
        except ModelportError as exc:
            await error_response(exc)(scope, receive, send)
            return
        if origin is None or cors is None or not cors.enabled:
            await self.app(scope, receive, send)
            return
        allowed = _allows(cors, origin)
        if scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
            response = _preflight(cors, origin, headers) if allowed else _refused(origin)
            await response(scope, receive, send)
            return
        added = _actual_headers(cors, origin) if allowed else {}

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                response_headers = MutableHeaders(scope=message)
                response_headers.update(added)
                _add_vary(response_headers, "Origin")
            await send(message)

        await self.app(scope, receive, send_with_cors)


def _allows(cors: Cors, origin: str) -> bool:
    return "*" in cors.allow_origin or origin.lower() in cors.allow_origin


def _allow_origin(cors: Cors, origin: str) -> dict[str, str]:
    # `*` with credentials is refused when the manifest is validated, so `*` here means "no credentials".
    headers = {"Access-Control-Allow-Origin": "*" if "*" in cors.allow_origin else origin}
    if cors.allow_credentials:
        headers["Access-Control-Allow-Credentials"] = "true"
    return headers


def _preflight(cors: Cors, origin: str, request: Headers) -> Response:
    headers = _allow_origin(cors, origin)
    method = request["access-control-request-method"]
    if method in ALLOWED_METHODS:
        headers["Access-Control-Allow-Methods"] = method
    requested = [h.strip().lower() for h in request.get("access-control-request-headers", "").split(",")]
    accepted = SAFE_HEADERS | {h.lower() for h in cors.allow_headers}
    granted = [h for h in requested if h and ("*" in accepted or h in accepted)]
    if granted:
        headers["Access-Control-Allow-Headers"] = ", ".join(granted)
    headers["Access-Control-Max-Age"] = str(cors.max_age_seconds)
    headers["Vary"] = ", ".join(_PREFLIGHT_VARY)
    return Response(status_code=204, headers=headers)


def _refused(origin: str) -> Response:
    # No Access-Control-* header at all: the browser then refuses the actual request itself.
    response = error_response(Forbidden(f"origin {origin} is not allowed to call this API from a browser"))
    response.headers["Vary"] = "Origin"
    return response


def _actual_headers(cors: Cors, origin: str) -> dict[str, str]:
    return {**_allow_origin(cors, origin), "Access-Control-Expose-Headers": EXPOSED_HEADERS}


def _add_vary(headers: MutableHeaders, name: str) -> None:
    """Adds `name` to `Vary`, merging the header's existing lines and leaving a `Vary: *` alone."""
    present = [v.strip() for line in headers.getlist("vary") for v in line.split(",") if v.strip()]
    if "*" not in present and name.lower() not in {v.lower() for v in present}:
        present.append(name)
    headers["Vary"] = ", ".join(present)
