"""Call statistics: rollups that several gateways write at once add up exactly, percentiles stay within 1 % of
the truth, windows and steps are checked, series are aligned, versions filtered, old rows swept, and an
unavailable database loses nothing until the held minutes pass their bound."""

from __future__ import annotations

import itertools
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from ddsketch import DDSketch, LogarithmicMapping
from sqlalchemy import func, select, text

from modelport.control.stats import Histogram, Stats
from modelport.core.errors import ValidationFailed
from modelport.db import Database, StatsRollup
from modelport.obs.calls import CallRecord

NOW = datetime(2030, 1, 1, 12, 34, 56, tzinfo=UTC).timestamp()
QUANTILES = {"p50": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99}


def call(
    at: float,
    total_ms: float,
    *,
    module: str = "m",
    version: str = "v1",
    status: int = 200,
    code: str | None = None,
    batch_size: int = 1,
) -> CallRecord:
    return CallRecord(
        id="r",
        trace_id="t",
        at=at,
        kind="sync",
        module=module,
        version=version,
        replica=0 if batch_size else None,
        caller="ann",
        caller_id=1,
        client="127.0.0.1",
        status=status,
        code=code,
        total=total_ms / 1000,
        queue=total_ms / 10_000 if batch_size else 0.0,
        compute=total_ms * 0.8 / 1000 if batch_size else 0.0,
        batch_size=batch_size,
        records=1,
        request_bytes=100,
        response_bytes=50,
    )


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    db = Database(database_url)
    db.migrate()
    try:
        yield db
    finally:
        db.close()


@pytest.fixture
def sqlite(tmp_path: Path) -> Iterator[Database]:
    db = Database(f"sqlite:///{tmp_path / 'stats.db'}", lock_wait=0.2)
    db.migrate()
    try:
        yield db
    finally:
        db.close()


def rollups(database: Database, resolution: int) -> list[tuple[str, str, datetime, int]]:
    with database.session() as session:
        query = select(StatsRollup.module, StatsRollup.version, StatsRollup.start, StatsRollup.calls).where(
            StatsRollup.resolution == resolution
        )
        return sorted(tuple(row) for row in session.execute(query))  # type: ignore[misc]


# The sketches


def test_a_histogram_answers_what_its_sketch_would_through_storage_and_merging(sqlite: Database) -> None:
    values = np.random.default_rng(7).lognormal(2, 1.5, 5000)
    stats = Stats(sqlite)
    reference = DDSketch(0.01)
    for index, value in enumerate(values):
        stats.observe(call(NOW + index % 3 * 60, value), None)  # numpy floats too
        reference.add(float(value))
    stats.observe(call(NOW, 0.0), None)
    reference.add(0.0)
    assert stats.flush()
    with sqlite.session() as session:
        stored = session.scalars(select(StatsRollup.total).where(StatsRollup.resolution == 60)).all()
    assert len(stored) == 3
    merged = Histogram.combine([Histogram.decode(data) for data in stored])
    qs = [0.0, 0.001, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0]
    assert merged.quantiles(qs) == [reference.get_quantile_value(q) for q in qs]
    assert merged.count == 5001 and merged.zero == 1
    assert merged.sum == pytest.approx(float(values.sum()))
    assert Histogram.empty().quantiles([0.5]) == [None]
    assert Histogram.decode(Histogram.empty().encode()).count == 0


def one_call(ms: float) -> bytes:
    """A stored histogram of one call of `ms` milliseconds."""
    key = LogarithmicMapping(0.01).key(ms)
    return Histogram(key, np.ones(1, dtype=np.int64), 0, 1, ms, ms, ms).encode()


# Two gateways at once

WRITER = textwrap.dedent(
    """
    import pathlib, sys, time
    import numpy as np
    from modelport.control.stats import Stats
    from modelport.db import Database
    from modelport.obs.calls import CallRecord

    url, values, share, shares, base, ready, go = sys.argv[1:]
    share, shares, base = int(share), int(shares), float(base)
    values = np.load(values)
    database = Database(url)
    stats = Stats(database)
    pathlib.Path(ready).touch()
    while not pathlib.Path(go).exists():
        time.sleep(0.005)
    for index in range(share, len(values), shares):
        ms, failed = float(values[index]), index % 37 == 0
        stats.observe(CallRecord(
            id=str(index), trace_id="t", at=base + index * 0.15, kind="sync", module="m", version="v1",
            replica=0, caller="ann", caller_id=1, client=None, status=500 if failed else 200,
            code="module_error" if failed else None, total=ms / 1000, queue=ms / 10_000,
            compute=ms * 0.8 / 1000, batch_size=1 + index % 4, records=1, request_bytes=10,
            response_bytes=20,
        ), None)
        if index % 500 < shares:
            stats.flush()
    deadline = time.monotonic() + 60
    while not stats.flush():
        assert time.monotonic() < deadline, "the database stayed unavailable"
    database.close()
    """
)


