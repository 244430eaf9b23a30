"""The prediction cache without a worker: what its key covers, the in-memory LRU under an injected clock, how
`Api`s merge, what `Cache-Control` does, and a Redis that cannot be reached."""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from modelport.control.access import ApiAccess, ModulePolicy
from modelport.control.cache import (
    MAX_ANSWER_BYTES,
    CacheRule,
    MemoryStore,
    PredictionCache,
    RedisStore,
    cache_directives,
    open_store,
    request_key,
)
from modelport.core.manifests import ApiCache, Cors, without_retired_fields
from modelport.sdk.spec import parse_docstring
from modelport.sdk.validation import ParsedRequest, parse_json

SPEC = parse_docstring(
    """Describe a document.

    :param inputs.meta: Anything about it
    :type inputs.meta: json
    :param inputs.document: The document
    :type inputs.document: FILE, optional
    :param parameters.language: Its language
    :type parameters.language: str, optional, default "eng"
    :param outputs.summary: A summary
    :type outputs.summary: str
    :param outputs.words: Its word count
    :type outputs.words: int
    """
)
SHARED = CacheRule(ttl=60, max_entries=8, per_caller=False)
PER_CALLER = CacheRule(ttl=60, max_entries=8, per_caller=True)


def key(parsed: ParsedRequest, **changes: Any) -> str:
    options: dict[str, Any] = {"module": "docs", "version": "v1", "model_key": "default", **changes}
    return request_key(SPEC, parsed, **options)


def parsed(body: dict[str, Any]) -> ParsedRequest:
    return parse_json(SPEC, body)


def with_file(path: Path, content_type: str = "text/plain") -> ParsedRequest:
    """A request whose file was checked: its value is what `FileChecker` makes of it."""
    request = parsed({"inputs": {"meta": {}}})
    request.records[0]["document"] = {
        "path": str(path),
        "content_type": content_type,
        "filename": path.name,
        "size": path.stat().st_size,
    }
    return request


# The key


def test_the_key_is_a_sha256_of_the_canonical_request() -> None:
    one = parsed(
        {"inputs": {"meta": {"a": 1, "b": [1, {"y": 2, "x": 1}]}}, "parameters": {"language": "deu"}}
    )
    same = parsed(
        {"parameters": {"language": "deu"}, "inputs": {"meta": {"b": [1, {"x": 1, "y": 2}], "a": 1}}}
    )

    assert key(one) == key(same)
    assert len(key(one)) == 64
    int(key(one), 16)


def test_defaults_are_applied_before_the_key_is_made() -> None:
    assert key(parsed({"inputs": {"meta": 1}})) == key(
        parsed({"inputs": {"meta": 1}, "parameters": {"language": "eng"}})
    )


@pytest.mark.parametrize(
    ("body", "changes"),
    [
        ({"inputs": {"meta": 2}}, {}),
        ({"inputs": {"meta": "1"}}, {}),
        ({"inputs": {"meta": 1}, "parameters": {"language": "deu"}}, {}),
        ({"inputs": {"meta": 1}, "output_fields": ["summary"]}, {}),
        ({"inputs": [{"meta": 1}, {"meta": 1}]}, {}),
        ({"inputs": {"meta": 1}}, {"version": "v2"}),
        ({"inputs": {"meta": 1}}, {"module": "other"}),
        ({"inputs": {"meta": 1}}, {"model_key": "large"}),
        ({"inputs": {"meta": 1}}, {"model_path": "/cache/weights/abc/files"}),
        ({"inputs": {"meta": 1}}, {"generation": "2026-12-01T10:00:00"}),
        ({"inputs": {"meta": 1}}, {"caller": 7}),
    ],
)
def test_whatever_changes_the_answer_changes_the_key(body: dict[str, Any], changes: dict[str, Any]) -> None:
    assert key(parsed(body), **changes) != key(parsed({"inputs": {"meta": 1}}))


def test_one_callers_key_is_not_anothers() -> None:
    request = parsed({"inputs": {"meta": 1}})

    assert key(request, caller=7) != key(request, caller=8)
    assert key(request, caller=7) == key(request, caller=7)


