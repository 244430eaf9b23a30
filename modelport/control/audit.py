"""The audit trail: every change to the platform's state, with who made it, what it was, when, and from where.

Details never hold secrets: callers pass only names, ids and settings, and `record` drops any detail whose
key names a secret as a second line of defence.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from modelport.db import AuditEvent, Database

__all__ = ["SYSTEM", "Actor", "AuditTrail"]

log = logging.getLogger("modelport.audit")

_SECRET_WORDS = ("password", "secret", "token", "authorization", "cookie")


@dataclass(frozen=True)
class Actor:
    """Who made a change and from where: a user's name, or `system` for the platform's own acts."""

    name: str
    client: str | None = None
    request_id: str | None = None


SYSTEM = Actor("system")


class AuditTrail:
    def __init__(self, database: Database) -> None:
        self.database = database

    def record(self, actor: Actor, action: str, target: str, **details: Any) -> None:
        safe = {k: v for k, v in details.items() if not any(word in k.lower() for word in _SECRET_WORDS)}
        with self.database.session() as session:
            session.add(
                AuditEvent(
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
    ) -> list[dict[str, Any]]:
        """Events newest first; `before` (an event id) pages back through older ones."""
        query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
        if actor is not None:
            query = query.where(AuditEvent.actor == actor)
        if action is not None:
            query = query.where(AuditEvent.action == action)
        if target is not None:
            query = query.where(AuditEvent.target == target)
        if since is not None:
            query = query.where(AuditEvent.at >= since)
        if before is not None:
            query = query.where(AuditEvent.id < before)
        with self.database.session() as session:
            return [
                {
                    "id": event.id,
                    "at": event.at.isoformat(),
                    "actor": event.actor,
                    "action": event.action,
                    "target": event.target,
                    "client": event.client,
                    "request_id": event.request_id,
                    "details": event.details,
                }
                for event in session.scalars(query)
            ]