def test_two_gateways_writing_at_once_add_up_exactly(database: Database, tmp_path: Path) -> None:
    values = np.random.default_rng(2024).lognormal(3.0, 0.8, 20_000)
    np.save(tmp_path / "values.npy", values)
    base = time.time() - 55 * 60  # the calls span 50 minutes, ending 5 minutes ago
    writers = [
        subprocess.Popen(
            [
                *(sys.executable, "-c", WRITER, database.url, str(tmp_path / "values.npy")),
                *(str(share), "2", str(base), str(tmp_path / f"ready-{share}"), str(tmp_path / "go")),
            ],
            stderr=subprocess.PIPE,
            text=True,
        )
        for share in range(2)
    ]
    try:
        deadline = time.monotonic() + 60
        while not all((tmp_path / f"ready-{share}").exists() for share in range(2)):
            assert time.monotonic() < deadline and all(w.poll() is None for w in writers)
            time.sleep(0.01)
        (tmp_path / "go").touch()  # both start writing at the same moment
        for writer in writers:
            _, errors = writer.communicate(timeout=120)
            assert writer.returncode == 0, errors
    finally:
        for writer in writers:
            if writer.poll() is None:
                writer.kill()
                writer.wait()

    failed = sum(1 for index in range(len(values)) if index % 37 == 0)
    batches = Counter(str(1 + index % 4) for index in range(len(values)))
    stats = Stats(database)
    for window, step in (("1h", "1m"), ("24h", "1h")):  # minute rows, then hour rows
        found = stats.stats("m", window=window, step=step)
        assert (found.calls, found.errors) == (20_000, failed), (window, step)
        assert found.codes == {"module_error": failed, "ok": 20_000 - failed}
        assert found.batch_sizes == dict(sorted(batches.items()))
        assert (found.request_bytes, found.response_bytes) == (200_000, 400_000)
        assert sum(point.calls for point in found.series) == 20_000
        assert sum(point.errors for point in found.series) == failed
        for name, q in QUANTILES.items():
            truth = float(np.quantile(values, q))
            assert getattr(found.latency_ms, name) == pytest.approx(truth, rel=0.01), (window, name)
            assert getattr(found.latency_ms.total, name) == getattr(found.latency_ms, name)
            assert getattr(found.latency_ms.queue, name) == pytest.approx(truth / 10, rel=0.01)
            assert getattr(found.latency_ms.compute, name) == pytest.approx(truth * 0.8, rel=0.01)


def test_a_row_another_gateway_inserts_at_the_same_moment_is_added_to(database: Database) -> None:
    """The other gateway's insert is still uncommitted when this one finds no row and inserts its own."""
    ours = Stats(database)
    ours.observe(call(NOW + 1, 20.0), None)
    with database.session() as session:
        for resolution in (60, 3600):
            start = datetime.fromtimestamp(NOW - NOW % resolution, UTC)
            session.add(
                StatsRollup(
                    module="m",
                    version="v1",
                    resolution=resolution,
                    start=start,
                    calls=1,
                    errors=0,
                    codes={"ok": 1},
                    batches={"1": 1},
                    request_bytes=1,
                    response_bytes=1,
                    total=one_call(10.0),
                    queue=one_call(1.0),
                    compute=one_call(8.0),
                )
            )
        session.flush()
        flushed: list[bool] = []
        writer = threading.Thread(target=lambda: flushed.append(ours.flush()))
        writer.start()
        wait_until_blocked(database, writer)
    writer.join(timeout=30)
    assert flushed == [True]
    for resolution in (60, 3600):
        ((_, _, _, calls),) = rollups(database, resolution)
        assert calls == 2
    with database.session() as session:
        for stored in session.scalars(select(StatsRollup.total)):
            both = Histogram.decode(stored)
            assert (both.count, both.low, both.high) == (2, 10.0, 20.0)


