"""Statistics of each module version's calls: counts, error codes, batch sizes and latency percentiles over
time, kept as rollups in the database so that any window reads a few rows and every gateway adds up.

`Stats` hears of each answered call (`observe`, on the event loop: it only bumps an in-memory aggregate for
the call's module, version and minute) and, every second, merges what it heard into the `stats_rollups` rows
of that minute and of its hour (`flush`, in a worker thread). Latencies go into DDSketches (1 % relative
accuracy), which merge without losing that accuracy: an hour row is the merge of its minutes, a window the
merge of its rows, several gateways the merge of what each wrote. A sketch is kept as its bins (one count per
logarithmic bucket), so no percentile is ever computed from a percentile.

Several gateways write the same rows at once: each merge is a read-modify-write in one transaction holding
the rows' locks (`SELECT ... FOR UPDATE` on PostgreSQL, where the insert of a row another gateway inserts at
the same moment is retried as an update; SQLite's write lock taken before the read). While the database
cannot be written, aggregates stay in memory and are written later; past `max_pending` of them the oldest
minutes are dropped, and counted.

`stats` answers a window (`5m` ... `30d`) in steps (`1m`, `5m`, `1h`) from minute rows, or from hour rows
for hourly steps, never from the request log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt
from ddsketch.ddsketch import BaseDDSketch
from ddsketch.mapping import LogarithmicMapping
from ddsketch.store import DenseStore
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from modelport.core.errors import ValidationFailed, field_error
from modelport.core.records import LatencyQuantiles, LatencyStats, ModuleStats, SeriesLatency, StatsPoint
from modelport.db import Database, StatsRollup
from modelport.db.database import failure
from modelport.obs.calls import CallPayload, CallRecord

__all__ = ["HOUR", "MAX_POINTS", "MINUTE", "STEPS", "WINDOWS", "Histogram", "Overview", "Stats"]

log = logging.getLogger("modelport.stats")

WINDOWS = {"5m": 300, "1h": 3600, "24h": 86_400, "7d": 7 * 86_400, "30d": 30 * 86_400}
"""The windows a query may ask for, in seconds."""
STEPS = {"1m": 60, "5m": 300, "1h": 3600}
"""The steps a window's series may take, in seconds."""
MAX_POINTS = 10_080
"""The most points one series may have (a week of minutes)."""

RELATIVE_ACCURACY = 0.01
"""Every latency percentile is within 1 % of the true value."""

MINUTE, HOUR = 60, 3600
_MAPPING = LogarithmicMapping(RELATIVE_ACCURACY)
_FORMAT = 1
_QUANTILES = (0.5, 0.9, 0.95, 0.99)
_Bins = npt.NDArray[np.integer[Any]]
"""Counts of consecutive bins: as stored (unsigned, as narrow as they fit), or added up (64-bit signed)."""
_Key = tuple[str, str, int]
"""(module, version, start of the interval in Unix seconds)."""


# Sketches


class _Latency:
    """A DDSketch of one kind of latency (milliseconds), as calls are observed."""

    __slots__ = ("high", "low", "sketch", "store")

    def __init__(self) -> None:
        self.store = DenseStore()
        self.sketch = BaseDDSketch(_MAPPING, self.store, DenseStore(), 0.0)
        self.low, self.high = math.inf, -math.inf

    def add(self, milliseconds: float) -> None:
        value = max(float(milliseconds), 0.0)  # a clock step cannot make a call take negative time
        self.sketch.add(value)
        self.low, self.high = min(self.low, value), max(self.high, value)

    def histogram(self) -> Histogram:
        store = self.store
        if store.count == 0:
            bins = np.zeros(0, dtype=np.int64)
            key = 0
        else:
            key = store.min_key
            first, last = store.min_key - store.offset, store.max_key - store.offset
            bins = np.rint(np.asarray(store.bins[first : last + 1])).astype(np.int64)
        zero = round(self.sketch.count - store.count)
        return Histogram(key, bins, zero, zero + int(bins.sum()), self.sketch.sum, self.low, self.high)


