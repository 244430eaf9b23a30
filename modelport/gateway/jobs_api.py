"""The jobs routes: accept a prediction as a job (`POST .../jobs`, `Prefer: respond-async` on predict,
`PUT /api/v1/jobs/{id}`), a batch (`POST .../batches`), and read, wait for, list and cancel jobs.

Submitting goes through the module's `Api` like a call (grants, rate limits: the routes under
`/api/v1/modules/{module}/` are metered calls), is parsed and validated by the predict route's own code, and
is answered 202 with the job and `Location` once it is stored; an idempotent repeat is answered 200 with the
job it made before. Reading is for the job's caller, the module's owners and admins; anyone else gets 404.
"""

from __future__ import annotations

import asyncio
import shutil
from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from modelport.control.access import check_call
from modelport.control.batches import BatchSubmission
from modelport.control.calls import ModuleCall
from modelport.control.jobs import EVENTS, JOB_ID, JobSubmission
from modelport.control.platform import Services
from modelport.core.errors import ValidationFailed, field_error
from modelport.core.records import JobEvent, JobInfo, JobKind, JobList, JobStatus, WebhookAttemptList
from modelport.gateway.auth import principal_of
from modelport.gateway.errors import error_response, to_modelport_error
from modelport.gateway.predict import PredictRoute
from modelport.gateway.routes import ANYONE, PREDICT, SIGNED_IN, allow
from modelport.sdk.validation import InvalidRequest, parse_json

__all__ = ["JobRoutes", "accepted", "idempotency_key", "jobs_router", "webhook_of"]

_EXTRAS = ("webhook", "webhook_events_filter")
_MAX_KEY = 255


class JobRoutes:
    """The submitting routes that read the raw request, as the predict route does."""

    def __init__(self, *, services: Services, predict: PredictRoute) -> None:
        self.services = services
        self.predict = predict

    async def submit(self, request: Request) -> Response:
        """`POST /api/v1/modules/{module}/jobs`, and predict with `Prefer: respond-async`."""
        call = self.predict.new_call(request, kind="job")
        try:
            self.predict.calls.route(call, request.path_params["module"], request.query_params.get("version"))
            key = idempotency_key(request)
            parsed, extras = await self.predict.parse(request, call, extras=_EXTRAS)
            submission = JobSubmission(idempotency_key=key, **webhook_of(extras))
            info, created = await self.services.jobs.submit(call, parsed, submission)
        except Exception as exc:
            return error_response(exc, request_id=call.request_id)
        finally:
            await _drop_work_files(call)
        return accepted(info, created)


class JobBody(BaseModel):
    """A job with an id of the caller's choosing: the module, and the predict body."""

    model_config = ConfigDict(extra="forbid")

    module: str = Field(max_length=63)
    version: str | None = Field(None, max_length=64)
    inputs: Any = None
    parameters: dict[str, Any] | None = None
    output_fields: list[str] | None = None
    model_key: str | None = Field(None, max_length=128)
    webhook: str | None = Field(None, max_length=2048)
    webhook_events_filter: list[JobEvent] | None = None


class BatchBody(BaseModel):
    """A batch: every record of a JSON Lines object (or of every object under a prefix) through the module,
    the results as JSON Lines under `output`."""

    model_config = ConfigDict(extra="forbid")

    input: str = Field(
        max_length=1024,
        description="`bucket/key` of a JSON Lines object (one record's inputs a line, or "
        '`{"inputs": {...}}`), or `bucket/prefix/`: every object under it (JSON Lines objects are read '
        "line by line; any other object is one record, given to the module's one file input).",
    )
    output: str = Field(
        max_length=1024,
        description="`bucket/prefix/` the results are written under, as `part-00000.jsonl`, ...: one line a "
        'record, in input order: `{"index": 0, "outputs": {...}}` or `{"index": 1, "error": {...}}`.',
    )
    parameters: dict[str, Any] = {}
    output_fields: list[str] | None = None
    model_key: str | None = Field(None, max_length=128)
    webhook: str | None = Field(None, max_length=2048)
    webhook_events_filter: list[JobEvent] | None = None


