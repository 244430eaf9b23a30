"""The client reads each answer with the record the server declares for it: for every client call that returns
a record, the record's JSON schema and the response schema of that operation in the platform's OpenAPI
document have the same properties, the same required ones, and the same types, all the way down."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, get_args, get_type_hints

import httpx
import pytest

from modelport.app import PlatformServer
from modelport.client import Client
from modelport.core.records import (
    AccessToken,
    ApplyResultList,
    AuditList,
    AuthConfig,
    BucketList,
    CallerInfo,
    DeploymentInfo,
    DriftReport,
    GroupInfo,
    GroupList,
    HistoryList,
    JobInfo,
    JobList,
    LogLines,
    ModuleInfo,
    ModuleList,
    ModuleStats,
    NewToken,
    ObjectInfo,
    ObjectListing,
    PipelineInfo,
    PipelineList,
    PresignedUrl,
    Record,
    RequestDetail,
    RequestList,
    TokenList,
    UserInfo,
    UserList,
    VersionDetail,
    VersionInfo,
    VersionList,
    WebhookAttemptList,
    WebhookSecret,
)
from modelport.core.settings import Settings

URL = "http://platform.test"
DOCUMENTS = [{"kind": "Module", "metadata": {"name": "m"}}]

Call = Callable[[Client, httpx.MockTransport], object]

CALLS: dict[str, tuple[Call, str, str, type[Record]]] = {
    # client method: (a call of it, the operation it asks for, the record it reads the answer with)
    "modules": (lambda c, t: c.modules(), "get", "/api/v1/modules", ModuleList),
    "module": (lambda c, t: c.module("m"), "get", "/api/v1/modules/{module}", ModuleInfo),
    "versions": (lambda c, t: c.versions("m"), "get", "/api/v1/modules/{module}/versions", VersionList),
    "version": (
        lambda c, t: c.version("m", "v1"),
        "get",
        "/api/v1/modules/{module}/versions/{version}",
        VersionDetail,
    ),
    "push": (
        lambda c, t: c.push(b"x", module="m", version="v1"),
        "post",
        "/api/v1/modules/{module}/versions",
        VersionInfo,
    ),
    "deploy": (lambda c, t: c.deploy("m", "v1"), "post", "/api/v1/modules/{module}/deploy", DeploymentInfo),
    "rollback": (lambda c, t: c.rollback("m"), "post", "/api/v1/modules/{module}/rollback", DeploymentInfo),
    "history": (lambda c, t: c.history("m"), "get", "/api/v1/modules/{module}/history", HistoryList),
    "drift": (lambda c, t: c.drift("m"), "get", "/api/v1/modules/{module}/drift", DriftReport),
    "logs": (lambda c, t: c.logs("m"), "get", "/api/v1/modules/{module}/logs", LogLines),
    "apply": (lambda c, t: c.apply(DOCUMENTS), "post", "/api/v1/apply", ApplyResultList),
    "diff": (lambda c, t: c.diff(DOCUMENTS), "post", "/api/v1/apply", ApplyResultList),
    "delete": (lambda c, t: c.delete(DOCUMENTS), "post", "/api/v1/delete", ApplyResultList),
    "exchange_password": (
        lambda c, t: Client.exchange_password(URL, "ann", "pw", transport=t),
        "post",
        "/api/v1/auth/token",
        AccessToken,
    ),
    "me": (lambda c, t: c.me(), "get", "/api/v1/auth/me", CallerInfo),
    "users": (lambda c, t: c.users(), "get", "/api/v1/users", UserList),
    "user": (lambda c, t: c.user(1), "get", "/api/v1/users/{user_id}", UserInfo),
    "create_user": (lambda c, t: c.create_user("ann"), "post", "/api/v1/users", UserInfo),
    "update_user": (
        lambda c, t: c.update_user(1, disabled=True),
        "patch",
        "/api/v1/users/{user_id}",
        UserInfo,
    ),
    "groups": (lambda c, t: c.groups(), "get", "/api/v1/groups", GroupList),
    "group": (lambda c, t: c.group(1), "get", "/api/v1/groups/{group_id}", GroupInfo),
    "create_group": (lambda c, t: c.create_group("/team"), "post", "/api/v1/groups", GroupInfo),
    "tokens": (lambda c, t: c.tokens(), "get", "/api/v1/tokens", TokenList),
    "create_token": (lambda c, t: c.create_token("ci"), "post", "/api/v1/tokens", NewToken),
    "audit": (lambda c, t: c.audit(), "get", "/api/v1/audit", AuditList),
    "buckets": (lambda c, t: c.buckets(), "get", "/api/v1/storage", BucketList),
    "objects": (lambda c, t: c.objects("b"), "get", "/api/v1/storage/{bucket}", ObjectListing),
    "upload": (
        lambda c, t: c.upload("b", "k", Path(__file__)),
        "put",
        "/api/v1/storage/{bucket}/objects/{key}",
        ObjectInfo,
    ),
    "presign": (lambda c, t: c.presign("b", "k"), "post", "/api/v1/storage/{bucket}/presign", PresignedUrl),
    "requests": (lambda c, t: c.requests("m", status="5xx"), "get", "/api/v1/requests", RequestList),
    "request": (lambda c, t: c.request("0" * 32), "get", "/api/v1/requests/{request_id}", RequestDetail),
    "stats": (lambda c, t: c.stats("m"), "get", "/api/v1/modules/{module}/stats", ModuleStats),
    "submit_job": (
        lambda c, t: c.submit_job("m", {"x": 1}),
        "post",
        "/api/v1/modules/{module}/jobs",
        JobInfo,
    ),
    "put_job": (lambda c, t: c.put_job("j", "m", {"x": 1}), "put", "/api/v1/jobs/{job_id}", JobInfo),
    "job": (lambda c, t: c.job("j", wait=1), "get", "/api/v1/jobs/{job_id}", JobInfo),
    "jobs": (lambda c, t: c.jobs(module="m"), "get", "/api/v1/jobs", JobList),
    "cancel_job": (lambda c, t: c.cancel_job("j"), "post", "/api/v1/jobs/{job_id}/cancel", JobInfo),
    "pipelines": (lambda c, t: c.pipelines(), "get", "/api/v1/pipelines", PipelineList),
    "auth_config": (lambda c, t: c.auth_config(), "get", "/api/v1/auth/config", AuthConfig),
    "pipeline": (lambda c, t: c.pipeline("p"), "get", "/api/v1/pipelines/{pipeline}", PipelineInfo),
    "job_deliveries": (
        lambda c, t: c.job_deliveries("j"),
        "get",
        "/api/v1/jobs/{job_id}/deliveries",
        WebhookAttemptList,
    ),
    "submit_batch": (
        lambda c, t: c.submit_batch("m", input="b/in.jsonl", output="b/out/"),
        "post",
        "/api/v1/modules/{module}/batches",
        JobInfo,
    ),
    "webhook_secret": (lambda c, t: c.webhook_secret(), "get", "/api/v1/webhooks/secret", WebhookSecret),
    "rotate_webhook_secret": (
        lambda c, t: c.rotate_webhook_secret(),
        "post",
        "/api/v1/webhooks/secret",
        WebhookSecret,
    ),
}

NOT_READ_FROM_JSON = {
    "wait_build": "polls `version`",
    "wait_deployment": "polls `module`",
    "object_pages": "pages through `objects`",
    "walk_objects": "pages through `objects`",
    "download": "describes the object from the response's headers",
    "follow_logs": "reads server-sent events, each one `LogLine` (or `LogGap`)",
    "stat_object": "describes the object from the response's headers",
    "wait_job": "long-polls `job`",
}


class Sent(Exception):
    """Raised by the transport once the client's request is seen: the answer does not matter here."""


