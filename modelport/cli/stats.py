"""`modelport stats MODULE`: a module's calls, errors, throughput and latency percentiles over a window.

It prints two tables (the window's totals; the percentiles of the whole call, of the wait for a worker and of
the computation) and two sparklines of the series: throughput and p95 latency, one block per step (a long
series is folded to at most 120 blocks, each the largest of the steps it holds). `-o json` or `-o yaml`
prints the server's answer as it is. Like the other platform commands it takes `--url` and `--token`.

Exit codes: 0 success; 1 the server refused or could not be reached; 2 bad usage (not logged in, a window
or step the server does not serve).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import Annotated

import typer

from modelport.cli.platform import Output, OutputOption, Token, Url, connect, dump, print_table
from modelport.core.records import LatencyQuantiles, ModuleStats

__all__ = ["register", "sparkline"]

BLOCKS = "▁▂▃▄▅▆▇█"
MAX_WIDTH = 120


def register(app: typer.Typer) -> None:
    """Add `stats` to the `modelport` command line."""
    app.command()(stats)


def stats(
    module: Annotated[str, typer.Argument(help="The module.")],
    window: Annotated[str, typer.Option(help="How far back: 5m, 1h, 24h, 7d or 30d.")] = "1h",
    step: Annotated[str, typer.Option(help="The series' step: 1m, 5m or 1h.")] = "1m",
    version: Annotated[
        str | None,
        typer.Option(help="Only this version's calls (default: every version).", show_default=False),
    ] = None,
    output: OutputOption = Output.table,
    url: Url = None,
    token: Token = None,
) -> None:
    """Show a module's calls, errors, throughput and latency percentiles over a window."""
    with connect(url, token) as client:
        found = client.stats(module, window=window, step=step, version=version)
    if output is not Output.table:
        dump(found, output)
        return
    print_report(found)


def print_report(found: ModuleStats) -> None:
    """The tables and sparklines of `modelport stats`."""
    print_table(
        ("CALLS", "ERRORS", "ERROR RATE", "REQ/S"),
        [(str(found.calls), str(found.errors), f"{found.error_rate:.2%}", _number(found.throughput_rps))],
    )
    if set(found.kinds) - {"sync"}:  # jobs or batches ran: say how the calls divide
        sys.stdout.write("by kind: " + ", ".join(f"{kind} {n}" for kind, n in found.kinds.items()) + "\n")
    sys.stdout.write("\n")
    latency = found.latency_ms
    kinds: list[tuple[str, LatencyQuantiles]] = [
        ("total", latency.total),
        ("queue", latency.queue),
        ("compute", latency.compute),
    ]
    print_table(
        ("LATENCY", "P50 MS", "P90 MS", "P95 MS", "P99 MS"),
        [(name, *(_number(q) for q in (k.p50, k.p90, k.p95, k.p99))) for name, k in kinds],
    )
    sys.stdout.write("\n")
    throughput = [point.throughput_rps for point in found.series]
    p95 = [point.latency_ms.p95 for point in found.series]
    peak_p95 = max((v for v in p95 if v is not None), default=None)
    sys.stdout.write(f"req/s   {sparkline(throughput)}  max {_number(max(throughput, default=0.0))}\n")
    sys.stdout.write(f"p95 ms  {sparkline(p95)}  max {_number(peak_p95)}\n")


def sparkline(values: Sequence[float | None], *, width: int = MAX_WIDTH) -> str:
    """One block per value, from ▁ (zero) to █ (the largest); a space where there is no value. More values
    than `width` are folded, each block the largest of the values it holds."""
    if len(values) > width:
        size = math.ceil(len(values) / width)
        values = [_largest(values[i : i + size]) for i in range(0, len(values), size)]
    peak = max((v for v in values if v is not None), default=0.0)
    top = len(BLOCKS) - 1
    return "".join(" " if v is None else BLOCKS[round(v / peak * top) if peak > 0 else 0] for v in values)


def _largest(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def _number(value: float | None) -> str:
    """A measure for people: three significant figures below 100, whole numbers above; `-` when none."""
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}"
