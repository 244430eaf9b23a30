"""The request log: one row per answered call, written in batches off the request path, and read back page by
page by those who may see the calls.

`RequestLog` is a call observer. `observe` only appends the call to a bounded buffer (a full buffer drops
the call and counts it in `dropped`), and, for a module whose `Api` manifests capture payloads, decides at
once whether this call is sampled and hands its payload to the `PayloadWriter`. A flusher thread writes the
buffer every `request_log_flush_seconds`, or as soon as a batch of `_BATCH` calls is waiting, one
transaction per batch. While the database is unavailable the calls wait in the buffer and the flusher tries
again (one warning per outage); on shutdown it writes what is left. Rows older than `request_log_days` are
deleted hourly, in batches.

Who sees which calls: admins every call; developers the calls of the modules their group owns, and their own;
everyone else only their own. A call, or a module, the caller may not see is answered as if it did not exist.
Pages are ordered newest first and continued with an opaque cursor signed with a key every gateway shares.
"""

from __future__ import annotations

import builtins
import functools
import itertools
import logging
import math
import random
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, CursorResult, and_, delete, false, or_, select, true
from sqlalchemy.exc import SQLAlchemyError

from modelport.control.access import AccessPolicies, may_call, may_manage
from modelport.control.cursors import Cursors
from modelport.control.identity import Principal
from modelport.control.payloads import PayloadWriter, read_payload
from modelport.core.errors import (
    ModelportError,
    ModuleNotFound,
    NotFound,
    ValidationFailed,
    field_error,
)
from modelport.core.records import RequestDetail, RequestList, RequestRecord
from modelport.core.roles import Role
from modelport.core.settings import Settings
from modelport.core.times import parse_instant
from modelport.db import Database, Module, RequestLogEntry
from modelport.db.database import failure, unavailable
from modelport.obs.calls import CallPayload, CallRecord
from modelport.storage import ObjectStore

__all__ = ["RequestLog"]

log = logging.getLogger("modelport.requests")

_BATCH = 1000
_COLUMNS = tuple(column.name for column in RequestLogEntry.__table__.columns)
_ROWS_PER_STATEMENT = 400
"""Rows per INSERT statement: 400 rows of 24 values stay under SQLite's and PostgreSQL's parameter limits."""
"""Calls written per transaction; a full batch is written at once, without waiting for the interval."""
_SWEEP_SECONDS = 3600.0
_SWEEP_RETRY_SECONDS = 60.0
_SWEEP_BATCH = 5000
_CURSOR_KEY = "request-log-cursor"
"""The `server_keys` row whose secret signs the request log's cursors."""
_STATUS = re.compile(r"^([1-5])(?:xx|\d\d)$")
_MAX_LIMIT = 1000
_Buffered = tuple[CallRecord, str | None]


