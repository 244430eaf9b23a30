"""Policies read from the database and kept in memory, so that requests need not wait on the database.

`PolicyCache` holds one policy per name (a module's grants, a bucket's access and CORS), all read at once by a
`read` function. Threads read through `get`, which reads the database itself when memory is old or lacks the
name; the event loop reads through `current` and `cached`, which never wait on the database for a name in
memory: a read that is due runs in a worker thread meanwhile. A read that fails keeps the policies read last,
so the names known keep being served while the database is unavailable; a name missing from them is then
`DatabaseUnavailable` (whether it exists, nobody can tell).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from modelport.core.errors import DatabaseUnavailable
from modelport.db.database import failure, unavailable

__all__ = ["MISS_RELOAD_SECONDS", "PolicyCache"]

log = logging.getLogger("modelport.policies")

MISS_RELOAD_SECONDS = 0.05
"""A name missing from memory reloads it at most this often: a new one is seen at once, and calls naming ones
that do not exist cannot make every request read the database. While reads fail, they are tried again at most
this often too."""

T = TypeVar("T")


class PolicyCache(Generic[T]):
    """Every policy `read` returns, in memory, read again when `refresh_seconds` old; `what` names them in
    the log."""

    def __init__(
        self,
        read: Callable[[], dict[str, T]],
        *,
        what: str,
        refresh_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.read, self.what, self.refresh_seconds, self.clock = read, what, refresh_seconds, clock
        self._policies: dict[str, T] = {}
        self._read_at: float | None = None  # when the last read that finished began
        self._failing = False  # whether it failed
        self._started = 0  # reads begun, numbered so that an older one never replaces a newer one
        self._finished = 0
        self._lock = threading.Lock()
        self._thread_reads = threading.Lock()
        self._loop_read: asyncio.Future[None] | None = None

    def reload(self) -> None:
        """Read every policy now, in the calling thread (after a change made through this process). When the
        database cannot answer, the policies in memory stay and reads are tried again soon."""
        with self._lock:
            self._started += 1
            number, began = self._started, self.clock()
        try:
            policies: dict[str, T] | None = self.read()
        except Exception as exc:
            if not self._failing:
                log.warning(
                    "cannot read %s (%s); serving those known",
                    self.what,
                    failure(exc),
                    exc_info=not unavailable(exc),
                )
            policies = None
        with self._lock:
            if number <= self._finished:
                return
            recovered = self._failing and policies is not None
            self._finished, self._read_at, self._failing = number, began, policies is None
            if policies is not None:
                self._policies = policies
        if recovered:
            log.warning("%s are read again", self.what)

    def get(self, name: str) -> T | None:
        """The policy of `name`; None if there is none. For threads: the database is read here when a read is
        due."""
        self._read_in_thread(self.refresh_seconds)
        if name not in self._policies:  # perhaps made a moment ago by another request or process
            self._read_in_thread(MISS_RELOAD_SECONDS)
        return self._known(name)

    def names(self) -> list[str]:
        """The names in memory, for code on the event loop that cannot wait; a read that is due starts in a
        worker thread."""
        if self._due(self.refresh_seconds):
            self._read_in_background()
        return list(self._policies)

    def snapshot(self) -> dict[str, T]:
        """Every policy (for threads: the database is read here when a read is due)."""
        self._read_in_thread(self.refresh_seconds)
        if self._failing and not self._policies:
            raise DatabaseUnavailable()
        return dict(self._policies)

    async def current(self, name: str) -> T | None:
        """The policy of `name` for the event loop; None if there is none. Memory answers, while a read that
        is due runs in a worker thread; a name missing from memory waits for a read (at most every
        `MISS_RELOAD_SECONDS`)."""
        if self._read_at is None:
            await asyncio.shield(self._read_in_background())
        elif self._due(self.refresh_seconds):
            self._read_in_background()
        if name not in self._policies and not self._failing and self._due(MISS_RELOAD_SECONDS):
            await asyncio.shield(self._read_in_background())
        return self._known(name)

    def cached(self, name: str) -> T | None:
        """The policy of `name` in memory, for code on the event loop that cannot wait; a read that is due
        starts in a worker thread."""
        if self._due(self.refresh_seconds):
            self._read_in_background()
        return self._policies.get(name)

    async def settle(self) -> None:
        """Wait for the read started for the event loop, if one runs: before the database closes, so that no
        thread opens a connection on a closed engine."""
        if self._loop_read is not None:
            await asyncio.gather(self._loop_read, return_exceptions=True)

    def _known(self, name: str) -> T | None:
        policy = self._policies.get(name)
        if policy is None and self._failing:
            raise DatabaseUnavailable()
        return policy

    def _due(self, max_age: float) -> bool:
        """Whether memory is `max_age` old (while reads fail: whether the last began `MISS_RELOAD_SECONDS`
        ago)."""
        if self._read_at is None:
            return True
        return self.clock() - self._read_at >= (MISS_RELOAD_SECONDS if self._failing else max_age)

    def _read_in_thread(self, max_age: float) -> None:
        if self._due(max_age):
            with self._thread_reads:  # one read for every thread that found memory old at once
                if self._due(max_age):
                    self.reload()

    def _read_in_background(self) -> asyncio.Future[None]:
        """The read running in a worker thread for the event loop, started now unless one runs already."""
        if self._loop_read is None or self._loop_read.done():
            self._loop_read = asyncio.ensure_future(asyncio.to_thread(self.reload))
        return self._loop_read
