"""What the request log costs: `modelport server` serving echo with the log off, on, and capturing payloads.

    .venv/bin/python bench/request_log.py --rounds 5 --duration 10 --connections 8,64

The three servers are the main harness's `modelport-platform-nolog`, `modelport-platform` and
`modelport-platform-payloads` targets (`bench/harness/frameworks.py`): one data directory each, echo deployed
with one replica and opened to one user, whose token every request carries. All three run for the whole
measurement; each round loads each of them in turn with wrk (a warm-up, then `--duration` seconds), in an
order that rotates from round to round, at each connection count.

On a 2-core machine, where wrk, the gateway and the worker share the cores, one server measured twice in a row
differs by up to 20 %; measured minutes apart, by more. A round's three measurements are seconds apart, so the
ratio within a round (log on / log off) is what this reports: the median over the rounds, with its range.
Beside it, the CPU time the gateway's process spent per answered request (from `/proc`; its worker runs in
a session of its own and is not counted), which the machine's other load moves less. The targets: at least
95 % of the req/s with the log on, and 85 % capturing every payload.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import envs, servers, wrk
from harness.frameworks import FRAMEWORKS
from harness.models import Workload, find_field, prepare_digits, sklearn_version, workloads
from harness.paths import Paths

VARIANTS = {
    "off": "modelport-platform-nolog",
    "on": "modelport-platform",
    "payloads": "modelport-platform-payloads",
}
MODEL = "echo"


@dataclass(frozen=True)
class Served:
    url: str
    script: Path
    session: int
    """The gateway's session (its process; workers run in sessions of their own)."""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load per measurement")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of load before each measurement")
    parser.add_argument("--connections", default="8,64", help="comma-separated connection counts")
    parser.add_argument("--ready-timeout", type=float, default=180.0)
    args = parser.parse_args()
    connections = [int(c) for c in args.connections.split(",")]
    paths = Paths.default()
    binary = wrk.ensure_wrk()
    model_path, digits = prepare_digits(paths.work)
    workload = workloads(digits)[MODEL]
    rates: dict[tuple[str, int], list[float]] = {}
    costs: dict[tuple[str, int], list[float]] = {}
    with contextlib.ExitStack() as stack:
        served = {
            variant: stack.enter_context(_serving(name, model_path, workload, paths, args.ready_timeout))
            for variant, name in VARIANTS.items()
        }
        for round_ in range(args.rounds):
            order = list(served)[round_ % len(served) :] + list(served)[: round_ % len(served)]
            for count in connections:
                for variant in order:
                    server = served[variant]
                    wrk.run(binary, server.url, server.script, count, args.warmup, 1, 5)
                    before = servers.cpu_seconds(server.session)
                    result = wrk.run(binary, server.url, server.script, count, args.duration, 1, 5)
                    cpu = (servers.cpu_seconds(server.session) - before) / result.requests * 1e6
                    if result.errors:
                        raise SystemExit(f"{variant} c={count}: {result.errors} errors under load")
                    rates.setdefault((variant, count), []).append(result.rps)
                    costs.setdefault((variant, count), []).append(cpu)
                    print(
                        f"round {round_ + 1} c={count} log {variant}: {result.rps:,.0f} req/s, "
                        f"gateway CPU {cpu:.0f} µs per request",
                        flush=True,
                    )
    print()
    print(
        "| request log | conns | median req/s | range | of log off, median (range) "
        "| gateway CPU µs per request, median (range) |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for count in connections:
        off = rates[("off", count)]
        for variant in served:
            mine, cpu = rates[(variant, count)], costs[(variant, count)]
            ratios = [m / o for m, o in zip(mine, off, strict=True)]
            print(
                f"| {variant} | {count} | {statistics.median(mine):,.0f} | {min(mine):,.0f}-{max(mine):,.0f} "
                f"| {statistics.median(ratios):.1%} ({min(ratios):.1%}-{max(ratios):.1%}) "
                f"| {statistics.median(cpu):.0f} ({min(cpu):.0f}-{max(cpu):.0f}) |"
            )
    return 0


@contextlib.contextmanager
def _serving(
    name: str, model_path: Path, workload: Workload, paths: Paths, ready_timeout: float
) -> Iterator[Served]:
    framework = FRAMEWORKS[name]
    python = envs.ensure_env(name, framework.requirements, sklearn_version(), paths)
    port = servers.free_port()
    target = framework.target(python, MODEL, port, paths)
    base_url = f"http://127.0.0.1:{port}"
    log = paths.logs / f"request-log-{name}.log"
    env = {"BENCH_DIGITS_MODEL": str(model_path), **target.env}
    running = servers.running(target.argv, target.cwd, env, base_url, target.ready_path, log, ready_timeout)
    with running as process:
        headers = target.setup(base_url, ready_timeout) if target.setup else {}
        body = target.body(workload)
        url = base_url + target.predict_path
        status, answer = servers.post_json(url, body, headers=headers)
        if status != 200 or find_field(answer, workload.output_field) != workload.expected:
            raise servers.ServerError(f"{name}: wrong answer to the check request: HTTP {status} {answer}")
        script = wrk.write_script(paths.work / "wrk" / f"request-log-{name}.lua", body, headers)
        print(f"{name}: serving on {base_url}", flush=True)
        yield Served(url, script, process.pid)


if __name__ == "__main__":
    sys.exit(main())