class _Encoded(msgspec.Struct, array_like=True, frozen=True):
    """A histogram as stored: the counts of consecutive bins from `key`, `width` bytes each, little endian."""

    format: int
    key: int
    width: int
    bins: bytes
    zero: int
    count: int
    sum: float
    low: float
    high: float


_WIDTHS = {width: np.dtype(f"<u{width}") for width in (1, 2, 4, 8)}
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(_Encoded)


@dataclass(frozen=True, slots=True)
class Histogram:
    """A DDSketch's counts, to store, merge and read percentiles from: `bins[i]` values fell in the bucket of
    key `key + i` of the sketch's logarithmic mapping, `zero` values were zero. Percentiles follow the
    `ddsketch` library's own rule, so a histogram answers what the sketch it came from would."""

    key: int
    bins: _Bins
    zero: int
    count: int
    sum: float
    low: float
    high: float

    @classmethod
    def empty(cls) -> Histogram:
        return cls(0, np.zeros(0, dtype=np.int64), 0, 0, 0.0, math.inf, -math.inf)

    @classmethod
    def combine(cls, histograms: Sequence[Histogram]) -> Histogram:
        """The merge of `histograms`: as if every value of each had been added to one sketch."""
        filled = [h for h in histograms if h.count]
        if len(filled) <= 1:
            return filled[0] if filled else cls.empty()
        with_bins = [h for h in filled if len(h.bins)]
        start = min((h.key for h in with_bins), default=0)
        end = max((h.key + len(h.bins) for h in with_bins), default=0)
        bins = np.zeros(end - start, dtype=np.int64)
        for h in with_bins:
            bins[h.key - start : h.key - start + len(h.bins)] += h.bins
        return cls(
            start,
            bins,
            sum(h.zero for h in filled),
            sum(h.count for h in filled),
            math.fsum(h.sum for h in filled),
            min(h.low for h in filled),
            max(h.high for h in filled),
        )

    def merged(self, other: Histogram) -> Histogram:
        return Histogram.combine([self, other])

    def quantiles(self, qs: Sequence[float]) -> list[float | None]:
        """The values at quantiles `qs` (each 0 to 1); None for an empty histogram."""
        if self.count == 0:
            return [None] * len(qs)
        ranks = np.asarray(qs, dtype=np.float64) * (self.count - 1) - self.zero  # below 0: a zero value
        indexes = np.cumsum(self.bins).searchsorted(ranks, side="right").tolist()
        last = len(self.bins) - 1
        return [
            0.0 if rank < 0 else float(_MAPPING.value(self.key + min(index, last)))
            for rank, index in zip(ranks.tolist(), indexes, strict=True)
        ]

    def encode(self) -> bytes:
        """Compact bytes: the bins in the narrowest unsigned integers that hold the largest."""
        largest = int(self.bins.max()) if len(self.bins) else 0
        width = next(w for w in (1, 2, 4, 8) if largest < 1 << (8 * w))
        bins = self.bins.astype(_WIDTHS[width]).tobytes()
        return _encoder.encode(
            _Encoded(
                _FORMAT,
                int(self.key),
                width,
                bins,
                int(self.zero),
                int(self.count),
                float(self.sum),
                float(self.low),
                float(self.high),
            )
        )

    @classmethod
    def decode(cls, data: bytes) -> Histogram:
        encoded = _decoder.decode(data)
        if encoded.format != _FORMAT or encoded.width not in _WIDTHS:
            raise ValueError(f"not a latency histogram of format {_FORMAT}")
        bins: _Bins = np.frombuffer(encoded.bins, dtype=_WIDTHS[encoded.width])
        if encoded.width == 8:  # counts that only 64 bits hold are added as signed ones
            bins = bins.astype(np.int64)
        return cls(encoded.key, bins, encoded.zero, encoded.count, encoded.sum, encoded.low, encoded.high)


