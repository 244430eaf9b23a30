"""The request log's routes: the calls a caller may see, page by page, and one call with its payload.

Everyone signed in may ask; the request log itself decides what each caller sees (admins every call,
developers their modules' calls and their own, everyone else their own). The routes are plain functions, so
the database is read in worker threads.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from modelport.control.platform import Services
from modelport.core.records import RequestDetail, RequestList
from modelport.gateway.auth import principal_of
from modelport.gateway.routes import SIGNED_IN, allow

__all__ = ["requests_router"]

_TEXT = 255


def requests_router(services: Services) -> APIRouter:
    request_log = services.request_log
    router = APIRouter(prefix="/api/v1", tags=["requests"], dependencies=[allow(SIGNED_IN)])

    @router.get(
        "/requests",
        response_model=RequestList,
        summary="List the calls you may see",
        description="Newest first: admins see every call, developers their modules' calls and their own, "
        "everyone else their own. `status` is a status (`200`) or a class (`5xx`); `since` and `until` are "
        "ISO 8601 times or durations before now (`30m`, `1h`, `7d`). Pass a page's `next_cursor` as "
        "`cursor` for the next one.",
    )
    def list_requests(
        request: Request,
        module: Annotated[
            str | None, Query(max_length=_TEXT, description="Only this module's calls.")
        ] = None,
        version: Annotated[str | None, Query(max_length=_TEXT)] = None,
        status: Annotated[
            str | None, Query(max_length=_TEXT, description="`200`, `404`, `4xx`, `5xx`…")
        ] = None,
        code: Annotated[str | None, Query(max_length=_TEXT, description="The error code.")] = None,
        caller: Annotated[str | None, Query(max_length=_TEXT, description="The caller's user name.")] = None,
        since: Annotated[str | None, Query(max_length=_TEXT)] = None,
        until: Annotated[str | None, Query(max_length=_TEXT)] = None,
        min_latency_ms: Annotated[float | None, Query(description="Only calls at least this slow.")] = None,
        pipeline: Annotated[str | None, Query(description="Only the steps of this pipeline's calls.")] = None,
        parent: Annotated[
            str | None, Query(description="Only the steps of the pipeline call with this request id.")
        ] = None,
        limit: Annotated[int, Query(description="1 to 1000.")] = 100,
        cursor: Annotated[str | None, Query(max_length=1024)] = None,
    ) -> RequestList:
        return request_log.list(
            principal_of(request.scope),
            module=module,
            version=version,
            status=status,
            code=code,
            caller=caller,
            since=since,
            until=until,
            min_latency_ms=min_latency_ms,
            pipeline=pipeline,
            parent=parent,
            limit=limit,
            cursor=cursor,
        )

    @router.get(
        "/requests/{request_id}",
        response_model=RequestDetail,
        summary="One call, with its payload",
        description="The payload is there when the module's `Api` captures payloads and the call was "
        "sampled; `logs_url` reads the log lines its workers printed while serving it.",
    )
    def get_request(request: Request, request_id: str) -> RequestDetail:
        return request_log.get(principal_of(request.scope), request_id)

    return router
