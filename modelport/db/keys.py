"""Secrets every gateway of the platform shares through the database (the key that signs presigned URLs, the
key that signs request-log cursors): made by whichever gateway asks first, read by the others."""

from __future__ import annotations

import secrets

from sqlalchemy.exc import IntegrityError

from modelport.db.database import Database
from modelport.db.models import ServerKey

__all__ = ["server_secret"]


def server_secret(database: Database, name: str) -> bytes:
    """The secret of the `server_keys` row `name`, made now if no gateway has yet."""
    with database.session() as session:
        row = session.get(ServerKey, name)
        if row is not None:
            return bytes.fromhex(row.secret)
    try:
        with database.session() as session:
            session.add(ServerKey(name=name, secret=secrets.token_hex(32)))
    except IntegrityError:  # another gateway made it first
        pass
    with database.session() as session:
        row = session.get(ServerKey, name)
        assert row is not None
        return bytes.fromhex(row.secret)
