"""The publication history: what happened to each module, as a timeline its owners can read.

Each event is one `module_events` row written by the service that did the work, in the worker thread that did
it: `push` (the version, its tag, commit and digest), `build` (succeeded or failed, how long it took, the
error), `deploy` (who asked for which version, replacing which, with how many replicas), `switch` (the
reconciler made the version active; `seconds` runs from the request to the swap), `canary` (set, changed
or removed, with its percent), `rollback` (who, from which version to which), `scale` (replicas before and
after), `failure` (a version that did not roll out, and why) and `delete` (the module was deleted).

Events outlive their module, so the history of a deleted module stays readable by admins. A module created
again under a name used before starts a history of its own for its owners: they see only events since it was
created. Recording never fails the work it describes: a row that cannot be written is logged and dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, get_args

from sqlalchemy import and_, or_, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from modelport.core.errors import ValidationFailed, field_error
from modelport.core.records import HistoryList, ModuleEventKind, ModuleEventRecord
from modelport.db import Database, Module, ModuleEvent
from modelport.obs.redact import redact

__all__ = ["EVENT_KINDS", "History", "OnEvent"]

log = logging.getLogger("modelport.history")

EVENT_KINDS: tuple[str, ...] = get_args(ModuleEventKind)
MAX_LIMIT = 1000
_DETAIL_CHARS = 2000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

OnEvent = Callable[[str, str | None, float | None], None]
"""Told `(kind, outcome, seconds)` after each event is recorded (build and switch durations for metrics)."""


class History:
    """Record a module's events (`record`, or `add` within the change they describe) and read them back
    newest first (`timeline`). They wait on the database: call them in worker threads."""

    def __init__(self, database: Database, on_event: OnEvent | None = None) -> None:
        self.database = database
        self.on_event = on_event

    def record(
        self,
        module: str,
        kind: str,
        *,
        version: str | None = None,
        from_version: str | None = None,
        actor: str | None = None,
        outcome: str | None = None,
        seconds: float | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> ModuleEventRecord | None:
        """Write one event and tell `on_event`; returns it, or None when the database refused it (logged).

        Detail values that are None are left out; text is cut to 2000 characters with secrets redacted."""
        try:
            with self.database.session() as session:
                row = self.add(
                    session,
                    module,
                    kind,
                    version=version,
                    from_version=from_version,
                    actor=actor,
                    outcome=outcome,
                    seconds=seconds,
                    details=details,
                )
                session.flush()
                event = _record(row)
        except SQLAlchemyError as exc:
            log.warning("the %s event of %s could not be recorded: %s", kind, module, exc)
            return None
        self.notify(row)
        return event

    def add(
        self,
        session: Session,
        module: str,
        kind: str,
        *,
        version: str | None = None,
        from_version: str | None = None,
        actor: str | None = None,
        outcome: str | None = None,
        seconds: float | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> ModuleEvent:
        """Add one event to `session`, to be written in the same transaction as the change it describes, so
        that nothing acting on the change can come before it in the timeline (a switch before its deploy).
        Hand the row to `notify` once the transaction commits."""
        if kind not in EVENT_KINDS:
            raise ValueError(f"{kind!r} is not an event kind: one of {', '.join(EVENT_KINDS)}")
        row = ModuleEvent(
            module=module,
            kind=kind,
            version=version,
            from_version=from_version,
            actor=actor[:255] if actor else None,
            outcome=outcome,
            seconds=seconds,
            details=_clean(details or {}),
        )
        session.add(row)
        return row

    def notify(self, row: ModuleEvent) -> None:
        """Tell `on_event` about an event written; a listener that raises is logged, never felt."""
        if self.on_event is None:
            return
        try:
            self.on_event(row.kind, row.outcome, row.seconds)
        except Exception:  # a listener's failure must not fail the work the event describes
            log.exception("a listener failed on the %s event of %s", row.kind, row.module)

    def timeline(
        self,
        module: str,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        kinds: Collection[str] | None = None,
        limit: int = 100,
        cursor: str | None = None,
        current: bool = False,
    ) -> HistoryList:
        """The module's events newest first: at or after `since`, before `until`, of the `kinds` given (all
        when None or empty), at most `limit`, older than the event `cursor` names (a page's `next_cursor`).
        With `current`, only those since the module of this name was created.

        Values that can never match raise `ValidationFailed` naming the field."""
        since, until = _utc(since, field="since"), _utc(until, field="until")
        _check(since=since, until=until, kinds=kinds, limit=limit)
        query = select(ModuleEvent).where(ModuleEvent.module == module)
        if since is not None:
            query = query.where(ModuleEvent.at >= since)
        if until is not None:
            query = query.where(ModuleEvent.at < until)
        if kinds:
            query = query.where(ModuleEvent.kind.in_(sorted(set(kinds))))
        if cursor is not None:
            at, last = _decode(cursor)
            query = query.where(or_(ModuleEvent.at < at, and_(ModuleEvent.at == at, ModuleEvent.id < last)))
        query = query.order_by(ModuleEvent.at.desc(), ModuleEvent.id.desc()).limit(limit + 1)
        with self.database.session() as session:
            if current:
                created = session.scalar(select(Module.created_at).where(Module.name == module))
                if created is not None:
                    query = query.where(ModuleEvent.at >= created)
            rows = session.scalars(query).all()
            events = [_record(row) for row in rows[:limit]]
            following = _encode(rows[limit - 1]) if len(rows) > limit else None
        return HistoryList(events=events, next_cursor=following)

    def known(self, module: str) -> bool:
        """Whether any event was ever recorded for a module of this name (deleted ones included)."""
        with self.database.session() as session:
            found = session.scalar(select(ModuleEvent.id).where(ModuleEvent.module == module).limit(1))
        return found is not None

    def requested_at(self, module: str, version: str) -> datetime | None:
        """When `version` of `module` was last asked to become active (a deploy or a rollback, by anyone, on
        any gateway); None if it never was, or if the database cannot say now (logged)."""
        query = (
            select(ModuleEvent.at)
            .where(
                ModuleEvent.module == module,
                ModuleEvent.version == version,
                ModuleEvent.kind.in_(["deploy", "rollback"]),
            )
            .order_by(ModuleEvent.at.desc(), ModuleEvent.id.desc())
            .limit(1)
        )
        try:
            with self.database.session() as session:
                return session.scalar(query)
        except SQLAlchemyError as exc:
            log.warning("when %s %s was asked for could not be read: %s", module, version, exc)
            return None


def _record(row: ModuleEvent) -> ModuleEventRecord:
    return ModuleEventRecord(
        id=row.id,
        module=row.module,
        at=row.at.isoformat(),
        kind=row.kind,
        version=row.version,
        from_version=row.from_version,
        actor=row.actor,
        outcome=row.outcome,
        seconds=row.seconds,
        details=row.details,
    )


def _clean(details: Mapping[str, Any]) -> dict[str, Any]:
    """The details worth keeping: None values left out, text cut short and redacted."""
    kept: dict[str, Any] = {}
    for key, value in details.items():
        if value is None:
            continue
        kept[key] = redact(value[:_DETAIL_CHARS]) if isinstance(value, str) else value
    return kept


def _utc(moment: datetime | None, *, field: str) -> datetime | None:
    """The time in UTC; one without a zone is taken as UTC, as every time the platform answers is."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # a zone's offset pushes it past year 1 or 9999
        problem = field_error(field, "out_of_range", f"{field} is out of the range of times")
        raise ValidationFailed("the history query is not valid", details=[problem]) from None


def _check(
    *, since: datetime | None, until: datetime | None, kinds: Collection[str] | None, limit: int
) -> None:
    problems = []
    unknown = sorted(set(kinds or ()) - set(EVENT_KINDS))
    if unknown:
        message = f"unknown event kind {', '.join(map(repr, unknown))}: use {', '.join(EVENT_KINDS)}"
        problems.append(field_error("kind", "invalid_kind", message))
    if not 1 <= limit <= MAX_LIMIT:
        problems.append(field_error("limit", "out_of_range", f"limit must be from 1 to {MAX_LIMIT}"))
    if since is not None and until is not None and until <= since:
        problems.append(field_error("until", "before_since", "until must be later than since"))
    if problems:
        raise ValidationFailed("the history query is not valid", details=problems)


def _encode(row: ModuleEvent) -> str:
    """A page's cursor: the last event's time (microseconds since 1970) and id, which order the timeline."""
    micros = (row.at - _EPOCH) // timedelta(microseconds=1)
    return f"{micros}.{row.id}"


def _decode(cursor: str) -> tuple[datetime, int]:
    micros, _, last = cursor.partition(".")
    try:
        at, number = _EPOCH + timedelta(microseconds=int(micros)), int(last)
        if number < 1:
            raise ValueError(last)
    except (ValueError, OverflowError):
        message = "cursor is not a next_cursor this server gave"
        raise ValidationFailed(
            "the history query is not valid", details=[field_error("cursor", "invalid_cursor", message)]
        ) from None
    return at, number
