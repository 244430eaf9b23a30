"""The job queue: jobs in the metadata database, claimed under leases, each outcome recorded once.

A gateway *claims* jobs: in one transaction it moves queued jobs whose time has come (and running jobs whose
lease ran out: their gateway died) to `running`, with a fresh lease token and an expiry. SQLite serialises the
claim with `BEGIN IMMEDIATE`; PostgreSQL lets gateways claim side by side with `FOR UPDATE SKIP LOCKED`. The
holder renews its leases while the jobs run (`renew`) and records each outcome with its token (`finish`): an
outcome whose lease was lost meanwhile (another gateway took the job over) is not recorded, so a job's result
is written once however many times it ran.

Every change a caller may want to hear of (a job started, a job completed) writes its webhook message in the
same transaction (the outbox), so that no event is lost between the queue and the deliverer.

Everything here blocks: the control layer calls it from threads, and groups many submissions or outcomes into
one transaction.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, cast

from sqlalchemy import JSON, Table, and_, bindparam, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from modelport.core.errors import IdempotencyConflict, JobExists, JobFinished, JobNotFound
from modelport.core.records import JobError, JobInfo, JobProgress
from modelport.db import Database
from modelport.db.models import Job, WebhookMessage

__all__ = ["FINISHED", "JobQueue", "NewJob", "Outcome", "job_info"]

FINISHED = ("succeeded", "failed", "canceled")

_JOBS = cast(Table, Job.__table__)
_IN_CLAUSE = 500
"""Ids per `IN (...)` list: well under every database's limit on bound parameters."""
_CANCELED = {"code": "canceled", "message": "the job was canceled while it ran", "status": 499}


