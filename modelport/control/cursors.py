"""Opaque page cursors: the last row's (time, id) of a page, signed with a key every gateway shares, so that a
cursor is passed back unchanged or refused (400 `invalid_cursor`), never trusted as a query."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime

from modelport.core.errors import InvalidCursor
from modelport.db import Database
from modelport.db.keys import server_secret

__all__ = ["Cursors"]


class Cursors:
    """Cursors signed with the `server_keys` secret named `key` (made by whichever gateway needs it first)."""

    def __init__(self, database: Database, key: str) -> None:
        self.database, self.key = database, key
        self._secret: bytes | None = None

    def encode(self, at: datetime, last: str) -> str:
        body = base64.urlsafe_b64encode(json.dumps([at.isoformat(), last]).encode()).rstrip(b"=")
        return f"{body.decode()}.{self._sign(body)}"

    def decode(self, cursor: str) -> tuple[datetime, str]:
        body, _, signature = cursor.partition(".")
        refused = InvalidCursor("the cursor is not one this server gave: pass back a page's next_cursor")
        if not body or not hmac.compare_digest(self._sign(body.encode()).encode(), signature.encode()):
            raise refused
        try:
            at, last = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
            return datetime.fromisoformat(at).astimezone(UTC), str(last)
        except (ValueError, TypeError):
            raise refused from None

    def _sign(self, body: bytes) -> str:
        if self._secret is None:
            self._secret = server_secret(self.database, self.key)
        digest = hmac.new(self._secret, body, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
