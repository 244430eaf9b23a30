"""Measures the Open Inference Protocol route against the native predict route, on a real `modelport server`.

    .venv/bin/python bench/protocols.py --duration 10 --connections 8

The harness's `digits` module (scikit-learn `LogisticRegression` on one 8x8 image) is deployed with one
replica and opened to one user, as the main harness does. The same image is sent, in turn, as the native
predict route's JSON (`{"inputs": {"pixels": [...]}}` to `POST /api/v1/modules/digits/predict`) and as an
Open Inference Protocol request (an FP32 tensor `pixels` of shape [1, 64] to `POST
/v2/models/digits/infer`, JSON), each loaded with wrk over one connection (latency) and over `--connections`
(throughput). The issue's target: the protocol route within 10 % of the native route's requests per second.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import wrk
from harness.models import prepare_digits
from harness.paths import Paths
from harness.servers import post_json
from jobs import platform


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--ready-timeout", type=float, default=180.0)
    args = parser.parse_args()
    paths = Paths.default()
    _, digits = prepare_digits(paths.work)
    pixels = digits.record["pixels"]
    bodies = {
        "predict": {"inputs": {"pixels": pixels}},
        "oip": {"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": pixels}]},
    }
    with platform(paths, "digits", args.ready_timeout) as (url, headers, _):
        headers.pop("X-Admin")
        routes = {"predict": f"{url}/api/v1/modules/digits/predict", "oip": f"{url}/v2/models/digits/infer"}
        for name, route in routes.items():
            status, answer = post_json(route, bodies[name], headers=headers)
            assert status == 200, answer
        binary = wrk.ensure_wrk()
        rates: dict[str, float] = {}
        for name, route in routes.items():
            script = wrk.write_script(paths.work / f"protocol-{name}.lua", bodies[name], headers)
            one = wrk.run(binary, route, script, 1, args.duration, 1, 10)
            many = wrk.run(binary, route, script, args.connections, args.duration, 2, 10)
            rates[name] = many.rps
            single = f"1 connection p50 {one.p50_ms:.2f} ms p99 {one.p99_ms:.2f} ms ({one.rps:,.0f} req/s)"
            loaded = f"{args.connections} connections {many.rps:,.0f} req/s p50 {many.p50_ms:.2f} ms"
            print(f"{name}: {single}; {loaded} ({one.errors + many.errors} errors)")
        print(f"the protocol route keeps {rates['oip'] / rates['predict']:.0%} of the native route's req/s")


if __name__ == "__main__":
    main()
