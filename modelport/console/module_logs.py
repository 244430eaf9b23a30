"""A module's "Logs" and "Requests" tabs, and the page of one call.

Logs: the last lines of the module's worker logs, read on the server, then followed live in the browser from
the API's own event stream (`GET /api/v1/modules/{module}/logs?follow=true`, which the session cookie
authenticates); owners and admins only, as the API's logs route. Requests: the module's calls in the request
log, filtered and paged by the same service as the API's `GET /api/v1/requests`, so with the same validation
and the same visibility (owners and admins every call of the module, anyone else who may call it their own);
and one call with every field, its payload when captured, and the log lines printed while serving it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from modelport.console.modules import ModuleAccess, module_access
from modelport.console.web import Console, Page
from modelport.control.access import ModulePolicy
from modelport.core.errors import ModuleNotFound, NotFound, ValidationFailed, field_error
from modelport.core.records import RequestDetail
from modelport.obs.logs import log_time

__all__ = ["FOLLOW_TAIL", "TAIL", "routes"]

TAIL = 200
"""Log lines the logs tab is served with; the rest arrive live."""
FOLLOW_TAIL = 5000
"""The most lines the follow's backlog may send (the most the page keeps)."""
CALL_LOG_TAIL = 1000
"""Log lines shown on a call's page."""
_REPLICAS = 1_000_000
_LIST_TEXT = ("version", "status", "code", "since", "until")
"""The request list's filters passed to the request log as they were typed."""
_PAYLOAD_GROUPS = ("inputs", "parameters", "outputs")
_Number = TypeVar("_Number", int, float)


@dataclass(frozen=True)
class LogQuery:
    """The logs tab's filters, as given (None: not given)."""

    version: str | None
    replica: int | None
    request_id: str | None

    @classmethod
    def parse(cls, params: Mapping[str, str]) -> LogQuery:
        """The filters of the query string; 422 naming `replica` when it is not a replica number."""
        replica = _parsed(params, "replica", int)
        if replica is not None and not 0 <= replica <= _REPLICAS:
            raise _invalid("replica", f"expected a whole number from 0 to {_REPLICAS}")
        return cls(_given(params, "version"), replica, _given(params, "request_id"))

    def params(self) -> dict[str, str]:
        found = {"version": self.version, "replica": self.replica, "request_id": self.request_id}
        return {name: str(value) for name, value in found.items() if value is not None}


def routes(console: Console) -> list[BaseRoute]:
    services = console.services

    def logs_page(request: Request) -> Response:
        page = console.page(request)
        access = module_access(console, page, request.path_params["module"], manage=True)
        query = LogQuery.parse(request.query_params)
        started = log_time(datetime.now(UTC))
        lines = services.logs.read(
            access.name, version=query.version, replica=query.replica, request_id=query.request_id, tail=TAIL
        )
        since = lines[-1].time if lines else started
        return console.render(
            page,
            "module_logs.html",
            tab="logs",
            access=access,
            query=query,
            lines=lines,
            tail=TAIL,
            follow_url=_follow_url(access.name, query),
            since=since,
            at_since=sum(1 for entry in lines if entry.time == since),
            keep=FOLLOW_TAIL,
        )

    def requests_page(request: Request) -> Response:
        page = console.page(request)
        access = module_access(console, page, request.path_params["module"])
        filters = _list_filters(request.query_params)
        found = services.request_log.list(page.principal, module=access.name, **filters)
        shown = {
            name: str(value) for name, value in filters.items() if value is not None and name != "cursor"
        }
        following = None
        if found.next_cursor is not None:
            following = "?" + urlencode({**shown, "cursor": found.next_cursor})
        return console.render(
            page,
            "module_requests.html",
            tab="requests",
            access=access,
            filters=shown,
            calls=found.requests,
            next_page=following,
            first_page="?" + urlencode(shown) if filters.get("cursor") else None,
        )

    def request_page(request: Request) -> Response:
        page = console.page(request)
        module = request.path_params["module"]
        record = services.request_log.get(page.principal, request.path_params["request_id"])
        if record.module != module:
            raise NotFound(f"no request {record.id!r}, or none you may see")
        access = _head_access(console, page, module)
        lines = (
            services.logs.read(module, request_id=record.id, tail=CALL_LOG_TAIL) if access.manage else None
        )
        return console.render(
            page,
            "module_request.html",
            tab="requests",
            access=access,
            call=record,
            payload=_payload(record),
            lines=lines,
            tail=CALL_LOG_TAIL,
        )

    return [
        Route("/modules/{module}/logs", logs_page, methods=["GET"], name="module-logs"),
        Route("/modules/{module}/requests", requests_page, methods=["GET"], name="module-requests"),
        Route(
            "/modules/{module}/requests/{request_id}", request_page, methods=["GET"], name="module-request"
        ),
    ]