@pytest.fixture(scope="module")
def openapi(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The platform's OpenAPI document, as its application serves it."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("platform"))
    server = PlatformServer(settings, announce=lambda line: None)

    async def fetch() -> httpx.Response:
        transport = httpx.ASGITransport(app=server.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://modelport.test") as client:
            return await client.get("/openapi.json")

    try:
        response = asyncio.run(fetch())
        assert response.status_code == 200, response.text
        yield response.json()
    finally:
        server.database.close()


def test_every_client_method_that_returns_a_record_is_checked() -> None:
    returning = {
        name
        for name, method in inspect.getmembers(Client, inspect.isroutine)
        if not name.startswith("_") and _records_in(get_type_hints(method).get("return"))
    }
    assert returning == set(CALLS) | set(NOT_READ_FROM_JSON)


@pytest.mark.parametrize("name", sorted(CALLS))
def test_each_call_asks_for_its_operation(name: str) -> None:
    call, method, path, _ = CALLS[name]
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        raise Sent

    transport = httpx.MockTransport(handle)
    with Client(URL, "tok", transport=transport) as client, pytest.raises(Sent):
        call(client, transport)
    (request,) = seen
    assert request.method == method.upper()
    assert re.fullmatch(re.sub(r"\{\w+\}", "[^/]+", path), request.url.path), request.url.path


@pytest.mark.parametrize("name", sorted(CALLS))
def test_each_record_is_the_answer_the_server_declares(name: str, openapi: dict[str, Any]) -> None:
    _, method, path, record = CALLS[name]
    ours, theirs = _record_schema(record), _answer_schema(openapi, method, path)
    assert differences(ours, theirs, record.__name__) == []


def test_a_field_on_one_side_only_is_a_difference(openapi: dict[str, Any]) -> None:
    class Wider(UserInfo):
        nickname: str

    class Laxer(UserInfo):
        last_login_at: str | None = None

    class Retyped(UserInfo):
        id: str  # type: ignore[assignment]

    server = _answer_schema(openapi, "get", "/api/v1/users/{user_id}")
    assert differences(_record_schema(Wider), server, "U")[0] == "U: properties only here: nickname"
    assert differences(server, _record_schema(Wider), "U")[0] == "U: properties only there: nickname"
    (laxer,) = differences(_record_schema(Laxer), server, "U")
    assert laxer.startswith("U: required [") and laxer.endswith(
        "'last_login_at', 'name', 'role', 'source'] there"
    )
    assert differences(_record_schema(Retyped), server, "U") == [
        "U.id: {'type': 'string'} here, {'type': 'integer'} there"
    ]


# Comparing JSON schemas


@dataclasses.dataclass(frozen=True)
class Definitions:
    """The named schemas of a document, and how its `$ref`s to them begin."""

    named: dict[str, Any]
    prefix: str

    def resolve(self, schema: dict[str, Any]) -> Node:
        while "$ref" in schema:
            schema = self.named[schema["$ref"].removeprefix(self.prefix)]
        return Node(self, schema)


@dataclasses.dataclass(frozen=True)
class Node:
    """One schema, its `$ref` followed, and the definitions its own references point at."""

    definitions: Definitions
    schema: dict[str, Any]


_IGNORED = {"title", "description", "default", "examples"}


def differences(ours: Node, theirs: Node, where: str) -> list[str]:
    """Where the two schemas disagree on properties, required ones or types ("here": ours)."""
    a, b = ours.schema, theirs.schema
    if "properties" in a or "properties" in b:
        return _object_differences(ours, theirs, where)
    for keyword in ("anyOf", "oneOf", "allOf"):
        if keyword in a or keyword in b:
            return _choice_differences(ours, theirs, where, keyword)
    if "items" in a or "items" in b:
        if "items" not in a or "items" not in b:
            return [f"{where}: an array on one side only"]
        return differences(_child(ours, a["items"]), _child(theirs, b["items"]), f"{where}[]")
    mine = {k: v for k, v in a.items() if k not in _IGNORED}
    other = {k: v for k, v in b.items() if k not in _IGNORED}
    return [] if mine == other else [f"{where}: {mine} here, {other} there"]


def _object_differences(ours: Node, theirs: Node, where: str) -> list[str]:
    a, b = ours.schema.get("properties", {}), theirs.schema.get("properties", {})
    found = []
    if set(a) - set(b):
        found.append(f"{where}: properties only here: {', '.join(sorted(set(a) - set(b)))}")
    if set(b) - set(a):
        found.append(f"{where}: properties only there: {', '.join(sorted(set(b) - set(a)))}")
    required = set(ours.schema.get("required", [])), set(theirs.schema.get("required", []))
    if required[0] != required[1]:
        found.append(f"{where}: required {sorted(required[0])} here, {sorted(required[1])} there")
    for name in sorted(set(a) & set(b)):
        found += differences(_child(ours, a[name]), _child(theirs, b[name]), f"{where}.{name}")
    return found


def _choice_differences(ours: Node, theirs: Node, where: str, keyword: str) -> list[str]:
    a, b = ours.schema.get(keyword), theirs.schema.get(keyword)
    if a is None or b is None or len(a) != len(b):
        return [f"{where}: {keyword} of {len(a or [])} here, of {len(b or [])} there"]
    found = []
    for index, (mine, other) in enumerate(zip(a, b, strict=True)):
        found += differences(_child(ours, mine), _child(theirs, other), f"{where}<{index}>")
    return found


def _child(node: Node, schema: dict[str, Any]) -> Node:
    return node.definitions.resolve(schema)


def _record_schema(record: type[Record]) -> Node:
    """The record's JSON schema, as the answers it reads are serialized."""
    schema = record.model_json_schema(mode="serialization")
    return Definitions(schema.get("$defs", {}), "#/$defs/").resolve(schema)


def _answer_schema(openapi: dict[str, Any], method: str, path: str) -> Node:
    """The JSON schema of the operation's successful answer in the server's OpenAPI document (one schema,
    when several statuses succeed: a job answers 202 when it is made and 200 when it was made before)."""
    responses = openapi["paths"][path][method]["responses"]
    successes = [r for code, r in responses.items() if code.startswith("2") and "content" in r]
    schemas = [r["content"]["application/json"]["schema"] for r in successes]
    assert schemas and all(s == schemas[0] for s in schemas), f"{method} {path}: {schemas}"
    schema = schemas[0]
    return Definitions(openapi["components"]["schemas"], "#/components/schemas/").resolve(schema)


def _records_in(hint: Any) -> set[type[Record]]:
    """The record types a return annotation holds, inside containers and dataclasses too."""
    if isinstance(hint, type) and issubclass(hint, Record):
        return {hint}
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return set().union(*(_records_in(field) for field in get_type_hints(hint).values()))
    return set().union(*(_records_in(arg) for arg in get_args(hint)))
