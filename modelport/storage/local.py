"""Objects as files under a directory: published by one rename, checked on read, never reached through a link.

Each bucket is a directory under `root`:

    <bucket>/keys/<segment>/…/<segment>/%00object.json   one pointer per key: the commit point
    <bucket>/data/<32 hex>                                each committed object's bytes, under a random name
    <bucket>/tmp/<32 hex>.part, <32 hex>.ptr              writes in progress
    <bucket>/lock                                         locked (`flock`) around every change to `keys/`

A key's segments are directories named exactly as the segments, and its pointer sits inside the last one, so
`a` and `a/b` coexist (`keys/a/%00object.json`, `keys/a/b/%00object.json`). The pointer's name can never be a
segment, since `check_key` refuses percent escapes, and every other name of the layout lives outside `keys/`.
File names are compared byte for byte: the root must be on a case-sensitive file system that keeps Unicode
names as given (Linux's are).

A write streams into `tmp/`, is fsynced, moves to `data/`, and is published by renaming its pointer into
place; the data file the old pointer named is then unlinked. Killed at any moment, a write leaves at most
unreferenced files, which `sweep` removes once they are an hour old. The pointer records the SHA-256 and size,
and a reader of a whole object checks both.

Every path is walked one component at a time from the bucket's directory with `O_NOFOLLOW`: a symbolic link
(or a file where a directory belongs) anywhere inside the store reads as absent, and writes through it are
refused. Walks hold at most two directories open, however deep the key.
"""

from __future__ import annotations

import builtins
import errno
import fcntl
import hashlib
import json
import os
import re
import secrets
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from modelport.core.errors import (
    BucketNotFound,
    CorruptObject,
    InvalidKey,
    ObjectNotFound,
    RangeNotSatisfiable,
    StorageUnavailable,
)
from modelport.storage.base import (
    CHUNK,
    Listing,
    ObjectInfo,
    ObjectReader,
    ObjectStore,
    ObjectWriter,
    PresignMethod,
)
from modelport.storage.keys import check_bucket_name, check_key, check_prefix

__all__ = ["LocalStore"]

POINTER = "%00object.json"
"""The pointer's name inside a key's directory; `%00` keeps it out of the key space."""
STALE_SECONDS = 3600.0
"""Age (since the last write) after which `sweep` removes a leftover file."""
MAX_LIMIT = 1000

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_DATA_NAME = re.compile(r"[0-9a-f]{32}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_MAX_POINTER_BYTES = 64 * 1024
_READ_ATTEMPTS = 20
"""Reads of an object's pointer before a reader gives up on one that writers keep replacing under it: each
lost race means another writer committed meanwhile, so a busy machine may lose a few in a row."""
_STAGING = ".new-"


class _Unsafe(Exception):
    """A symbolic link, or a file of the wrong kind, where the layout expects something else."""


@contextmanager
def _failures() -> Iterator[None]:
    """Turn an unexpected I/O failure into `StorageUnavailable`, without paths."""
    try:
        yield
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise StorageUnavailable(f"the local object store failed: {reason}") from error


def _open_dir(parent: int, name: str) -> int:
    """Open directory `name` of `parent`: `FileNotFoundError` if absent, `_Unsafe` if a link or a file."""
    try:
        return os.open(name, _DIR, dir_fd=parent)
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.ENOTDIR):
            raise _Unsafe(name) from error
        raise


def _make_dir(parent: int, name: str) -> int:
    try:
        os.mkdir(name, 0o700, dir_fd=parent)
    except FileExistsError:
        pass
    else:
        os.fsync(parent)
    return _open_dir(parent, name)


def _open_file(parent: int, name: str) -> int:
    """Open regular file `name` of `parent` for reading: `_Unsafe` for a link, FIFO, directory or device."""
    try:
        fd = os.open(name, _FILE, dir_fd=parent)
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENXIO):
            raise _Unsafe(name) from error
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise _Unsafe(name)
    return fd


def _read_small(parent: int, name: str) -> bytes:
    fd = _open_file(parent, name)
    try:
        return os.read(fd, _MAX_POINTER_BYTES)
    finally:
        os.close(fd)


