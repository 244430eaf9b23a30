"""The prediction cache: answers of modules whose `Api`s turn `cache` on, given again for the same request.

A request's key is the SHA-256 of its canonical form: the module (and when it was made, so that a module
deleted and made again under its name never gets the answers of the one before), the version, the model key
(and the local directory of its weights when they come from a bucket: named by their digest), the inputs as
canonical JSON (sorted keys, no whitespace) with each file by the SHA-256 of its checked bytes and its
content type (never its path or file name), the parameters with their defaults applied, the output fields
asked for and, in `caller` scope, the caller's user id. A new version has keys of its own, so it never
serves an answer of the one before, and a version that stops serving is never asked for its answers again.

Answers are kept in this process (per module an LRU of `maxEntries` answers, each for `ttlSeconds`), or in
Redis when the gateways share one (`MODELPORT_REDIS_URL`): there each entry expires after `ttlSeconds`, and
Redis evicts by its own `maxmemory-policy` (`maxEntries` bounds only the in-memory cache). Only successful
answers are kept, never errors, never answers above `MAX_ANSWER_BYTES`, and never those of modules with
file outputs, which are published per caller. The cache never fails a call: when Redis cannot be reached the
call goes on uncached, a warning is logged at most once a minute, and Redis is left alone for two seconds
after each failure, so that a hung Redis delays one call now and then rather than every call.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import coredis
import msgspec
from coredis.retry import NoRetryPolicy

from modelport.control.modules import ServedModule
from modelport.core.names import RATE_STORAGE_SCHEMES
from modelport.sdk import ApiSpec
from modelport.sdk.validation import ParsedRequest

__all__ = [
    "MAX_ANSWER_BYTES",
    "CacheEntry",
    "CacheRule",
    "CacheStore",
    "MemoryStore",
    "PredictionCache",
    "RedisStore",
    "cache_directives",
    "open_store",
    "request_key",
]

log = logging.getLogger("modelport.cache")

MAX_ANSWER_BYTES = 256 * 1024
"""Answers larger than this (as JSON) are not kept: the cache is for many small answers."""
_KEY_FORMAT = 1
"""Changes whenever the key's canonical form does, so that no answer is found under another form's key."""
_WARN_EVERY_SECONDS = 60.0
_RETRY_AFTER_FAILURE_SECONDS = 2.0
_canonical = msgspec.json.Encoder(order="sorted")
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(list[dict[str, Any]])


@dataclass(frozen=True, slots=True)
class CacheRule:
    """How one module's answers are cached: its `Api`s' `cache` merged (`ModulePolicy.cache`)."""

    ttl: float
    """Seconds an answer is kept."""
    max_entries: int
    """Answers this process keeps in memory for the module."""
    per_caller: bool
    """`scope: caller`: an answer is given again only to the caller who got it."""
    generation: str = ""
    """Tells the module from one made before under the same name (when it was made)."""


def cache_directives(header: str | None) -> frozenset[str]:
    """The directive names of a request's `Cache-Control` header, lowercased (`no-cache`, `no-store`)."""
    if not header:
        return frozenset()
    return frozenset(part.split("=", 1)[0].strip().lower() for part in header.split(",") if part.strip())


def request_key(
    spec: ApiSpec,
    parsed: ParsedRequest,
    *,
    module: str,
    version: str,
    model_key: str,
    model_path: str | None = None,
    generation: str = "",
    caller: int | None = None,
) -> str:
    """The cache key of a validated request whose files are checked: 64 hex digits (see the module's
    docstring for what it covers). Reads the request's files (blocking, when it has any)."""
    records = parsed.records
    if spec.has_file_inputs:
        files = [field.name for field in spec.inputs if field.has_file]
        records = [_without_paths(record, files) for record in records]
    canonical = _canonical.encode(
        [
            _KEY_FORMAT,
            module,
            generation,
            version,
            model_key,
            model_path,
            records,
            parsed.parameters,
            parsed.output_fields,
            caller,
        ]
    )
    return hashlib.sha256(canonical).hexdigest()


