"""The audit trail: every change to the platform's state, with who made it, what it was, when, and from where.

Actions are named `noun.verb`, the verb in the present tense (`module.deploy`, `token.create`,
`storage.delete`), whichever route made the change: deleting a module through its route or its manifest is
`module.delete` both ways. Details never hold secrets: callers pass only names, ids and settings, and `record`
drops any detail whose key names a secret as a second line of defence.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from modelport.core.records import ApplyAction, AuditEvent
from modelport.db import AuditEvent as EventRow
from modelport.db import Database

__all__ = ["SYSTEM", "Actor", "AuditTrail", "manifest_action"]

log = logging.getLogger("modelport.audit")

_SECRET_WORDS = ("password", "secret", "token", "authorization", "cookie")
_MANIFEST_VERBS: dict[ApplyAction, str] = {"created": "create", "configured": "update", "deleted": "delete"}


@dataclass(frozen=True)
class Actor:
    """Who made a change and from where: a user's name, or `system` for the platform's own acts."""

    name: str
    client: str | None = None
    request_id: str | None = None


SYSTEM = Actor("system")


def manifest_action(kind: str, result: ApplyAction) -> str:
    """The action of a manifest change (`result`, as `apply` and `delete` report it) to an object of `kind`:
    `module.create`, `api.update`, `storage.delete`."""
    return f"{kind.lower()}.{_MANIFEST_VERBS[result]}"


class AuditTrail:
    def __init__(self, database: Database) -> None:
        self.database = database

    def record(self, actor: Actor, action: str, target: str, **details: Any) -> None:
        safe = {k: v for k, v in details.items() if not any(word in k.lower() for word in _SECRET_WORDS)}
        with self.database.session() as session:
            session.add(
                EventRow(
                    actor=actor.name[:255],
                    action=action[:64],
                    target=target[:255],
                    client=actor.client[:64] if actor.client else None,
                    request_id=actor.request_id[:64] if actor.request_id else None,
                    details=safe,
                )
            )
        log.info("audit: %s %s %s", actor.name, action, target)

    def events(
        self,
        *,
        actor: str | None = None,
        action: str | None = None,
        target: str | None = None,
        since: datetime | None = None,
        before: int | None = None,
        limit: int = 100,
    ) -> list[AuditEvent]:
        """Events newest first; `before` (an event id) pages back through older ones."""
        query = select(EventRow).order_by(EventRow.id.desc()).limit(limit)
        if actor is not None:
            query = query.where(EventRow.actor == actor)
        if action is not None:
            query = query.where(EventRow.action == action)
        if target is not None:
            query = query.where(EventRow.target == target)
        if since is not None:
            query = query.where(EventRow.at >= since)
        if before is not None:
            query = query.where(EventRow.id < before)
        with self.database.session() as session:
            return [_event(row) for row in session.scalars(query)]


def _event(row: EventRow) -> AuditEvent:
    return AuditEvent(
        id=row.id,
        at=row.at.isoformat(),
        actor=row.actor,
        action=row.action,
        target=row.target,
        client=row.client,
        request_id=row.request_id,
        details=row.details,
    )