def _write_new(parent: int, name: str, content: bytes) -> None:
    fd = os.open(name, _NEW, 0o600, dir_fd=parent)
    try:
        _write_all(fd, content)
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, content: bytes) -> None:
    view = memoryview(content)
    while view:
        view = view[os.write(fd, view) :]


def _unlink(parent: int, name: str) -> None:
    with suppress(FileNotFoundError):
        os.unlink(name, dir_fd=parent)


def _is_stale(parent: int, name: str, cutoff: float) -> bool:
    try:
        return os.stat(name, dir_fd=parent, follow_symlinks=False).st_mtime < cutoff
    except FileNotFoundError:
        return False


@dataclass(frozen=True)
class _Record:
    """A pointer's content."""

    key: str
    data: str
    size: int
    sha256: str
    content_type: str
    modified: datetime

    def encode(self) -> bytes:
        fields = {
            "key": self.key,
            "data": self.data,
            "size": self.size,
            "sha256": self.sha256,
            "content_type": self.content_type,
            "modified": self.modified.isoformat(),
        }
        return json.dumps(fields, ensure_ascii=False).encode("utf-8")

    @classmethod
    def decode(cls, raw: bytes, key: str) -> _Record:
        """The record for `key` (named by its place in the tree, not by the pointer's `key` field)."""
        try:
            fields = json.loads(raw)
            record = cls(
                key=key,
                data=str(fields["data"]),
                size=int(fields["size"]),
                sha256=str(fields["sha256"]),
                content_type=str(fields["content_type"]),
                modified=datetime.fromisoformat(fields["modified"]),
            )
        except (ValueError, TypeError, KeyError) as error:
            raise CorruptObject(f"the pointer of object {key!r} is unreadable") from error
        if not (_DATA_NAME.fullmatch(record.data) and _SHA256.fullmatch(record.sha256) and record.size >= 0):
            raise CorruptObject(f"the pointer of object {key!r} is unreadable")
        return record

    def info(self) -> ObjectInfo:
        return ObjectInfo(
            key=self.key,
            size=self.size,
            etag=self.sha256[:32],
            content_type=self.content_type,
            modified=self.modified,
            sha256=self.sha256,
        )