def test_a_file_is_keyed_by_its_bytes_never_its_path_or_name(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    first = tmp_path / "a" / "upload-x1y2.txt"
    same_bytes = tmp_path / "report.txt"
    other_bytes = tmp_path / "upload-x1y2.txt"
    first.write_bytes(b"the same text")
    same_bytes.write_bytes(b"the same text")
    other_bytes.write_bytes(b"other text")

    assert key(with_file(first)) == key(with_file(same_bytes))
    assert key(with_file(first)) != key(with_file(other_bytes))
    assert key(with_file(first)) != key(with_file(first, "application/pdf"))


# The in-memory store


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_memory_answers_expire_after_their_ttl() -> None:
    clock = Clock()
    store = MemoryStore(clock=clock)
    await store.put("m", "k", b"[1]", ttl=10, max_entries=4)

    clock.now += 9.9
    assert await store.get("m", "k", ttl=10) == b"[1]"
    assert await store.get("m", "k", ttl=5) is None  # a shorter ttl applies to what was kept before
    await store.put("m", "k", b"[2]", ttl=10, max_entries=4)
    clock.now += 10
    assert await store.get("m", "k", ttl=10) is None
    assert len(store) == 0


async def test_memory_keeps_the_most_recently_used_max_entries_per_module() -> None:
    store = MemoryStore(clock=Clock())
    for name in ("a", "b", "c"):
        await store.put("m", name, name.encode(), ttl=60, max_entries=3)
    await store.put("other", "a", b"other", ttl=60, max_entries=1)
    assert await store.get("m", "a", ttl=60) == b"a"  # used: now the most recent

    await store.put("m", "d", b"d", ttl=60, max_entries=3)

    assert [await store.get("m", name, ttl=60) for name in "abcd"] == [b"a", None, b"c", b"d"]
    assert await store.get("other", "a", ttl=60) == b"other"
    await store.put("m", "e", b"e", ttl=60, max_entries=1)  # a smaller bound applies at the next answer
    assert len(store) == 2


def test_the_store_is_redis_only_when_a_redis_url_is_set() -> None:
    assert isinstance(open_store(None), MemoryStore)
    assert isinstance(open_store("memory://"), MemoryStore)
    assert isinstance(open_store("redis://127.0.0.1:1/0"), RedisStore)
    with pytest.raises(ValueError, match="'http'") as caught:
        open_store("http://user:secret@host/")
    assert "secret" not in str(caught.value)


# Apis merged


def access(name: str, cache: dict[str, Any] | None) -> ApiAccess:
    return ApiAccess(
        name=name,
        groups=frozenset(),
        anonymous=False,
        rate=None,
        cors=Cors(),
        cache=None if cache is None else ApiCache.model_validate(cache),
    )


def test_several_apis_cache_with_the_smallest_ttl_the_most_entries_and_per_caller_if_any_says_so() -> None:
    policy = ModulePolicy(
        "m",
        None,
        (
            access("a", {"ttlSeconds": 600, "maxEntries": 10, "scope": "shared"}),
            access("b", None),
            access("c", {"ttlSeconds": 30, "maxEntries": 5000}),
        ),
        created="2026-12-01T10:00:00",
    )

    assert policy.cache == CacheRule(
        ttl=30, max_entries=5000, per_caller=True, generation="2026-12-01T10:00:00"
    )
    shared = ModulePolicy("m", None, (access("a", {"ttlSeconds": 60, "scope": "shared"}),))
    assert shared.cache == CacheRule(ttl=60, max_entries=1024, per_caller=False)
    assert ModulePolicy("m", None, (access("b", None),)).cache is None


def test_a_stored_cache_of_the_earlier_schema_that_meant_off_is_dropped() -> None:
    def stored(cache: object) -> dict[str, Any]:
        return {"kind": "Api", "spec": {"module": "m", "cache": cache}}

    assert without_retired_fields(stored({"ttlSeconds": 0})) == {"kind": "Api", "spec": {"module": "m"}}
    assert without_retired_fields(stored({})) == {"kind": "Api", "spec": {"module": "m"}}
    assert without_retired_fields(stored({"ttlSeconds": 60})) == stored({"ttlSeconds": 60})


# Lookups


def served(*, file_outputs: bool = False) -> Any:
    """What the cache reads of a served version: its name, version and API."""
    spec = SimpleNamespace(has_file_inputs=False, has_file_outputs=file_outputs, inputs=SPEC.inputs)
    return SimpleNamespace(name="docs", version="v1", spec=spec)


async def lookup(
    cache: PredictionCache, *, caller: int | None = 7, header: str | None = None, **served_as: bool
):
    return await cache.lookup(
        served(**served_as),
        parsed({"inputs": {"meta": 1}}),
        model_key="default",
        model_path=None,
        caller=caller,
        directives=cache_directives(header),
    )


def test_cache_control_directives_are_read_by_name() -> None:
    assert cache_directives("No-Cache, max-age=0") == {"no-cache", "max-age"}
    assert cache_directives(None) == frozenset()
    assert cache_directives(" , no-store") == {"no-store"}


async def test_a_miss_keeps_the_answer_and_the_next_lookup_finds_it() -> None:
    cache = PredictionCache(MemoryStore(), rules=lambda module: SHARED)
    miss = await lookup(cache)
    assert miss is not None and not miss.hit

    await miss.keep([{"summary": "s", "words": 3}])

    hit = await lookup(cache, caller=8)  # shared: any caller
    assert hit is not None and hit.outputs == [{"summary": "s", "words": 3}]


async def test_no_cache_skips_the_lookup_and_no_store_keeps_nothing() -> None:
    store = MemoryStore()
    cache = PredictionCache(store, rules=lambda module: SHARED)
    await (await lookup(cache)).keep([{"summary": "old", "words": 1}])  # type: ignore[union-attr]

    refreshed = await lookup(cache, header="no-cache")
    assert refreshed is not None and not refreshed.hit
    await refreshed.keep([{"summary": "new", "words": 1}])
    assert (await lookup(cache)).outputs == [{"summary": "new", "words": 1}]  # type: ignore[union-attr]

    unstored = await lookup(cache, header="no-store")
    assert unstored is not None and not unstored.hit
    await unstored.keep([{"summary": "never", "words": 1}])
    assert (await lookup(cache)).outputs == [{"summary": "new", "words": 1}]  # type: ignore[union-attr]


async def test_what_is_never_cached() -> None:
    store = MemoryStore()
    cache = PredictionCache(store, rules=lambda module: PER_CALLER if module == "docs" else None)

    assert await lookup(cache, file_outputs=True) is None  # files are published per caller
    assert (
        await PredictionCache(store, rules=lambda module: None).lookup(
            served(), parsed({"inputs": {"meta": 1}}), model_key="default", model_path=None, caller=7
        )
        is None
    )
    anonymous = await lookup(cache, caller=None)  # per caller, and no caller to keep apart
    assert anonymous is not None and anonymous.key is None
    await anonymous.keep([{"summary": "s", "words": 1}])
    large = await lookup(cache)
    assert large is not None
    await large.keep([{"summary": "x" * MAX_ANSWER_BYTES, "words": 1}])
    assert len(store) == 0


# Redis out of reach


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_without_its_redis_the_cache_misses_keeps_nothing_and_warns_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    store = RedisStore(f"redis://127.0.0.1:{closed_port()}/0", clock=clock)
    cache = PredictionCache(store, rules=lambda module: SHARED)
    try:
        with caplog.at_level(logging.WARNING, logger="modelport.cache"):
            for _ in range(3):
                entry = await lookup(cache)
                assert entry is not None and not entry.hit
                await entry.keep([{"summary": "s", "words": 1}])
                clock.now += 5  # past the pause after a failure: Redis is tried again, and fails again
    finally:
        await cache.close()

    warnings = [r for r in caplog.records if r.name == "modelport.cache"]
    assert len(warnings) == 1, warnings
    assert "unreachable" in warnings[0].getMessage()
