"""The jobs pages: the jobs the caller may see, newest first, filtered by module, pipeline or state and paged;
one job (its state, times, request, outputs or error, webhook deliveries), which refreshes itself while it is
queued or running; and its cancel button.

Who sees what follows the API (`gateway/jobs_api.py`), through the same service calls: admins see every job,
developers their modules' and pipelines' jobs and their own, everyone else their own. A job the caller may not
see is the same 404 page as one that does not exist; canceling is the API's cancel, with its checks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from modelport.console.web import Console, Page
from modelport.control.access import may_call
from modelport.core.errors import JobNotFound, ValidationFailed, field_error
from modelport.core.records import JobInfo, WebhookAttemptList
from modelport.queue import job_info

__all__ = ["PAGE_SIZE", "STATES", "JobFilters", "JobRow", "routes"]

PAGE_SIZE = 50
"""Jobs on one page of the list."""
STATES = ("queued", "running", "succeeded", "failed", "canceled")
_JSON_LIMIT = 64 * 1024
"""Characters of a request or output shown on a job's page; the rest is cut (the API gives it whole)."""


@dataclass(frozen=True)
class JobFilters:
    """What the list is narrowed to: a module's jobs, a pipeline's, jobs in one state; and the page."""

    module: str = ""
    pipeline: str = ""
    state: str = ""
    cursor: str = ""

    @classmethod
    def of(cls, request: Request) -> JobFilters:
        """The filters of the list's query string; `ValidationFailed` naming each one that cannot be."""
        values = {
            name: request.query_params.get(name, "").strip() for name in ("module", "pipeline", "state")
        }
        filters = cls(**values, cursor=request.query_params.get("cursor", ""))
        problems = []
        for name in ("module", "pipeline"):
            if len(values[name]) > 63:
                problems.append(field_error(name, "too_long", "at most 63 characters"))
        if filters.module and filters.pipeline:
            problems.append(
                field_error("pipeline", "invalid", "filter by a module or by a pipeline, not both")
            )
        if filters.state and filters.state not in STATES:
            problems.append(field_error("state", "invalid", f"expected one of {', '.join(STATES)}"))
        if len(filters.cursor) > 1024:
            problems.append(field_error("cursor", "too_long", "at most 1024 characters"))
        if problems:
            raise ValidationFailed("the filters are not valid", details=problems)
        return filters

    @property
    def active(self) -> bool:
        return bool(self.module or self.pipeline or self.state)

    def query(self, *, cursor: str | None = None) -> str:
        """The query string of these filters, on the page after `cursor` (None: the first page)."""
        pairs = [
            (name, getattr(self, name)) for name in ("module", "pipeline", "state") if getattr(self, name)
        ]
        if cursor:
            pairs.append(("cursor", cursor))
        return urlencode(pairs)


def routes(console: Console) -> list[BaseRoute]:
    services = console.services

    def jobs_page(request: Request) -> Response:
        page = console.page(request)
        filters = JobFilters.of(request)
        listing = services.jobs.listing(
            page.principal,
            module=filters.module or filters.pipeline or None,
            status=filters.state or None,
            kind="pipeline" if filters.pipeline else None,
            limit=PAGE_SIZE,
            cursor=filters.cursor or None,
        )
        jobs = listing.jobs
        if filters.module:  # a pipeline may share a module's name: its jobs are not the module's
            jobs = [job for job in jobs if job.kind != "pipeline"]
        modules, pipelines = _callable(console, page)
        return console.render(
            page,
            "jobs.html",
            jobs=[_row(job) for job in jobs],
            filters=filters,
            next_cursor=listing.next_cursor,
            states=STATES,
            modules=modules,
            pipelines=pipelines,
        )

    def job_page(request: Request) -> Response:
        page = console.page(request)
        return console.render(page, "job.html", **_job(console, page, request.path_params["job_id"]))

    def job_fragment(request: Request) -> Response:
        page = console.page(request)
        return console.render(page, "job_state.html", **_job(console, page, request.path_params["job_id"]))

    async def cancel(request: Request) -> Response:
        page, _ = await console.form(request)
        info = await services.jobs.cancel(page.principal, request.path_params["job_id"])
        location = f"{request.scope.get('root_path', '')}/jobs/{info.id}"
        if request.headers.get("hx-request") == "true":
            return Response(status_code=204, headers={"HX-Redirect": location})
        return RedirectResponse(location, status_code=303)

    return [
        Route("/jobs", jobs_page, methods=["GET"], name="jobs"),
        Route("/jobs/{job_id}", job_page, methods=["GET"], name="job"),
        Route("/jobs/{job_id}/state", job_fragment, methods=["GET"], name="job-state"),
        Route("/jobs/{job_id}/cancel", cancel, methods=["POST"], name="job-cancel"),
    ]