class RequestLog:
    """The request log of the platform's calls, in `database`; captured payloads go to the request bucket
    (`settings.request_bucket`) of `store`. `policies` says who sees which calls and which modules capture."""

    def __init__(
        self,
        database: Database,
        *,
        settings: Settings,
        store: ObjectStore,
        policies: AccessPolicies,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.database, self.settings, self.store, self.policies = database, settings, store, policies
        self.clock = clock
        self.enabled = settings.request_log
        self.capacity = settings.request_log_buffer
        self.dropped = 0
        """Calls dropped because the buffer was full (read by the metrics)."""
        self.refused = 0
        """Calls the database refused to store (a value it cannot hold); logged, never retried."""
        self.payloads = PayloadWriter(store, bucket=settings.request_bucket)
        self._buffer: deque[_Buffered] = deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._flushing = threading.Lock()
        self._thread: threading.Thread | None = None
        self._outage = False
        self._next_sweep = 0.0
        self.cursors = Cursors(database, _CURSOR_KEY)

    # Taking note (the event loop)

    def observe(self, record: CallRecord, payload: CallPayload | None) -> None:
        """Buffer the call's row, and queue its payload if its module captures them and it is sampled."""
        if not self.enabled:
            return
        if len(self._buffer) >= self.capacity:
            self.dropped += 1
            return
        key = self._capture(record, payload) if payload is not None else None
        self._buffer.append((record, key))
        if len(self._buffer) % _BATCH == 0:
            self._wake.set()

    def _capture(self, record: CallRecord, payload: CallPayload) -> str | None:
        policy = self.policies.cached(record.module)  # memory only: a call never waits on the database
        spec = policy.payload_logging if policy is not None else None
        if spec is None or random.random() >= spec.sample_rate:
            return None
        return self.payloads.submit(record.module, record.at, payload, spec)

    @property
    def buffered(self) -> int:
        """Calls waiting to be written."""
        return len(self._buffer)

    # Writing (the flusher thread)

    def start(self) -> None:
        """Start writing in the background (the flusher and the payload writer)."""
        self.payloads.start()
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="request-log", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Write what is buffered and stop (blocking)."""
        if self._thread is not None:
            self._stop.set()
            self._wake.set()
            self._thread.join()
            self._thread = None
        self.payloads.close()

    def _run(self) -> None:
        interval = self.settings.request_log_flush_seconds
        while not self._stop.is_set():
            self._wake.wait(interval)
            self._wake.clear()
            self.flush()
            if self.clock() >= self._next_sweep:
                self._sweep_now()
        self.flush()
        if self._buffer:
            log.warning("request log: %d calls could not be written before the server stopped", self.buffered)

    def flush(self) -> int:
        """Write what was buffered when the flush began, one transaction per batch; returns the rows
        written. Stops at the first batch the database cannot take now (its calls stay buffered for the next
        try).

        Calls answered meanwhile wait for the next flush: chasing them would write a busy server's log as a
        stream of transactions of a few rows each, every one paying a whole commit."""
        written = 0
        with self._flushing:
            waiting = len(self._buffer)
            while written < waiting:
                # Only this thread removes calls, from the left; `observe` appends on the right meanwhile.
                batch = [self._buffer[i] for i in range(min(_BATCH, waiting - written))]
                if not self._write(batch):
                    break
                for _ in batch:
                    self._buffer.popleft()
                written += len(batch)
        return written

    def _write(self, batch: builtins.list[_Buffered]) -> bool:
        """Insert one batch; False when the database is unavailable (the batch is to be tried again)."""
        postgres = self.database.dialect == "postgresql"
        rows = [_row(record, key, postgres=postgres) for record, key in batch]
        try:
            self._insert(rows)
        except SQLAlchemyError as exc:
            if unavailable(exc):
                if not self._outage:
                    log.warning(
                        "request log: the database is unavailable (%s); %d calls wait in memory",
                        failure(exc),
                        len(self._buffer),
                    )
                self._outage = True
                return False
            self._write_each(rows)
        if self._outage:
            log.info("request log: the database is back; the calls that waited are written")
            self._outage = False
        return True

    def _write_each(self, rows: builtins.list[tuple[Any, ...]]) -> None:
        """Insert rows one by one after their batch was refused, so that one bad row costs only itself."""
        for row in rows:
            try:
                self._insert([row])
            except SQLAlchemyError as exc:
                if unavailable(exc):
                    raise
                self.refused += 1
                log.error("request log: call %s cannot be stored: %s", row[0], failure(exc))

    def _insert(self, rows: builtins.list[tuple[Any, ...]]) -> None:
        """One transaction of multi-row INSERTs; a call already stored (a batch written before its commit was
        acknowledged) is skipped.

        The rows go to the driver as a few statements of many rows each, not one execution per row: this
        thread then gives the interpreter back to the event loop a few times per flush instead of once per
        row, so writing the log does not slow the calls down. The statements are the driver's own SQL,
        with every value bound as a parameter."""
        postgres = self.database.dialect == "postgresql"
        with self.database.session() as session:
            connection = session.connection()
            for start in range(0, len(rows), _ROWS_PER_STATEMENT):
                chunk = rows[start : start + _ROWS_PER_STATEMENT]
                values = tuple(itertools.chain.from_iterable(chunk))
                connection.exec_driver_sql(_insert_sql(len(chunk), postgres=postgres), values)

    # Retention

    def sweep(self, *, now: float | None = None, between: Callable[[], object] | None = None) -> int:
        """Delete the rows older than `request_log_days`, `_SWEEP_BATCH` per transaction, calling `between`
        after each full batch (the flusher writes the calls waiting meanwhile); returns how many went."""
        now = self.clock() if now is None else now
        cutoff = datetime.fromtimestamp(now, UTC) - timedelta(days=self.settings.request_log_days)
        removed = 0
        while True:
            expired = select(RequestLogEntry.id).where(RequestLogEntry.at < cutoff).limit(_SWEEP_BATCH)
            with self.database.session() as session:
                done = session.execute(delete(RequestLogEntry).where(RequestLogEntry.id.in_(expired)))
                count = done.rowcount if isinstance(done, CursorResult) else 0
            removed += count
            if count < _SWEEP_BATCH:
                return removed
            if between is not None:
                between()

    def _sweep_now(self) -> None:
        try:
            removed = self.sweep(between=self.flush)
        except SQLAlchemyError as exc:
            log.warning("request log: removing old calls failed (%s); trying again later", failure(exc))
            self._next_sweep = self.clock() + _SWEEP_RETRY_SECONDS
            return
        if removed:
            log.info(
                "request log: removed %d calls older than %g days", removed, self.settings.request_log_days
            )
        self._next_sweep = self.clock() + _SWEEP_SECONDS

    # Reading (worker threads)

    def list(
        self,
        principal: Principal,
        *,
        module: str | None = None,
        version: str | None = None,
        status: str | None = None,
        code: str | None = None,
        caller: str | None = None,
        since: str | None = None,
        until: str | None = None,
        min_latency_ms: float | None = None,
        pipeline: str | None = None,
        parent: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> RequestList:
        """The calls `principal` may see that match every filter given, newest first, at most `limit`.

        `status` is a status (`200`) or a class (`5xx`); `since` and `until` are ISO 8601 instants or
        durations before now (`30m`, `1h`, `7d`); `cursor` is a page's `next_cursor`. Each bad filter is
        named in one 422; a cursor this server did not give is 400 `invalid_cursor`; a module the caller may
        not see is 404."""
        query = _Query.parse(
            status=status,
            since=since,
            until=until,
            min_latency_ms=min_latency_ms,
            limit=limit,
            now=self.clock(),
        )
        after = self.cursors.decode(cursor) if cursor is not None else None
        entry = RequestLogEntry
        conditions: builtins.list[ColumnElement[bool]] = [self._visible(principal, module)]
        filters = (
            (entry.module, module),
            (entry.version, version),
            (entry.code, code),
            (entry.pipeline, pipeline),
            (entry.parent_id, parent),
        )
        for column, value in filters:
            if value is not None:
                conditions.append(column == value)
        if caller is not None:
            conditions.append(entry.caller == caller)
        if query.statuses is not None:
            conditions.append(entry.status.between(*query.statuses))
        if query.since is not None:
            conditions.append(entry.at >= query.since)
        if query.until is not None:
            conditions.append(entry.at <= query.until)
        if min_latency_ms is not None:
            conditions.append(entry.total_ms >= min_latency_ms)
        if after is not None:
            at, last = after
            conditions.append(or_(entry.at < at, and_(entry.at == at, entry.id < last)))
        statement = (
            select(entry).where(*conditions).order_by(entry.at.desc(), entry.id.desc()).limit(limit + 1)
        )
        with self.database.session() as session:
            rows = session.scalars(statement).all()
        page = [_record(row) for row in rows[:limit]]
        oldest = rows[limit - 1] if len(rows) > limit else None
        following = self.cursors.encode(oldest.at, oldest.id) if oldest is not None else None
        return RequestList(requests=page, next_cursor=following)

    def get(self, principal: Principal, request_id: str) -> RequestDetail:
        """One call, with its payload when it was captured; 404 for a call the principal may not see."""
        with self.database.session() as session:
            row = session.get(RequestLogEntry, request_id) if len(request_id) <= 32 else None
        if row is None or not self._may_see(principal, row):
            raise NotFound(f"no request {request_id!r}, or none you may see")
        record = _record(row)
        return RequestDetail(
            **record.model_dump(),
            payload=self._payload(row.payload) if row.payload else None,
            logs_url=f"/api/v1/modules/{row.module}/logs?request_id={row.id}",
        )

    def _payload(self, key: str) -> dict[str, Any] | None:
        """The captured payload, or None when it was never written or is no longer kept."""
        try:
            value = read_payload(self.store, self.settings.request_bucket, key)
        except (ModelportError, OSError, ValueError):
            return None
        return value if isinstance(value, dict) else None

    def _visible(self, principal: Principal, module: str | None) -> ColumnElement[bool]:
        """The condition on rows that `principal` may see (of `module`, when given)."""
        entry = RequestLogEntry
        own = entry.caller_id == principal.user_id if principal.user_id is not None else false()
        if module is not None:
            if principal.role == Role.ADMIN:
                return entry.module == module
            policy = self.policies.policy(module)
            if policy is None or not (may_manage(principal, policy) or may_call(principal, policy)):
                raise ModuleNotFound(f"no module named {module!r}")
            return entry.module == module if may_manage(principal, policy) else own
        if principal.role == Role.ADMIN:
            return true()
        if principal.role == Role.DEVELOPER and principal.groups:
            owned = select(Module.name).where(Module.owner.in_(sorted(principal.groups)))
            return or_(entry.module.in_(owned), own)
        return own

    def _may_see(self, principal: Principal, row: RequestLogEntry) -> bool:
        if principal.role == Role.ADMIN:
            return True
        if principal.user_id is not None and row.caller_id == principal.user_id:
            return True
        policy = self.policies.policy(row.module)
        return policy is not None and may_manage(principal, policy)


@dataclass(frozen=True)
class _Query:
    """The filters of `RequestLog.list` that need parsing, parsed; `parse` names every bad one."""

    statuses: tuple[int, int] | None
    since: datetime | None
    until: datetime | None

    @classmethod
    def parse(
        cls,
        *,
        status: str | None,
        since: str | None,
        until: str | None,
        min_latency_ms: float | None,
        limit: int,
        now: float,
    ) -> _Query:
        problems: builtins.list[dict[str, str]] = []
        statuses = None
        if status is not None:
            statuses = _statuses(status)
            if statuses is None:
                problems.append(
                    field_error("status", "invalid", "expected a status such as 200 or a class such as 5xx")
                )
        instants: dict[str, datetime | None] = {"since": None, "until": None}
        for name, value in (("since", since), ("until", until)):
            if value is not None:
                try:
                    instants[name] = parse_instant(value, now=datetime.fromtimestamp(now, UTC))
                except ValueError as exc:
                    problems.append(field_error(name, "invalid", str(exc)))
        first, last = instants["since"], instants["until"]
        if first is not None and last is not None and first > last:
            problems.append(field_error("since", "after_until", "since is later than until"))
        if min_latency_ms is not None and not (math.isfinite(min_latency_ms) and min_latency_ms >= 0):
            problems.append(
                field_error("min_latency_ms", "invalid", "expected a number of milliseconds >= 0")
            )
        if not 1 <= limit <= _MAX_LIMIT:
            problems.append(field_error("limit", "out_of_range", f"expected 1 to {_MAX_LIMIT}"))
        if problems:
            raise ValidationFailed("the request log query is not valid", details=problems)
        return cls(statuses, first, last)


def _statuses(status: str) -> tuple[int, int] | None:
    """The range of statuses `status` means (`404`: 404 to 404; `5xx`: 500 to 599); None if it is neither."""
    match = _STATUS.match(status.strip().lower())
    if match is None:
        return None
    if status.strip().lower().endswith("xx"):
        first = int(match.group(1)) * 100
        return first, first + 99
    return int(status), int(status)


@functools.lru_cache(maxsize=8)
def _insert_sql(rows: int, *, postgres: bool) -> str:
    """`INSERT` of `rows` rows of every request-log column, skipping ids already stored."""
    mark = "%s" if postgres else "?"
    row = "(" + ", ".join([mark] * len(_COLUMNS)) + ")"
    into = f"INTO request_log ({', '.join(_COLUMNS)}) VALUES {', '.join([row] * rows)}"
    return f"INSERT {into} ON CONFLICT (id) DO NOTHING" if postgres else f"INSERT OR IGNORE {into}"


@functools.lru_cache(maxsize=4)
def _utc_second(second: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(second))


def _sqlite_time(at: float) -> str:
    """`at` as `datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")` writes it, at a fraction
    of its cost: the calls of one second share their second's text."""
    fraction, second = math.modf(at)  # rounded as `datetime.fromtimestamp` rounds: half to even
    micros = round(fraction * 1_000_000)
    if micros >= 1_000_000:
        second, micros = second + 1, micros - 1_000_000
    return f"{_utc_second(int(second))}.{micros:06d}"


def _row(record: CallRecord, key: str | None, *, postgres: bool) -> tuple[Any, ...]:
    """The `request_log` row of a call, in `_COLUMNS` order, its texts cut to their columns' widths (on
    SQLite the time as the UTC text SQLAlchemy keeps timestamps as)."""
    return (
        record.id[:32],
        record.trace_id[:32],
        datetime.fromtimestamp(record.at, UTC) if postgres else _sqlite_time(record.at),
        record.kind[:16],
        record.module[:63],
        record.version[:64],
        record.replica,
        record.caller[:255],
        record.caller_id,
        record.client[:64] if record.client else None,
        record.status,
        record.code[:64] if record.code else None,
        record.total * 1000,
        record.queue * 1000,
        record.compute * 1000,
        record.batch_size,
        record.records,
        record.request_bytes,
        record.response_bytes,
        record.model_key[:128] if record.model_key else None,
        key,
        record.parent[:32] if record.parent else None,
        record.pipeline[:63] if record.pipeline else None,
        record.step[:63] if record.step else None,
    )


def _record(row: RequestLogEntry) -> RequestRecord:
    return RequestRecord(
        id=row.id,
        trace_id=row.trace_id,
        at=row.at.isoformat(),
        kind=row.kind,
        module=row.module,
        version=row.version,
        replica=row.replica,
        caller=row.caller,
        caller_id=row.caller_id,
        client=row.client,
        status=row.status,
        code=row.code,
        total_ms=row.total_ms,
        queue_ms=row.queue_ms,
        compute_ms=row.compute_ms,
        batch_size=row.batch_size,
        records=row.records,
        request_bytes=row.request_bytes,
        response_bytes=row.response_bytes,
        model_key=row.model_key,
        payload_key=row.payload,
        parent_id=row.parent_id,
        pipeline=row.pipeline,
        step=row.step,
    )
