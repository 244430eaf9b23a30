"""Secrets never reach a log: tokens, JWTs, passwords, Authorization and Cookie values, URL credentials.

`redact` rewrites one text; `RedactingFilter` applies it to every record a handler emits (the message with
its arguments, and any exception text), and `install` puts the filter on the server's log handlers.
"""

from __future__ import annotations

import logging
import re

__all__ = ["RedactingFilter", "install", "redact"]

_REDACTED = "[redacted]"
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Header lines and pairs: Authorization: Bearer x, Cookie: a=b; Set-Cookie, Proxy-Authorization.
    (
        re.compile(r"(?i)\b((?:proxy-)?authorization|cookie|set-cookie)(['\"]?\s*[:=]\s*['\"]?)[^\n'\"]+"),
        rf"\1\2{_REDACTED}",
    ),
    # Bearer credentials anywhere.
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"), rf"\1 {_REDACTED}"),
    # modelport tokens.
    (re.compile(r"\bmp_[A-Za-z0-9_-]{8,}"), f"mp_{_REDACTED}"),
    # JWTs (header.payload.signature, base64url JSON objects).
    (re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"), _REDACTED),
    # password=..., "password": "...", secret / token / api_key / client_secret fields.
    (
        re.compile(
            r"(?i)([\"']?\b(?:password|passwd|secret|client_secret|api_key|access_token|refresh_token|token)"
            r"[\"']?\s*[:=]\s*[\"']?)[^\s\"'&,;}]+"
        ),
        rf"\1{_REDACTED}",
    ),
    # Credentials inside URLs: scheme://user:password@host.
    (re.compile(r"(\b[a-z][a-z0-9+.-]*://[^/\s:@]+:)[^/\s@]+@"), rf"\1{_REDACTED}@"),
)


def redact(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactingFilter(logging.Filter):
    """Rewrites each record's message (arguments merged in) and exception text with `redact`."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def install(level: int = logging.INFO) -> None:
    """Send modelport's logs to stderr and filter every handler of modelport's and uvicorn's loggers."""
    logger = logging.getLogger("modelport")
    if not any(isinstance(f, RedactingFilter) for h in logger.handlers for f in h.filters):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(level)
    for name in ("modelport", "uvicorn", "uvicorn.error", "uvicorn.access", ""):
        for existing in logging.getLogger(name).handlers:
            if not any(isinstance(f, RedactingFilter) for f in existing.filters):
                existing.addFilter(RedactingFilter())
