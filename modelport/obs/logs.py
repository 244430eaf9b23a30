"""Worker logs: every line a module's workers print, kept per module as JSON lines in rotated files, read back
with filters, and followed live.

Each line becomes one JSON object in `<root>/<module>.log`: `{"time", "version", "replica", "stream",
"request_ids", "line"}`. The request ids come from the tag a worker puts before each line it prints during a
call (`core.protocol.split_tag`); the tag itself is never stored. Secrets are redacted (`obs/redact.py`)
before a line reaches the disk or a follower. A file past `max_bytes` is rotated to `<module>.log.1` (and
the older ones shifted, `backups` kept), and reads span the current file and its backups.

Lines are written on the event loop by the pumps that read the workers' pipes, so followers (one bounded
`asyncio` queue each) are fed there too, in the order the lines were written; a follower too slow to keep
up loses lines and is told how many. Reads run in worker threads.
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, Final

import msgspec

from modelport.core.protocol import split_tag
from modelport.obs.redact import redact

__all__ = ["FOLLOW_BUFFER", "Follower", "LogEntry", "LogGap", "ModuleLogs", "log_time"]

FOLLOW_BUFFER: Final = 1000
"""Lines (and gap notices) a follower may have waiting before new lines are dropped for it."""

_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_ENCODER = msgspec.json.Encoder()


class LogEntry(msgspec.Struct, frozen=True):
    """One stored line, as it is written to the file and sent to readers."""

    time: str
    """When the gateway read the line: ISO 8601, UTC, milliseconds (`2026-01-02T03:04:05.678Z`)."""
    version: str
    replica: int
    stream: str
    """`stdout` or `stderr` for what a worker printed, `modelport` for what the pool says about it."""
    request_ids: tuple[str, ...]
    line: str


_DECODER = msgspec.json.Decoder(LogEntry)


class LogGap(msgspec.Struct, frozen=True):
    """A follower's notice that `dropped` lines were lost at this point because it read too slowly."""

    dropped: int


_Sink = Callable[[int, str, str], None]


