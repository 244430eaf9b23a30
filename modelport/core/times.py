"""Times as people type them in query strings and on the command line: an ISO 8601 instant, or a span before
now (`90s`, `30m`, `1h`, `7d`, `2w`)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

__all__ = ["parse_instant"]

_SPAN = re.compile(r"^(\d{1,9})\s*([smhdw])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_LONGEST = timedelta(days=36_500)


def parse_instant(value: str, *, now: datetime) -> datetime:
    """The UTC instant `value` names: an ISO 8601 time (UTC when it names no zone), or a span before `now`;
    ValueError saying what is expected otherwise."""
    text = value.strip()
    span = _SPAN.match(text)
    if span is not None:
        length = timedelta(seconds=int(span[1]) * _SECONDS[span[2]])
        if length > _LONGEST:
            raise ValueError("a span of at most 36500 days")
        return now - length
    try:
        instant = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            "expected an ISO 8601 time (2026-12-01T10:00:00Z) or a span before now (30s, 10m, 1h, 7d, 2w)"
        ) from None
    return instant.replace(tzinfo=UTC) if instant.tzinfo is None else instant.astimezone(UTC)
