"""CORS per `Api`: preflights answered from the manifest, exact origin echo, untouched without a policy."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from modelport.core.errors import DatabaseUnavailable
from modelport.core.manifests import Cors
from modelport.gateway.cors import ApiCors

SITE = "https://app.example.com"
POLICIES = {
    "/strict": Cors(enabled=True, allowOrigin=[SITE, "http://localhost:5173"], maxAgeSeconds=120),
    "/creds": Cors(enabled=True, allowOrigin=[SITE], allowCredentials=True, allowHeaders=["X-Trace"]),
    "/open": Cors(enabled=True, allowOrigin=["*"]),
    "/any-header": Cors(enabled=True, allowOrigin=[SITE], allowHeaders=["*"]),
    "/off": Cors(enabled=False, allowOrigin=[SITE]),
}
CHUNKS = [b"first,", b"second,", b"third"]


async def echo(request: Request) -> Response:
    return JSONResponse({"method": request.method}, headers={"X-Request-Id": "req-1"})


async def stream(request: Request) -> Response:
    async def chunks() -> AsyncIterator[bytes]:
        for chunk in CHUNKS:
            yield chunk

    return StreamingResponse(chunks(), media_type="text/plain")


async def varies(request: Request) -> Response:
    return Response("ok", headers={"Vary": request.query_params.get("vary", "Accept-Encoding")})


async def policy(scope: Scope) -> Cors | None:
    prefix = "/" + scope["path"].split("/")[1]
    if prefix == "/unknowable":
        raise DatabaseUnavailable()
    return POLICIES.get(prefix)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    inner = Starlette(
        routes=[
            *(
                Route(f"{prefix}/echo", echo, methods=["GET", "POST"])
                for prefix in [*POLICIES, "/none", "/unknowable"]
            ),
            Route("/strict/stream", stream),
            Route("/strict/varies", varies),
        ]
    )
    transport = httpx.ASGITransport(app=ApiCors(inner, policy=policy))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        yield client


def preflight_headers(origin: str, method: str = "POST", headers: str | None = None) -> dict[str, str]:
    sent = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers is not None:
        sent["Access-Control-Request-Headers"] = headers
    return sent


def cors_headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.startswith("access-control-")}


async def test_preflight_from_an_allowed_origin_is_answered_without_the_app(client: httpx.AsyncClient):
    response = await client.options(
        "/strict/echo", headers=preflight_headers(SITE, "POST", "Content-Type, Authorization, X-Unknown")
    )

    assert response.status_code == 204
    assert response.content == b""
    assert cors_headers(response) == {
        "access-control-allow-origin": SITE,
        "access-control-allow-methods": "POST",
        "access-control-allow-headers": "content-type, authorization",
        "access-control-max-age": "120",
    }
    assert response.headers["vary"] == "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"


async def test_preflight_with_credentials_allows_them_and_the_manifest_headers(client: httpx.AsyncClient):
    response = await client.options(
        "/creds/echo", headers=preflight_headers(SITE, "PUT", "x-trace,prefer,idempotency-key,x-request-id")
    )

    assert response.status_code == 204
    assert response.headers["access-control-allow-credentials"] == "true"
    assert response.headers["access-control-allow-origin"] == SITE
    assert response.headers["access-control-allow-methods"] == "PUT"
    assert (
        response.headers["access-control-allow-headers"] == "x-trace, prefer, idempotency-key, x-request-id"
    )
    assert response.headers["access-control-max-age"] == "600"


async def test_preflight_without_credentials_never_allows_them(client: httpx.AsyncClient):
    response = await client.options("/strict/echo", headers=preflight_headers(SITE))

    assert "access-control-allow-credentials" not in response.headers


async def test_preflight_for_an_unknown_method_or_no_headers_grants_neither(client: httpx.AsyncClient):
    response = await client.options("/strict/echo", headers=preflight_headers(SITE, "CONNECT"))

    assert response.status_code == 204
    assert "access-control-allow-methods" not in response.headers
    assert "access-control-allow-headers" not in response.headers


async def test_star_in_allow_headers_grants_whatever_is_requested(client: httpx.AsyncClient):
    response = await client.options(
        "/any-header/echo", headers=preflight_headers(SITE, "POST", "X-One, X-Two")
    )

    assert response.headers["access-control-allow-headers"] == "x-one, x-two"


async def test_preflight_from_an_unlisted_origin_is_refused_without_cors_headers(client: httpx.AsyncClient):
    response = await client.options("/strict/echo", headers=preflight_headers("https://evil.example"))

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"
    assert "https://evil.example" in response.json()["error"]["message"]
    assert cors_headers(response) == {}
    assert response.headers["vary"] == "Origin"


async def test_origins_match_case_insensitively_but_are_echoed_exactly(client: httpx.AsyncClient):
    origin = "HTTPS://App.Example.COM"

    preflight = await client.options("/strict/echo", headers=preflight_headers(origin))
    actual = await client.get("/strict/echo", headers={"Origin": origin})

    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == origin
    assert actual.headers["access-control-allow-origin"] == origin


async def test_origins_must_match_in_full(client: httpx.AsyncClient):
    for origin in ["https://app.example.com.evil.example", "http://app.example.com", "http://localhost:5174"]:
        response = await client.options("/strict/echo", headers=preflight_headers(origin))
        assert response.status_code == 403, origin


async def test_star_without_credentials_answers_star(client: httpx.AsyncClient):
    preflight = await client.options("/open/echo", headers=preflight_headers("https://anyone.example"))
    actual = await client.get("/open/echo", headers={"Origin": "https://anyone.example"})

    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in preflight.headers
    assert actual.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in actual.headers


async def test_actual_request_from_an_allowed_origin_gets_cors_headers(client: httpx.AsyncClient):
    response = await client.post("/creds/echo", headers={"Origin": SITE})

    assert response.status_code == 200
    assert response.json() == {"method": "POST"}
    assert cors_headers(response) == {
        "access-control-allow-origin": SITE,
        "access-control-allow-credentials": "true",
        "access-control-expose-headers": (
            "X-Request-Id, X-Model-Version, Retry-After, "
            "RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset, RateLimit-Policy, "
            "ETag, Content-Range, X-Checksum-Sha256"
        ),
    }
    assert response.headers["vary"] == "Origin"
    assert response.headers["x-request-id"] == "req-1"


async def test_actual_request_from_an_unlisted_origin_gets_no_cors_headers(client: httpx.AsyncClient):
    response = await client.get("/strict/echo", headers={"Origin": "https://evil.example"})

    assert response.status_code == 200
    assert cors_headers(response) == {}
    assert response.headers["vary"] == "Origin"


async def test_an_options_request_without_request_method_is_not_a_preflight(client: httpx.AsyncClient):
    response = await client.options("/strict/echo", headers={"Origin": SITE})

    assert response.status_code == 405  # the app answered
    assert response.headers["access-control-allow-origin"] == SITE


@pytest.mark.parametrize("path", ["/strict/echo", "/off/echo", "/none/echo"])
async def test_requests_without_origin_are_untouched(client: httpx.AsyncClient, path: str):
    response = await client.get(path)

    assert response.status_code == 200
    assert cors_headers(response) == {}
    assert "vary" not in response.headers


@pytest.mark.parametrize("path", ["/off/echo", "/none/echo"])
async def test_disabled_or_missing_policy_leaves_requests_untouched(client: httpx.AsyncClient, path: str):
    actual = await client.get(path, headers={"Origin": SITE})
    preflight = await client.options(path, headers=preflight_headers(SITE))

    assert actual.status_code == 200
    assert cors_headers(actual) == {}
    assert "vary" not in actual.headers
    assert preflight.status_code == 405  # the app's own answer to OPTIONS
    assert cors_headers(preflight) == {}
    assert "vary" not in preflight.headers


async def test_streamed_bodies_go_through_intact(client: httpx.AsyncClient):
    async with client.stream("GET", "/strict/stream", headers={"Origin": SITE}) as response:
        assert response.headers["access-control-allow-origin"] == SITE
        body = b"".join([chunk async for chunk in response.aiter_raw()])

    assert body == b"".join(CHUNKS)


async def test_streamed_bodies_are_not_buffered():
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"vary", b"Accept")]})
        for chunk in CHUNKS:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            sent.append(("app", chunk))
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(("server", message))

    sent: list[tuple[str, object]] = []
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/strict/stream",
        "headers": [(b"origin", SITE.encode())],
    }

    await ApiCors(app, policy=policy)(scope, receive, send)

    start = sent[0][1]
    assert isinstance(start, dict)
    assert (b"access-control-allow-origin", SITE.encode()) in start["headers"]
    assert (b"vary", b"Accept, Origin") in start["headers"]
    order = [who for who, _ in sent]
    assert order == ["server", "server", "app", "server", "app", "server", "app", "server"]


async def test_vary_merges_with_the_apps_own(client: httpx.AsyncClient):
    allowed = await client.get("/strict/varies", headers={"Origin": SITE})
    unlisted = await client.get("/strict/varies", headers={"Origin": "https://evil.example"})

    assert allowed.headers.get_list("vary") == ["Accept-Encoding, Origin"]
    assert unlisted.headers.get_list("vary") == ["Accept-Encoding, Origin"]
    assert allowed.text == "ok"


@pytest.mark.parametrize("vary", ["origin", "Accept-Encoding, Origin", "*"])
async def test_vary_names_origin_once(client: httpx.AsyncClient, vary: str):
    response = await client.get("/strict/varies", params={"vary": vary}, headers={"Origin": SITE})

    assert response.headers.get_list("vary") == [vary]


async def test_rules_that_cannot_be_known_are_answered_as_the_error_without_cors_headers(
    client: httpx.AsyncClient,
):
    preflight = await client.options("/unknowable/echo", headers=preflight_headers(SITE))
    actual = await client.get("/unknowable/echo", headers={"Origin": SITE})
    same_origin = await client.get("/unknowable/echo")  # no Origin: the rules are not asked for

    for response in (preflight, actual):
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "database_unavailable"
        assert response.headers["retry-after"]
        assert cors_headers(response) == {}
    assert same_origin.status_code == 200


async def test_a_buckets_rules_changed_through_this_gateway_count_at_once(platform_app: Any):
    other = "https://other.example.com"
    document: dict[str, Any] = {
        "apiVersion": "modelport/v1",
        "kind": "Storage",
        "metadata": {"name": "photos"},
        "spec": {"cors": {"enabled": True, "allowOrigin": [SITE]}},
    }
    path = "/api/v1/storage/photos/objects/cat.png"
    async with platform_app.client() as admin, platform_app.client("") as browser:
        assert (await admin.post("/api/v1/apply", json={"documents": [document]})).status_code == 200
        before = await browser.options(path, headers=preflight_headers(SITE, "PUT"))
        document["spec"]["cors"]["allowOrigin"] = [other]
        assert (await admin.post("/api/v1/apply", json={"documents": [document]})).status_code == 200
        dropped = await browser.options(path, headers=preflight_headers(SITE, "PUT"))
        added = await browser.options(path, headers=preflight_headers(other, "PUT"))

    assert before.status_code == 204
    assert before.headers["access-control-allow-origin"] == SITE
    assert dropped.status_code == 403
    assert cors_headers(dropped) == {}
    assert added.status_code == 204
    assert added.headers["access-control-allow-origin"] == other