@dataclass(frozen=True, slots=True)
class NewJob:
    """A job to queue, as the control layer has checked it."""

    id: str
    kind: str
    module: str
    version: str | None
    caller: str
    caller_id: int | None
    owner: str
    client: str | None
    request: dict[str, Any]
    digest: str
    max_attempts: int
    idempotency_key: str | None = None
    chosen_id: bool = False
    """The caller chose the id (`PUT /api/v1/jobs/{id}`): the same id and request are the same job."""
    traceparent: str | None = None
    webhook: str | None = None
    webhook_events: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a run of a claimed job ended. `status` `queued` puts it back to run again at `run_at` (a
    retryable failure); the others finish it."""

    id: str
    token: str
    status: Literal["succeeded", "failed", "canceled", "queued"]
    outputs: Any = None
    error: dict[str, Any] | None = None
    run_at: datetime | None = None
    served_version: str | None = None
    request_id: str | None = None
    progress: dict[str, Any] | None = None


@dataclass(slots=True)
class _Submitted:
    job: Job
    created: bool


@dataclass
class JobQueue:
    """The jobs in `database`; finished jobs are kept `ttl` seconds."""

    database: Database
    ttl: float
    owner: str = field(default_factory=lambda: f"gw-{secrets.token_hex(6)}")
    """This gateway's name on the leases it takes."""

    # submitting

    def submit(self, jobs: Sequence[NewJob], *, now: datetime) -> list[tuple[Job, bool] | Exception]:
        """Queue `jobs` in one transaction where possible. For each: the job and whether it is new (an
        idempotency key or chosen id seen before with the same request gives the existing job), or the
        error that refused it (`IdempotencyConflict`, `JobExists`). A database failure raises."""
        try:
            with self.database.writing() as session:
                results = self._submit_in(session, jobs, now)
        except IntegrityError:
            # Another gateway queued the same key or id in between: take them one by one, each seeing it.
            return [self._submit_alone(job, now) for job in jobs]
        return results

    def _submit_in(
        self, session: Session, jobs: Sequence[NewJob], now: datetime
    ) -> list[tuple[Job, bool] | Exception]:
        """Jobs with an idempotency key or a chosen id are looked for first, one by one; the rest (most)
        go in with one statement for all of them."""
        results: list[tuple[Job, bool] | Exception] = []
        plain: list[dict[str, Any]] = []
        for new in jobs:
            if new.idempotency_key is not None or new.chosen_id:
                results.append(self._submit_one(session, new, now))
                continue
            values = _row(new, now)
            plain.append(values)
            results.append((Job(**values), True))
        session.flush()
        if plain:
            session.execute(insert(_JOBS), plain)
        return results

    def cycle(
        self,
        jobs: Sequence[NewJob],
        outcomes: Sequence[Outcome],
        capacity: dict[str, int],
        *,
        now: datetime,
        lease: float,
    ) -> tuple[list[tuple[Job, bool] | Exception], set[str], list[Job]]:
        """What a gateway has to write, in one transaction: queue `jobs`, record `outcomes`, then claim for
        `capacity` (as `submit`, `finish` and `claim` do). One transaction instead of three keeps the
        database's write lock, which SQLite holds for one writer at a time, taken as seldom as possible."""
        try:
            with self.database.writing() as session:
                submitted = self._submit_in(session, jobs, now)
                recorded = self._finish_in(session, outcomes, now)
                claimed = self._claim_in(session, capacity, now, lease)
            return submitted, recorded, claimed
        except IntegrityError:
            if not jobs:
                raise
        submitted = [self._submit_alone(job, now) for job in jobs]
        recorded, claimed = self.finish(outcomes, now=now), self.claim(capacity, now=now, lease=lease)
        return submitted, recorded, claimed

    def _submit_alone(self, job: NewJob, now: datetime) -> tuple[Job, bool] | Exception:
        for _ in range(3):
            try:
                with self.database.writing() as session:
                    result = self._submit_one(session, job, now)
                    session.flush()
                return result
            except IntegrityError:
                continue
        return JobExists(f"a job with id {job.id!r} or this Idempotency-Key is being created; retry")

    def _submit_one(self, session: Session, new: NewJob, now: datetime) -> tuple[Job, bool] | Exception:
        if new.idempotency_key is not None:
            existing = session.scalar(
                select(Job).where(Job.owner == new.owner, Job.idempotency_key == new.idempotency_key)
            )
            if existing is not None:
                if existing.digest != new.digest:
                    return IdempotencyConflict(
                        "this Idempotency-Key was used before with another request; use a new key for a "
                        "new request"
                    )
                return existing, False
        if new.chosen_id:
            existing = session.get(Job, new.id)
            if existing is not None:
                if existing.owner != new.owner or existing.digest != new.digest:
                    return JobExists(f"a job with id {new.id!r} already exists with another request")
                return existing, False
        values = _row(new, now)
        session.add(Job(**values))
        return Job(**values), True  # as queued, whatever a claim in the same transaction makes of it

    # claiming and holding

    def claim(self, capacity: dict[str, int], *, now: datetime, lease: float) -> list[Job]:
        """Take up to `capacity[module]` jobs of each module that are due: queued ones whose `run_at` has
        come, oldest first, and running ones whose lease ran out (their gateway died). Each gets a new
        lease token, its `attempts` counted; jobs that had used every attempt fail instead (their message
        is queued), jobs whose caller asked to cancel them are canceled, and neither is returned."""
        if not any(n > 0 for n in capacity.values()):
            return []
        with self.database.writing() as session:
            return self._claim_in(session, capacity, now, lease)

    def _claim_in(self, session: Session, capacity: dict[str, int], now: datetime, lease: float) -> list[Job]:
        wanted = {module: n for module, n in capacity.items() if n > 0}
        expires = now + timedelta(seconds=lease)
        claimed: list[Job] = []
        for module, limit in sorted(wanted.items()):
            for job in self._due(session, module, limit, now):
                if job.cancel_requested:  # put back (a retry, a lapsed lease) after its caller canceled
                    self._close(session, job, "canceled", now, error=dict(_CANCELED))
                elif job.status == "running" and job.attempts >= job.max_attempts:
                    self._fail_exhausted(session, job, now)
                elif job.started_at is None and "started" in job.webhook_events and job.webhook:
                    self._start(job, now, expires)  # its message names it running: changed in the session
                    self._message(session, job, "job.started", now)
                    claimed.append(job)
                else:
                    session.expunge(job)  # written below, with the others, by one statement
                    self._start(job, now, expires)
                    claimed.append(job)
        session.flush()
        taken = [job for job in claimed if job not in session]
        if taken:
            session.execute(
                update(_JOBS).where(_JOBS.c.id == bindparam("job_id")),
                [
                    {
                        "job_id": job.id,
                        "status": "running",
                        "lease_token": job.lease_token,
                        "leased_by": job.leased_by,
                        "lease_expires": job.lease_expires,
                        "attempts": job.attempts,
                        "started_at": job.started_at,
                    }
                    for job in taken
                ],
            )
        return claimed

    def _start(self, job: Job, now: datetime, expires: datetime) -> None:
        job.status = "running"
        job.lease_token = secrets.token_hex(16)
        job.leased_by = self.owner
        job.lease_expires = expires
        job.attempts += 1
        job.started_at = job.started_at or now

    def due(self, modules: Sequence[str], *, now: datetime) -> bool:
        """Whether a claim for `modules` would find a job: a queued one whose time has come, or a running
        one whose lease ran out. A read, which takes no lock."""
        queued = select(Job.id).where(Job.module.in_(modules), Job.status == "queued", Job.run_at <= now)
        lapsed = select(Job.id).where(
            Job.module.in_(modules), Job.status == "running", Job.lease_expires < now
        )
        with self.database.session() as session:
            return any(session.execute(query.limit(1)).first() is not None for query in (queued, lapsed))

    def _due(self, session: Session, module: str, limit: int, now: datetime) -> list[Job]:
        skip_locked = self.database.dialect == "postgresql"
        queued = (
            select(Job)
            .where(Job.module == module, Job.status == "queued", Job.run_at <= now)
            .order_by(Job.run_at, Job.id)
            .limit(limit)
        )
        abandoned = (
            select(Job)
            .where(Job.module == module, Job.status == "running", Job.lease_expires < now)
            .order_by(Job.lease_expires)
            .limit(limit)
        )
        if skip_locked:
            queued = queued.with_for_update(skip_locked=True)
            abandoned = abandoned.with_for_update(skip_locked=True)
        rows = list(session.scalars(abandoned))
        if len(rows) < limit:
            rows += session.scalars(queued.limit(limit - len(rows)))
        return rows

    def _fail_exhausted(self, session: Session, job: Job, now: datetime) -> None:
        error = job.error or {
            "code": "attempts_exhausted",
            "message": f"the job ran {job.attempts} times without finishing (its gateway stopped each time)",
            "status": 503,
        }
        self._close(session, job, "failed", now, error=error)

    def renew(self, leases: dict[str, str], *, now: datetime, lease: float) -> tuple[set[str], set[str]]:
        """Extend the leases `leases` (job id → token) this gateway holds. Returns the ids whose lease is
        lost (another gateway took the job over, or it finished) and those whose caller asked to cancel."""
        lost: set[str] = set()
        cancel: set[str] = set()
        if not leases:
            return lost, cancel
        expires = now + timedelta(seconds=lease)
        with self.database.session() as session:
            for ids in _chunks(sorted(leases)):
                held = session.execute(
                    select(Job.id, Job.lease_token, Job.status, Job.cancel_requested).where(Job.id.in_(ids))
                ).all()
                found = {row.id: row for row in held}
                kept = []
                for job_id in ids:
                    row = found.get(job_id)
                    if row is None or row.status != "running" or row.lease_token != leases[job_id]:
                        lost.add(job_id)
                        continue
                    kept.append(job_id)
                    if row.cancel_requested:
                        cancel.add(job_id)
                if kept:
                    session.execute(
                        update(Job)
                        .where(Job.id.in_(kept), Job.status == "running")
                        .values(lease_expires=expires)
                    )
        return lost, cancel

    def progress(self, job_id: str, token: str, progress: dict[str, Any]) -> bool:
        """Record a running job's progress; False if its lease is lost."""
        with self.database.session() as session:
            result = session.execute(
                update(Job)
                .where(Job.id == job_id, Job.lease_token == token, Job.status == "running")
                .values(progress=progress)
            )
            return bool(getattr(result, "rowcount", 0))

    def finish(self, outcomes: Sequence[Outcome], *, now: datetime) -> set[str]:
        """Record `outcomes` in one transaction; returns the ids recorded. An outcome whose lease is no longer
        held (the job was taken over, or already finished) is dropped: each job's result is written once."""
        if not outcomes:
            return set()
        with self.database.writing() as session:
            return self._finish_in(session, outcomes, now)

    def _finish_in(self, session: Session, outcomes: Sequence[Outcome], now: datetime) -> set[str]:
        """Record the outcomes whose lease is held. Most (no webhook message to write, no cancellation to
        honour) are written by one statement; the others through their rows."""
        recorded: set[str] = set()
        by_id = {outcome.id: outcome for outcome in outcomes}
        plain: list[dict[str, Any]] = []
        special: list[str] = []
        for ids in _chunks(sorted(by_id)):
            query = select(
                Job.id, Job.lease_token, Job.cancel_requested, Job.webhook, Job.webhook_events
            ).where(Job.id.in_(ids), Job.status == "running")
            if self.database.dialect == "postgresql":
                query = query.with_for_update()
            for row in session.execute(query):
                outcome = by_id[row.id]
                if row.lease_token != outcome.token:
                    continue
                recorded.add(row.id)
                if row.cancel_requested or (row.webhook and "completed" in (row.webhook_events or [])):
                    special.append(row.id)
                else:
                    plain.append(self._finished_values(outcome, now))
        if plain:
            columns = (_JOBS.c.id == bindparam("job_id"), _JOBS.c.lease_token == bindparam("token"))
            statement = (
                update(_JOBS)
                .where(*columns, _JOBS.c.status == "running")
                .values(  # what an outcome does not say stays as it was
                    served_version=func.coalesce(bindparam("new_version"), _JOBS.c.served_version),
                    request_id=func.coalesce(bindparam("new_request_id"), _JOBS.c.request_id),
                    progress=func.coalesce(
                        bindparam("new_progress", type_=JSON(none_as_null=True)), _JOBS.c.progress
                    ),
                )
            )
            for kind in ("queued", "finished"):  # each statement sets the same columns for every row
                rows = [values for values in plain if (values["status"] == "queued") == (kind == "queued")]
                if rows:
                    session.execute(statement, rows)
        for ids in _chunks(special):
            for job in session.scalars(select(Job).where(Job.id.in_(ids))):
                self._apply(session, job, by_id[job.id], now)
        session.flush()
        return recorded

    def _finished_values(self, outcome: Outcome, now: datetime) -> dict[str, Any]:
        """The columns an outcome sets (for `_finish_in`'s one statement), with the row's keys."""
        values: dict[str, Any] = {
            "job_id": outcome.id,
            "token": outcome.token,
            "status": outcome.status,
            "error": outcome.error,
            "lease_token": None,
            "leased_by": None,
            "lease_expires": None,
            "new_version": outcome.served_version,
            "new_request_id": outcome.request_id,
            "new_progress": outcome.progress,
        }
        if outcome.status == "queued":
            values["run_at"] = outcome.run_at or now
        else:
            values |= {
                "outputs": outcome.outputs,
                "finished_at": now,
                "expires_at": now + timedelta(seconds=self.ttl),
            }
        return values

    def _apply(self, session: Session, job: Job, outcome: Outcome, now: datetime) -> None:
        """Record `outcome` through the job's row (it writes a webhook message, or honours a cancellation)."""
        job.served_version = outcome.served_version or job.served_version
        job.request_id = outcome.request_id or job.request_id
        if outcome.progress is not None:
            job.progress = outcome.progress
        if outcome.status == "queued" and job.cancel_requested:
            self._close(session, job, "canceled", now, error=dict(_CANCELED))
        elif outcome.status == "queued":
            job.status = "queued"
            job.run_at = outcome.run_at or now
            job.error = outcome.error
            job.lease_token = job.leased_by = job.lease_expires = None
        else:
            self._close(session, job, outcome.status, now, outputs=outcome.outputs, error=outcome.error)

    def release(self, leases: dict[str, str], *, now: datetime) -> None:
        """Put back jobs this gateway holds but will not finish (it is stopping), without counting the
        interrupted run as an attempt."""
        if not leases:
            return
        with self.database.writing() as session:
            for ids in _chunks(sorted(leases)):
                for job in session.scalars(select(Job).where(Job.id.in_(ids), Job.status == "running")):
                    if job.lease_token == leases[job.id]:
                        job.status, job.run_at = "queued", now
                        job.attempts = max(0, job.attempts - 1)
                        job.lease_token = job.leased_by = job.lease_expires = None

    # the caller's side

    def get(self, job_id: str) -> Job | None:
        with self.database.session() as session:
            return session.get(Job, job_id)

    def statuses(self, ids: Iterable[str]) -> dict[str, str]:
        """The status of each of `ids` that exists."""
        found: dict[str, str] = {}
        with self.database.session() as session:
            for chunk in _chunks(sorted(set(ids))):
                rows = session.execute(select(Job.id, Job.status).where(Job.id.in_(chunk)))
                found.update((job_id, status) for job_id, status in rows)
        return found

    def cancel(self, job_id: str, *, now: datetime) -> Job:
        """Cancel a job: a queued one at once, a running one by asking its gateway (which aborts the call
        at its next heartbeat, or at once when it is this one). Raises `JobNotFound`, or `JobFinished`
        for a job that has finished."""
        with self.database.writing() as session:
            query = select(Job).where(Job.id == job_id)
            if self.database.dialect == "postgresql":
                query = query.with_for_update()
            job = session.scalar(query)
            if job is None:
                raise JobNotFound(f"no job {job_id!r}")
            if job.status in FINISHED:
                raise JobFinished(f"job {job_id} has already {job.status}; there is nothing to cancel")
            if job.status == "queued":
                error = {"code": "canceled", "message": "the job was canceled before it ran", "status": 499}
                self._close(session, job, "canceled", now, error=error)
            else:
                job.cancel_requested = True
            session.flush()
            return job

    def page(
        self,
        *,
        where: Sequence[Any],
        before: tuple[datetime, str] | None,
        limit: int,
    ) -> list[Job]:
        """Up to `limit` jobs matching `where`, newest first, older than `before` (created_at, id)."""
        query = select(Job).where(*where)
        if before is not None:
            at, last = before
            query = query.where(or_(Job.created_at < at, and_(Job.created_at == at, Job.id < last)))
        query = query.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit)
        with self.database.session() as session:
            return list(session.scalars(query))

    def sweep(self, *, now: datetime, limit: int = 1000) -> list[Job]:
        """Delete up to `limit` finished jobs past their expiry (with their webhook messages and delivery
        records); returns them, so that their stored files can go too."""
        with self.database.session() as session:
            rows = list(
                session.scalars(
                    select(Job).where(Job.expires_at < now, Job.status.in_(FINISHED)).limit(limit)
                )
            )
            for job in rows:
                session.delete(job)
        return rows

    # inside transactions

    def _close(
        self,
        session: Session,
        job: Job,
        status: str,
        now: datetime,
        *,
        outputs: Any = None,
        error: dict[str, Any] | None = None,
    ) -> None:
        job.status = status
        job.outputs = outputs
        job.error = error
        job.finished_at = now
        job.expires_at = now + timedelta(seconds=self.ttl)
        job.lease_token = job.leased_by = job.lease_expires = None
        if "completed" in job.webhook_events:
            self._message(session, job, "job.completed", now)

    def _message(self, session: Session, job: Job, event: str, now: datetime) -> None:
        if job.webhook is None:
            return
        body = {
            "type": event,
            "timestamp": now.isoformat(),
            "data": job_info(job).model_dump(mode="json"),
        }
        session.add(
            WebhookMessage(
                id=f"msg_{secrets.token_hex(16)}",
                job_id=job.id,
                event=event,
                url=job.webhook,
                user_id=job.caller_id,
                body=json.dumps(body, separators=(",", ":")),
                state="pending",
                attempts=0,
                created_at=now,
                next_at=now,
            )
        )


