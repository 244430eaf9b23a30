"""The object-store interface every backend implements, and the values it trades in.

Calls are blocking (the gateway runs them in threads). Objects are written through an `ObjectWriter`, which
publishes the object atomically on `commit` and leaves nothing readable if aborted or killed midway; read
through an `ObjectReader`, which streams chunks and, when it reads a whole object, checks the bytes against
the SHA-256 recorded at write time (`CorruptObject` at the end of the stream otherwise).

Buckets are the platform's logical buckets (`[a-z0-9-]` names); keys are checked by `check_key` before any
backend sees them.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import BinaryIO

from modelport.core.records import PresignMethod

__all__ = ["CHUNK", "Listing", "ObjectInfo", "ObjectReader", "ObjectStore", "ObjectWriter", "PresignMethod"]

CHUNK = 1 << 20
"""Bytes moved per read or write step: memory stays flat whatever the object's size."""


@dataclass(frozen=True)
class ObjectInfo:
    """What the store knows of one object."""

    key: str
    size: int
    etag: str
    """Opaque, unquoted; changes whenever the content changes."""
    content_type: str
    """As stored; `""` where the backend's listing does not carry it (S3 listings)."""
    modified: datetime
    """When the object was written (timezone-aware, UTC)."""
    sha256: str | None
    """Hex digest recorded at write time; None for objects written around modelport (e.g. straight to S3)."""


@dataclass(frozen=True)
class Listing:
    """One page of a listing, in key order (UTF-8 byte order, as S3 sorts)."""

    objects: list[ObjectInfo]
    prefixes: list[str]
    """With a delimiter: the distinct key prefixes up to and including the delimiter, in key order."""
    next_cursor: str | None
    """Pass it back as `cursor` for the next page; None on the last page."""


class ObjectWriter(ABC):
    """An object being written; nothing is visible under its key until `commit`."""

    def __init__(self) -> None:
        self._digest = hashlib.sha256()
        self.written = 0

    def write(self, chunk: bytes) -> None:
        self._digest.update(chunk)
        self.written += len(chunk)
        self._write(chunk)

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()

    @abstractmethod
    def _write(self, chunk: bytes) -> None: ...

    @abstractmethod
    def commit(self) -> ObjectInfo:
        """Publish the object atomically (replacing any object of that key) and describe it."""

    @abstractmethod
    def abort(self) -> None:
        """Drop what was written; the key keeps its previous object, if any. Safe to call twice."""

    def __enter__(self) -> ObjectWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.abort()  # nothing to drop after a commit; everything if the block left without one


class ObjectReader(ABC):
    """An open object: `info`, then its bytes (or the requested range) as chunks of at most `CHUNK` bytes."""

    info: ObjectInfo

    @abstractmethod
    def __iter__(self) -> Iterator[bytes]:
        """The bytes; for a whole object with a recorded SHA-256, raises `CorruptObject` after the last chunk
        if they do not match it."""

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> ObjectReader:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class ObjectStore(ABC):
    """A place for objects, by bucket and key. Missing objects raise `ObjectNotFound`; an unreachable or
    failing backend raises `StorageUnavailable`."""

    name: str
    """`local` or `s3`."""

    @abstractmethod
    def create_bucket(self, bucket: str) -> None:
        """Make the bucket exist (no error if it does)."""

    @abstractmethod
    def writer(self, bucket: str, key: str, *, content_type: str) -> ObjectWriter:
        """Start writing an object; the bucket must exist."""

    @abstractmethod
    def head(self, bucket: str, key: str) -> ObjectInfo: ...

    @abstractmethod
    def reader(self, bucket: str, key: str, *, start: int = 0, stop: int | None = None) -> ObjectReader:
        """Open the object for reading bytes `[start, stop)` (`stop` None: to the end; past the end: clamped).

        `info` always describes the whole object. Only a whole read (`start=0, stop=None`) is checked against
        the recorded SHA-256. `RangeNotSatisfiable` when `start` lies at or past the end of a non-empty range.
        """

    @abstractmethod
    def delete(self, bucket: str, key: str) -> bool:
        """Delete the object; False if there was none."""

    @abstractmethod
    def list(
        self,
        bucket: str,
        *,
        prefix: str = "",
        delimiter: str | None = None,
        cursor: str | None = None,
        limit: int = 1000,
    ) -> Listing:
        """Up to `limit` (1 to 1000) objects, and with `delimiter` common prefixes (which count toward
        `limit`), whose keys start with `prefix`, after `cursor`, in key order."""

    def presign(
        self, bucket: str, key: str, *, method: PresignMethod, expires_in: int, size: int | None = None
    ) -> str | None:
        """A URL the store itself serves for one method on one object until `expires_in` seconds from now (a
        `PUT` one uploads exactly `size` bytes); None if the store has no such URLs (the gateway signs its
        own)."""
        return None

    def sweep(self, *, older_than: float = 3600.0) -> None:  # noqa: B027 (optional)
        """Remove what interrupted writes left behind, once older than `older_than` seconds."""

    def close(self) -> None:  # noqa: B027 (optional)
        """Release connections."""

    # Conveniences built on the primitives.

    def put(self, bucket: str, key: str, source: BinaryIO | bytes, *, content_type: str) -> ObjectInfo:
        """Write an object from bytes or a binary stream, `CHUNK` bytes at a time."""
        with self.writer(bucket, key, content_type=content_type) as writer:
            if isinstance(source, bytes):
                for start in range(0, len(source), CHUNK):
                    writer.write(source[start : start + CHUNK])
            else:
                while chunk := source.read(CHUNK):
                    writer.write(chunk)
            return writer.commit()

    def get(self, bucket: str, key: str) -> bytes:
        """The whole object (verified); for small objects only."""
        with self.reader(bucket, key) as reader:
            return b"".join(reader)

    def walk(self, bucket: str, *, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object under `prefix`, page after page."""
        cursor: str | None = None
        while True:
            page = self.list(bucket, prefix=prefix, cursor=cursor)
            yield from page.objects
            if page.next_cursor is None:
                return
            cursor = page.next_cursor