# What is counted


@dataclass(slots=True)
class _Counts:
    """What one interval of one module version adds to its rollup row."""

    calls: int = 0
    errors: int = 0
    codes: dict[str, int] = field(default_factory=dict)
    batches: dict[str, int] = field(default_factory=dict)
    request_bytes: int = 0
    response_bytes: int = 0
    total: Histogram = field(default_factory=Histogram.empty)
    queue: Histogram = field(default_factory=Histogram.empty)
    compute: Histogram = field(default_factory=Histogram.empty)
    kinds: dict[str, int] = field(default_factory=dict)
    """Calls by kind: `sync`, `job`, `batch`."""

    def merged(self, other: _Counts) -> _Counts:
        """Both together (neither is changed: a failed write retries the same counts)."""
        return _Counts(
            self.calls + other.calls,
            self.errors + other.errors,
            _added(self.codes, other.codes),
            _added(self.batches, other.batches),
            self.request_bytes + other.request_bytes,
            self.response_bytes + other.response_bytes,
            self.total.merged(other.total),
            self.queue.merged(other.queue),
            self.compute.merged(other.compute),
            _added(self.kinds, other.kinds),
        )


def _added(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return dict(Counter(a) + Counter(b)) if b else dict(a)


class _Minute:
    """The calls one gateway answered for one module version in one minute, not yet written."""

    __slots__ = (
        "batches",
        "calls",
        "codes",
        "compute",
        "errors",
        "kinds",
        "queue",
        "request_bytes",
        "response_bytes",
        "total",
    )

    def __init__(self) -> None:
        self.calls = self.errors = self.request_bytes = self.response_bytes = 0
        self.codes: Counter[str] = Counter()
        self.batches: Counter[str] = Counter()
        self.kinds: Counter[str] = Counter()
        self.total, self.queue, self.compute = _Latency(), _Latency(), _Latency()

    def add(self, record: CallRecord) -> None:
        self.calls += 1
        self.errors += int(record.status >= 500)
        self.codes[record.code or ("ok" if record.status < 400 else str(record.status))] += 1
        self.kinds[record.kind] += 1
        self.request_bytes += record.request_bytes
        self.response_bytes += record.response_bytes
        self.total.add(record.total * 1000)
        if record.batch_size > 0 or record.queue > 0:  # it reached a pool's queue
            self.queue.add(record.queue * 1000)
        if record.batch_size > 0:  # a worker ran it
            self.batches[str(record.batch_size)] += 1
            self.compute.add(record.compute * 1000)

    def counts(self) -> _Counts:
        return _Counts(
            self.calls,
            self.errors,
            dict(self.codes),
            dict(self.batches),
            self.request_bytes,
            self.response_bytes,
            self.total.histogram(),
            self.queue.histogram(),
            self.compute.histogram(),
            dict(self.kinds),
        )


@dataclass(frozen=True)
class Overview:
    """A module at a glance over a short window: how busy, how often failing, how slow."""

    calls_per_minute: float
    error_rate: float
    p95_ms: float | None


# The service


class Stats:
    """Call statistics: a call observer that writes rollups, and the queries that read them.

    `minute_days` and `hour_days` are how long minute and hour rows are kept; `run` writes every
    `flush_seconds` and sweeps every `sweep_seconds`; `max_pending` bounds the (module, version, minute)
    aggregates held in memory while the database cannot be written; `clock` gives the time (Unix seconds).
    """

    def __init__(
        self,
        database: Database,
        *,
        minute_days: float = 8,
        hour_days: float = 400,
        flush_seconds: float = 1.0,
        sweep_seconds: float = 3600.0,
        max_pending: int = 4096,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.database = database
        self.minute_days = minute_days
        self.hour_days = hour_days
        self.flush_seconds = flush_seconds
        self.sweep_seconds = sweep_seconds
        self.max_pending = max_pending
        self.clock = clock
        self.dropped_calls = 0
        """Calls whose minute was dropped, unwritten, because too many waited for the database."""
        self._lock = threading.Lock()  # guards `_observed`: the event loop adds, the flusher takes
        self._observed: dict[_Key, _Minute] = {}
        self._flushing = threading.Lock()  # one flush at a time; guards `_unwritten`
        self._unwritten: dict[_Key, _Counts] = {}

    # Observing (on the event loop)

    def observe(self, record: CallRecord, payload: CallPayload | None) -> None:
        """Count an answered call in its minute's aggregate; O(1), never blocks on I/O."""
        key = (record.module, record.version, int(record.at // MINUTE) * MINUTE)
        with self._lock:
            minute = self._observed.get(key)
            if minute is None:
                minute = self._observed[key] = _Minute()
            minute.add(record)

    # Writing (in worker threads)

    async def run(self, stop: asyncio.Event) -> None:
        """Write what was observed every `flush_seconds` and sweep old rows every `sweep_seconds`, until
        `stop` is set; then write what is left."""
        swept = -math.inf
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.flush_seconds)
            await asyncio.to_thread(self._flush_logged)
            if time.monotonic() - swept >= self.sweep_seconds:
                swept = time.monotonic()
                try:
                    await asyncio.to_thread(self.sweep)
                except Exception:
                    log.exception("sweeping old statistics failed; trying again later")

    async def close(self) -> None:
        """Write what is left (the calls answered while the server drained)."""
        await asyncio.to_thread(self._flush_logged)

    def _flush_logged(self) -> None:
        try:
            self.flush()
        except Exception:  # a bug here must not stop the loop: the aggregates are kept and retried
            log.exception("writing call statistics failed; trying again later")

    def flush(self) -> bool:
        """Merge every aggregate observed so far into its minute and hour rows, in one transaction. Returns
        whether all were written; if the database failed they are kept for the next flush."""
        with self._flushing:
            with self._lock:
                taken, self._observed = self._observed, {}
            for key, minute in taken.items():
                counts = minute.counts()
                held = self._unwritten.get(key)
                self._unwritten[key] = counts if held is None else held.merged(counts)
            if not self._unwritten:
                return True
            try:
                self._write(self._unwritten)
            except Exception as exc:
                waiting = len(self._unwritten)
                if isinstance(exc, SQLAlchemyError):
                    log.warning("writing call statistics failed (%s); %d minutes wait", failure(exc), waiting)
                else:
                    log.exception("writing call statistics failed; %d minutes wait", waiting)
                self._trim()
                return False
            self._unwritten = {}
            return True

    def _trim(self) -> None:
        """Keep at most `max_pending` aggregates: drop the oldest minutes, counting their calls."""
        excess = len(self._unwritten) - self.max_pending
        if excess <= 0:
            return
        oldest = sorted(self._unwritten, key=lambda key: key[2])[:excess]
        dropped = sum(self._unwritten.pop(key).calls for key in oldest)
        self.dropped_calls += dropped
        log.error("dropped the statistics of %d calls: the database has been unavailable too long", dropped)

    def _write(self, minutes: dict[_Key, _Counts]) -> None:
        rows: dict[tuple[int, str, str, int], _Counts] = {}
        for (module, version, start), counts in minutes.items():
            rows[(MINUTE, module, version, start)] = counts
            hour = (HOUR, module, version, start - start % HOUR)
            held = rows.get(hour)
            rows[hour] = counts if held is None else held.merged(counts)
        with self.database.writing() as session:
            for key in sorted(rows):  # every gateway locks rows in one order: no deadlock between them
                _merge_row(session, *key, rows[key])

    def sweep(self, *, now: float | None = None) -> int:
        """Delete minute rows older than `minute_days` and hour rows older than `hour_days`; returns how many
        went."""
        now = self.clock() if now is None else now
        removed = 0
        with self.database.session() as session:
            for resolution, days in ((MINUTE, self.minute_days), (HOUR, self.hour_days)):
                cutoff = datetime.fromtimestamp(now - days * 86_400, UTC)
                result = session.execute(
                    delete(StatsRollup).where(
                        StatsRollup.resolution == resolution, StatsRollup.start < cutoff
                    )
                )
                removed += int(getattr(result, "rowcount", 0) or 0)
        if removed:
            log.info("swept %d statistics rows past their retention", removed)
        return removed

    # Reading

    def stats(self, module: str, *, window: str, step: str, version: str | None = None) -> ModuleStats:
        """A module's calls in the last `window`, overall and in `step`s ending with the current one (all
        versions, or only `version`). Raises `ValidationFailed` naming `window` or `step` when the pair is
        not one served."""
        window_seconds, step_seconds = _check_window(window, step)
        points = window_seconds // step_seconds
        now = self.clock()
        last = int(now // step_seconds) * step_seconds
        first = last - (points - 1) * step_seconds
        end = last + step_seconds
        series = [_Point(first + i * step_seconds) for i in range(points)]
        whole = _Window()
        hours = (-(-first // HOUR) * HOUR, end // HOUR * HOUR)  # the whole hours inside the window
        if step_seconds >= HOUR or hours[1] - hours[0] < 2 * HOUR:
            resolution = HOUR if step_seconds >= HOUR else MINUTE
            for start, counts in self._rows(module, version, resolution, first, end):
                series[(start - first) // step_seconds].add(counts)
                whole.add(counts)
        else:
            # A long window of short steps (a day of 5 minutes): its points need the minute rows, but only
            # their calls, errors and total latency; the window's totals take its whole hours from the hour
            # rows (written with the minutes, in the same transaction) and only its edges from minute rows.
            for start, calls, errors, total in self._points(module, version, first, end):
                series[(start - first) // step_seconds].add_point(calls, errors, total)
            for resolution, since, until in (
                (MINUTE, first, hours[0]),
                (HOUR, hours[0], hours[1]),
                (MINUTE, hours[1], end),
            ):
                for _, counts in self._rows(module, version, resolution, since, until):
                    whole.add(counts)
        return ModuleStats(
            module=module,
            version=version,
            window=window,
            step=step,
            calls=whole.calls,
            errors=whole.errors,
            error_rate=whole.errors / whole.calls if whole.calls else 0.0,
            throughput_rps=whole.calls / max(now - first, 1.0),
            request_bytes=whole.request_bytes,
            response_bytes=whole.response_bytes,
            codes=dict(sorted(whole.codes.items())),
            batch_sizes=dict(sorted(whole.batches.items(), key=lambda item: int(item[0]))),
            kinds=dict(sorted(whole.kinds.items())),
            latency_ms=whole.latency(),
            series=[point.point(min(step_seconds, now - point.start)) for point in series],
        )

    def overview(self, modules: Sequence[str], *, window: str = "5m") -> dict[str, Overview]:
        """Each of `modules`' calls per minute, error rate and p95 latency over the last `window`, read in
        one query (a list of many modules does not ask once per module). Modules without calls are absent."""
        window_seconds, _ = _check_window(window, "1m" if WINDOWS[window] <= 86_400 else "1h")
        resolution = MINUTE if window_seconds <= 86_400 else HOUR
        now = self.clock()
        first = (int(now // resolution) * resolution) - window_seconds + resolution
        query = select(StatsRollup.module, StatsRollup.calls, StatsRollup.errors, StatsRollup.total).where(
            StatsRollup.module.in_(sorted(set(modules))),
            StatsRollup.resolution == resolution,
            StatsRollup.start >= datetime.fromtimestamp(first, UTC),
        )
        with self.database.session() as session:
            found = session.execute(query).all()
        sums: dict[str, tuple[int, int, list[Histogram]]] = {}
        for row in found:
            calls, errors, totals = sums.get(row.module, (0, 0, []))
            totals.append(Histogram.decode(row.total))
            sums[row.module] = (calls + row.calls, errors + row.errors, totals)
        minutes = max(now - first, 60.0) / 60
        return {
            module: Overview(
                calls_per_minute=calls / minutes,
                error_rate=errors / calls if calls else 0.0,
                p95_ms=Histogram.combine(totals).quantiles((0.95,))[0],
            )
            for module, (calls, errors, totals) in sums.items()
        }

    def _points(
        self, module: str, version: str | None, start: int, end: int
    ) -> list[tuple[int, int, int, Histogram]]:
        """The minute rows starting in [start, end): each one's start, calls, errors and total latency."""
        query = select(StatsRollup.start, StatsRollup.calls, StatsRollup.errors, StatsRollup.total).where(
            StatsRollup.module == module,
            StatsRollup.resolution == MINUTE,
            StatsRollup.start >= datetime.fromtimestamp(start, UTC),
            StatsRollup.start < datetime.fromtimestamp(end, UTC),
        )
        if version is not None:
            query = query.where(StatsRollup.version == version)
        with self.database.session() as session:
            found = session.execute(query).all()
        return [
            (int(row.start.timestamp()), row.calls, row.errors, Histogram.decode(row.total)) for row in found
        ]

    def _rows(
        self, module: str, version: str | None, resolution: int, start: int, end: int
    ) -> list[tuple[int, _Counts]]:
        """The rollups of `resolution` starting in [start, end), each with its start (Unix seconds)."""
        query = select(
            StatsRollup.start,
            StatsRollup.calls,
            StatsRollup.errors,
            StatsRollup.codes,
            StatsRollup.batches,
            StatsRollup.request_bytes,
            StatsRollup.response_bytes,
            StatsRollup.total,
            StatsRollup.queue,
            StatsRollup.compute,
            StatsRollup.kinds,
        ).where(
            StatsRollup.module == module,
            StatsRollup.resolution == resolution,
            StatsRollup.start >= datetime.fromtimestamp(start, UTC),
            StatsRollup.start < datetime.fromtimestamp(end, UTC),
        )
        if version is not None:
            query = query.where(StatsRollup.version == version)
        with self.database.session() as session:
            found = session.execute(query).all()
        return [(int(row.start.timestamp()), _counts_of(row)) for row in found]


def _check_window(window: str, step: str) -> tuple[int, int]:
    """The window and step in seconds; `ValidationFailed` naming the field that cannot be served."""
    if window not in WINDOWS:
        choices = ", ".join(WINDOWS)
        raise _invalid("window", "invalid_window", f"window must be one of {choices}, not {window!r}")
    if step not in STEPS:
        raise _invalid("step", "invalid_step", f"step must be one of {', '.join(STEPS)}, not {step!r}")
    window_seconds, step_seconds = WINDOWS[window], STEPS[step]
    if step_seconds > window_seconds or window_seconds % step_seconds:
        raise _invalid("step", "invalid_step", f"a step of {step} does not divide a window of {window}")
    if window_seconds // step_seconds > MAX_POINTS:
        raise _invalid(
            "step",
            "too_many_points",
            f"a {window} window in steps of {step} has {window_seconds // step_seconds} points; "
            f"at most {MAX_POINTS} are served: take a longer step",
        )
    return window_seconds, step_seconds


def _invalid(name: str, code: str, message: str) -> ValidationFailed:
    return ValidationFailed(message, details=[field_error(name, code, message)])


def _merge_row(
    session: Session, resolution: int, module: str, version: str, start: int, counts: _Counts
) -> None:
    """Add `counts` to the row of this interval, making it if there is none, under the row's lock."""
    at = datetime.fromtimestamp(start, UTC)
    query = (
        select(StatsRollup)
        .where(
            StatsRollup.module == module,
            StatsRollup.version == version,
            StatsRollup.resolution == resolution,
            StatsRollup.start == at,
        )
        .with_for_update()
    )
    row = session.scalars(query).one_or_none()
    if row is None:
        try:
            with session.begin_nested():  # another gateway may insert the same row at the same moment
                session.add(_new_row(module, version, resolution, at, counts))
            return
        except IntegrityError:  # it did: its row is committed, so add to it under its lock
            row = session.scalars(query).one()
    held = _counts_of(row).merged(counts)
    row.calls, row.errors = held.calls, held.errors
    row.codes, row.batches, row.kinds = held.codes, held.batches, held.kinds
    row.request_bytes, row.response_bytes = held.request_bytes, held.response_bytes
    row.total, row.queue, row.compute = held.total.encode(), held.queue.encode(), held.compute.encode()


def _counts_of(row: Any) -> _Counts:
    """The counts a rollup row (or a selection of its columns) holds."""
    return _Counts(
        row.calls,
        row.errors,
        row.codes,
        row.batches,
        row.request_bytes,
        row.response_bytes,
        Histogram.decode(row.total),
        Histogram.decode(row.queue),
        Histogram.decode(row.compute),
        row.kinds or {},
    )


def _new_row(module: str, version: str, resolution: int, at: datetime, counts: _Counts) -> StatsRollup:
    return StatsRollup(
        module=module,
        version=version,
        resolution=resolution,
        start=at,
        calls=counts.calls,
        errors=counts.errors,
        codes=counts.codes,
        batches=counts.batches,
        request_bytes=counts.request_bytes,
        response_bytes=counts.response_bytes,
        total=counts.total.encode(),
        queue=counts.queue.encode(),
        compute=counts.compute.encode(),
        kinds=counts.kinds,
    )


@dataclass(slots=True)
class _Window:
    """The rows of a whole window, added up."""

    calls: int = 0
    errors: int = 0
    request_bytes: int = 0
    response_bytes: int = 0
    codes: Counter[str] = field(default_factory=Counter)
    batches: Counter[str] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)
    total: list[Histogram] = field(default_factory=list)
    queue: list[Histogram] = field(default_factory=list)
    compute: list[Histogram] = field(default_factory=list)

    def add(self, counts: _Counts) -> None:
        self.calls += counts.calls
        self.errors += counts.errors
        self.request_bytes += counts.request_bytes
        self.response_bytes += counts.response_bytes
        self.codes.update(counts.codes)
        self.batches.update(counts.batches)
        self.kinds.update(counts.kinds)
        self.total.append(counts.total)
        self.queue.append(counts.queue)
        self.compute.append(counts.compute)

    def latency(self) -> LatencyStats:
        """Percentiles of the whole call (at the top and as `total`), its wait and its computation."""
        total = _quantiles(self.total)
        return LatencyStats(
            **total.model_dump(), total=total, queue=_quantiles(self.queue), compute=_quantiles(self.compute)
        )


@dataclass(slots=True)
class _Point:
    """The rows of one point of a series, added up."""

    start: int
    calls: int = 0
    errors: int = 0
    total: list[Histogram] = field(default_factory=list)

    def add(self, counts: _Counts) -> None:
        self.add_point(counts.calls, counts.errors, counts.total)

    def add_point(self, calls: int, errors: int, total: Histogram) -> None:
        self.calls += calls
        self.errors += errors
        self.total.append(total)

    def point(self, seconds: float) -> StatsPoint:
        """The point, its throughput over `seconds` (its step, or less for the current one)."""
        p50, p95, p99 = Histogram.combine(self.total).quantiles((0.5, 0.95, 0.99))
        return StatsPoint(
            start=datetime.fromtimestamp(self.start, UTC).isoformat(),
            calls=self.calls,
            errors=self.errors,
            throughput_rps=self.calls / max(seconds, 1.0),
            latency_ms=SeriesLatency(p50=p50, p95=p95, p99=p99),
        )


def _quantiles(histograms: Sequence[Histogram]) -> LatencyQuantiles:
    p50, p90, p95, p99 = Histogram.combine(histograms).quantiles(_QUANTILES)
    return LatencyQuantiles(p50=p50, p90=p90, p95=p95, p99=p99)
