"""The shapes of names and addresses that more than one layer checks: each rule written once, here."""

from __future__ import annotations

import re

__all__ = [
    "BUCKET_NAME",
    "RATE_STORAGE_SCHEMES",
    "SIGNATURE_ALGORITHMS",
    "TOKEN",
    "TOKEN_PREFIX",
    "database_url",
]

TOKEN_PREFIX = "mp_"  # noqa: S105 - a public marker, not a secret
"""What every modelport token starts with; only bearer tokens with it are looked up as modelport tokens."""

TOKEN = re.compile(r"^mp_[\x21-\x7e]+$")
"""A token that can be looked up: the prefix, then printable ASCII without spaces (what survives an
Authorization header intact)."""

BUCKET_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{1,61}[a-z0-9])$")
"""A bucket's name: 3-63 of a-z, 0-9 and -, starting and ending with a letter or digit."""

SIGNATURE_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
"""The JWT signature algorithms an OIDC issuer's tokens may use: asymmetric ones only, never HMAC or none."""

RATE_STORAGE_SCHEMES = {
    "redis": "redis",
    "rediss": "rediss",
    "unix": "redis+unix",
    "redis+unix": "redis+unix",
}
"""The schemes a Redis URL for shared rate-limit counters may use (each also with an `async+` prefix), and
the name the `limits` library gives each."""


def database_url(url: str) -> str:
    """`url` as SQLAlchemy opens it: plain `postgresql://` and `postgres://` use psycopg 3, the driver
    modelport ships with."""
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url