def wait_until_blocked(database: Database, writer: threading.Thread) -> None:
    """Until the writer waits on the lock of the open transaction (PostgreSQL shows it; SQLite cannot)."""
    if database.dialect != "postgresql":
        time.sleep(0.3)
        return
    deadline = time.monotonic() + 10
    probe = Database(database.url)
    try:
        while time.monotonic() < deadline and writer.is_alive():
            with probe.session() as session:
                waiting = session.scalar(
                    text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
                )
            if waiting:
                return
            time.sleep(0.01)
        raise AssertionError("the writer never waited for the other insert")
    finally:
        probe.close()


# Queries


@pytest.mark.parametrize(
    ("window", "step", "field"),
    [
        ("2h", "1m", "window"),
        ("", "1m", "window"),
        ("1h", "10m", "step"),
        ("5m", "1h", "step"),  # longer than the window
        ("30d", "1m", "step"),  # 43,200 points
    ],
)
def test_a_window_or_step_not_served_is_422_naming_the_field(
    sqlite: Database, window: str, step: str, field: str
) -> None:
    with pytest.raises(ValidationFailed) as raised:
        Stats(sqlite).stats("m", window=window, step=step)
    assert [detail["field"] for detail in raised.value.details] == [field]


def test_the_largest_series_served_is_a_week_of_minutes(sqlite: Database) -> None:
    found = Stats(sqlite, clock=lambda: NOW).stats("m", window="7d", step="1m")
    assert len(found.series) == 10_080 and found.calls == 0
    assert found.latency_ms.p50 is None and found.error_rate == 0.0


def test_series_are_aligned_to_their_step_and_end_with_the_current_one(sqlite: Database) -> None:
    stats = Stats(sqlite, clock=lambda: NOW)  # 12:34:56
    minute = NOW - NOW % 60
    stats.observe(call(minute - 5 * 60 + 1, 40.0), None)  # 12:29:01, in the 12:25 step
    stats.observe(call(minute - 5 * 60 + 2, 60.0, status=503, code="overloaded", batch_size=0), None)
    stats.observe(call(minute + 30, 10.0), None)  # 12:34:26, in the current step
    stats.observe(call(minute - 3 * 3600, 5.0), None)  # 09:34: outside the hour
    assert stats.flush()

    found = stats.stats("m", window="1h", step="5m")
    starts = [datetime.fromisoformat(point.start) for point in found.series]
    assert len(starts) == 12 and starts[-1] == datetime(2030, 1, 1, 12, 30, tzinfo=UTC)
    assert {b - a for a, b in itertools.pairwise(starts)} == {timedelta(minutes=5)}
    by_start = {point.start[11:16]: point for point in found.series}
    assert (by_start["12:25"].calls, by_start["12:25"].errors) == (2, 1)
    assert by_start["12:25"].throughput_rps == pytest.approx(2 / 300)
    assert by_start["12:30"].calls == 1
    assert by_start["12:30"].throughput_rps == pytest.approx(1 / (4 * 60 + 56))  # its elapsed part
    assert by_start["12:20"].calls == 0 and by_start["12:20"].latency_ms.p50 is None
    assert (found.calls, found.errors) == (3, 1) and found.error_rate == pytest.approx(1 / 3)
    assert found.codes == {"ok": 2, "overloaded": 1}
    assert found.batch_sizes == {"1": 2}  # the call no worker ran has no batch, no queue, no compute
    assert found.latency_ms.p50 == pytest.approx(40.0, rel=0.01)  # of 10, 40 and 60 ms
    assert found.latency_ms.compute.p50 == pytest.approx(8.0, rel=0.01)
    assert found.latency_ms.queue.p50 == pytest.approx(1.0, rel=0.01)

    day = stats.stats("m", window="24h", step="1h")
    assert len(day.series) == 24 and day.series[-1].start.endswith("12:00:00+00:00")
    assert [p.calls for p in day.series[-4:]] == [1, 0, 0, 3]