def _without_paths(record: dict[str, Any], files: list[str]) -> dict[str, Any]:
    """`record` with each file value replaced by the SHA-256 of its bytes and its content type."""
    replaced = dict(record)
    for name in files:
        if name in replaced:
            replaced[name] = _file_value(replaced[name])
    return replaced


def _file_value(value: Any) -> Any:
    if isinstance(value, list):
        return [_file_value(item) for item in value]
    if isinstance(value, dict) and "path" in value:
        with Path(value["path"]).open("rb") as stream:
            digest = hashlib.file_digest(stream, "sha256").hexdigest()
        return {"sha256": digest, "content_type": value.get("content_type")}
    return value


class CacheStore(Protocol):
    """Where answers are kept: bytes under a key, per module."""

    async def get(self, module: str, key: str, *, ttl: float) -> bytes | None:
        """The answer kept under `key` less than `ttl` seconds ago; None if there is none."""
        ...

    async def put(self, module: str, key: str, value: bytes, *, ttl: float, max_entries: int) -> None:
        """Keep `value` under `key` for `ttl` seconds (at most `max_entries` of the module's, where the
        store counts them). Never raises."""
        ...

    async def close(self) -> None: ...


class MemoryStore:
    """Answers in this process: per module, an LRU of at most `max_entries` answers, each kept `ttl` seconds
    (the `ttl` a lookup passes: a shorter one applies at once to answers kept before)."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._modules: dict[str, OrderedDict[str, tuple[float, bytes]]] = {}

    async def get(self, module: str, key: str, *, ttl: float) -> bytes | None:
        entries = self._modules.get(module)
        if entries is None or (found := entries.get(key)) is None:
            return None
        kept_at, value = found
        if self.clock() - kept_at >= ttl:
            del entries[key]
            return None
        entries.move_to_end(key)
        return value

    async def put(self, module: str, key: str, value: bytes, *, ttl: float, max_entries: int) -> None:
        entries = self._modules.setdefault(module, OrderedDict())
        entries[key] = (self.clock(), value)
        entries.move_to_end(key)
        while len(entries) > max_entries:
            entries.popitem(last=False)

    def __len__(self) -> int:
        return sum(len(entries) for entries in self._modules.values())

    async def close(self) -> None:
        self._modules.clear()


class RedisStore:
    """Answers in a Redis that gateways share, under `modelport:cache:<module>:<key>`, each set with an
    expiry of `ttl`; Redis evicts by its own policy, so `max_entries` does not apply.

    `timeout` bounds connecting and each answer; a failed command is not retried. While Redis cannot be
    reached every lookup is a miss and nothing is kept (see the module's docstring)."""

    def __init__(
        self, url: str, *, timeout: float = 0.25, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.clock = clock
        self._client: coredis.Redis[bytes] = coredis.Redis.from_url(
            _client_url(url),
            connect_timeout=timeout,
            stream_timeout=timeout,
            retry_policy=NoRetryPolicy(),
        )
        self._retry_at = -math.inf
        self._failures = 0
        self._warned_at = -math.inf

    async def get(self, module: str, key: str, *, ttl: float) -> bytes | None:
        if self.clock() < self._retry_at:
            return None
        try:
            value = await self._client.get(_redis_key(module, key))
        except Exception as exc:  # whatever the client raises, the call goes on uncached
            self._failed(exc)
            return None
        return value if isinstance(value, bytes) else None

    async def put(self, module: str, key: str, value: bytes, *, ttl: float, max_entries: int) -> None:
        if self.clock() < self._retry_at:
            return
        try:
            await self._client.set(_redis_key(module, key), value, px=max(1, int(ttl * 1000)))
        except Exception as exc:
            self._failed(exc)

    async def close(self) -> None:
        self._client.connection_pool.disconnect()

    def _failed(self, exc: Exception) -> None:
        now = self.clock()
        self._retry_at = now + _RETRY_AFTER_FAILURE_SECONDS
        self._failures += 1
        if now - self._warned_at < _WARN_EVERY_SECONDS:
            return
        log.warning(
            "the prediction cache's Redis is unreachable, calls go on uncached "
            "(%d failure(s) since the last warning): %s: %s",
            self._failures,
            type(exc).__name__,
            exc,
        )
        self._warned_at, self._failures = now, 0


def open_store(url: str | None) -> CacheStore:
    """A `RedisStore` for a Redis URL (`MODELPORT_REDIS_URL`), else (None, `memory://`) a `MemoryStore`."""
    if url is None or url.lower().removeprefix("async+").startswith("memory://"):
        return MemoryStore()
    return RedisStore(url)


def _client_url(url: str) -> str:
    scheme, _, rest = url.partition("://")
    scheme = scheme.lower().removeprefix("async+")
    if scheme not in RATE_STORAGE_SCHEMES:
        # The URL itself may hold a password: name only its scheme.
        raise ValueError(f"unsupported Redis URL scheme {scheme!r}: use redis://, rediss:// or unix://")
    return f"{'unix' if scheme.endswith('unix') else scheme}://{rest}"


def _redis_key(module: str, key: str) -> str:
    return f"modelport:cache:{module}:{key}"


@dataclass(slots=True)
class CacheEntry:
    """One call's place in the cache: the answer found (None: a miss), and where its own answer goes."""

    cache: PredictionCache
    module: str
    rule: CacheRule
    key: str | None
    """None: the call's answer is not kept (an anonymous caller in `caller` scope, unreadable files)."""
    keep_answer: bool = True
    """False when the caller sent `Cache-Control: no-store`."""
    outputs: list[dict[str, Any]] | None = None

    @property
    def hit(self) -> bool:
        return self.outputs is not None

    async def keep(self, outputs: list[dict[str, Any]]) -> None:
        """Keep the call's successful answer, unless the caller or its size says not to. Never raises."""
        if self.key is None or not self.keep_answer:
            return
        try:
            value = _encoder.encode(outputs)
        except (TypeError, msgspec.EncodeError):
            return
        if len(value) <= MAX_ANSWER_BYTES:
            rule = self.rule
            await self.cache.store.put(
                self.module, self.key, value, ttl=rule.ttl, max_entries=rule.max_entries
            )


class PredictionCache:
    """The answers of modules that `rules(module)` caches (None: not cached), kept in `store`."""

    def __init__(self, store: CacheStore, *, rules: Callable[[str], CacheRule | None]) -> None:
        self.store = store
        self.rules = rules

    async def lookup(
        self,
        served: ServedModule,
        parsed: ParsedRequest,
        *,
        model_key: str,
        model_path: str | None,
        caller: int | None,
        directives: frozenset[str] = frozenset(),
    ) -> CacheEntry | None:
        """The call's entry, with the answer kept for it if any; None when the module's answers are not
        cached. `directives` are the request's `Cache-Control`: `no-cache` skips the lookup, `no-store`
        skips the lookup and keeping the answer. Files are read in a thread; JSON-only requests never leave
        the event loop. Never raises."""
        rule = self.rules(served.name)
        if rule is None or served.spec.has_file_outputs:
            return None
        if rule.per_caller and caller is None:
            return CacheEntry(self, served.name, rule, None)
        key = await self._key(served, parsed, rule, model_key, model_path, caller)
        entry = CacheEntry(self, served.name, rule, key, keep_answer="no-store" not in directives)
        if key is None or "no-cache" in directives or "no-store" in directives:
            return entry
        value = await self.store.get(served.name, key, ttl=rule.ttl)
        if value is not None:
            try:
                entry.outputs = _decoder.decode(value)
            except msgspec.DecodeError:
                log.warning("a cached answer of %s cannot be read; calling the module", served.name)
        return entry

    async def close(self) -> None:
        await self.store.close()

    async def _key(
        self,
        served: ServedModule,
        parsed: ParsedRequest,
        rule: CacheRule,
        model_key: str,
        model_path: str | None,
        caller: int | None,
    ) -> str | None:
        def key() -> str:
            return request_key(
                served.spec,
                parsed,
                module=served.name,
                version=served.version,
                model_key=model_key,
                model_path=model_path,
                generation=rule.generation,
                caller=caller if rule.per_caller else None,
            )

        try:
            return await asyncio.to_thread(key) if served.spec.has_file_inputs else key()
        except (OSError, TypeError, msgspec.EncodeError) as exc:
            log.warning("a call of %s goes uncached: its key cannot be made: %s", served.name, exc)
            return None
