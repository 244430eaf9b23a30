"""Asynchronous jobs: accepted work that outlives its connection, runs at least once, and is recorded once.

A job is accepted only once it is checked and stored: its request validated against the module's API, its
files checked and copied into the request bucket (`jobs/<caller>/<job id>/<field>/<file name>`, so that the
module sees the name it was uploaded with), its webhook URL past the guard, and its row committed to the queue
(`queue/jobs.py`). Submissions that arrive together share one transaction, so accepting a job costs a
fraction of a commit.

Every gateway runs the same loop. Each turn writes, in one transaction, the submissions and outcomes handed
in since the last one, and claims due jobs of the modules it serves, as many as each module's job
concurrency leaves room for (`MODELPORT_JOB_CONCURRENCY`). Each job runs through the one call path
(`control/calls.py`: the request log and statistics see it with kind `job`), its records behind synchronous
calls' in the module's queue; a heartbeat renews the leases while they run. A run that fails in a way
worth retrying (a worker died, a timeout, the module unavailable) is queued again after an exponential
backoff with jitter; an invalid request or an error raised by the module's code fails the job at once,
unless its `Api` asks for retries. A gateway that dies leaves its leases to expire: another gateway (or
this one, restarted) runs those jobs again. Results are recorded only under the current lease, so a job
that ran twice is recorded once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import random
import re
import secrets
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import msgspec
from sqlalchemy import ColumnElement, and_, false, or_, select, true

from modelport.control.access import AccessPolicies, ModulePolicy, may_manage
from modelport.control.calls import Calls, ModuleCall, Trace, as_error, new_request_id
from modelport.control.cursors import Cursors
from modelport.control.identity import Principal
from modelport.control.modules import ModuleRegistry
from modelport.control.request_files import RequestFiles
from modelport.core.errors import (
    BadRequest,
    DatabaseUnavailable,
    InvalidKey,
    JobCanceled,
    JobNotFound,
    ModelportError,
    ModuleError,
    ModuleTimeout,
    ModuleUnavailable,
    StorageUnavailable,
    ValidationFailed,
    WebhookRefused,
    field_error,
)
from modelport.core.records import JobInfo, JobList
from modelport.core.roles import Role
from modelport.core.settings import Settings
from modelport.core.times import parse_instant
from modelport.db import Database, Module, PipelineDefinition
from modelport.db.models import Job
from modelport.queue import JobQueue, NewJob, Outcome, job_info
from modelport.queue.jobs import FINISHED
from modelport.runtime.files import FileChecker
from modelport.sdk.spec import ApiSpec
from modelport.sdk.validation import InvalidRequest, ParsedRequest, parse_json
from modelport.storage import check_key

__all__ = ["JOB_ID", "JobSubmission", "Jobs", "new_job_id"]

log = logging.getLogger("modelport.jobs")

JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
"""An id a caller may choose for a job (`PUT /api/v1/jobs/{id}`)."""
EVENTS = ("started", "completed")
JOB_READER = Principal(user_id=None, name="modelport-jobs", role=Role.ADMIN, source="system")
"""Who reads a job's stored inputs when it runs: they were checked against its caller when it was accepted,
and copied where only the platform reads them."""
_RETRYABLE = (ModuleUnavailable, ModuleTimeout, DatabaseUnavailable, StorageUnavailable)
_MAX_BACKOFF = 3600.0
_POLL = 0.5
"""Seconds between looks for jobs due (other gateways' submissions, retries whose backoff has passed)."""
_encoder = msgspec.json.Encoder()

T = TypeVar("T")
R = TypeVar("R")


def new_job_id() -> str:
    """32 hex digits: the time in milliseconds, then 80 bits from the system's secure source. Ids sort by
    creation; a job's id is all an anonymous caller needs to read it, so it cannot be guessed."""
    global _random_at, _random_bytes
    if _random_at + 10 > len(_random_bytes):
        _random_bytes, _random_at = secrets.token_bytes(4000), 0  # one system call for 400 ids
    taken = _random_bytes[_random_at : _random_at + 10]
    _random_at += 10
    return f"{int(time.time() * 1000) & 0xFFFFFFFFFFFF:012x}{taken.hex()}"


_random_bytes, _random_at = b"", 0


@dataclass
class JobSubmission:
    """What a caller asks for besides the prediction itself."""

    webhook: str | None = None
    events: tuple[str, ...] = ("completed",)
    idempotency_key: str | None = None
    job_id: str | None = None
    """The caller's own id (`PUT`); None: the server makes one."""
    kind: str = "job"
    request: dict[str, Any] | None = None
    """A batch's request (`input`, `output`, ...); None for a prediction, whose request is the parsed body."""


@dataclass(eq=False)
class RunningJob:
    job: Job
    token: str
    task: asyncio.Task[Outcome | None] | None = None
    call: ModuleCall | None = None
    canceling: bool = False


class Jobs:
    """The jobs of the modules in `registry`, queued in `database` and run through `calls`."""

    def __init__(
        self,
        database: Database,
        *,
        calls: Calls,
        registry: ModuleRegistry,
        policies: AccessPolicies,
        files: RequestFiles,
        settings: Settings,
        check_webhook: Callable[[str], None] | None = None,
        has_secret: Callable[[int], bool] | None = None,
        on_finished: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.database = database
        self.calls = calls
        self.registry = registry
        self.policies = policies
        self.files = files
        self.settings = settings
        self.check_webhook = check_webhook
        self.has_secret = has_secret
        self.on_finished = on_finished
        self.clock = clock
        self.queue = JobQueue(database, ttl=settings.job_ttl_hours * 3600)
        self.cursors = Cursors(database, "jobs-cursor")
        self.executors: dict[str, Callable[[Job, RunningJob], Awaitable[Outcome]]] = {"job": self._predict}
        self.targets: dict[str, Callable[[], list[str]]] = {}
        """Kinds of jobs whose target is not a module (`pipeline`): the names this gateway may run jobs of."""
        self._new: list[tuple[NewJob, asyncio.Future[tuple[Job, bool]]]] = []
        self._outcomes: list[tuple[Outcome, asyncio.Future[bool]]] = []
        self._due = True
        """Whether jobs may be waiting for this gateway: a submission here, a slot set free, a claim that took
        all it asked for, or the poll interval (other gateways' submissions, retries coming due)."""
        self._closed = False
        self._poll = False
        """Whether the poll interval has passed since the last look for due jobs."""
        self._running: dict[str, RunningJob] = {}
        self._wake = asyncio.Event()
        self._finished: dict[str, asyncio.Event] = {}
        self._stopping = False

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    # accepting

    async def submit(
        self,
        call: ModuleCall,
        parsed: ParsedRequest | None,
        submission: JobSubmission,
        *,
        target: tuple[str, ApiSpec] | None = None,
    ) -> tuple[JobInfo, bool]:
        """Accept a job for the module `call` was routed to (or for `target`, the name and API of what runs
        it, such as a pipeline): check the webhook, store the request's files, queue it. Returns the job and
        whether it is new (False: the same idempotency key or id and request were seen before). Raises the
        request's error; nothing is queued then."""
        if target is None:
            assert call.served is not None
            target = (call.served.name, call.served.spec)
        name, spec = target
        principal = call.principal
        await self._check_webhook(principal, submission)
        job_id = submission.job_id or new_job_id()
        if submission.job_id is not None and principal.is_anonymous:
            raise BadRequest("anonymous callers cannot choose a job's id; POST the job instead")
        stored: list[str] = []
        try:
            if parsed is None:
                request, seen = dict(submission.request or {}), dict(submission.request or {})
            elif spec.has_file_inputs:  # files are checked and stored: off the event loop
                request, seen, stored = await asyncio.to_thread(
                    self._store_request, call, spec, parsed, job_id
                )
            else:
                request, seen, stored = self._store_request(call, spec, parsed, job_id)
            version = call.pinned
            # The whole request: the same key with another webhook is another request too.
            hook = [submission.webhook, sorted(submission.events)] if submission.webhook else None
            digest = _digest([submission.kind, name, version, seen, hook])
            new = NewJob(
                id=job_id,
                kind=submission.kind,
                module=name,
                version=version,
                caller=principal.name,
                caller_id=principal.user_id,
                owner=call.owner,
                client=call.client,
                request=request,
                digest=digest,
                max_attempts=self._max_attempts(name, submission.kind),
                idempotency_key=submission.idempotency_key,
                chosen_id=submission.job_id is not None,
                traceparent=call.trace.traceparent,
                webhook=submission.webhook,
                webhook_events=submission.events if submission.webhook else (),
            )
            job, created = await self._write(self._new, new)
        except BaseException:
            if stored:
                await asyncio.to_thread(self._remove_stored, stored)
            raise
        if not created and stored:
            await asyncio.to_thread(self._remove_stored, stored)
        if created:
            self._wake.set()
        return job_info(job), created

    async def _check_webhook(self, principal: Principal, submission: JobSubmission) -> None:
        if submission.webhook is None:
            return
        unknown = [event for event in submission.events if event not in EVENTS]
        if unknown or not submission.events:
            raise ValidationFailed(
                "the webhook's events are not known",
                details=[
                    field_error(
                        "webhook_events_filter",
                        "invalid",
                        f"expected a non-empty list of {', '.join(EVENTS)}",
                    )
                ],
            )
        if principal.user_id is None:
            raise WebhookRefused("anonymous callers cannot have webhooks: sign in to use one")
        if self.has_secret is not None and not await asyncio.to_thread(self.has_secret, principal.user_id):
            raise WebhookRefused(
                "you have no webhook signing secret yet: make one with `POST /api/v1/webhooks/secret` "
                "(`modelport webhooks secret`) and keep it to verify the deliveries"
            )
        if self.check_webhook is not None:
            await asyncio.to_thread(self.check_webhook, submission.webhook)

    def _store_request(
        self, call: ModuleCall, spec: ApiSpec, parsed: ParsedRequest, job_id: str
    ) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
        """The request as the queue keeps it (each file checked, copied into the request bucket and named by
        its object), what tells it from another request (the same, with files by their SHA-256), and the
        keys of the objects stored."""
        stored: list[str] = []
        hashed: list[dict[str, Any]] = []
        records: list[dict[str, Any]] = []
        try:
            if spec.has_file_inputs:
                checker = FileChecker(
                    directory=self.calls.workdir(call),
                    max_upload_bytes=self.settings.max_upload_bytes,
                    max_image_pixels=self.settings.max_image_pixels,
                    fetch=self.files.fetcher(call.principal, self.calls.workdir(call)),
                )
                checker.resolve(spec, parsed)
            for index, record in enumerate(parsed.records):
                kept: dict[str, Any] = {}
                seen: dict[str, Any] = {}
                for name, value in record.items():
                    label = f"{index}-{name}" if parsed.batch else name
                    kept[name], seen[name] = self._keep_value(call, job_id, label, value, stored)
                records.append(kept)
                hashed.append(seen)
        finally:
            if call.workdir is not None:
                shutil.rmtree(call.workdir, ignore_errors=True)
                call.workdir = None
        request: dict[str, Any] = {
            "inputs": records if parsed.batch else records[0],
            "parameters": parsed.parameters,
        }
        if parsed.output_fields:
            request["output_fields"] = list(parsed.output_fields)
        if parsed.model_key is not None:
            request["model_key"] = parsed.model_key
        return request, {**request, "inputs": hashed if parsed.batch else hashed[0]}, stored

    def _keep_value(
        self, call: ModuleCall, job_id: str, label: str, value: Any, stored: list[str]
    ) -> tuple[Any, Any]:
        """(what the queue keeps, what the digest sees) of one input value."""
        if isinstance(value, list):
            pairs = [
                self._keep_value(call, job_id, f"{label}-{i}", item, stored) for i, item in enumerate(value)
            ]
            return [kept for kept, _ in pairs], [seen for _, seen in pairs]
        if isinstance(value, dict) and "path" in value and "content_type" in value:
            path = Path(value["path"])
            sha = hashlib.sha256()
            with path.open("rb") as source:
                for chunk in iter(lambda: source.read(1 << 20), b""):
                    sha.update(chunk)
            key = _named(check_key(f"jobs/{call.owner}/{job_id}/{label}"), value.get("filename"))
            with path.open("rb") as source:
                self.files.store.put(self.files.bucket, key, source, content_type=value["content_type"])
            stored.append(key)
            return {"object": f"{self.files.bucket}/{key}"}, {"sha256": sha.hexdigest()}
        return value, value

    def _remove_stored(self, keys: list[str]) -> None:
        for key in keys:
            with contextlib.suppress(ModelportError, OSError):
                self.files.store.delete(self.files.bucket, key)

    def _policy(self, module: str, kind: str) -> ModulePolicy | None:
        """The policy of a job's module, or of its pipeline (from memory)."""
        if kind == "pipeline":
            return self.policies.cached_pipeline(module)
        return self.policies.cached(module)

    def _max_attempts(self, module: str, kind: str) -> int:
        policy = self._policy(module, kind)
        configured = policy.jobs.max_attempts if policy is not None else None
        return configured or self.settings.job_max_attempts

    # reading

    async def wait(self, principal: Principal, job_id: str, seconds: float) -> JobInfo:
        """The job once it has finished, or as it is after `seconds`."""
        if seconds > self.settings.job_max_wait_seconds:
            raise ValidationFailed(
                "the wait is too long",
                details=[
                    field_error(
                        "wait",
                        "too_large",
                        f"wait at most {self.settings.job_max_wait_seconds:g} seconds, then ask again",
                    )
                ],
            )
        job = await asyncio.to_thread(self._visible, principal, job_id)
        deadline = time.monotonic() + max(0.0, seconds)
        while job.status not in FINISHED and time.monotonic() < deadline:
            event = self._finished.setdefault(job_id, asyncio.Event())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), min(_POLL * 2, max(0.0, deadline - time.monotonic())))
            found = await asyncio.to_thread(self.queue.get, job_id)
            if found is None:
                raise JobNotFound(f"no job {job_id!r}, or none you may see")
            job = found
        if job.status in FINISHED:
            self._finished.pop(job_id, None)
        return job_info(job)

    def listing(
        self,
        principal: Principal,
        *,
        module: str | None = None,
        status: str | None = None,
        kind: str | None = None,
        since: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> JobList:
        """The jobs `principal` may see, newest first (admins every job, developers their modules' jobs
        and their own, everyone else their own; anonymous callers none: they read jobs by id)."""
        problems = []
        if status is not None and status not in (*FINISHED, "queued", "running"):
            problems.append(
                field_error("status", "invalid", "expected queued, running, succeeded, failed or canceled")
            )
        if not 1 <= limit <= 1000:
            problems.append(field_error("limit", "out_of_range", "expected 1 to 1000"))
        since_at = None
        if since is not None:
            try:
                since_at = parse_instant(since, now=self.now())
            except ValueError as exc:
                problems.append(field_error("since", "invalid", str(exc)))
        if problems:
            raise ValidationFailed("the query is not valid", details=problems)
        where: list[ColumnElement[bool]] = [self._listable(principal)]
        if module is not None:
            where.append(Job.module == module)
        if status is not None:
            where.append(Job.status == status)
        if kind is not None:
            where.append(Job.kind == kind)
        if since_at is not None:
            where.append(Job.created_at >= since_at)
        before = self.cursors.decode(cursor) if cursor is not None else None
        rows = self.queue.page(where=where, before=before, limit=limit + 1)
        following = None
        if len(rows) > limit:
            rows = rows[:limit]
            following = self.cursors.encode(rows[-1].created_at, rows[-1].id)
        return JobList(jobs=[job_info(row) for row in rows], next_cursor=following)

    def _listable(self, principal: Principal) -> ColumnElement[bool]:
        if principal.role == Role.ADMIN:
            return true()
        if principal.user_id is None:
            return false()
        own = Job.caller_id == principal.user_id
        if principal.role == Role.DEVELOPER and principal.groups:
            groups = sorted(principal.groups)
            owned = select(Module.name).where(Module.owner.in_(groups))
            pipelines = select(PipelineDefinition.name).where(PipelineDefinition.owner.in_(groups))
            return or_(
                and_(Job.kind != "pipeline", Job.module.in_(owned)),
                and_(Job.kind == "pipeline", Job.module.in_(pipelines)),
                own,
            )
        return own

    def _visible(self, principal: Principal, job_id: str) -> Job:
        """The job, if `principal` submitted it, manages its module or is an admin; else `JobNotFound`.
        An anonymous caller's job is read by its id, which nobody can guess."""
        job = self.queue.get(job_id) if len(job_id) <= 64 else None
        if job is not None and self._may_see(principal, job):
            return job
        raise JobNotFound(f"no job {job_id!r}, or none you may see")

    def _may_see(self, principal: Principal, job: Job) -> bool:
        if principal.is_admin:
            return True
        if job.caller_id is None:
            return principal.is_anonymous and job.owner == "anonymous"
        if principal.user_id == job.caller_id:
            return True
        policy = (
            self.policies.pipeline(job.module) if job.kind == "pipeline" else self.policies.policy(job.module)
        )
        return policy is not None and may_manage(principal, policy)

    def check_visible(self, principal: Principal, job_id: str) -> None:
        """Raise `JobNotFound` unless `principal` may see the job."""
        self._visible(principal, job_id)

    async def cancel(self, principal: Principal, job_id: str) -> JobInfo:
        """Cancel a job: a queued one at once; a running one has its call aborted (here at once, on another
        gateway at its next heartbeat). `JobFinished` (409) for a job that has finished."""
        await asyncio.to_thread(self._visible, principal, job_id)
        job = await asyncio.to_thread(self.queue.cancel, job_id, now=self.now())
        running = self._running.get(job_id)
        if running is not None:
            running.canceling = True
            await self._abort(running)
        elif job.status in FINISHED:
            self._finished_event(job_id)
            self._notify()
        return job_info(job)

    # running

    async def run(self, stop: asyncio.Event) -> None:
        """Write, claim and run jobs until `stop` is set; then put back what is still running.

        One loop does every write a job needs besides its heartbeat: the submissions and outcomes that came
        in since its last turn, and a claim for the room they leave, in one transaction (`JobQueue.cycle`)."""
        heartbeat = asyncio.create_task(self._heartbeat(stop), name="job-leases")
        watcher = asyncio.create_task(self._watch_waiters(stop), name="job-waiters")
        try:
            while not stop.is_set():
                if not await self._turn(claim=True):
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(_first(stop.wait(), self._wake.wait()), _POLL)
                    if not self._wake.is_set():
                        self._poll = True  # the poll interval has passed
        finally:
            heartbeat.cancel()
            watcher.cancel()
            await self._stop_running()

    async def _write(self, pending: list[tuple[T, asyncio.Future[R]]], item: T) -> R:
        """Hand `item` to the next turn of the loop; its result when written."""
        if self._closed:
            raise ModuleUnavailable("the server is stopping; submit the job again", retry_after=2)
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        pending.append((item, future))
        self._wake.set()
        return await asyncio.shield(future)

    async def _turn(self, *, claim: bool) -> bool:
        """One turn: write what is pending and claim what there is room for. Whether it did anything."""
        new, self._new = self._new, []
        outcomes, self._outcomes = self._outcomes, []
        if claim and self._poll and not self._due:
            # Only a look, which takes no lock: the write lock is taken when a claim may find something.
            self._poll = False
            modules = sorted(self._capacity())
            try:
                self._due = bool(modules) and await asyncio.to_thread(self.queue.due, modules, now=self.now())
            except Exception as exc:
                log.warning("looking for due jobs failed (%s); trying again shortly", type(exc).__name__)
        capacity = self._capacity() if claim and (self._due or new) else {}  # new jobs may run at once
        if not (new or outcomes or capacity):
            return False
        try:
            submitted, recorded, claimed = await asyncio.to_thread(
                self.queue.cycle,
                [item for item, _ in new],
                [item for item, _ in outcomes],
                capacity,
                now=self.now(),
                lease=self.settings.job_lease_seconds,
            )
        except Exception as exc:
            log.warning("writing the job queue failed (%s); trying again shortly", type(exc).__name__)
            for _, future in new:
                if not future.done():
                    future.set_exception(exc)
            for _, done in outcomes:
                if not done.done():
                    done.set_exception(exc)
            await asyncio.sleep(_POLL)
            return True
        for (_, future), result in zip(new, submitted, strict=True):
            if future.done():
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)
                self._due = self._due or result[1]
        for outcome, done in outcomes:
            if not done.done():
                done.set_result(outcome.id in recorded)
        if capacity:
            asked = sum(capacity.values())
            self._due = len(claimed) >= asked  # all it asked for: there may be more
        for job in claimed:
            assert job.lease_token is not None
            running = RunningJob(job, job.lease_token)
            self._running[job.id] = running
            running.task = asyncio.create_task(self._execute(job, running), name=f"job-{job.id}")
        return True

    def _capacity(self) -> dict[str, int]:
        busy: dict[str, int] = {}
        for running in self._running.values():
            busy[running.job.module] = busy.get(running.job.module, 0) + 1
        names = {served.name for served in self.registry.running()}
        for targets in self.targets.values():
            names.update(targets())
        limit = self.settings.job_concurrency
        return {name: limit - busy.get(name, 0) for name in names if busy.get(name, 0) < limit}

    async def _execute(self, job: Job, running: RunningJob) -> Outcome | None:
        outcome: Outcome
        try:
            executor = self.executors.get(job.kind)
            if executor is None:
                outcome = self._failed(
                    running, BadRequest(f"this server cannot run jobs of kind {job.kind!r}")
                )
            else:
                outcome = await executor(job, running)
        except asyncio.CancelledError:
            if self._stopping:
                return None  # put back by `_stop_running`
            if not running.canceling:  # its lease was lost: the job is another gateway's now
                self._running.pop(job.id, None)
                self._due = True
                return None
            outcome = self._failed(running, JobCanceled("the job was canceled while it ran"), "canceled")
        except Exception as exc:
            outcome = self._outcome(job, running, exc)
        self._running.pop(job.id, None)
        self._due = True  # a slot is free
        try:
            recorded = await self._write(self._outcomes, outcome)
        except Exception:
            recorded = False
            log.exception(
                "job %s: recording its outcome failed; its lease runs out and it runs again", job.id
            )
        if recorded and outcome.status != "queued":
            self._finished_event(job.id)
            self._notify()
        return outcome

    async def _predict(self, job: Job, running: RunningJob) -> Outcome:
        """One run of a prediction job, through the one call path."""
        request = job.request
        call = ModuleCall(
            request_id=new_request_id(),
            trace=Trace.continuing(job.traceparent),
            principal=Principal(user_id=job.caller_id, name=job.caller, role=Role.USER),
            owner=job.owner,
            client=job.client,
            kind="job",
            request_bytes=len(_encoder.encode(request)),
            reader=JOB_READER,
            timeout=self._timeout(job.module),
        )
        running.call = call
        try:
            served = self.calls.route(call, job.module, job.version)
            served.in_flight += 1
            try:
                parsed = parse_json(served.spec, request)
                outputs = await self.calls.run(call, parsed)
            finally:
                served.in_flight -= 1
            body = outputs if parsed.batch else outputs[0]
            self.calls.finish(call, status=200, code=None, response_bytes=len(_encoder.encode(body)))
            return Outcome(
                job.id,
                running.token,
                "succeeded",
                outputs=body,
                served_version=served.version,
                request_id=call.request_id,
            )
        except asyncio.CancelledError:
            if running.canceling:
                self.calls.finish(call, status=499, code="canceled", response_bytes=0)
            raise
        except Exception as exc:
            error = as_error(exc)
            self.calls.finish(call, status=error.status, code=error.code, response_bytes=0)
            raise
        finally:
            if call.workdir is not None or call.uploads:
                await asyncio.to_thread(self.calls.settle, call)

    def _timeout(self, module: str) -> float | None:
        policy = self.policies.cached(module)
        return policy.jobs.timeout_seconds if policy is not None else None

    def _outcome(self, job: Job, running: RunningJob, exc: Exception) -> Outcome:
        error = as_error(exc)
        policy = self._policy(job.module, job.kind)
        retry_module = policy is not None and policy.jobs.retry_module_errors
        retryable = isinstance(error, _RETRYABLE) or (retry_module and isinstance(error, ModuleError))
        if isinstance(exc, InvalidRequest | ValidationFailed):
            retryable = False
        if retryable and job.attempts < job.max_attempts:
            delay = min(_MAX_BACKOFF, self.settings.job_retry_seconds * 2 ** (job.attempts - 1))
            delay *= random.uniform(0.5, 1.0)
            if error.retry_after is not None:
                delay = max(delay, error.retry_after)
            run_at = self.now() + timedelta(seconds=delay)
            return Outcome(job.id, running.token, "queued", error=error_body(error), run_at=run_at)
        return self._failed(running, error)

    def _failed(self, running: RunningJob, error: ModelportError, status: str = "failed") -> Outcome:
        call = running.call
        return Outcome(
            running.job.id,
            running.token,
            status,  # type: ignore[arg-type]
            error=error_body(error),
            served_version=call.served.version if call is not None and call.served is not None else None,
            request_id=call.request_id if call is not None else None,
        )

    def _finished_event(self, job_id: str) -> None:
        event = self._finished.get(job_id)
        if event is not None:
            event.set()

    def _notify(self) -> None:
        if self.on_finished is not None:
            try:
                self.on_finished()
            except Exception:
                log.exception("telling of finished jobs failed")

    async def _abort(self, running: RunningJob) -> None:
        """Stop a running job: its call's records leave the queue, and a worker that has only this job's
        records is stopped (its replacement starts at once)."""
        task = running.task
        call = running.call
        if task is not None:
            task.cancel()
        if call is not None and call.served is not None:
            await call.served.pool.abort(call.request_id)

    async def _heartbeat(self, stop: asyncio.Event) -> None:
        """Renew the leases of the jobs running here every third of a lease; abort those whose lease is lost
        (another gateway took them over) or whose caller asked to cancel them elsewhere."""
        interval = self.settings.job_lease_seconds / 3
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
            leases = {job_id: running.token for job_id, running in self._running.items()}
            if not leases:
                continue
            try:
                lost, cancel = await asyncio.to_thread(
                    self.queue.renew, leases, now=self.now(), lease=self.settings.job_lease_seconds
                )
            except Exception as exc:
                log.warning("renewing job leases failed (%s); trying again", type(exc).__name__)
                continue
            for job_id in lost | cancel:
                running = self._running.get(job_id)
                if running is not None:
                    running.canceling = job_id in cancel
                    await self._abort(running)

    async def _watch_waiters(self, stop: asyncio.Event) -> None:
        """Wake long-polls of jobs that finished on other gateways."""
        while not stop.is_set():
            await asyncio.sleep(_POLL)
            waiting = [job_id for job_id, event in self._finished.items() if not event.is_set()]
            if not waiting:
                continue
            try:
                statuses = await asyncio.to_thread(self.queue.statuses, waiting)
            except Exception as exc:  # the long-polls read the job themselves every second meanwhile
                log.debug("reading the status of awaited jobs failed: %s", exc)
                continue
            for job_id in waiting:
                if statuses.get(job_id, "canceled") in FINISHED:
                    self._finished[job_id].set()

    async def _stop_running(self) -> None:
        """Stop the jobs still running and put them back in the queue, their run not counted."""
        self._stopping = True
        running = list(self._running.values())
        for item in running:
            if item.task is not None:
                item.task.cancel()
        await asyncio.gather(
            *(item.task for item in running if item.task is not None), return_exceptions=True
        )
        self._closed = True
        while self._new or self._outcomes:  # answer what was handed in meanwhile
            await self._turn(claim=False)
        leases = {item.job.id: item.token for item in running}
        if leases:
            try:
                await asyncio.to_thread(self.queue.release, leases, now=self.now())
            except Exception:
                log.warning("putting back %d running jobs failed; their leases run out instead", len(leases))

    # sweeping

    def sweep(self) -> int:
        """Delete finished jobs past their time, with their stored inputs; returns how many went."""
        removed = 0
        while True:
            rows = self.queue.sweep(now=self.now())
            for job in rows:
                prefix = f"jobs/{job.owner}/{job.id}/"
                with contextlib.suppress(ModelportError, OSError):
                    for info in list(self.files.store.walk(self.files.bucket, prefix=prefix)):
                        self.files.store.delete(self.files.bucket, info.key)
            removed += len(rows)
            if len(rows) < 1000:
                return removed


def error_body(error: ModelportError) -> dict[str, Any]:
    return {
        "code": error.code,
        "message": error.public_message(),
        "status": error.status,
        "details": error.details,
    }


def _named(key: str, filename: Any) -> str:
    """`key/filename` where the upload's name makes a key (the module then sees it as the file's name, as a
    synchronous call's module does), else `key`."""
    if not isinstance(filename, str) or not filename or "/" in filename:
        return key
    try:
        return check_key(f"{key}/{filename}")
    except InvalidKey:
        return key


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


async def _first(*waits: Awaitable[Any]) -> None:
    tasks = [asyncio.ensure_future(wait) for wait in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
