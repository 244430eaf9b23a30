"""Times `GET /metrics` with a large fleet's series, and what observing one call costs the event loop.

    .venv/bin/python bench/metrics_scrape.py --modules 50 --versions 3 --calls 20000 --scrapes 50

Feeds `--calls` answered calls, spread over `--modules` modules of `--versions` running versions each and
five outcomes (ok, validation_failed, module_error, queue_timeout, client_closed), with random durations and
batch sizes, then scrapes `--scrapes` times in-process through httpx's ASGI transport and prints the median
and 95th percentile of the answer's time (target: median under 20 ms) with its size and series count:

- `route`: the `GET /metrics` route alone, over a `Metrics` whose running versions (calls in flight, worker
  restarts) and drift scores (four features per module) are read at scrape time, as the platform's are;
- `platform`: the whole platform application (`PlatformServer` on SQLite in a temporary directory: the
  middleware, an admin's bearer token), its own `Metrics` fed the same calls (its registry runs no module,
  so it has no in-flight series).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
from fastapi import FastAPI

from modelport.app import PlatformServer
from modelport.core.settings import Settings
from modelport.gateway.metrics_api import metrics_router
from modelport.obs.calls import CallRecord
from modelport.obs.metrics import Metrics

TOKEN = "mp_bench-metrics-admin-token-0123456789"
OUTCOMES = [(200, None), (422, "validation_failed"), (500, "module_error"), (504, "queue_timeout")]
OUTCOMES += [(499, "client_closed")]


def records(modules: int, versions: int, calls: int, seed: int = 7) -> list[CallRecord]:
    pick = random.Random(seed)
    made = []
    for number in range(calls):
        status, code = OUTCOMES[0] if pick.random() < 0.9 else pick.choice(OUTCOMES[1:])
        ran = code not in ("validation_failed", "queue_timeout")
        compute = pick.lognormvariate(-4, 1) if ran else 0.0
        queue = pick.expovariate(500) if code != "validation_failed" else 0.0
        made.append(
            CallRecord(
                id=f"r{number}",
                trace_id=f"{number:032x}",
                at=time.time(),
                kind="sync",
                module=f"module-{number % modules:02d}",
                version=f"v{pick.randrange(versions)}",
                replica=0 if ran else None,
                caller="bench",
                caller_id=1,
                client="127.0.0.1",
                status=status,
                code=code,
                total=queue + compute + 0.0005,
                queue=queue,
                compute=compute,
                batch_size=pick.choice([1, 1, 2, 4, 8, 32]) if ran else 0,
                records=1,
                request_bytes=100,
                response_bytes=100,
            )
        )
    return made


def feed(metrics: Metrics, calls: list[CallRecord]) -> float:
    """Observe every call; returns the microseconds one observation took on average."""
    started = time.perf_counter()
    for record in calls:
        metrics.observe(record, None)
    return (time.perf_counter() - started) / len(calls) * 1e6


async def scrape_times(client: httpx.AsyncClient, scrapes: int) -> tuple[list[float], bytes]:
    body = b""
    for _ in range(3):  # warm up: the first answers build caches (routes, the token's principal)
        (await client.get("/metrics")).raise_for_status()
    times = []
    for _ in range(scrapes):
        started = time.perf_counter()
        response = await client.get("/metrics")
        times.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
        body = response.content
    return times, body


def report(name: str, times: list[float], body: bytes, observe_us: float) -> None:
    series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
    p95 = statistics.quantiles(times, n=20)[-1]
    print(
        f"{name:9} median {statistics.median(times):6.2f} ms  p95 {p95:6.2f} ms  "
        f"{len(body) / 1024:7.1f} KiB  {series} series  observe {observe_us:.2f} µs/call"
    )


async def bench_route(args: argparse.Namespace, calls: list[CallRecord]) -> None:
    running = [(f"module-{m:02d}", f"v{v}", v, 0) for m in range(args.modules) for v in range(args.versions)]
    drift = {
        (f"module-{m:02d}", feature): 0.1 for m in range(args.modules) for feature in ("a", "b", "c", "d")
    }
    metrics = Metrics(running=lambda: running, dropped=lambda: 0, drift=lambda: drift)
    observe_us = feed(metrics, calls)
    # The route reads only these two attributes of the platform's services.
    services: Any = SimpleNamespace(settings=Settings(metrics_public=True), metrics=metrics)
    app = FastAPI()
    app.include_router(metrics_router(services))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        times, body = await scrape_times(client, args.scrapes)
    report("route", times, body, observe_us)


async def bench_platform(args: argparse.Namespace, calls: list[CallRecord]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        settings = Settings(data_dir=Path(directory), bootstrap_token=TOKEN)  # type: ignore[arg-type]
        server = PlatformServer(settings, announce=lambda line: None)
        async with server.running():
            observe_us = feed(server.services.metrics, calls)
            transport = httpx.ASGITransport(app=server.app, client=("127.0.0.1", 50000))
            headers = {"Authorization": f"Bearer {TOKEN}"}
            async with httpx.AsyncClient(
                transport=transport, base_url="http://bench", headers=headers
            ) as client:
                times, body = await scrape_times(client, args.scrapes)
    report("platform", times, body, observe_us)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--modules", type=int, default=50)
    parser.add_argument("--versions", type=int, default=3)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--scrapes", type=int, default=50)
    args = parser.parse_args()
    calls = records(args.modules, args.versions, args.calls)
    print(f"{args.modules} modules x {args.versions} versions, {args.calls} calls, {args.scrapes} scrapes")
    asyncio.run(bench_route(args, calls))
    asyncio.run(bench_platform(args, calls))


if __name__ == "__main__":
    main()
