"""`python bench/run.py`: serve each model under each framework, load it with wrk, print the table."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from . import envs, servers, wrk
from .frameworks import FRAMEWORKS, Framework
from .models import MODELS, Workload, find_field, prepare_digits, sklearn_version, workloads
from .paths import Paths
from .report import Failure, Row, markdown, text_table


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python bench/run.py",
        description="Serve the same models under modelport and other frameworks and load each with wrk.",
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load per measurement (10)")
    parser.add_argument(
        "--warmup", type=float, default=2.0, help="seconds of load before each measurement (2)"
    )
    parser.add_argument("--connections", type=_ints, default=[1, 8, 64], help="comma-separated (1,8,64)")
    parser.add_argument(
        "--only",
        type=_names(FRAMEWORKS),
        default=[name for name, framework in FRAMEWORKS.items() if not framework.variant],
        help=f"frameworks ({','.join(FRAMEWORKS)}; the default leaves out the platform's variants)",
    )
    parser.add_argument(
        "--models", type=_names(MODELS), default=list(MODELS), help=f"models ({','.join(MODELS)})"
    )
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (1)")
    parser.add_argument("--timeout", type=float, default=5.0, help="wrk per-request timeout in seconds (5)")
    parser.add_argument(
        "--ready-timeout", type=float, default=180.0, help="seconds to wait for a server (180)"
    )
    parser.add_argument("--output", type=Path, help="also write the results as markdown to this file")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    paths = Paths.default()
    try:
        wrk_path = wrk.ensure_wrk()
    except wrk.WrkError as exc:
        print(exc, file=sys.stderr)
        return 2
    load_before = os.getloadavg()[0]
    if load_before > 0.5:
        _say(
            f"note: load average is {load_before:.1f}; other processes on this machine will skew the results"
        )
    sklearn = sklearn_version()
    model_path, digits = prepare_digits(paths.work)
    loads = workloads(digits)

    rows: list[Row] = []
    failures: list[Failure] = []
    versions: dict[str, str] = {"scikit-learn": sklearn}
    for name in args.only:
        framework = FRAMEWORKS[name]
        _say(
            f"== {framework.label}: preparing bench/.envs/{name}" if framework.requirements else f"== {name}"
        )
        try:
            python = envs.ensure_env(name, framework.requirements, sklearn, paths)
        except envs.EnvError as exc:
            _say(f"   failed: {exc}")
            failures.append(Failure(framework.label, "*", str(exc)))
            continue
        found = envs.versions(python, framework.versions_of)
        versions[framework.label] = ", ".join(f"{k} {v}" for k, v in found.items()) or "?"
        if name.startswith("modelport"):
            versions[framework.label] += f" (commit {_git_commit(paths.bench.parent)})"
        for model in args.models:
            try:
                _measure(framework, python, model, loads[model], model_path, wrk_path, paths, args, rows)
            except (servers.ServerError, wrk.WrkError) as exc:
                _say(f"   {model}: failed: {exc}")
                failures.append(Failure(framework.label, model, str(exc)))

    print()
    print(text_table(rows) if rows else "no results")
    for failure in failures:
        print(f"FAILED {failure.framework} / {failure.model}: {failure.reason.splitlines()[0]}")
    if args.output:
        settings = (
            f"{args.duration:g} s per measurement after a {args.warmup:g} s warm-up, wrk -t{args.threads}, "
            f"{args.timeout:g} s request timeout, connections {','.join(map(str, args.connections))}"
        )
        args.output.write_text(
            markdown(
                rows,
                failures,
                command=_command(),
                date=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
                machine=f"{_machine(wrk_path)}; 1-minute load average {load_before:.1f} before the run, "
                f"{os.getloadavg()[0]:.1f} after it",
                settings=settings,
                versions="; ".join(f"{k}: {v}" for k, v in versions.items()),
            ),
            encoding="utf-8",
        )
        print(f"\nwrote {args.output}")
    return 1 if failures else 0


def _measure(
    framework: Framework,
    python: Path,
    model: str,
    workload: Workload,
    model_path: Path,
    wrk_path: str,
    paths: Paths,
    args: argparse.Namespace,
    rows: list[Row],
) -> None:
    """Start one server, check one answer, append a row per connection count; always stop the server."""
    port = servers.free_port()
    target = framework.target(python, model, port, paths)
    base_url = f"http://127.0.0.1:{port}"
    env = {"BENCH_DIGITS_MODEL": str(model_path), **target.env}
    log = paths.logs / f"{framework.name}-{model}.log"
    body = target.body(workload)
    _say(f"   {model}: starting on port {port} (log: {log})")
    with servers.running(target.argv, target.cwd, env, base_url, target.ready_path, log, args.ready_timeout):
        headers = target.setup(base_url, args.ready_timeout) if target.setup else {}
        script = wrk.write_script(paths.work / "wrk" / f"{framework.name}-{model}.lua", body, headers)
        status, answer = servers.post_json(base_url + target.predict_path, body, headers=headers)
        if status != 200 or find_field(answer, workload.output_field) != workload.expected:
            raise servers.ServerError(
                f"wrong answer to the check request: HTTP {status} {str(answer)[:300]} "
                f"(expected {workload.output_field} = {workload.expected!r})"
            )
        url = base_url + target.predict_path
        for connections in args.connections:
            if args.warmup > 0:
                wrk.run(wrk_path, url, script, connections, args.warmup, args.threads, args.timeout)
            result = wrk.run(wrk_path, url, script, connections, args.duration, args.threads, args.timeout)
            rows.append(Row(framework.label, model, connections, result))
            _say(
                f"   {model} c={connections}: {result.rps:,.0f} req/s, p50 {result.p50_ms:.2f} ms, "
                f"p99 {result.p99_ms:.2f} ms, errors {result.errors}"
            )


def _machine(wrk_path: str) -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        wrk_version = subprocess.run([wrk_path, "-v"], capture_output=True, text=True, timeout=10).stdout
        wrk_version = wrk_version.split("[")[0].strip() or "wrk"
    except (OSError, subprocess.SubprocessError):
        wrk_version = "wrk"
    return (
        f"{os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, {wrk_version}"
    )


def _git_commit(repo: Path) -> str:
    try:
        head = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head or 'unknown'}{', with local changes' if dirty else ''}"


def _command() -> str:
    script = Path(sys.argv[0])
    with contextlib.suppress(ValueError):
        script = script.resolve().relative_to(Path.cwd())
    return shlex.join(["python", str(script), *sys.argv[1:]])


def _say(message: str) -> None:
    print(message, flush=True)


def _ints(value: str) -> list[int]:
    try:
        numbers = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {value!r}") from None
    if not numbers or min(numbers) < 1:
        raise argparse.ArgumentTypeError("expected at least one positive integer")
    return numbers


def _names(known: Sequence[str] | dict[str, Framework]) -> Callable[[str], list[str]]:
    choices = list(known)

    def parse(value: str) -> list[str]:
        names = [v.strip() for v in value.split(",") if v.strip()]
        unknown = [n for n in names if n not in choices]
        if unknown or not names:
            raise argparse.ArgumentTypeError(
                f"unknown {', '.join(unknown) or 'empty list'}; choose from {choices}"
            )
        return names

    return parse
