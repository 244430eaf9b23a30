"""The request a server log line was written for: a context variable set per request, and a logging filter
that puts it on every record (`%(request_id)s`)."""

from __future__ import annotations

import logging
from contextvars import ContextVar

__all__ = ["RequestIdFilter", "request_id_var"]

request_id_var: ContextVar[str | None] = ContextVar("modelport_request_id", default=None)


class RequestIdFilter(logging.Filter):
    """Sets `record.request_id` to the id of the request being served (`-` outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get() or "-"
        return True