class _Bucket:
    """The open directories of one bucket."""

    def __init__(self, root: Path, name: str) -> None:
        self.name = name
        self._fds: list[int] = []
        try:
            root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                self.fd = self._keep(_open_dir(root_fd, name))
            finally:
                os.close(root_fd)
            self.keys = self._keep(_open_dir(self.fd, "keys"))
            self.data = self._keep(_open_dir(self.fd, "data"))
            self.tmp = self._keep(_open_dir(self.fd, "tmp"))
        except (FileNotFoundError, _Unsafe) as error:
            self.close()
            raise BucketNotFound(f"no bucket {name!r}") from error
        except BaseException:
            self.close()
            raise

    def _keep(self, fd: int) -> int:
        self._fds.append(fd)
        return fd

    def close(self) -> None:
        while self._fds:
            os.close(self._fds.pop())

    def __enter__(self) -> _Bucket:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the bucket's lock: other threads and processes changing `keys/` wait."""
        fd = os.open("lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=self.fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def open_key_dir(self, segments: list[str], *, create: bool = False) -> int:
        """The directory of `segments` in `keys/` (the caller closes it); with `create`, made as needed."""
        fd = os.dup(self.keys)
        try:
            for segment in segments:
                child = _make_dir(fd, segment) if create else _open_dir(fd, segment)
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd

    def read_record(self, key: str) -> _Record:
        """The pointer of `key`: `ObjectNotFound` if there is none, or none reachable without a link."""
        try:
            fd = self.open_key_dir(key.split("/"))
            try:
                raw = _read_small(fd, POINTER)
            finally:
                os.close(fd)
        except (FileNotFoundError, _Unsafe) as error:
            raise ObjectNotFound(f"no object {key!r} in bucket {self.name!r}") from error
        return _Record.decode(raw, key)

    def prune(self, segments: list[str]) -> None:
        """Remove the directories of `segments`, deepest first, while they are empty (under the lock)."""
        for depth in range(len(segments), 0, -1):
            try:
                parent = self.open_key_dir(segments[: depth - 1])
            except (FileNotFoundError, _Unsafe):
                return
            try:
                os.rmdir(segments[depth - 1], dir_fd=parent)
            except OSError:
                return
            finally:
                os.close(parent)


class LocalStore(ObjectStore):
    """Buckets as directories under `root` (`data_dir/objects`); see the module docstring for the layout."""

    name = "local"

    def __init__(self, root: Path) -> None:
        self.root = root

    def _open(self, bucket: str) -> _Bucket:
        check_bucket_name(bucket)
        with _failures():
            return _Bucket(self.root, bucket)

    def create_bucket(self, bucket: str) -> None:
        check_bucket_name(bucket)
        with _failures():
            self.root.mkdir(parents=True, exist_ok=True)
            root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                self._create_bucket(root_fd, bucket)
            finally:
                os.close(root_fd)

    def _create_bucket(self, root_fd: int, bucket: str) -> None:
        """Build the bucket under a staging name, then rename it into place: it appears whole or not."""
        try:
            _Bucket(self.root, bucket).close()
            return
        except BucketNotFound:
            pass
        staging = f"{_STAGING}{secrets.token_hex(8)}"
        fd = _make_dir(root_fd, staging)
        try:
            for part in ("keys", "data", "tmp"):
                os.mkdir(part, 0o700, dir_fd=fd)
            os.close(os.open("lock", _NEW, 0o600, dir_fd=fd))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.rename(staging, bucket, src_dir_fd=root_fd, dst_dir_fd=root_fd)
        except OSError as error:
            _remove_staging(root_fd, staging)
            if error.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR):
                raise
            try:
                _Bucket(self.root, bucket).close()  # someone else made it: fine if it is whole
            except BucketNotFound as missing:
                raise StorageUnavailable(f"bucket {bucket!r} is damaged in the local store") from missing
        else:
            os.fsync(root_fd)

    def writer(self, bucket: str, key: str, *, content_type: str) -> ObjectWriter:
        check_key(key)
        handle = self._open(bucket)
        try:
            with _failures():
                return _LocalWriter(handle, key, content_type)
        except BaseException:
            handle.close()
            raise

    def presign(
        self, bucket: str, key: str, *, method: PresignMethod, expires_in: int, size: int | None = None
    ) -> str | None:
        """None: files have no URLs of their own (the gateway signs its own)."""
        check_key(key)
        check_bucket_name(bucket)
        return None

    def head(self, bucket: str, key: str) -> ObjectInfo:
        check_key(key)
        with self._open(bucket) as handle, _failures():
            return handle.read_record(key).info()

    def reader(self, bucket: str, key: str, *, start: int = 0, stop: int | None = None) -> ObjectReader:
        check_key(key)
        _check_range(start, stop)
        with self._open(bucket) as handle, _failures():
            record, fd = _open_data(handle, key)
        if start > 0 and start >= record.size:
            os.close(fd)
            raise RangeNotSatisfiable(f"object {key!r} has {record.size} bytes; the range starts at {start}")
        end = record.size if stop is None else min(stop, record.size)
        return _LocalReader(fd, record, start=start, end=end, verify=start == 0 and stop is None)

    def delete(self, bucket: str, key: str) -> bool:
        check_key(key)
        segments = key.split("/")
        with self._open(bucket) as handle, _failures(), handle.locked():
            try:
                fd = handle.open_key_dir(segments)
            except (FileNotFoundError, _Unsafe):
                return False
            try:
                try:
                    raw = _read_small(fd, POINTER)
                except (FileNotFoundError, _Unsafe):
                    return False
                os.unlink(POINTER, dir_fd=fd)
                os.fsync(fd)
            finally:
                os.close(fd)
            with suppress(CorruptObject):  # then its data file, if any, is left to `sweep`
                _unlink(handle.data, _Record.decode(raw, key).data)
            handle.prune(segments)
            return True

    def list(
        self,
        bucket: str,
        *,
        prefix: str = "",
        delimiter: str | None = None,
        cursor: str | None = None,
        limit: int = 1000,
    ) -> Listing:
        """A page of the listing; see `ObjectStore.list`. `limit` is at most 1000, as on S3. A common prefix
        passed back as `cursor` skips every key under it."""
        check_prefix(prefix)
        _check_limit(limit)
        with self._open(bucket) as handle, _failures():
            walk = _Walk(handle, prefix=prefix, after=cursor)
            entries: builtins.list[ObjectInfo | str] = []
            for entry in _rolled_up(walk, prefix=prefix, delimiter=delimiter or None, after=cursor):
                entries.append(entry)
                if len(entries) > limit:
                    break
        page = entries[:limit]
        more = len(entries) > limit
        last = page[-1] if page else None
        return Listing(
            objects=[entry for entry in page if isinstance(entry, ObjectInfo)],
            prefixes=[entry for entry in page if isinstance(entry, str)],
            next_cursor=(last.key if isinstance(last, ObjectInfo) else last) if more else None,
        )

    def sweep(self, *, older_than: float = STALE_SECONDS) -> None:
        """Remove what interrupted writes left behind once it is `older_than` seconds old (counted from its
        last write): partial files in `tmp/`, data files no pointer names, empty key directories and
        half-made buckets."""
        cutoff = time.time() - older_than
        with _failures():
            try:
                root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except FileNotFoundError:
                return
            try:
                names = os.listdir(root_fd)
            finally:
                os.close(root_fd)
            for name in sorted(names):
                if name.startswith(_STAGING):
                    self._sweep_staging(name, cutoff)
                    continue
                try:
                    handle = self._open(name)
                except (InvalidKey, BucketNotFound):
                    continue
                with handle:
                    _sweep_bucket(handle, cutoff)

    def _sweep_staging(self, name: str, cutoff: float) -> None:
        root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            if _is_stale(root_fd, name, cutoff):
                with suppress(OSError):  # not what a staging bucket holds: left for a person to look at
                    _remove_staging(root_fd, name)
        finally:
            os.close(root_fd)


