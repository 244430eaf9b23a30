"""API tokens: random secrets with a recognisable prefix, stored only as SHA-256 digests.

Tokens carry 256 bits of randomness, so a plain digest (looked up by its index) is the right storage; slow
password hashes are for passwords, which come with the identity work on accounts.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from modelport.db import ApiToken, Database
from modelport.db.models import utcnow

__all__ = ["TOKEN_PREFIX", "Principal", "Tokens", "new_secret"]

TOKEN_PREFIX = "mp_"  # noqa: S105 - a public marker, not a secret


@dataclass(frozen=True)
class Principal:
    """Who is calling."""

    name: str
    role: str
    token_id: int


def new_secret() -> str:
    """A fresh token secret: the prefix and 256 random bits."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class Tokens:
    """Issue and verify API tokens; verified tokens are remembered for `cache_seconds`."""

    def __init__(self, database: Database, *, cache_seconds: float) -> None:
        self.database = database
        self.cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, Principal]] = {}

    def issue(
        self, *, name: str, role: str, secret: str | None = None, expires_at: datetime | None = None
    ) -> str:
        """Store a new token and return its secret, which is never stored or shown again."""
        secret = secret or new_secret()
        with self.database.session() as session:
            session.add(
                ApiToken(
                    name=name, prefix=secret[:10], digest=digest(secret), role=role, expires_at=expires_at
                )
            )
        return secret

    def verify(self, secret: str) -> Principal | None:
        key = digest(secret)
        cached = self._cache.get(key)
        now = time.monotonic()
        if cached is not None and cached[0] > now:
            return cached[1]
        with self.database.session() as session:
            token = session.scalars(select(ApiToken).where(ApiToken.digest == key)).one_or_none()
            if token is None or token.revoked_at is not None:
                return None
            if token.expires_at is not None and token.expires_at <= utcnow():
                return None
            principal = Principal(name=token.name, role=token.role, token_id=token.id)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key] = (now + self.cache_seconds, principal)
        return principal

    def ensure_bootstrap(self, secret: str | None) -> str | None:
        """Make sure an admin token exists; return a newly made secret to show once, else None."""
        if secret is not None:
            with self.database.session() as session:
                known = session.scalars(select(ApiToken.id).where(ApiToken.digest == digest(secret))).first()
            if known is None:
                self.issue(name="bootstrap", role="admin", secret=secret)
            return None
        with self.database.session() as session:
            admin = session.scalars(select(ApiToken.id).where(ApiToken.role == "admin")).first()
        if admin is not None:
            return None
        return self.issue(name="bootstrap", role="admin")
