"""The request being served: a context variable set per request (`gateway/context.py`), so that what the
server logs while answering it (the error mapping, say) names it."""

from __future__ import annotations

from contextvars import ContextVar

__all__ = ["request_id_var"]

request_id_var: ContextVar[str | None] = ContextVar("modelport_request_id", default=None)