def _follow_url(module: str, query: LogQuery) -> str:
    """The API's event stream of the module's new lines under the page's filters (the page adds `since`)."""
    params = {"follow": "true", "tail": str(FOLLOW_TAIL), **query.params()}
    return f"/api/v1/modules/{quote(module, safe='')}/logs?{urlencode(params)}"


def _list_filters(params: Mapping[str, str]) -> dict[str, Any]:
    """The request log's arguments from the query string: empty fields are not filters; numbers must be
    numbers (422 naming the field otherwise); everything else is checked by the request log itself."""
    filters: dict[str, Any] = {name: _given(params, name) for name in _LIST_TEXT}
    filters["min_latency_ms"] = _parsed(params, "min_latency_ms", float)
    limit = _parsed(params, "limit", int)
    filters["limit"] = 100 if limit is None else limit
    filters["cursor"] = _given(params, "cursor")
    return filters


def _given(params: Mapping[str, str], name: str) -> str | None:
    value = params.get(name, "").strip()
    return value or None


def _parsed(params: Mapping[str, str], name: str, kind: Callable[[str], _Number]) -> _Number | None:
    """The number the field `name` holds (None when empty); 422 naming it when it holds something else."""
    value = _given(params, name)
    if value is None:
        return None
    try:
        return kind(value)
    except ValueError:
        expected = "a whole number" if kind is int else "a number"
        raise _invalid(name, f"expected {expected}") from None


def _invalid(name: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"{name}: {message}", details=[field_error(name, "invalid", message)])


def _head_access(console: Console, page: Page, module: str) -> ModuleAccess:
    """The module tabs over a call's page. The call is the caller's to see (the request log said so); where it
    may no longer open the module itself (a call of its own), the tabs are only the ones anyone has."""
    try:
        return module_access(console, page, module)
    except ModuleNotFound:
        return ModuleAccess(module, ModulePolicy(module, None), manage=False)


@dataclass(frozen=True)
class PayloadView:
    """A captured payload as the call's page shows it: each group as indented JSON, and the stored files it
    names, each with the API's download URL (None for a name that is not `bucket/key`)."""

    groups: list[tuple[str, str]]
    files: list[tuple[str, str | None]]
    truncated: bool
    size: int | None


def _payload(record: RequestDetail) -> PayloadView | None:
    payload = record.payload
    if payload is None:
        return None
    if payload.get("truncated"):
        size = payload.get("bytes")
        head = [("head", str(payload.get("head", "")))]
        return PayloadView(head, [], True, size if isinstance(size, int) else None)
    groups = [(name, _pretty(payload[name])) for name in _PAYLOAD_GROUPS if name in payload]
    uploads = payload.get("uploads")
    named = [*_objects(payload.get("inputs")), *(uploads.values() if isinstance(uploads, dict) else ())]
    files = [(name, _object_url(name)) for name in dict.fromkeys(str(name) for name in named)]
    return PayloadView(groups, files, False, None)


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False)


def _objects(value: Any) -> Iterator[str]:
    """The stored objects (`bucket/key`) the file inputs of `value` name."""
    if isinstance(value, list):
        for item in value:
            yield from _objects(item)
    elif isinstance(value, dict):
        if isinstance(value.get("object"), str):
            yield value["object"]
            return
        for item in value.values():
            yield from _objects(item)


def _object_url(name: str) -> str | None:
    """The API's download URL of the object `bucket/key` (the session cookie lets the browser fetch it)."""
    bucket, _, key = name.partition("/")
    if not bucket or not key:
        return None
    return f"/api/v1/storage/{quote(bucket, safe='')}/objects/{quote(key, safe='/')}"