def _remove_staging(root_fd: int, staging: str) -> None:
    """Remove a bucket made under a staging name that was never renamed into place (it holds no objects)."""
    try:
        fd = _open_dir(root_fd, staging)
    except (FileNotFoundError, _Unsafe):
        return
    try:
        for part in ("keys", "data", "tmp"):
            with suppress(FileNotFoundError):
                os.rmdir(part, dir_fd=fd)
        _unlink(fd, "lock")
    finally:
        os.close(fd)
    os.rmdir(staging, dir_fd=root_fd)


class _LocalWriter(ObjectWriter):
    """Streams into `tmp/<name>.part`; `commit` publishes it as `data/<name>` under a new pointer."""

    def __init__(self, bucket: _Bucket, key: str, content_type: str) -> None:
        super().__init__()
        self._bucket = bucket
        self._key = key
        self._content_type = content_type
        self._name = secrets.token_hex(16)
        self._fd: int | None = os.open(f"{self._name}.part", _NEW, 0o600, dir_fd=bucket.tmp)
        self._published = False
        self._finished = False

    def _open_fd(self) -> int:
        if self._fd is None:
            raise RuntimeError("this writer is committed or aborted")
        return self._fd

    def _write(self, chunk: bytes) -> None:
        with _failures():
            _write_all(self._open_fd(), chunk)

    def commit(self) -> ObjectInfo:
        fd = self._open_fd()
        self._fd = None
        bucket, name = self._bucket, self._name
        with _failures():
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            # A fresh mtime tells `sweep` this data file is in use, however long the upload stalled.
            os.utime(f"{name}.part", dir_fd=bucket.tmp)
            os.rename(f"{name}.part", name, src_dir_fd=bucket.tmp, dst_dir_fd=bucket.data)
            os.fsync(bucket.data)
            record = _Record(
                key=self._key,
                data=name,
                size=self.written,
                sha256=self.sha256,
                content_type=self._content_type,
                modified=datetime.now(UTC),
            )
            _write_new(bucket.tmp, f"{name}.ptr", record.encode())
            replaced = self._publish()
            if replaced is not None and replaced != name:
                _unlink(bucket.data, replaced)
        self._finish()
        return record.info()

    def _publish(self) -> str | None:
        """Rename the pointer into place; the data file the old pointer named, if any."""
        bucket = self._bucket
        with bucket.locked():
            try:
                fd = bucket.open_key_dir(self._key.split("/"), create=True)
            except _Unsafe as error:
                raise StorageUnavailable(f"refusing to write {self._key!r} through a link") from error
            try:
                try:
                    replaced: str | None = _Record.decode(_read_small(fd, POINTER), self._key).data
                except FileNotFoundError:
                    replaced = None
                except CorruptObject:
                    replaced = None  # its data file is unreferenced now: `sweep` removes it
                except _Unsafe as error:
                    raise StorageUnavailable(f"refusing to write {self._key!r} through a link") from error
                os.rename(f"{self._name}.ptr", POINTER, src_dir_fd=bucket.tmp, dst_dir_fd=fd)
                self._published = True
                os.fsync(fd)
            finally:
                os.close(fd)
        return replaced

    def abort(self) -> None:
        if self._finished:
            return
        with _failures():
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            _unlink(self._bucket.tmp, f"{self._name}.part")
            _unlink(self._bucket.tmp, f"{self._name}.ptr")
            if not self._published:
                _unlink(self._bucket.data, self._name)
        self._finish()

    def _finish(self) -> None:
        self._finished = True
        self._bucket.close()


