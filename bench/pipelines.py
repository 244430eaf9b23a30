"""Measures what a pipeline costs on top of the module calls it makes, on a real `modelport server` (SQLite).

    .venv/bin/python bench/pipelines.py --duration 10

Three routes answer the same text, each loaded with wrk in turn, first over one connection (latency) and then
over `--connections` (throughput): echo called directly (`POST /api/v1/modules/echo/predict`), the pipeline
`echo1` (one step: echo) and the pipeline `echo2` (two steps, the second taking the first's output). A
pipeline's own overhead per step is what `echo1` adds to a direct call of echo: the same HTTP request,
parsing,
access check and module call, plus the pipeline's planning, the step's own call record and the answer's
assembly. The second step of `echo2` costs a whole module call more (a worker round trip), which is reported
as the marginal step. The target on this 2-core machine is an overhead of at most 1 ms per step.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import platform_setup, wrk
from harness.paths import Paths
from harness.servers import post_json
from jobs import platform


def _pipeline(name: str, steps: int) -> dict[str, object]:
    chain = []
    for index in range(steps):
        source = "$.inputs.text" if index == 0 else f"$.steps.s{index - 1}.outputs.text"
        chain.append({"name": f"s{index}", "module": "echo", "inputs": {"text": source}})
    return {
        "apiVersion": "modelport/v1",
        "kind": "Pipeline",
        "metadata": {"name": name},
        "spec": {"steps": chain, "outputs": {"text": f"$.steps.s{steps - 1}.outputs.text"}},
    }


def _api(name: str) -> dict[str, object]:
    return {
        "apiVersion": "modelport/v1",
        "kind": "Api",
        "metadata": {"name": f"{name}-api"},
        "spec": {"pipeline": name, "access": {"groups": [platform_setup.GROUP]}},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--ready-timeout", type=float, default=180.0)
    args = parser.parse_args()
    paths = Paths.default()
    with platform(paths, "echo", args.ready_timeout) as (url, headers, _):
        admin = {"Authorization": f"Bearer {headers.pop('X-Admin')}"}
        documents = [_pipeline("echo1", 1), _api("echo1"), _pipeline("echo2", 2), _api("echo2")]
        status, answer = post_json(f"{url}/api/v1/apply", {"documents": documents}, headers=admin)
        assert status == 200, answer
        script = wrk.write_script(paths.work / "pipeline-echo.lua", {"inputs": {"text": "hello"}}, headers)
        binary = wrk.ensure_wrk()
        routes = {
            "echo": f"{url}/api/v1/modules/echo/predict",
            "echo1": f"{url}/api/v1/pipelines/echo1/predict",
            "echo2": f"{url}/api/v1/pipelines/echo2/predict",
        }
        for route in routes.values():  # warm: each route's first calls compose and plan
            status, answer = post_json(route, {"inputs": {"text": "warm"}}, headers=headers)
            assert status == 200, answer
        latency: dict[str, float] = {}
        for name, route in routes.items():
            one = wrk.run(binary, route, script, 1, args.duration, 1, 10)
            many = wrk.run(binary, route, script, args.connections, args.duration, 2, 10)
            latency[name] = one.p50_ms
            print(
                f"{name}: 1 connection p50 {one.p50_ms:.2f} ms p99 {one.p99_ms:.2f} ms "
                f"({one.rps:,.0f} req/s); "
                f"{args.connections} connections {many.rps:,.0f} req/s p50 {many.p50_ms:.2f} ms "
                f"({one.errors + many.errors} errors)"
            )
        print(
            f"pipeline overhead per step (echo1 - echo, p50 at 1 connection): "
            f"{latency['echo1'] - latency['echo']:.2f} ms; marginal step (echo2 - echo1): "
            f"{latency['echo2'] - latency['echo1']:.2f} ms"
        )


if __name__ == "__main__":
    main()
