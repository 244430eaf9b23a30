"""The call a module is serving: the ids of its requests and their W3C trace context.

Inside `inference`, `current_call()` says which requests the records came from (several, when the gateway
batched concurrent requests into one call), so that module code can continue the caller's trace. What the
module prints meanwhile is tagged with the same request ids in its logs.
"""

from __future__ import annotations

from contextvars import ContextVar, Token
from dataclasses import dataclass

__all__ = ["CallContext", "current_call", "served", "serving"]


@dataclass(frozen=True)
class CallContext:
    request_ids: tuple[str, ...]
    """One per record, in the order of the records `inference` receives."""
    traceparents: tuple[str, ...]
    """The `traceparent` header value of each record's request, in the same order."""


_current: ContextVar[CallContext | None] = ContextVar("modelport_call", default=None)


def current_call() -> CallContext | None:
    """The call being served, or None outside a call."""
    return _current.get()


def serving(context: CallContext | None) -> Token[CallContext | None]:
    """Make `context` the current call (the worker does, around each call); `served(token)` ends it."""
    return _current.set(context)


def served(token: Token[CallContext | None]) -> None:
    _current.reset(token)