def log_time(moment: datetime) -> str:
    """`moment` in the stored time format; stored times compare as strings in time order."""
    stamp = moment.astimezone(UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


class Follower:
    """One live reader of a module's log: the lines matching its filters, in order, as they are written.

    At most `limit` items wait in its queue; past that new lines are counted as dropped, and the count is
    delivered as a `LogGap` before the next line that fits (or before the end)."""

    def __init__(
        self,
        *,
        version: str | None = None,
        replica: int | None = None,
        request_id: str | None = None,
        limit: int = FOLLOW_BUFFER,
    ) -> None:
        self.version, self.replica, self.request_id = version, replica, request_id
        self._limit = max(2, limit)
        self._queue: asyncio.Queue[LogEntry | LogGap | None] = asyncio.Queue()
        self._dropped = 0
        self.closed = False

    def matches(self, entry: LogEntry) -> bool:
        return _matches(entry, self.version, self.replica, self.request_id)

    def offer(self, entry: LogEntry) -> None:
        """Queue `entry` if there is room (never blocks); otherwise count it as dropped."""
        if self.closed:
            return
        room = self._limit - self._queue.qsize()
        if self._dropped:
            if room < 2:
                self._dropped += 1
                return
            self._queue.put_nowait(LogGap(self._dropped))
            self._dropped = 0
        if room < 1:
            self._dropped += 1
            return
        self._queue.put_nowait(entry)

    def close(self) -> None:
        """End the follow: `get` returns what is queued, a last `LogGap` if lines were lost, then None."""
        if self.closed:
            return
        self.closed = True
        if self._dropped:
            self._queue.put_nowait(LogGap(self._dropped))
            self._dropped = 0
        self._queue.put_nowait(None)

    async def get(self, timeout: float | None = None) -> LogEntry | LogGap | None:
        """The next line or gap notice; None once the follow has ended. Raises `TimeoutError` when nothing
        arrives within `timeout` seconds."""
        if timeout is None:
            return await self._queue.get()
        return await asyncio.wait_for(self._queue.get(), timeout)


class _LogFile:
    """The current file of one module and its numbered backups; appends whole lines and rotates by size."""

    def __init__(self, path: Path, *, max_bytes: int, backups: int) -> None:
        self.path, self.max_bytes, self.backups = path, max_bytes, backups
        self._handle: BinaryIO | None = None
        self._size = 0

    def append(self, data: bytes) -> None:
        if self._handle is None:
            self._open()
        if self._size and self._size + len(data) > self.max_bytes:
            self._rotate()
        assert self._handle is not None
        self._handle.write(data)
        self._size += len(data)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(self.path, "ab", buffering=0)  # noqa: SIM115 - kept open between lines
        self._size = os.fstat(self._handle.fileno()).st_size

    def _rotate(self) -> None:
        self.close()
        if self.backups:
            for number in range(self.backups - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{number}")
                if older.exists():
                    older.replace(self.path.with_name(f"{self.path.name}.{number + 1}"))
            self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink(missing_ok=True)
        self._open()


class ModuleLogs:
    """The worker logs of every module under `root`: `<root>/<module>.log`, rotated at `max_bytes` with
    `backups` older files kept."""

    def __init__(
        self,
        root: Path,
        *,
        max_bytes: int = 10 * 1024 * 1024,
        backups: int = 3,
        follow_buffer: int = FOLLOW_BUFFER,
    ) -> None:
        self.root = root
        self.max_bytes, self.backups, self.follow_buffer = max_bytes, backups, follow_buffer
        self._files: dict[str, _LogFile] = {}
        self._followers: dict[str, set[Follower]] = {}
        self._lock = threading.Lock()

    def sink(self, module: str, version: str) -> _Sink:
        """The log callback of one version's workers: `(replica, stream, line)` for each line, where `line`
        may start with the request tag a worker puts on what it prints during a call."""
        self._path(module)  # refuse a bad name now rather than at the first line

        def write(replica: int, stream: str, line: str) -> None:
            ids, text = split_tag(line)
            entry = LogEntry(log_time(datetime.now(UTC)), version, replica, stream, ids, redact(text))
            self.write(module, entry)

        return write

    def write(self, module: str, entry: LogEntry) -> None:
        """Append `entry` to `module`'s log and hand it to the module's followers whose filters it matches."""
        data = _ENCODER.encode(entry) + b"\n"
        with self._lock:
            self._file(module).append(data)
        for follower in self._followers.get(module, ()):
            if follower.matches(entry):
                follower.offer(entry)

    def read(
        self,
        module: str,
        *,
        version: str | None = None,
        replica: int | None = None,
        since: datetime | None = None,
        tail: int = 200,
        request_id: str | None = None,
    ) -> list[LogEntry]:
        """The last `tail` lines of `module`'s log (oldest first) that match every filter given: written by
        `version`, by `replica`, at or after `since`, for the request `request_id`. Spans the rotated files;
        blocking, so call it from a worker thread."""
        if tail < 1:
            return []
        after = log_time(since) if since is not None else None
        needle = _ENCODER.encode(request_id) if request_id is not None else None
        found: list[LogEntry] = []
        for data in reversed(self._contents(module)):
            for raw in reversed(data.split(b"\n")):
                if not raw or (needle is not None and needle not in raw):
                    continue
                entry = _decode(raw)
                if entry is None:
                    continue
                if after is not None and entry.time < after:
                    return found[::-1]
                if _matches(entry, version, replica, request_id):
                    found.append(entry)
                    if len(found) >= tail:
                        return found[::-1]
        return found[::-1]

    @contextmanager
    def follow(
        self,
        module: str,
        *,
        version: str | None = None,
        replica: int | None = None,
        request_id: str | None = None,
    ) -> Iterator[Follower]:
        """A follower of `module`'s new lines for as long as the block runs; on the event loop."""
        self._path(module)
        follower = Follower(version=version, replica=replica, request_id=request_id, limit=self.follow_buffer)
        self._followers.setdefault(module, set()).add(follower)
        try:
            yield follower
        finally:
            followers = self._followers.get(module)
            if followers is not None:
                followers.discard(follower)
                if not followers:
                    del self._followers[module]
            follower.close()

    def end_follows(self) -> None:
        """End every follow now (the server is stopping); on the event loop."""
        for followers in self._followers.values():
            for follower in followers:
                follower.close()

    def close(self) -> None:
        """End every follow and close the files (a later line opens its file again)."""
        self.end_follows()
        with self._lock:
            for file in self._files.values():
                file.close()
            self._files.clear()

    def _contents(self, module: str) -> list[bytes]:
        """The bytes of `module`'s files, oldest first. The files are opened together under the lock, so
        that a rotation cannot make a read skip or repeat a file."""
        path = self._path(module)
        with self._lock:
            handles = []
            for found in _existing_files(path, self.backups):
                try:
                    handles.append(open(found, "rb"))  # noqa: SIM115 - closed below
                except FileNotFoundError:
                    continue
        contents = []
        for handle in handles:
            with handle:
                contents.append(handle.read())
        return contents

    def _file(self, module: str) -> _LogFile:
        file = self._files.get(module)
        if file is None:
            file = _LogFile(self._path(module), max_bytes=self.max_bytes, backups=self.backups)
            self._files[module] = file
        return file

    def _path(self, module: str) -> Path:
        if not _NAME.match(module):
            raise ValueError(f"{module!r} is not a module name")
        return self.root / f"{module}.log"


def _existing_files(path: Path, backups: int) -> list[Path]:
    """The files of the log at `path` that exist, oldest first: the highest-numbered backup first, the
    current file last."""
    names = [path.with_name(f"{path.name}.{number}") for number in range(backups, 0, -1)]
    return [found for found in [*names, path] if found.is_file()]


def _matches(entry: LogEntry, version: str | None, replica: int | None, request_id: str | None) -> bool:
    return (
        (version is None or entry.version == version)
        and (replica is None or entry.replica == replica)
        and (request_id is None or request_id in entry.request_ids)
    )


def _decode(raw: bytes) -> LogEntry | None:
    """The entry a stored line holds; None for a line that is not one (a write cut short by a crash)."""
    try:
        return _DECODER.decode(raw) if raw.startswith(b"{") else None
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