def jobs_router(services: Services, routes: JobRoutes) -> APIRouter:
    jobs = services.jobs
    router = APIRouter(prefix="/api/v1", tags=["jobs"])
    signed_in = [allow(SIGNED_IN)]

    @router.put(
        "/jobs/{job_id}",
        response_model=JobInfo,
        status_code=201,
        summary="Create a job with your own id",
        description="Idempotent: the same id with the same request answers 200 with the job made before; "
        "with another request, 409 `job_exists`. The id is 1 to 64 letters, digits, `.`, `_` or `-`.",
        dependencies=signed_in,
        responses={200: {"model": JobInfo, "description": "The job made before with this id."}},
    )
    async def put_job(
        request: Request,
        job_id: Annotated[str, Path(max_length=64)],
        body: Annotated[JobBody, Body()],
    ) -> Response:
        if not JOB_ID.match(job_id):
            raise ValidationFailed(
                "the job id is not valid",
                details=[field_error("job_id", "invalid", "1 to 64 letters, digits, `.`, `_` or `-`")],
            )
        principal = principal_of(request.scope)
        check_call(principal, body.module, await services.policies.current(body.module))
        call = routes.predict.new_call(request, kind="job")
        services.calls.route(call, body.module, body.version)
        predict_body = body.model_dump(
            include={"inputs", "parameters", "output_fields", "model_key"}, exclude_none=True
        )
        try:
            try:
                parsed = parse_json(call.served.spec, predict_body)  # type: ignore[union-attr]
            except InvalidRequest as exc:  # raised as itself, it would reach the server as a crash
                raise to_modelport_error(exc) from None
            submission = JobSubmission(
                job_id=job_id,
                idempotency_key=idempotency_key(request),
                **webhook_of(body.model_dump(include=set(_EXTRAS), exclude_none=True)),
            )
            info, created = await jobs.submit(call, parsed, submission)
        finally:
            await _drop_work_files(call)
        return accepted(info, created, status=201)

    @router.get(
        "/jobs",
        response_model=JobList,
        summary="List the jobs you may see",
        description="Newest first: admins see every job, developers their modules' jobs and their own, "
        "everyone else their own. `since` is an ISO 8601 time or a duration before now (`30m`, `1h`, `7d`).",
        dependencies=signed_in,
    )
    def list_jobs(
        request: Request,
        module: Annotated[str | None, Query(max_length=63)] = None,
        status: Annotated[JobStatus | None, Query()] = None,
        kind: Annotated[JobKind | None, Query(description="`job` or `batch`.")] = None,
        since: Annotated[str | None, Query(max_length=64)] = None,
        limit: Annotated[int, Query(description="1 to 1000.")] = 100,
        cursor: Annotated[str | None, Query(max_length=1024)] = None,
    ) -> JobList:
        return jobs.listing(
            principal_of(request.scope),
            module=module,
            status=status,
            kind=kind,
            since=since,
            limit=limit,
            cursor=cursor,
        )

    @router.get(
        "/jobs/{job_id}",
        response_model=JobInfo,
        summary="One job",
        description="With `wait`, the answer comes when the job finishes or after `wait` seconds, whichever "
        "is first (a long poll; at most the server's `MODELPORT_JOB_MAX_WAIT_SECONDS`). An anonymous caller "
        "reads its job by id.",
        dependencies=[allow(ANYONE)],
    )
    async def get_job(
        request: Request,
        job_id: Annotated[str, Path(max_length=64)],
        wait: Annotated[
            float | None, Query(ge=0, description="Seconds to wait for the job to finish.")
        ] = None,
    ) -> JobInfo:
        principal = principal_of(request.scope)
        return await jobs.wait(principal, job_id, wait or 0.0)

    @router.post(
        "/jobs/{job_id}/cancel",
        response_model=JobInfo,
        summary="Cancel a job",
        description="A queued job is canceled at once; a running one has its call aborted. A job that has "
        "finished answers 409 `job_finished`.",
        dependencies=[allow(ANYONE)],
    )
    async def cancel_job(request: Request, job_id: Annotated[str, Path(max_length=64)]) -> JobInfo:
        return await jobs.cancel(principal_of(request.scope), job_id)

    @router.get(
        "/jobs/{job_id}/deliveries",
        response_model=WebhookAttemptList,
        summary="A job's webhook deliveries",
        description="Every attempt to deliver the job's events, and the events still to be delivered.",
        dependencies=signed_in,
    )
    def job_deliveries(request: Request, job_id: Annotated[str, Path(max_length=64)]) -> WebhookAttemptList:
        jobs.check_visible(principal_of(request.scope), job_id)
        return services.webhooks.attempts(job_id)

    @router.post(
        "/modules/{module}/batches",
        response_model=JobInfo,
        status_code=202,
        summary="Run a batch",
        description="Every record of `input` through the module, with its dynamic batching, the results in "
        "input order under `output`. The job reports its progress, resumes after a crash without writing "
        "a record twice, and can be canceled.",
        dependencies=[allow(PREDICT)],
        responses={200: {"model": JobInfo, "description": "The batch made before with this key."}},
    )
    async def submit_batch(
        request: Request, module: Annotated[str, Path(max_length=63)], body: Annotated[BatchBody, Body()]
    ) -> Response:
        call = routes.predict.new_call(request, kind="batch")
        services.calls.route(call, module, request.query_params.get("version"))
        submission = BatchSubmission(
            input=body.input,
            output=body.output,
            parameters=body.parameters,
            output_fields=body.output_fields,
            model_key=body.model_key,
        )
        extras = webhook_of(body.model_dump(include=set(_EXTRAS), exclude_none=True))
        info, created = await services.batches.submit(
            call, submission, idempotency_key=idempotency_key(request), **extras
        )
        return accepted(info, created)

    return router