def _callable(console: Console, page: Page) -> tuple[list[str], list[str]]:
    """The modules and pipelines the caller may call (from the policies in memory): what the filters suggest,
    and the targets the list links to."""
    policies = console.services.policies
    modules = [p.module for p in policies.modules() if may_call(page.principal, p)]
    pipelines = [p.module for p in policies.pipelines() if may_call(page.principal, p)]
    return modules, pipelines


@dataclass(frozen=True)
class JobRow:
    """A job as the pages show it: the record, and how long it ran (so far)."""

    info: JobInfo
    seconds: float | None

    @property
    def live(self) -> bool:
        return self.info.status in ("queued", "running")


def _row(info: JobInfo) -> JobRow:
    return JobRow(info, _seconds(info))


def _seconds(info: JobInfo) -> float | None:
    if info.started_at is None:
        return None
    started = datetime.fromisoformat(info.started_at)
    ended = datetime.fromisoformat(info.finished_at) if info.finished_at else datetime.now(started.tzinfo)
    return max(0.0, (ended - started).total_seconds())


def _job(console: Console, page: Page, job_id: str) -> dict[str, Any]:
    """What a job's page shows; `JobNotFound` where the caller may not see it, as the API answers."""
    jobs = console.services.jobs
    jobs.check_visible(page.principal, job_id)
    row = jobs.queue.get(job_id)
    if row is None:  # swept meanwhile
        raise JobNotFound(f"no job {job_id!r}, or none you may see")
    info = job_info(row)
    request = row.request or {}
    deliveries: WebhookAttemptList | None = None
    if info.webhook:
        deliveries = console.services.webhooks.attempts(info.id)
    policies = console.services.policies
    policy = policies.pipeline(info.module) if info.kind == "pipeline" else policies.policy(info.module)
    return {
        "job": _row(info),
        "request_parts": _request_parts(info, request),
        "outputs": _folded(info.outputs) if info.status == "succeeded" else None,
        "files": _file_links(info.outputs) if info.status == "succeeded" else [],
        "error_details": _folded(info.error.details) if info.error and info.error.details else None,
        "deliveries": deliveries,
        "target_visible": policy is not None and may_call(page.principal, policy),
    }


def _request_parts(info: JobInfo, request: dict[str, Any]) -> list[tuple[str, str]]:
    """The parts of a job's request worth showing, each as folded JSON: a prediction's inputs and parameters
    (and its other options), a batch's input and output."""
    names = ("input", "output", "parameters") if info.kind == "batch" else ("inputs", "parameters")
    parts = [(name, _folded(request[name])) for name in names if name in request]
    parts += [(name, _folded(value)) for name, value in request.items() if name not in names]
    return parts


def _folded(value: Any) -> str:
    """`value` as indented JSON, cut after `_JSON_LIMIT` characters."""
    text = json.dumps(value, indent=2, ensure_ascii=False, default=str)
    if len(text) > _JSON_LIMIT:
        return text[:_JSON_LIMIT] + "\n…"
    return text


def _file_links(outputs: Any) -> list[tuple[str, str]]:
    """(field, URL) of each stored file among a job's outputs, which the caller downloads from the API."""
    records = outputs if isinstance(outputs, list) else [outputs]
    links: list[tuple[str, str]] = []
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            continue
        for name, value in record.items():
            url = value.get("url") if isinstance(value, dict) else None
            if isinstance(url, str) and url.startswith("/api/v1/") and "//" not in url:
                links.append((f"{index}.{name}" if isinstance(outputs, list) else name, url))
    return links