def _open_data(bucket: _Bucket, key: str) -> tuple[_Record, int]:
    """The pointer of `key` and its data file, open. A data file can vanish between the two reads when a
    writer replaces the object; then the new pointer is read."""
    for _ in range(_READ_ATTEMPTS):
        record = bucket.read_record(key)
        try:
            return record, _open_file(bucket.data, record.data)
        except FileNotFoundError:
            continue
        except _Unsafe as error:
            raise CorruptObject(f"the data of object {key!r} is not a regular file") from error
    raise CorruptObject(f"the data file of object {key!r} is missing")


class _LocalReader(ObjectReader):
    def __init__(self, fd: int, record: _Record, *, start: int, end: int, verify: bool) -> None:
        self.info = record.info()
        self._fd: int | None = fd
        self._sha256 = record.sha256
        self._start, self._end = start, end
        self._verify = verify

    def __iter__(self) -> Iterator[bytes]:
        fd = self._fd
        if fd is None:
            raise RuntimeError("this reader is closed")
        digest = hashlib.sha256()
        position = self._start
        while position < self._end:
            with _failures():
                chunk = os.pread(fd, min(CHUNK, self._end - position), position)
            if not chunk:
                break
            if self._verify:
                digest.update(chunk)
            position += len(chunk)
            yield chunk
        if self._verify:
            with _failures():
                on_disk = os.fstat(fd).st_size
            if on_disk != self.info.size or digest.hexdigest() != self._sha256:
                raise CorruptObject(f"object {self.info.key!r} does not match its recorded SHA-256")

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class _Walk:
    """Objects under `prefix` and after `after`, in key order, read from the key tree.

    In a directory whose key prefix is `path`, child `name` stands for two runs of keys: the object
    `path + name` and the keys under `path + name + "/"`. Sorting those runs as strings (code point order is
    UTF-8 byte order) and expanding them in turn yields every key in order. `skip` lets the consumer drop
    the rest of a run it has rolled up into a common prefix.
    """

    def __init__(self, bucket: _Bucket, *, prefix: str, after: str | None) -> None:
        self._bucket = bucket
        self._prefix = prefix
        self._after = after
        self.skip: str | None = None

    def __iter__(self) -> Iterator[ObjectInfo]:
        base = self._prefix[: self._prefix.rfind("/") + 1]
        return self._directory(base.split("/")[:-1])

    def _directory(self, segments: list[str]) -> Iterator[ObjectInfo]:
        path = "".join(f"{segment}/" for segment in segments)
        try:
            fd = self._bucket.open_key_dir(segments)
        except (FileNotFoundError, _Unsafe):
            return
        try:
            names = os.listdir(fd)
        finally:
            os.close(fd)
        runs = sorted(
            (f"{path}{name}{tail}", name)
            for name in names
            if name != POINTER and _is_key(f"{path}{name}")
            for tail in ("", "/")
        )
        for run, name in runs:
            if run.endswith("/"):
                if self._wanted_run(run):
                    yield from self._directory([*segments, name])
            elif self._wanted_key(run):
                try:
                    yield self._bucket.read_record(run).info()
                except (ObjectNotFound, CorruptObject):
                    continue  # gone since the directory was read, reached through a link, or damaged

    def _wanted_key(self, key: str) -> bool:
        return (
            key.startswith(self._prefix)
            and (self._after is None or key > self._after)
            and not (self.skip is not None and key.startswith(self.skip))
        )

    def _wanted_run(self, run: str) -> bool:
        """Whether any key under `run` (which ends with `/`) may be wanted."""
        if not (run.startswith(self._prefix) or self._prefix.startswith(run)):
            return False
        if self.skip is not None and run.startswith(self.skip):
            return False
        # All keys under `run` are at most `after` when `after` sorts above `run` without extending it.
        return self._after is None or self._after < run or self._after.startswith(run)


