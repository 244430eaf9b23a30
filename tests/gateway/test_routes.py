"""Every route says who may call it, once, and the middleware's decisions follow from what it says.

The platform's application is built in-process by the real composition root (`platform_app`), so these
tests see every route that `modelport server` serves.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI

from modelport.gateway.routes import ANYONE, MODULE, PREDICT, PRESIGNED, SIGNED_IN, RouteTable, allow
from modelport.gateway.routes import UndeclaredAccess as Undeclared

# The operations callable without credentials. A new anonymous route must be added here on purpose.
ANONYMOUS_OPERATIONS = {
    ("GET", "/healthz"): "anyone",
    ("GET", "/readyz"): "anyone",
    ("POST", "/api/v1/auth/token"): "anyone",
    ("GET", "/api/v1/auth/config"): "anyone",
    ("POST", "/api/v1/modules/{module}/predict"): "predict",
    ("GET", "/api/v1/modules/{module}/openapi.json"): "module",
    ("GET", "/api/v1/modules/{module}/try"): "module",
    ("GET", "/api/v1/modules/{module}/outputs/{name}"): "module",
    ("POST", "/api/v1/modules/{module}/jobs"): "predict",
    ("POST", "/api/v1/modules/{module}/batches"): "predict",
    ("GET", "/api/v1/jobs/{job_id}"): "anyone",
    ("POST", "/api/v1/jobs/{job_id}/cancel"): "anyone",
    ("POST", "/api/v1/pipelines/{pipeline}/predict"): "pipeline-call",
    ("POST", "/api/v1/pipelines/{pipeline}/jobs"): "pipeline-call",
    ("GET", "/api/v1/pipelines/{pipeline}/openapi.json"): "pipeline",
    ("GET", "/api/v1/pipelines/{pipeline}/try"): "pipeline",
    ("GET", "/api/v1/pipelines/{pipeline}/outputs/{name}"): "pipeline",
}
PRESIGNED_OPERATIONS = {
    ("PUT", "/api/v1/storage/{bucket}/objects/{key}"),
    ("GET", "/api/v1/storage/{bucket}/objects/{key}"),
    ("HEAD", "/api/v1/storage/{bucket}/objects/{key}"),
}


async def _nothing() -> dict[str, str]:
    return {}


def test_a_route_that_says_nothing_about_access_stops_the_table() -> None:
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app.add_api_route("/ok", _nothing, dependencies=[allow(ANYONE)])
    app.add_api_route("/forgotten", _nothing)
    with pytest.raises(Undeclared, match="/forgotten declares no access rule"):
        RouteTable(app.routes)


def test_a_route_that_says_it_twice_stops_the_table() -> None:
    router = APIRouter(dependencies=[allow(SIGNED_IN)])
    router.add_api_route("/twice", _nothing, dependencies=[allow(ANYONE)])
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app.include_router(router, prefix="/api")
    with pytest.raises(Undeclared, match="/api/twice declares more than one access rule"):
        RouteTable(app.routes)


def test_a_router_rule_reaches_its_routes_and_paths_match_as_the_router_matches() -> None:
    router = APIRouter(prefix="/m", dependencies=[allow(MODULE)])
    router.add_api_route("/{module}/files/{key:path}", _nothing)
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app.include_router(router)
    app.add_api_route("/{module}/predict", _nothing, methods=["POST"], dependencies=[allow(PREDICT)])
    table = RouteTable(app.routes)

    files = table.match({"method": "GET", "path": "/m/a/files/x/y.png"})
    assert (files.rule, dict(files.params)) == (MODULE, {"module": "a", "key": "x/y.png"})
    # Another method on a known path keeps its route's rule (the router answers 405, not 401).
    assert table.match({"method": "GET", "path": "/b/predict"}).rule == PREDICT
    # A path no route serves needs credentials.
    unknown = table.match({"method": "GET", "path": "/nowhere"})
    assert (unknown.rule, unknown.route) == (SIGNED_IN, None)


async def test_every_platform_operation_declares_its_rule_in_the_document(platform_app: Any) -> None:
    async with platform_app.client("") as http:
        document = (await http.get("/openapi.json")).json()
    operations = {
        (method.upper(), path): operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
    }
    assert len(operations) > 30
    undeclared = [key for key, operation in operations.items() if "x-access" not in operation]
    assert undeclared == []
    anonymous = {
        key: op["x-access"]
        for key, op in operations.items()
        if op["x-access"] in ("anyone", "module", "predict", "pipeline", "pipeline-call")
    }
    assert anonymous == ANONYMOUS_OPERATIONS
    presigned = {key for key, op in operations.items() if op["x-access"] == PRESIGNED.name}
    assert presigned == PRESIGNED_OPERATIONS
    # The document says the same: no security for public operations, an optional token for module ones.
    assert operations[("GET", "/healthz")]["security"] == []
    assert operations[("POST", "/api/v1/modules/{module}/predict")]["security"] == [{}, {"bearer": []}]
    assert "security" not in operations[("GET", "/api/v1/users")]  # the document's default: a token


async def test_without_credentials_every_other_operation_is_401(platform_app: Any) -> None:
    async with platform_app.client("") as http:
        document = (await http.get("/openapi.json")).json()
        refused = []
        for path, item in document["paths"].items():
            for method, operation in item.items():
                if operation["x-access"] in ("anyone", "module", "predict"):
                    continue
                url = re.sub(r"{(\w+)}", "x1", path)
                response = await http.request(method.upper(), url)
                refused.append((method, path, response.status_code))
                if method != "head":
                    assert response.json()["error"]["code"] == "unauthorized", (method, path)
    assert refused
    assert {status for _, _, status in refused} == {401}, refused


async def test_anonymous_operations_are_not_refused_for_lack_of_credentials(platform_app: Any) -> None:
    async with platform_app.client("") as http:
        assert (await http.get("/healthz")).status_code == 200
        assert (await http.get("/docs")).status_code == 200
        assert (await http.get("/static/swagger-ui/favicon-32x32.png")).status_code == 200
        login = await http.post("/api/v1/auth/token", json={"username": "nobody", "password": "wrong-one"})
        assert login.json()["error"]["code"] == "invalid_credentials"
        # A request carrying a signature gets to the route, which checks it; without one it needs a token.
        signed = await http.get("/api/v1/storage/requests/objects/k?expires=1&signature=00")
        assert (signed.status_code, signed.json()["error"]["code"]) == (403, "forbidden")
        unsigned = await http.get("/api/v1/storage/requests/objects/k")
        assert (unsigned.status_code, unsigned.json()["error"]["code"]) == (401, "unauthorized")
        # No presigned URL deletes: a signature does not stand in for a token there.
        deleted = await http.delete("/api/v1/storage/requests/objects/k?expires=1&signature=00")
        assert (deleted.status_code, deleted.json()["error"]["code"]) == (401, "unauthorized")


async def test_a_bad_token_is_refused_even_where_anonymous_calls_pass(platform_app: Any) -> None:
    async with platform_app.client("mp_not-a-real-token") as http:
        response = await http.get("/healthz")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_token"
