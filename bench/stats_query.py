"""Times the statistics query over 30 days of rollups: the service's `Stats.stats` and the HTTP route.

    .venv/bin/python bench/stats_query.py --runs 20

It fills a SQLite database with 30 days of one module's rollups, as the statistics writer makes them: a
row per minute (43,200) and per hour (720), each with its three latency sketches. The minutes cycle
through `--distinct` minutes of `--calls` lognormal latencies recorded through `Stats.observe` and
`Stats.flush`; each hour row is the merge of its sixty minutes. Then it asks for `window=30d&step=1h` (hour
rows), and for comparison `7d` in `1h` and `24h` in `5m` steps (minute rows), `--runs` times each, first
from the service and then through the route of a real `modelport server` on 127.0.0.1 (port 0), and
prints the median and the slowest run. The target for `30d` in `1h` steps is under 100 ms.
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from sqlalchemy import insert, select

from modelport.control.stats import HOUR, MINUTE, Histogram, Stats
from modelport.db import Database, Module, StatsRollup
from modelport.obs.calls import CallRecord

TOKEN = "mp_bench-stats-admin-token-0123456789"
MODULE = "bench"
DAYS = 30
QUERIES = [("30d", "1h"), ("7d", "1h"), ("24h", "5m")]


def recorded_minutes(distinct: int, calls: int, seed: int) -> list[dict[str, Any]]:
    """`distinct` minute rows of `calls` calls each, made by the statistics writer itself."""
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as scratch:
        database = Database(f"sqlite:///{Path(scratch) / 'scratch.db'}")
        database.migrate()
        stats = Stats(database)
        for minute in range(distinct):
            for index, ms in enumerate(rng.lognormal(3.0, 0.7, calls)):
                failed = index % 97 == 0
                stats.observe(
                    CallRecord(
                        id=str(index),
                        trace_id="t",
                        at=minute * MINUTE + index * MINUTE / calls,
                        kind="sync",
                        module=MODULE,
                        version="v1",
                        replica=0,
                        caller="bench",
                        caller_id=1,
                        client=None,
                        status=500 if failed else 200,
                        code="module_error" if failed else None,
                        total=ms / 1000,
                        queue=ms / 20_000,
                        compute=ms * 0.9 / 1000,
                        batch_size=1 + index % 8,
                        records=1,
                        request_bytes=200,
                        response_bytes=100,
                    ),
                    None,
                )
        assert stats.flush()
        with database.session() as session:
            rows = session.scalars(
                select(StatsRollup).where(StatsRollup.resolution == MINUTE).order_by(StatsRollup.start)
            ).all()
            found = [_columns(row) for row in rows]
        database.close()
    return found


def _columns(row: StatsRollup) -> dict[str, Any]:
    names = ("calls", "errors", "codes", "batches", "request_bytes", "response_bytes", "total", "queue")
    return {name: getattr(row, name) for name in (*names, "compute")}


def hour_of(minutes: list[dict[str, Any]]) -> dict[str, Any]:
    """The hour row of sixty minute rows: counts added, sketches merged."""
    merged: dict[str, Any] = {
        name: sum(m[name] for m in minutes) for name in ("calls", "errors", "request_bytes", "response_bytes")
    }
    for name in ("codes", "batches"):
        merged[name] = dict(sum((Counter(m[name]) for m in minutes), Counter()))
    for name in ("total", "queue", "compute"):
        merged[name] = Histogram.combine([Histogram.decode(m[name]) for m in minutes]).encode()
    return merged


def fill(database: Database, now: float, distinct: int, calls: int) -> int:
    """30 days of minute and hour rows ending with the current minute; returns how many rows."""
    pool = recorded_minutes(distinct, calls, seed=1)
    last = int(now // MINUTE) * MINUTE
    first_hour = (last - DAYS * 86_400) // HOUR * HOUR + HOUR
    rows: list[dict[str, Any]] = []
    for hour in range(first_hour, last + 1, HOUR):
        minutes = [
            pool[(start // MINUTE) % distinct] for start in range(hour, min(hour + HOUR, last + 1), MINUTE)
        ]
        for offset, minute in enumerate(minutes):
            rows.append(_row(MINUTE, hour + offset * MINUTE, minute))
        rows.append(_row(HOUR, hour, hour_of(minutes)))
    with database.session() as session:
        session.add(Module(name=MODULE, owner=None))
        for chunk in range(0, len(rows), 5000):
            session.execute(insert(StatsRollup), rows[chunk : chunk + 5000])
    return len(rows)


def _row(resolution: int, start: int, columns: dict[str, Any]) -> dict[str, Any]:
    at = datetime.fromtimestamp(start, UTC)
    return {"module": MODULE, "version": "v1", "resolution": resolution, "start": at, **columns}


def timed(runs: int, query: Callable[[], object]) -> tuple[float, float]:
    """The median and the slowest of `runs` calls of `query`, in milliseconds (after one warm-up call)."""
    query()
    took = []
    for _ in range(runs):
        started = time.perf_counter()
        query()
        took.append((time.perf_counter() - started) * 1000)
    return statistics.median(took), max(took)


def report(kind: str, window: str, step: str, median: float, slowest: float, extra: str = "") -> None:
    times = f"median {median:6.1f} ms, slowest {slowest:6.1f} ms"
    print(f"  {kind:<7} window={window:>3} step={step}: {times}{extra}")


def through_http(url: str, runs: int) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
        for window, step in QUERIES:

            def ask(window: str = window, step: str = step) -> object:
                response = client.get(
                    f"/api/v1/modules/{MODULE}/stats", params={"window": window, "step": step}
                )
                response.raise_for_status()
                return response.json()

            median, slowest = timed(runs, ask)
            points = len(ask()["series"])  # type: ignore[index]
            report("HTTP", window, step, median, slowest, f" ({points} points)")


def serve(data_dir: Path, database_url: str) -> tuple[subprocess.Popen[str], str]:
    env = {
        **os.environ,
        "MODELPORT_BOOTSTRAP_TOKEN": TOKEN,
        "MODELPORT_STATS_MINUTE_DAYS": str(DAYS + 1),  # the sweep keeps every filled row
    }
    command = [sys.executable, "-m", "modelport", "server", "--port", "0", "--data-dir", str(data_dir)]
    command += ["--database-url", database_url]
    server = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    assert server.stderr is not None
    for line in server.stderr:
        match = re.search(r"serving on (http://\S+)", line)
        if match:
            threading.Thread(target=server.stderr.read, daemon=True).start()
            return server, match.group(1)
    server.wait(30)
    raise RuntimeError("the server exited before it served")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="Timed queries of each kind.")
    parser.add_argument(
        "--distinct", type=int, default=60, help="Distinct minutes the 30 days cycle through."
    )
    parser.add_argument("--calls", type=int, default=300, help="Calls in each of those minutes.")
    parser.add_argument("--no-http", action="store_true", help="Time the service only.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        url = f"sqlite:///{root / 'stats.db'}"
        database = Database(url)
        database.migrate()
        now = time.time()
        started = time.perf_counter()
        count = fill(database, now, args.distinct, args.calls)
        size = (root / "stats.db").stat().st_size / 1024**2
        print(f"filled {count:,} rollups ({size:,.0f} MiB) in {time.perf_counter() - started:.1f} s")
        stats = Stats(database)
        print(f"{args.runs} runs each (after one warm-up):")
        for window, step in QUERIES:
            median, slowest = timed(
                args.runs, functools.partial(stats.stats, MODULE, window=window, step=step)
            )
            report("service", window, step, median, slowest)
        database.close()
        if args.no_http:
            return
        server, served = serve(root / "server", url)
        try:
            through_http(served, args.runs)
        finally:
            server.terminate()
            server.wait(30)


if __name__ == "__main__":
    main()
