"""The results table, printed on the terminal and written as markdown."""

from __future__ import annotations

from dataclasses import dataclass

from .wrk import WrkResult

HEADERS = ("framework", "model", "conns", "req/s", "p50 ms", "p99 ms", "errors", "vs FastAPI", "vs LitServe")
_NUMERIC = frozenset({2, 3, 4, 5, 6, 7, 8})


@dataclass(frozen=True)
class Row:
    framework: str  # the framework's label
    model: str
    connections: int
    result: WrkResult


@dataclass(frozen=True)
class Failure:
    framework: str
    model: str  # "*" when the whole framework failed
    reason: str


def cells(rows: list[Row]) -> list[list[str]]:
    """Formatted cells per row; req/s is also given relative to FastAPI and LitServe on the same workload."""
    rps = {(r.framework, r.model, r.connections): r.result.rps for r in rows}

    def ratio(row: Row, baseline: str) -> str:
        base = rps.get((baseline, row.model, row.connections))
        return f"{row.result.rps / base:.2f}x" if base else "-"

    return [
        [
            r.framework,
            r.model,
            str(r.connections),
            f"{r.result.rps:,.0f}",
            f"{r.result.p50_ms:.2f}",
            f"{r.result.p99_ms:.2f}",
            f"{r.result.errors:,}",
            ratio(r, "FastAPI"),
            ratio(r, "LitServe"),
        ]
        for r in rows
    ]


def text_table(rows: list[Row]) -> str:
    body = cells(rows)
    widths = [max(len(line[i]) for line in [list(HEADERS), *body]) for i in range(len(HEADERS))]

    def line(values: list[str]) -> str:
        return "  ".join(
            v.rjust(w) if i in _NUMERIC else v.ljust(w)
            for i, (v, w) in enumerate(zip(values, widths, strict=True))
        )

    return "\n".join([line(list(HEADERS)), "  ".join("-" * w for w in widths), *(line(v) for v in body)])


def markdown_table(rows: list[Row]) -> str:
    align = ["---:" if i in _NUMERIC else "---" for i in range(len(HEADERS))]
    lines = ["| " + " | ".join(HEADERS) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(values) + " |" for values in cells(rows)]
    return "\n".join(lines)


def markdown(
    rows: list[Row],
    failures: list[Failure],
    command: str,
    date: str,
    machine: str,
    settings: str,
    versions: str,
) -> str:
    failed = (
        "\n".join(f"- {f.framework} / {f.model}: {f.reason.splitlines()[0]}" for f in failures) or "- none"
    )
    return f"""# Benchmark results

Produced by the harness in `bench/` (see `bench/README.md`). Re-run it and compare on the same machine only.

- Command: `{command}`
- Date: {date}
- Machine: {machine}
- Settings: {settings}
- Versions: {versions}

{markdown_table(rows)}

Failures:

{failed}

## How to read it

- Every server runs one worker process on 127.0.0.1 with `OMP_NUM_THREADS`, `OPENBLAS_NUM_THREADS`
  and `MKL_NUM_THREADS` set to 1, and serves the same model file (`bench/.work/digits.joblib`). wrk runs
  on the same machine, so it takes its share of the cores.
- `echo` returns its input: it measures the serving path alone. `digits` runs a scikit-learn
  `LogisticRegression` on 64 floats per request. `digits-batched` is the same model with dynamic batching
  (at most 32 requests, 2 ms wait) where the framework has it; bare FastAPI has none, so its server uses
  a minimal hand-written asyncio batcher. The FastAPI server runs the model inline on its event loop: the
  cheapest path, the floor that the others are compared with.
- `errors` = responses with status 400 or more + socket errors (connect, read, write, timeout). Every server's
  answer is checked once for the right output before it is loaded.
- `modelport server` is the platform's authenticated path: the module pushed to `modelport server` and
  deployed with one replica, every request carrying a user's bearer token, so each one pays for token
  authentication (a database lookup), the access check of the module's `Api` and the predict path.
- `vs FastAPI` and `vs LitServe`: req/s divided by that framework's req/s on the same model and connections.
"""