async def _drop_work_files(call: ModuleCall) -> None:
    """Remove what a refused submission left in its work directory (an accepted one has stored its files)."""
    if call.workdir is not None:
        await asyncio.to_thread(shutil.rmtree, call.workdir, True)
        call.workdir = None


def accepted(info: JobInfo, created: bool, *, status: int = 202) -> Response:
    headers = {"Location": f"/api/v1/jobs/{info.id}", "Preference-Applied": "respond-async"}
    body = info.model_dump_json()
    return Response(
        body, status_code=status if created else 200, headers=headers, media_type="application/json"
    )


def idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > _MAX_KEY or not key.isprintable():
        raise ValidationFailed(
            "the Idempotency-Key is not valid",
            details=[field_error("Idempotency-Key", "invalid", f"1 to {_MAX_KEY} printable characters")],
        )
    return key


def webhook_of(extras: dict[str, Any]) -> dict[str, Any]:
    """`webhook` and `events` of a submission from its `webhook` and `webhook_events_filter` fields (a JSON
    body's values, or a form's parts)."""
    webhook = extras.get("webhook")
    if isinstance(webhook, list):
        webhook = webhook[-1] if webhook else None
    events = extras.get("webhook_events_filter")
    problems = []
    if webhook is not None and (not isinstance(webhook, str) or len(webhook) > 2048):
        problems.append(
            field_error("webhook", "invalid", "expected an http(s) URL of at most 2048 characters")
        )
    if isinstance(events, list) and all(isinstance(e, str) for e in events):
        names = [name.strip() for e in events for name in e.split(",") if name.strip()]
    elif events is None:
        names = ["completed"]
    else:
        names = []
    if events is not None and (not names or any(name not in EVENTS for name in names)):
        problems.append(
            field_error("webhook_events_filter", "invalid", f"expected a list of {', '.join(EVENTS)}")
        )
    if problems:
        raise ValidationFailed("the webhook is not valid", details=problems)
    return {"webhook": webhook, "events": tuple(dict.fromkeys(names))}