def _is_key(key: str) -> bool:
    try:
        check_key(key)
    except InvalidKey:
        return False
    return True


def _rolled_up(
    walk: _Walk, *, prefix: str, delimiter: str | None, after: str | None
) -> Iterator[ObjectInfo | str]:
    """The walk's objects, with those whose key holds `delimiter` after `prefix` rolled up into common
    prefixes (each once; a common prefix at or before `after` was on an earlier page)."""
    for info in walk:
        found = -1 if delimiter is None else info.key.find(delimiter, len(prefix))
        if found < 0:
            yield info
            continue
        common = info.key[: found + len(delimiter or "")]
        walk.skip = common
        if after is None or common > after:
            yield common


def _sweep_bucket(bucket: _Bucket, cutoff: float) -> None:
    for name in os.listdir(bucket.tmp):
        if _is_stale(bucket.tmp, name, cutoff):
            _unlink(bucket.tmp, name)
    referenced: set[str] = set()
    empty: list[list[str]] = []
    complete = _collect(bucket, [], referenced, empty)
    if complete:
        unreferenced = [
            name
            for name in os.listdir(bucket.data)
            if name not in referenced and _is_stale(bucket.data, name, cutoff)
        ]
        # A commit refreshes its data file's mtime before naming it in a pointer: one still stale under the
        # lock is named by no pointer, now or later.
        with bucket.locked():
            for name in unreferenced:
                if _is_stale(bucket.data, name, cutoff):
                    _unlink(bucket.data, name)
    with bucket.locked():
        for segments in empty:
            bucket.prune(segments)


def _collect(
    bucket: _Bucket,
    segments: list[str],
    referenced: set[str],
    empty: list[list[str]],
) -> bool:
    """Gather the data files the pointers under `segments` name, and the empty directories; False if a
    pointer could not be read (then no data file can be known to be unreferenced)."""
    try:
        fd = bucket.open_key_dir(segments)
    except (FileNotFoundError, _Unsafe):
        return True
    try:
        names = os.listdir(fd)
    finally:
        os.close(fd)
    if not names and segments:
        empty.append(segments)
    complete = True
    for name in names:
        if name == POINTER and segments:
            key = "/".join(segments)
            try:
                referenced.add(bucket.read_record(key).data)
            except ObjectNotFound:
                pass
            except CorruptObject:
                complete = False
        else:
            complete = _collect(bucket, [*segments, name], referenced, empty) and complete
    return complete


def _check_range(start: int, stop: int | None) -> None:
    if start < 0 or (stop is not None and stop < start):
        raise ValueError(f"invalid byte range [{start}, {stop})")


def _check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be between 1 and {MAX_LIMIT}")
