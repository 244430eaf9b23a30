"""Per-caller rate limits: a moving window per key, counted in process memory or in a Redis gateways share.

The strategy is `limits`' moving window rather than its sliding-window counter. The moving window keeps one
timestamp per request still inside the window, so its count is exact, a refused request records nothing (a
caller hammering while blocked does not extend its own block), and the time until the oldest request leaves
the window is known: `Retry-After` tells a client the moment it will really be let in again. The counter
weighs the previous window's total as if its requests had been spread evenly, which may both admit a burst
above the limit and refuse a retry made at the announced time. The price is storage: up to `limit`
timestamps per active key (a few dozen bytes each in Redis, expiring with the window), fine for per-caller
limits in the tens to thousands; rates like tens of thousands per caller and window would call for the
counter instead.

When the storage cannot be reached (Redis down or slow), `hit` fails open: it lets the request through and
logs a warning, at most once a minute. Refusing every caller during a Redis blip would turn a degraded
safeguard into an outage; the limits protect capacity, they are not an access control. After a failure the
storage is left alone for two seconds, so that a hung Redis delays one request now and then, not all of them.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from dataclasses import dataclass

import coredis
import limits
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError

from modelport.core.names import RATE_STORAGE_SCHEMES

__all__ = ["Decision", "RateLimiter"]

log = logging.getLogger("modelport.ratelimit")

_WARN_EVERY_SECONDS = 60.0
_RETRY_AFTER_FAILURE_SECONDS = 2.0


@dataclass(frozen=True)
class Decision:
    """One request counted against one rate: whether it may go on, and the numbers to tell the caller."""

    allowed: bool
    limit: int
    remaining: int
    reset_after: float
    """Seconds until the window frees a request."""
    policy: str
    """The rate as the `RateLimit-Policy` header writes it: `"60;w=60"` is 60 requests per 60 seconds."""

    def headers(self) -> dict[str, str]:
        """The `RateLimit-*` headers, and `Retry-After` when the request is refused."""
        reset = math.ceil(self.reset_after)
        if not self.allowed:
            reset = max(1, reset)
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(reset),
            "RateLimit-Policy": self.policy,
        }
        if not self.allowed:
            headers["Retry-After"] = str(reset)
        return headers


class RateLimiter:
    """Counts requests per key against rates such as `"60/minute"` or `"10 per second"`.

    `storage_url` is None (or `memory://`) to count in this process, or a Redis URL (`redis://host:port/db`,
    `rediss://…`, `unix:///path?db=0`) for a count shared by every gateway using it. `timeout` bounds each
    attempt to connect to Redis or read an answer; a query string in the URL (`?stream_timeout=1`) overrides
    it. The Redis client retries a failed command twice, so a hung Redis costs a request a few timeouts.
    """

    def __init__(self, storage_url: str | None = None, *, timeout: float = 0.25) -> None:
        self._storage, self._pool = _open_storage(storage_url or "memory://", timeout=timeout)
        self._strategy = MovingWindowRateLimiter(self._storage)
        self._failing = False
        self._retry_at = -math.inf
        self._failures = 0
        self._warned_at = -math.inf

    async def hit(self, key: str, rate: str) -> Decision:
        """Consumes one request from `key`'s window for `rate`; fails open when the storage is unreachable.

        `ValueError` if `rate` is not a single rate in the notation of `limits` (`modelport.core.manifests`
        validates the rates of manifests).
        """
        item = _parse(rate)
        policy = f"{item.amount};w={item.get_expiry()}"
        unlimited = Decision(
            allowed=True, limit=item.amount, remaining=item.amount, reset_after=0.0, policy=policy
        )
        if self._failing:
            # After a failure, one request every few seconds tries the storage; the others don't wait on it.
            if time.monotonic() < self._retry_at:
                return unlimited
            self._retry_at = time.monotonic() + _RETRY_AFTER_FAILURE_SECONDS
        try:
            allowed = await self._strategy.hit(item, key)
            stats = await self._strategy.get_window_stats(item, key)
        except (StorageError, OSError) as exc:
            self._failed(exc)
            return unlimited
        self._failing = False
        return Decision(
            allowed=allowed,
            limit=item.amount,
            remaining=max(0, stats.remaining),
            reset_after=max(0.0, stats.reset_time - time.time()),
            policy=policy,
        )

    async def close(self) -> None:
        """Closes the connections to Redis, if any; the limiter must not be used afterwards."""
        if self._pool is not None:
            self._pool.disconnect()

    def _failed(self, exc: Exception) -> None:
        now = time.monotonic()
        self._failing, self._retry_at = True, now + _RETRY_AFTER_FAILURE_SECONDS
        self._failures += 1
        if now - self._warned_at < _WARN_EVERY_SECONDS:
            return
        cause = exc.storage_error if isinstance(exc, StorageError) else exc
        log.warning(
            "rate-limit storage unreachable, letting requests through unlimited "
            "(%d failure(s) since the last warning): %s: %s",
            self._failures,
            type(cause).__name__,
            cause,
        )
        self._warned_at, self._failures = now, 0


@functools.lru_cache(maxsize=1024)
def _parse(rate: str) -> limits.RateLimitItem:
    items = limits.parse_many(rate)
    if len(items) != 1:
        raise ValueError(f"{rate!r} holds {len(items)} rates; give exactly one")
    return items[0]


def _open_storage(url: str, *, timeout: float) -> tuple[Storage, coredis.ConnectionPool | None]:
    scheme, _, rest = url.partition("://")
    scheme = scheme.lower().removeprefix("async+")
    if scheme == "memory":
        return MemoryStorage(), None
    if scheme not in RATE_STORAGE_SCHEMES:
        # The URL itself may hold a password: name only its scheme.
        raise ValueError(f"unsupported rate-limit storage scheme {scheme!r}: use memory:// or a Redis URL")
    client_scheme = "unix" if scheme.endswith("unix") else scheme
    # The pool is ours, so that `close` can release its connections: `limits` has no way to close a storage.
    pool = coredis.ConnectionPool.from_url(
        f"{client_scheme}://{rest}", connect_timeout=timeout, stream_timeout=timeout
    )
    storage = RedisStorage(
        f"async+{RATE_STORAGE_SCHEMES[scheme]}://{rest}",
        wrap_exceptions=True,
        connection_pool=pool,  # type: ignore[arg-type]  # documented option, typed as a scalar by `limits`
    )
    return storage, pool