def _row(new: NewJob, now: datetime) -> dict[str, Any]:
    """The columns of a job being queued."""
    return {
        "id": new.id,
        "kind": new.kind,
        "module": new.module,
        "version": new.version,
        "status": "queued",
        "caller": new.caller,
        "caller_id": new.caller_id,
        "owner": new.owner,
        "client": new.client,
        "request": new.request,
        "digest": new.digest,
        "idempotency_key": new.idempotency_key,
        "traceparent": new.traceparent,
        "webhook": new.webhook,
        "webhook_events": list(new.webhook_events),
        "attempts": 0,
        "max_attempts": new.max_attempts,
        "run_at": now,
        "cancel_requested": False,
        "created_at": now,
    }


def job_info(job: Job) -> JobInfo:
    """The record a caller sees of `job`."""
    request = job.request or {}
    return JobInfo(
        id=job.id,
        kind=job.kind,
        module=job.module,
        version=job.version,
        served_version=job.served_version,
        status=job.status,
        caller=job.caller,
        created_at=_iso(job.created_at),
        started_at=_iso(job.started_at),
        finished_at=_iso(job.finished_at),
        run_at=_iso(job.run_at) if job.status == "queued" else None,
        expires_at=_iso(job.expires_at),
        attempts=job.attempts,
        max_attempts=job.max_attempts,
        outputs=job.outputs if job.status == "succeeded" else None,
        error=JobError(**job.error) if job.error and job.status != "succeeded" else None,
        progress=JobProgress(**job.progress) if job.progress else None,
        webhook=job.webhook,
        webhook_events_filter=list(job.webhook_events or []),
        request_id=job.request_id,
        output=request.get("output") if job.kind == "batch" else None,
    )


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat()


def _chunks(ids: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(ids), _IN_CLAUSE):
        yield ids[start : start + _IN_CLAUSE]
