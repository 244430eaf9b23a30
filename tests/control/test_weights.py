"""Model weights fetched from object storage into the local cache workers read."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from modelport.control import weights as weights_module
from modelport.control.weights import ModelWeights
from modelport.core.errors import CorruptObject, ModelNotFound
from modelport.storage.base import ObjectReader
from modelport.storage.local import LocalStore


class CountingStore(LocalStore):
    """A real local store that remembers which objects were read."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.reads: list[str] = []

    def reader(self, bucket: str, key: str, *, start: int = 0, stop: int | None = None) -> ObjectReader:
        self.reads.append(key)
        return super().reader(bucket, key, start=start, stop=stop)


@pytest.fixture
def store(tmp_path: Path) -> CountingStore:
    store = CountingStore(tmp_path / "store")
    store.create_bucket("models")
    return store


def upload(store: LocalStore, prefix: str, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        store.put("models", f"{prefix}/{name}", data, content_type="application/octet-stream")


def flip_stored_byte(root: Path, data: bytes) -> None:
    """Damage the bytes of the stored object holding `data`, behind the store's back."""
    (stored,) = [p for p in root.rglob("*") if p.is_file() and p.read_bytes() == data]
    stored.write_bytes(bytes([data[0] ^ 1]) + data[1:])


def files_under(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in directory.rglob("*") if p.is_file()}


class Clock:
    """A monotonic clock that moves only when a test moves it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def cache(tmp_path: Path, store: LocalStore, max_bytes: int = 10**6) -> ModelWeights:
    return ModelWeights(store, cache_dir=tmp_path / "cache", max_bytes=max_bytes)


async def test_fetch_writes_the_objects_as_files(tmp_path, store):
    files = {"weights.bin": b"\x00\x01" * 1000, "tokenizer/vocab.json": b'{"a": 1}'}
    upload(store, "digits/a", files)
    upload(store, "digits/ab", {"other.bin": b"not a's"})

    path = await cache(tmp_path, store).fetch("models", "digits", "a")

    assert files_under(path) == files
    assert path.is_relative_to(tmp_path / "cache" / "models")


async def test_an_unchanged_listing_reuses_the_cached_directory(tmp_path, store):
    upload(store, "digits/a", {"weights.txt": b"weights of a"})
    weights = cache(tmp_path, store)

    first = await weights.fetch("models", "digits", "a")
    second = await weights.fetch("models", "digits", "a")
    again = await cache(tmp_path, store).fetch("models", "digits", "a")  # e.g. after a restart

    assert first == second == again
    assert store.reads == ["digits/a/weights.txt"]


async def test_new_weights_at_the_same_prefix_get_a_new_directory(tmp_path, store):
    upload(store, "digits/a", {"weights.txt": b"version 1"})
    weights = cache(tmp_path, store)
    old = await weights.fetch("models", "digits", "a")

    upload(store, "digits/a", {"weights.txt": b"version 2"})
    new = await weights.fetch("models", "digits", "a")

    assert new != old
    assert (new / "weights.txt").read_bytes() == b"version 2"
    assert (old / "weights.txt").read_bytes() == b"version 1"  # a worker may still be loading it


async def test_concurrent_fetches_share_one_download(tmp_path, store):
    upload(store, "digits/a", {"weights.txt": b"w" * 5000, "config.json": b"{}"})
    weights = cache(tmp_path, store)

    paths = await asyncio.gather(*(weights.fetch("models", "digits", "a") for _ in range(10)))

    assert len(set(paths)) == 1
    assert sorted(store.reads) == ["digits/a/config.json", "digits/a/weights.txt"]


async def test_a_missing_model_key_is_model_not_found(tmp_path, store):
    upload(store, "digits/a", {"weights.txt": b"a"})
    weights = cache(tmp_path, store)

    with pytest.raises(ModelNotFound) as missing:
        await weights.fetch("models", "digits", "zz")
    assert (missing.value.status, missing.value.code) == (404, "model_not_found")
    assert "'models'" in missing.value.message and "digits/zz/" in missing.value.message

    with pytest.raises(ModelNotFound):
        await weights.fetch("no-such-bucket", "digits", "a")


async def test_a_corrupt_object_fails_the_fetch_and_leaves_nothing_cached(tmp_path, store):
    upload(store, "digits/a", {"good.txt": b"fine", "weights.txt": b"precious weights"})
    flip_stored_byte(tmp_path / "store", b"precious weights")
    weights = cache(tmp_path, store)

    for _ in range(2):  # nothing half-fetched is reused by the next attempt
        with pytest.raises(CorruptObject):
            await weights.fetch("models", "digits", "a")
    assert list((tmp_path / "cache").rglob("*")) == []


async def test_least_recently_used_weights_are_evicted_beyond_max_bytes(tmp_path, store):
    for key in "abc":
        upload(store, f"digits/{key}", {"weights.bin": key.encode() * 100})
    weights = cache(tmp_path, store, max_bytes=250)

    a = await weights.fetch("models", "digits", "a")
    b = await weights.fetch("models", "digits", "b")
    assert await weights.fetch("models", "digits", "a") == a  # a is now more recently used than b
    c = await weights.fetch("models", "digits", "c")

    assert a.is_dir() and c.is_dir() and not b.exists()
    assert not b.parent.exists()

    store.reads.clear()
    assert await weights.fetch("models", "digits", "b") == b  # fetched again, evicting a
    assert store.reads == ["digits/b/weights.bin"]
    assert not a.exists() and c.is_dir()


async def test_weights_larger_than_the_cache_are_still_served(tmp_path, store):
    upload(store, "digits/a", {"weights.bin": b"x" * 500})
    path = await cache(tmp_path, store, max_bytes=100).fetch("models", "digits", "a")
    assert (path / "weights.bin").stat().st_size == 500


async def test_weights_a_running_version_uses_are_never_evicted(tmp_path, store):
    for key in "abc":
        upload(store, f"digits/{key}", {"weights.bin": key.encode() * 100})
    running: list[Path] = []
    weights = ModelWeights(store, cache_dir=tmp_path / "cache", max_bytes=250, in_use=lambda: running)

    a = await weights.fetch("models", "digits", "a")
    running.append(a)  # a version serves with a's weights; its replaced workers will load them again
    b = await weights.fetch("models", "digits", "b")
    c = await weights.fetch("models", "digits", "c")

    assert a.is_dir() and c.is_dir() and not b.exists()


async def test_a_missing_model_key_is_remembered_briefly(tmp_path, store, monkeypatch):
    listed: list[str] = []
    real_list = store.list

    def counting_list(bucket, **options):
        listed.append(options.get("prefix", ""))
        return real_list(bucket, **options)

    monkeypatch.setattr(store, "list", counting_list)
    clock = Clock()
    weights = ModelWeights(store, cache_dir=tmp_path / "cache", max_bytes=10**6, clock=clock)
    for _ in range(5):  # a caller naming an unknown key again and again lists the store once
        with pytest.raises(ModelNotFound):
            await weights.fetch("models", "digits", "late")
    assert listed == ["digits/late/"]

    upload(store, "digits/late", {"weights.txt": b"arrived"})
    clock.now += weights_module.MISSING_SECONDS - 0.1
    with pytest.raises(ModelNotFound):  # still within the remembered seconds
        await weights.fetch("models", "digits", "late")
    clock.now += 0.2
    path = await weights.fetch("models", "digits", "late")
    assert (path / "weights.txt").read_bytes() == b"arrived"
    assert listed == ["digits/late/", "digits/late/"]


async def test_missing_model_keys_are_remembered_within_a_bound(tmp_path, store, monkeypatch):
    monkeypatch.setattr(weights_module, "MISSING_LIMIT", 50)
    clock = Clock()
    weights = ModelWeights(store, cache_dir=tmp_path / "cache", max_bytes=10**6, clock=clock)

    async def name_unknown_keys(count: int, tag: str) -> None:
        for number in range(count):
            with pytest.raises(ModelNotFound):
                await weights.fetch("models", "digits", f"{tag}-{number}")

    await name_unknown_keys(200, "first")  # a caller inventing keys
    assert len(weights._missing) == 50
    remembered = set(weights._missing)
    assert remembered == {("models", "digits", f"first-{n}") for n in range(150, 200)}  # the newest
    clock.now += weights_module.MISSING_SECONDS + 1
    await name_unknown_keys(1, "later")  # the memory is full: the expired keys go first
    assert set(weights._missing) == {("models", "digits", "later-0")}


def test_leftovers_of_interrupted_downloads_are_removed_once_an_hour_old(tmp_path, store):
    cache_dir = tmp_path / "cache"
    old, young = cache_dir / ".partial-old", cache_dir / ".partial-young"
    for leftover in (old, young):
        (leftover / "files").mkdir(parents=True)
        (leftover / "files" / "weights.bin").write_bytes(b"half")
    hours_ago = time.time() - 2 * 3600
    os.utime(old, (hours_ago, hours_ago))

    ModelWeights(store, cache_dir=cache_dir, max_bytes=10**6)

    assert not old.exists()
    assert young.is_dir()  # perhaps another gateway's download in progress