def test_hourly_steps_read_hour_rows_and_shorter_steps_minute_rows(sqlite: Database) -> None:
    stats = Stats(sqlite, clock=lambda: NOW)
    stats.observe(call(NOW - 30, 10.0), None)
    assert stats.flush()
    with sqlite.session() as session:
        session.execute(text("DELETE FROM stats_rollups WHERE resolution = 60"))
    assert stats.stats("m", window="24h", step="1h").calls == 1
    assert stats.stats("m", window="1h", step="1m").calls == 0


def test_a_day_of_short_steps_adds_up_as_its_minutes_do(sqlite: Database) -> None:
    """A day in 5-minute steps takes its totals from hour rows and its edges from minute rows: the same
    numbers as adding up every minute of the window."""
    stats = Stats(sqlite, clock=lambda: NOW)
    for minute in range(0, 26 * 60, 7):  # past the window's start too, which must not count
        status = 500 if minute % 5 == 0 else 200
        record = call(NOW - minute * 60, 1.0 + minute % 97, status=status, batch_size=1 + minute % 3)
        stats.observe(record, None)
    assert stats.flush()
    day = stats.stats("m", window="24h", step="5m")
    first = datetime.fromisoformat(day.series[0].start).timestamp()
    kept = [m for m in range(0, 26 * 60, 7) if NOW - m * 60 >= first]
    assert day.calls == sum(point.calls for point in day.series) == len(kept)
    assert day.errors == sum(point.errors for point in day.series) == sum(1 for m in kept if m % 5 == 0)
    assert sum(day.batch_sizes.values()) == len(kept)
    total, compute = DDSketch(relative_accuracy=0.01), DDSketch(relative_accuracy=0.01)
    for m in kept:
        total.add(1.0 + m % 97)
        compute.add((1.0 + m % 97) * 0.8)
    assert day.latency_ms.p50 == pytest.approx(total.get_quantile_value(0.5), rel=0.02)
    assert day.latency_ms.compute.p99 == pytest.approx(compute.get_quantile_value(0.99), rel=0.02)


def test_a_version_filter_counts_only_that_versions_calls(sqlite: Database) -> None:
    stats = Stats(sqlite, clock=lambda: NOW)
    for version, count in (("v1", 3), ("v2", 2)):
        for index in range(count):
            stats.observe(call(NOW - 60 - index, 10.0, version=version), None)
    stats.observe(call(NOW - 60, 10.0, module="other"), None)
    assert stats.flush()
    assert stats.stats("m", window="5m", step="1m").calls == 5
    only = stats.stats("m", window="5m", step="1m", version="v2")
    assert (only.calls, only.version) == (2, "v2")
    assert stats.stats("m", window="5m", step="1m", version="v9").calls == 0


def test_the_sweep_keeps_minutes_8_days_and_hours_400(sqlite: Database) -> None:
    stats = Stats(sqlite, clock=lambda: NOW)
    day = 86_400
    for age in (7 * day, 9 * day, 399 * day, 401 * day):
        stats.observe(call(NOW - age, 10.0), None)
    assert stats.flush()
    assert stats.sweep() == 4  # the minutes 9 and 399 days old, both rows 401 days old
    kept = {
        resolution: [round((NOW - start.timestamp()) / day) for _, _, start, _ in rollups(sqlite, resolution)]
        for resolution in (60, 3600)
    }
    assert kept == {60: [7], 3600: [399, 9, 7]}


# The database unavailable


def test_an_unavailable_database_keeps_minutes_until_their_bound(sqlite: Database) -> None:
    stats = Stats(sqlite, clock=lambda: NOW, max_pending=2)
    for minutes_ago, calls in ((3, 1), (2, 2)):
        for _ in range(calls):
            stats.observe(call(NOW - minutes_ago * 60, 10.0), None)
    with sqlite.engine.connect() as blocker:  # another writer holds the database
        blocker.exec_driver_sql("BEGIN IMMEDIATE")
        assert not stats.flush()
        stats.observe(call(NOW - 60, 10.0), None)  # a third minute: the oldest one goes
        stats.observe(call(NOW - 60, 10.0), None)
        assert not stats.flush()
        blocker.rollback()
    assert stats.dropped_calls == 1
    assert stats.flush()
    found = stats.stats("m", window="5m", step="1m")
    assert [p.calls for p in found.series] == [0, 0, 2, 2, 0]
    with sqlite.session() as session:
        assert session.scalar(select(func.sum(StatsRollup.calls)).where(StatsRollup.resolution == 3600)) == 4
