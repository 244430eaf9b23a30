"""The platform's Prometheus metrics: every answered call, the running versions, builds, deploys and drift.

`Metrics` is a call observer (`obs/calls.py`). Per call it bumps one count and three or four histograms of
the call's (module, version), whose series are made on its first call and then used directly: no label
lookup, no lock, a few hundred nanoseconds on the event loop. Those counts are rendered by the writer here:
with fifty modules of three versions they are over ten thousand samples, which prometheus-client's generic
exposition renders in tens of milliseconds, and this writer in a few. The rest goes through a
`CollectorRegistry` of our own (never the process-wide one): build and deploy durations (reported from any
thread), and what the platform already counts elsewhere (calls in flight, worker restarts, the request log's
dropped entries, drift scores), read from callables when Prometheus scrapes, so nothing runs per call for it.

Label values stay bounded: records arrive only for versions the registry routed a call to (a call naming an
unknown module never reaches an observer), error codes come from the platform's own error tree, outcomes are
capped, and the series of a version are removed once it has not been running for `retain_seconds` (a few
scrapes' worth, so that its last counts are collected before they go).
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TypeVar

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from modelport.obs.calls import CallPayload, CallRecord

__all__ = ["CONTENT_TYPE", "Metrics", "RunningVersions"]

log = logging.getLogger("modelport.metrics")

_T = TypeVar("_T")

CONTENT_TYPE = CONTENT_TYPE_LATEST
"""The media type of `Metrics.scrape()`'s answer: the Prometheus text format."""

RunningVersions = Callable[[], Iterable[tuple[str, str, int, int]]]
"""(module, version, calls in flight, worker restarts) of every running version."""

SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Buckets of call durations: 1 ms to a minute (the slowest synchronous calls)."""
BATCH_SIZES = tuple(float(2**power) for power in range(13))
"""Buckets of batch sizes: 1, 2, 4, … 4096."""
BUILD_SECONDS = (1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0)
"""Buckets of build durations: up to an hour (a build step may run 30 minutes by default)."""
DEPLOY_SECONDS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
"""Buckets of deploy durations: from a swap of running versions to a slow model load."""
DEPLOY_KINDS = frozenset({"switch"})
"""Publication events timed by `modelport_deploy_duration_seconds`: the switch of a deploy or rollback, from
its request to the moment the new version took the traffic."""
MAX_OUTCOMES = 16
"""Distinct `outcome` label values kept; any further one is counted as `other`."""

_REQUESTS = "modelport_requests_total"
_HISTOGRAMS = (
    ("modelport_request_duration_seconds", "Seconds from a call's arrival to its answer.", SECONDS),
    ("modelport_request_queue_seconds", "Seconds a call's records waited for a worker.", SECONDS),
    (
        "modelport_request_compute_seconds",
        "Seconds the worker computed the batch that answered a call.",
        SECONDS,
    ),
    ("modelport_batch_size", "Records in the batch that answered a call.", BATCH_SIZES),
)
"""The per-call histograms, in the order of `_Series.histograms`."""


def _number(value: float) -> str:
    """A sample value or bucket bound as the text format writes it (Go's float syntax)."""
    if math.isfinite(value):
        return repr(float(value))
    return "NaN" if math.isnan(value) else ("+Inf" if value > 0 else "-Inf")


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


_LE = {bounds: [f'le="{_number(bound)}"' for bound in bounds] + ['le="+Inf"'] for _, _, bounds in _HISTOGRAMS}
"""The `le` label of each bucket, by bounds."""


class _Histogram:
    """One series' bucket counts (not cumulative; the last is +Inf) and sum. Only the event loop writes it."""

    __slots__ = ("bounds", "buckets", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.buckets = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.buckets[bisect_left(self.bounds, value)] += 1  # `le` buckets: a value on a bound counts in it
        self.sum += value


class _Series:
    """Everything counted for one (module, version)."""

    __slots__ = ("batch", "compute", "duration", "histograms", "labels", "queue", "requests", "seen")

    def __init__(self, module: str, version: str, now: float) -> None:
        self.labels = f'module="{_label(module)}",version="{_label(version)}"'
        self.requests: dict[tuple[str | None, int], int] = {}
        """Answered calls by (error code, status // 100)."""
        self.histograms = tuple(_Histogram(bounds) for _, _, bounds in _HISTOGRAMS)
        self.duration, self.queue, self.compute, self.batch = self.histograms
        self.seen = now
        """When the version was last known to run (or its first call, for one not scraped yet)."""


@dataclass(frozen=True, slots=True)
class _Counts:
    """A copy of one series' counts, taken on the event loop, rendered in a worker thread."""

    labels: str
    requests: list[tuple[tuple[str | None, int], int]]
    histograms: list[tuple[list[int], float]]


class Metrics:
    """Counts every answered call and serves everything in the Prometheus text format.

    `running` lists the running versions with their calls in flight and worker restarts, `dropped` is the
    request log's count of entries it had to drop, `drift` the latest drift score by (module, feature); each
    is read when Prometheus scrapes. `clock` is monotonic seconds. `observe` and the scrape's first half run
    on the platform's event loop; `module_event` may be called from any thread.
    """

    def __init__(
        self,
        *,
        running: RunningVersions = lambda: (),
        dropped: Callable[[], int] = lambda: 0,
        drift: Callable[[], Mapping[tuple[str, str], float]] = lambda: {},
        retain_seconds: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._running, self._dropped, self._drift = running, dropped, drift
        self._retain, self._clock = retain_seconds, clock
        self.registry = CollectorRegistry()
        """Build and deploy durations; the per-call counts and the scrape-time families join them in the
        exposition."""
        self.builds = Histogram(
            "modelport_build_duration_seconds",
            "Seconds a version's build took, by outcome.",
            ["outcome"],
            buckets=BUILD_SECONDS,
            registry=self.registry,
        )
        self.deploys = Histogram(
            "modelport_deploy_duration_seconds",
            "Seconds a deploy, rollback or canary took, by outcome.",
            ["outcome"],
            buckets=DEPLOY_SECONDS,
            registry=self.registry,
        )
        self._series: dict[tuple[str, str], _Series] = {}
        self._outcomes: set[str] = set()
        self._lock = threading.Lock()

    # per call: on the event loop

    def observe(self, record: CallRecord, payload: CallPayload | None) -> None:
        """Count an answered call: O(1), no lookup beyond its version's series."""
        series = self._series.get((record.module, record.version))
        if series is None:
            series = self._start(record.module, record.version)
        key = (record.code, record.status // 100)
        series.requests[key] = series.requests.get(key, 0) + 1
        series.duration.observe(record.total)
        if record.batch_size or record.queue:  # its records reached the queue
            series.queue.observe(record.queue)
        if record.batch_size:  # a worker ran them
            series.compute.observe(record.compute)
            series.batch.observe(record.batch_size)

    def _start(self, module: str, version: str) -> _Series:
        """The series of a version's first call; forgets those of versions long stopped meanwhile, so they
        stay bounded even if nobody scrapes."""
        now = self._clock()
        series = self._series[(module, version)] = _Series(module, version, now)
        try:
            self._prune({(name, running) for name, running, _, _ in self._running()}, now)
        except Exception:
            log.exception("listing the running versions failed; their metrics are kept for now")
        return series

    def _prune(self, running: set[tuple[str, str]], now: float) -> None:
        for key, series in list(self._series.items()):
            if key in running:
                series.seen = now
            elif now - series.seen > self._retain:
                del self._series[key]

    # publication history: any thread

    def module_event(self, kind: str, outcome: str | None, seconds: float | None) -> None:
        """Time a build (`build`) or the switch of a deploy or rollback (`switch`); other kinds, and events
        without a duration, are not timed."""
        histogram = self.builds if kind == "build" else self.deploys if kind in DEPLOY_KINDS else None
        if histogram is None or seconds is None or not math.isfinite(seconds) or seconds < 0:
            return
        histogram.labels(self._outcome(outcome)).observe(seconds)

    def _outcome(self, outcome: str | None) -> str:
        value = outcome or "unknown"
        with self._lock:
            if value not in self._outcomes:
                if len(self._outcomes) >= MAX_OUTCOMES:
                    return "other"
                self._outcomes.add(value)
        return value

    # scraping

    async def scrape(self) -> bytes:
        """Everything, in the Prometheus text format. The counts and the running versions are read here, on
        the event loop that changes them; the text is written in a worker thread."""
        families = self.scrape_time()  # first: it forgets the versions stopped long enough
        return await asyncio.to_thread(self._render, self._counts(), families)

    def exposition(self) -> bytes:
        """`scrape()` for callers on the event loop that counts, or without one (tests, benchmarks)."""
        families = self.scrape_time()
        return self._render(self._counts(), families)

    def _counts(self) -> list[_Counts]:
        return [
            _Counts(
                series.labels,
                list(series.requests.items()),
                [(list(histogram.buckets), histogram.sum) for histogram in series.histograms],
            )
            for series in self._series.values()
        ]

    def _render(self, counts: list[_Counts], families: list[Metric]) -> bytes:
        return _write_calls(counts).encode() + generate_latest(_Families(self.registry, families))

    def scrape_time(self) -> list[Metric]:
        """The families read from the callables at scrape time; forgets the series of versions that have not
        been running for `retain_seconds`. A callable that fails leaves its families out (and is logged)."""
        families: list[Metric] = []
        running = self._read("running versions", lambda: list(self._running()))
        if running is not None:
            families += _running_families(running)
            self._prune({(module, version) for module, version, _, _ in running}, self._clock())
        dropped = self._read("dropped request log entries", self._dropped)
        if dropped is not None:
            families.append(
                CounterMetricFamily(
                    "modelport_request_log_dropped",
                    "Request log entries dropped because its buffer was full.",
                    value=dropped,
                )
            )
        drift = self._read("drift scores", lambda: dict(self._drift()))
        if drift is not None:
            scores = GaugeMetricFamily(
                "modelport_drift_score",
                "How far a feature's recent values drifted from its reference.",
                labels=["module", "feature"],
            )
            for (module, feature), score in sorted(drift.items()):
                scores.add_metric([module, feature], score)
            families.append(scores)
        return families

    def _read(self, what: str, source: Callable[[], _T]) -> _T | None:
        try:
            return source()
        except Exception:
            log.exception("reading the %s for /metrics failed; they are left out of this scrape", what)
            return None


def _write_calls(counts: list[_Counts]) -> str:
    """The per-call families in the text format, each series' labels escaped once when it was made."""
    lines = [
        f"# HELP {_REQUESTS} Answered calls by error code (`ok` for a success) and status class.\n",
        f"# TYPE {_REQUESTS} counter\n",
    ]
    for series in counts:
        for (code, status), count in series.requests:
            code_label = "ok" if code is None else _label(code)
            lines.append(f'{_REQUESTS}{{{series.labels},code="{code_label}",status="{status}xx"}} {count}\n')
    for index, (name, description, bounds) in enumerate(_HISTOGRAMS):
        lines += [f"# HELP {name} {description}\n", f"# TYPE {name} histogram\n"]
        les = _LE[bounds]
        for series in counts:
            buckets, total = series.histograms[index]
            labels, cumulative = series.labels, 0
            for le, count in zip(les, buckets, strict=True):
                cumulative += count
                lines.append(f"{name}_bucket{{{labels},{le}}} {cumulative}\n")
            lines.append(f"{name}_count{{{labels}}} {cumulative}\n")
            lines.append(f"{name}_sum{{{labels}}} {_number(total)}\n")
    return "".join(lines)


def _running_families(running: list[tuple[str, str, int, int]]) -> list[Metric]:
    in_flight = GaugeMetricFamily(
        "modelport_in_flight",
        "Calls routed to a running version and not answered yet.",
        labels=["module", "version"],
    )
    restarts = CounterMetricFamily(
        "modelport_worker_restarts",
        "Workers of a running version started again after one died, hung or timed out.",
        labels=["module", "version"],
    )
    for module, version, calls, restarted in sorted(running):
        in_flight.add_metric([module, version], calls)
        restarts.add_metric([module, version], restarted)
    return [in_flight, restarts]


class _Families:
    """A registry's families and a scrape's own, as one collector for `generate_latest`. The `_created`
    samples prometheus-client adds are left out: they would double the series of every counter."""

    def __init__(self, registry: CollectorRegistry, extra: list[Metric]) -> None:
        self.registry, self.extra = registry, extra

    def collect(self) -> Iterator[Metric]:
        for family in self.registry.collect():
            family.samples = [sample for sample in family.samples if not sample.name.endswith("_created")]
            yield family
        yield from self.extra
