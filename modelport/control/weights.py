"""Model weights from object storage, fetched into a local cache that worker processes read.

The weights of model key `k` are the objects under `<prefix>/<k>/` in a bucket. `ModelWeights.fetch` lists
them, names a cache entry by a digest over that listing (so new weights uploaded at the same prefix get a
new entry and an unchanged listing reuses the old one), downloads into a temporary directory with every
object checked against its recorded SHA-256, and publishes the entry with one atomic rename. Workers only
ever see the local directory, never the store or its credentials.

Layout: `<cache_dir>/<bucket>/<digest>/files/` holds the weights (the path `load` gets) and
`<cache_dir>/<bucket>/<digest>/complete` records their size; its mtime is the entry's last use. Entries that
running versions use (`in_use`) are never evicted, so a replaced worker finds its weights again. A model key
found missing stays missing for `MISSING_SECONDS`, so calls naming unknown keys cannot make every request list
the store.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from modelport.core.errors import (
    BucketNotFound,
    ModelNotFound,
    ModelportError,
    ObjectNotFound,
    StorageUnavailable,
)

if TYPE_CHECKING:  # the store is handed in; importing it would load boto3 for every `modelport predict`
    from modelport.storage.base import ObjectInfo, ObjectStore

__all__ = ["ModelWeights"]

_MARKER = "complete"
_FILES = "files"
_LEFTOVERS = (".partial-", ".evicted-")
MISSING_SECONDS = 5.0
MISSING_LIMIT = 10_000
"""Most missing model keys remembered at once: callers may name any number of keys that do not exist."""
STALE_SECONDS = 3600.0


class ModelWeights:
    """A size-bounded local cache of model weights kept in an object store."""

    def __init__(
        self,
        store: ObjectStore,
        *,
        cache_dir: Path,
        max_bytes: int,
        in_use: Callable[[], Iterable[Path]] = tuple,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store, self._dir, self._max_bytes, self._in_use = store, cache_dir, max_bytes, in_use
        self._clock = clock  # times how long a missing model key is remembered
        self._fetching: dict[tuple[str, str, str], asyncio.Future[Path]] = {}
        self._missing: dict[tuple[str, str, str], tuple[float, ModelNotFound]] = {}
        self._lock = threading.Lock()  # publishing, reusing and evicting entries happen one at a time
        self._remove_leftovers()

    async def fetch(self, bucket: str, prefix: str, model_key: str) -> Path:
        """The local directory holding the weights of `model_key`; concurrent calls share one download.

        Raises `ModelNotFound` when no object lies under `<prefix>/<model_key>/`, `CorruptObject` when one
        does not match its checksum (nothing is cached then) and `StorageUnavailable` when the store fails.
        """
        ident = (bucket, prefix, model_key)
        missing = self._missing.get(ident)
        if missing is not None and self._clock() < missing[0]:
            raise missing[1]
        future = self._fetching.get(ident)
        if future is None:
            keep = frozenset(self._in_use())  # read here, on the event loop that changes it
            future = asyncio.ensure_future(asyncio.to_thread(self._fetch, bucket, prefix, model_key, keep))
            self._fetching[ident] = future
            future.add_done_callback(lambda done: self._fetched(ident, done))
        # A caller that gives up (a cancelled request) must not cancel the download the others wait for.
        return await asyncio.shield(future)

    def bucket_dir(self, bucket: str) -> Path:
        """Where the weights fetched from `bucket` are kept."""
        return (self._dir / bucket).resolve()

    def _fetched(self, ident: tuple[str, str, str], future: asyncio.Future[Path]) -> None:
        del self._fetching[ident]
        if future.cancelled():
            return
        error = future.exception()  # retrieved here, so an error nobody waited for is not reported as lost
        if isinstance(error, ModelNotFound):
            self._remember_missing(ident, error)
        else:
            self._missing.pop(ident, None)

    def _remember_missing(self, ident: tuple[str, str, str], error: ModelNotFound) -> None:
        """Remember a missing key for `MISSING_SECONDS`, first forgetting the expired ones when the memory
        is full, then the oldest."""
        now = self._clock()
        if len(self._missing) >= MISSING_LIMIT:
            self._missing = {key: seen for key, seen in self._missing.items() if seen[0] > now}
        while len(self._missing) >= MISSING_LIMIT:
            del self._missing[next(iter(self._missing))]  # the same lifetime for all: the first ends first
        self._missing.pop(ident, None)  # so that insertion order stays expiry order
        self._missing[ident] = (now + MISSING_SECONDS, error)

    # Everything below runs in a worker thread.

    def _fetch(self, bucket: str, prefix: str, model_key: str, in_use: frozenset[Path]) -> Path:
        base = "".join(f"{part}/" for part in (prefix.strip("/"), model_key) if part)
        objects = self._list(bucket, base, model_key)
        entry = self._dir / bucket / _digest(objects, base)
        with self._lock:
            if (entry / _MARKER).is_file():
                _touch(entry / _MARKER)
                return entry / _FILES
        self._dir.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=".partial-", dir=self._dir))
        try:
            self._download(bucket, base, objects, partial / _FILES)
            (partial / _MARKER).write_text(str(sum(info.size for info in objects)))
            with self._lock:
                self._publish(partial, entry)
                self._evict(keep={entry / _FILES, *in_use})
        finally:
            shutil.rmtree(partial, ignore_errors=True)
        return entry / _FILES

    def _list(self, bucket: str, base: str, model_key: str) -> list[ObjectInfo]:
        try:
            objects = list(self._store.walk(bucket, prefix=base))
        except BucketNotFound:
            objects = []
        if not objects:
            raise ModelNotFound(
                f"no weights for model key {model_key!r}: nothing under {base!r} in bucket {bucket!r}"
            )
        return objects

    def _download(self, bucket: str, base: str, objects: list[ObjectInfo], root: Path) -> None:
        for info in objects:
            target = root / info.key.removeprefix(base)
            if not target.resolve().is_relative_to(root.resolve()):
                raise ModelportError(f"object {info.key!r} would leave its model directory")
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                reader = self._store.reader(bucket, info.key)
            except ObjectNotFound:
                raise _changed(bucket, info.key) from None
            with reader, target.open("wb") as out:
                if reader.info.etag != info.etag:
                    raise _changed(bucket, info.key)
                for chunk in reader:  # the reader raises `CorruptObject` after a mismatching last chunk
                    out.write(chunk)

    def _publish(self, partial: Path, entry: Path) -> None:
        if not (entry / _MARKER).is_file():  # else the same weights came under another prefix meanwhile
            entry.parent.mkdir(parents=True, exist_ok=True)
            partial.rename(entry)
        _touch(entry / _MARKER)

    def _remove_leftovers(self) -> None:
        """Remove what interrupted downloads and evictions left, once an hour old (another gateway sharing
        the directory may be downloading into a younger one)."""
        if not self._dir.is_dir():
            return
        cutoff = time.time() - STALE_SECONDS
        for path in self._dir.iterdir():
            if path.name.startswith(_LEFTOVERS) and path.stat().st_mtime < cutoff:
                shutil.rmtree(path, ignore_errors=True)

    def _evict(self, *, keep: set[Path]) -> None:
        """Drop least recently used entries until the cache fits in `max_bytes` again, keeping those whose
        files are in `keep` (just fetched, or in use by a running version)."""
        entries = []
        for bucket in self._dir.iterdir():
            if bucket.name.startswith(".") or not bucket.is_dir():
                continue  # a partial download
            for entry in bucket.iterdir():
                marker = entry / _MARKER
                if marker.is_file():
                    entries.append((marker.stat().st_mtime, int(marker.read_text()), entry))
        total = sum(size for _, size, _ in entries)
        for _, size, entry in sorted(entries):
            if total <= self._max_bytes:
                break
            if entry / _FILES not in keep:
                # Renamed first so that the entry disappears at once rather than file by file.
                doomed = Path(tempfile.mkdtemp(prefix=".evicted-", dir=self._dir))
                entry.rename(doomed / "entry")
                shutil.rmtree(doomed, ignore_errors=True)
                total -= size


def _digest(objects: list[ObjectInfo], base: str) -> str:
    """Names the listing's content: every object's relative key, size and checksum (or ETag)."""
    digest = hashlib.sha256()
    for info in sorted(objects, key=lambda info: info.key):
        checksum = f"sha256:{info.sha256}" if info.sha256 else f"etag:{info.etag}"
        digest.update(f"{info.key.removeprefix(base)}\0{info.size}\0{checksum}\n".encode())
    return digest.hexdigest()[:32]


def _touch(marker: Path) -> None:
    """Mark the entry used now (the clock's own precision: the file system's may be too coarse)."""
    now = time.time()
    os.utime(marker, (now, now))


def _changed(bucket: str, key: str) -> StorageUnavailable:
    return StorageUnavailable(f"object {key!r} in bucket {bucket!r} changed while it was fetched; try again")
