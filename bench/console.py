"""Times every page of the web console on a real `modelport server` (SQLite) that holds a fleet of modules.

    .venv/bin/python bench/console.py --modules 100 --requests 50 --json bench/.work/console.json

The server starts on 127.0.0.1 with its data directory in a temporary folder. Through the API, the admin
pushes one tiny module (no requirements: every build shares one environment) under `--modules` names,
deploys the first `--deployed` of them with one replica each and calls them a few times, submits `--jobs`
jobs, fills a bucket with `--objects` objects, and makes `--users` users in three groups, a token each for a
few of them, and two pipelines. The first module (the first `--stats-modules`) gets `--days` of
statistics: hour rollups and minute rollups (`--minute-hours`, by default the whole period, as the default
retention of eight days keeps them), the rows the statistics writer makes, written into its table through
SQLAlchemy before any call, so that the server's own writer merges the calls of the setup into them.

Then it signs in to the console as the admin with the bootstrap token (`/ui/sign-in`, then
`/ui/sign-in/token`) and, for every page that `pages` lists, sends `--warmup` requests and then `--requests`
sequential requests over one keep-alive connection. A page that does not answer 200 is reported as not
measured. The time of a request is its wall time over loopback, from the client's send to the end of the
body: an upper bound of the server's render time. A page passes when its 95th percentile is under its
target: 150 ms for the module with statistics (its overview and its 7-day metrics), 50 ms for every other
page. The exit status is 1 when a measured page misses its target.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import secrets
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import insert

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.paths import Paths
from harness.servers import free_port, running
from stats_query import hour_of, recorded_minutes

from modelport.artifacts import pack
from modelport.control.stats import HOUR, MINUTE
from modelport.db import Database, StatsRollup

VERSION = "v1"
BUCKET = "bench-files"
GROUPS = ("/bench", "/bench/analysts", "/bench/ops")
FAST_MS, SLOW_MS = 50.0, 150.0
POLL_S = 0.25

ECHO = Path(__file__).resolve().parent / "modules" / "echo" / "inference.py"
"""The harness's echo module, pushed under every name."""


@dataclass(frozen=True)
class World:
    """What the setup made, as the pages' paths need it."""

    stats_module: str
    plain_module: str
    bucket: str
    job: str
    user: int
    pipeline: str
    setup_s: dict[str, float]


@dataclass(frozen=True)
class Result:
    """One page's timings (milliseconds), or why it was not measured."""

    page: str
    path: str
    target_ms: float
    status: int
    p50_ms: float | None = None
    p95_ms: float | None = None
    max_ms: float | None = None
    size: int | None = None

    @property
    def measured(self) -> bool:
        return self.p50_ms is not None

    @property
    def passed(self) -> bool:
        return self.p95_ms is not None and self.p95_ms < self.target_ms


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modules", type=int, default=100, help="modules to push (100)")
    parser.add_argument("--requests", type=int, default=50, help="timed requests per page (50)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed requests per page first (5)")
    parser.add_argument("--deployed", type=int, default=5, help="modules deployed with one replica (5)")
    parser.add_argument(
        "--days", type=int, default=7, help="days of statistics of the modules that have them (7)"
    )
    parser.add_argument(
        "--minute-hours",
        type=int,
        default=None,
        help="hours of minute rollups among them (default: all of --days)",
    )
    parser.add_argument(
        "--stats-modules",
        type=int,
        default=1,
        help="modules, from the first, that get those statistics (1)",
    )
    parser.add_argument("--jobs", type=int, default=12, help="jobs to submit (12)")
    parser.add_argument("--objects", type=int, default=200, help="objects in the bucket (200)")
    parser.add_argument("--users", type=int, default=20, help="users to make (20)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON to this file")
    parser.add_argument("--ready-timeout", type=float, default=120.0, help="seconds to wait for a server")
    args = parser.parse_args(argv)
    if args.modules < 2 or not 1 <= args.deployed <= args.modules or args.requests < 1:
        parser.error("needs --modules >= 2, 1 <= --deployed <= --modules and --requests >= 1")
    if not 1 <= args.stats_modules < args.modules:
        parser.error("needs 1 <= --stats-modules < --modules (the last module has no statistics)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    paths = Paths.default()
    load_before = os.getloadavg()[0]
    token = f"mp_{secrets.token_urlsafe(32)}"
    with tempfile.TemporaryDirectory(prefix="modelport-console-") as scratch:
        root = Path(scratch)
        database_url = f"sqlite:///{root / 'modelport.db'}"
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        command = [str(paths.tools / "modelport"), "server", "--host", "127.0.0.1", "--port", str(port)]
        command += ["--data-dir", str(root / "data"), "--database-url", database_url]
        log = paths.logs / "console.log"
        _say(f"starting modelport server on {url} (log: {log})")
        env = {"MODELPORT_BOOTSTRAP_TOKEN": token}
        with running(command, paths.work, env, url, "/readyz", log, args.ready_timeout):
            world = seed(url, token, root, database_url, args)
            _say(f"setup took {sum(world.setup_s.values()):.1f} s: {_steps(world.setup_s)}")
            with signed_in(url, token) as client:
                results = [measure(client, page, args.warmup, args.requests) for page in pages(world)]
    load_after = os.getloadavg()[0]
    print()
    print(table(results))
    machine = _machine(load_before, load_after)
    print(f"\n{machine}")
    print("Times are wall times of each request over loopback (an upper bound of the server's render time).")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        document = {
            "command": _command(),
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine,
            "timing": "wall time of each request over loopback (keep-alive), an upper bound of render time",
            "settings": {k: v for k, v in vars(args).items() if k != "json"},
            "setup_s": world.setup_s,
            "pages": [{**asdict(r), "passed": r.passed if r.measured else None} for r in results],
        }
        args.json.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 1 if any(r.measured and not r.passed for r in results) else 0


# Setup


def seed(url: str, token: str, root: Path, database_url: str, args: argparse.Namespace) -> World:
    """Fill the platform through its API (and the statistics table); the seconds each step took."""
    took: dict[str, float] = {}
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, headers=headers, timeout=60) as api:
        with _timed(took, "push and build"):
            names = push_modules(api, root / "modules", args.modules)
        with _timed(took, "statistics"):  # before any call: the server's writer then merges into these rows
            minute_hours = args.days * 24 if args.minute_hours is None else args.minute_hours
            busy = names[: args.stats_modules]
            rows = fill_stats(database_url, busy, args.days, minute_hours)
        _say(
            f"   {rows:,} rollups of {len(busy)} module(s) ({args.days} days of hours, "
            f"{minute_hours} hours of minutes)"
        )
        deployed = names[: args.deployed]
        with _timed(took, "deploy"):
            deploy(api, deployed, args.ready_timeout)
        with _timed(took, "calls and jobs"):
            call(api, deployed, 20)
            jobs = submit_jobs(api, deployed, args.jobs)
        with _timed(took, "bucket"):
            fill_bucket(api, BUCKET, args.objects)
        with _timed(took, "users, groups, tokens"):
            users = make_people(api, args.users)
        with _timed(took, "pipelines"):
            pipeline = make_pipelines(api, deployed)
    return World(names[0], names[-1], BUCKET, jobs[-1], users[-1], pipeline, took)


def push_modules(api: httpx.Client, directory: Path, count: int) -> list[str]:
    """Push one tiny module under `count` names and wait for every build."""
    names = [f"bench-{number:03d}" for number in range(count)]
    for name in names:
        module = directory / name
        module.mkdir(parents=True)
        shutil.copy2(ECHO, module / "inference.py")
        (module / "modelport.yaml").write_text(
            "apiVersion: modelport/v1\nkind: Module\n"
            f"metadata: {{name: {name}}}\n"
            "spec:\n  entrypoint: inference.py:inference\n  resources: {maxBatchSize: 1}\n",
            encoding="utf-8",
        )
        artifact = pack(module, version=VERSION, use_git=False)
        answer = api.post(
            f"/api/v1/modules/{name}/versions",
            params={"version": VERSION},
            content=artifact.data,
            headers={"Content-Type": "application/gzip", "X-Content-Digest": artifact.digest},
        )
        _expect(answer, 201, f"push {name}")
    pending = set(names)
    while pending:
        for name in sorted(pending):
            version = _expect(api.get(f"/api/v1/modules/{name}/versions/{VERSION}"), 200, "version")
            if version["build_status"] == "failed":
                raise RuntimeError(f"the build of {name} failed: {version['build_error']}")
            if version["build_status"] == "ready":
                pending.discard(name)
        if pending:
            time.sleep(POLL_S)
    _say(f"   pushed and built {count} modules")
    return names


def deploy(api: httpx.Client, names: list[str], timeout: float) -> None:
    """Deploy each of `names` with one replica and wait until every one is ready."""
    generations = {}
    for name in names:
        answer = api.post(f"/api/v1/modules/{name}/deploy", json={"version": VERSION, "replicas": 1})
        generations[name] = _expect(answer, 202, f"deploy {name}")["generation"]
    deadline = time.monotonic() + timeout
    pending = set(names)
    while pending:
        for name in sorted(pending):
            deployment = _expect(api.get(f"/api/v1/modules/{name}"), 200, "module")["deployment"]
            if deployment["observed_generation"] < generations[name]:
                continue
            if deployment["status"] == "failed":
                raise RuntimeError(f"the deployment of {name} failed: {deployment['message']}")
            if deployment["status"] == "ready":
                pending.discard(name)
        if pending and time.monotonic() > deadline:
            raise RuntimeError(f"not deployed after {timeout:.0f} s: {sorted(pending)}")
        if pending:
            time.sleep(POLL_S)
    _say(f"   deployed {len(names)} modules")


def call(api: httpx.Client, names: list[str], times: int) -> None:
    """Call each module `times` times: the list's last minutes get real statistics."""
    for name in names:
        for number in range(times):
            answer = api.post(f"/api/v1/modules/{name}/predict", json={"inputs": {"text": f"hello {number}"}})
            _expect(answer, 200, f"call {name}")


def submit_jobs(api: httpx.Client, names: list[str], count: int) -> list[str]:
    """Submit `count` jobs over `names` and wait for each to finish; their ids."""
    ids = []
    for number in range(count):
        name = names[number % len(names)]
        answer = api.post(f"/api/v1/modules/{name}/jobs", json={"inputs": {"text": f"job {number}"}})
        ids.append(_expect(answer, 202, f"submit a job to {name}")["id"])
    for job in ids:
        deadline = time.monotonic() + 60
        while _expect(api.get(f"/api/v1/jobs/{job}", params={"wait": 10}), 200, "job")["status"] in (
            "queued",
            "running",
        ):
            if time.monotonic() > deadline:
                raise RuntimeError(f"job {job} did not finish in 60 s")
    return ids


def fill_bucket(api: httpx.Client, bucket: str, count: int) -> None:
    """A bucket of `count` small objects, in a few folders."""
    storage = {"apiVersion": "modelport/v1", "kind": "Storage", "metadata": {"name": bucket}}
    _expect(api.post("/api/v1/apply", json={"documents": [storage]}), 200, "apply the Storage")
    folders = ("", "inputs/", "results/2026-12-05/", "results/2026-12-06/")
    for number in range(count):
        key = f"{folders[number % len(folders)]}record-{number:04d}.json"
        body = json.dumps({"number": number, "text": "x" * (number % 50)}).encode()
        answer = api.put(
            f"/api/v1/storage/{bucket}/objects/{key}",
            content=body,
            headers={"Content-Type": "application/json"},
        )
        if answer.status_code not in (200, 201):
            _expect(answer, 201, f"put {key}")


def make_people(api: httpx.Client, count: int) -> list[int]:
    """Three groups, `count` users spread over them and their roles, and a token for every fifth; the
    users' ids."""
    for group in GROUPS:
        _expect(api.post("/api/v1/groups", json={"path": group}), 201, f"create {group}")
    roles = ("user", "user", "developer", "user", "admin")
    ids = []
    for number in range(count):
        user = {
            "name": f"person-{number:02d}",
            "role": roles[number % len(roles)],
            "groups": [GROUPS[number % len(GROUPS)]],
        }
        made = _expect(api.post("/api/v1/users", json=user), 201, "create a user")
        ids.append(int(made["id"]))
        if number % 5 == 0:
            token = {"name": f"token-{number:02d}", "user": made["id"]}
            _expect(api.post("/api/v1/tokens", json=token), 201, "create a token")
    return ids


def make_pipelines(api: httpx.Client, modules: list[str]) -> str:
    """Two pipelines over the deployed modules: one step, and a chain of them (whose name it returns)."""
    documents = [_pipeline("one-step", modules[:1]), _pipeline("chain", modules[:3])]
    _expect(api.post("/api/v1/apply", json={"documents": documents}), 200, "apply the pipelines")
    return "chain"


def _pipeline(name: str, modules: list[str]) -> dict[str, Any]:
    steps = []
    for index, module in enumerate(modules):
        source = "$.inputs.text" if index == 0 else f"$.steps.s{index - 1}.outputs.text"
        steps.append({"name": f"s{index}", "module": module, "inputs": {"text": source}})
    return {
        "apiVersion": "modelport/v1",
        "kind": "Pipeline",
        "metadata": {"name": name},
        "spec": {"steps": steps, "outputs": {"text": f"$.steps.s{len(modules) - 1}.outputs.text"}},
    }


def fill_stats(database_url: str, modules: list[str], days: int, minute_hours: int) -> int:
    """`days` of hour rollups of each of `modules` ending with the current hour, and minute rollups of the
    last `minute_hours`, from minutes the statistics writer recorded; returns how many rows."""
    pool = recorded_minutes(30, 200, seed=1)
    now = int(time.time() // MINUTE) * MINUTE
    first_hour = (now - days * 86_400) // HOUR * HOUR + HOUR
    first_minute = now - minute_hours * HOUR + MINUTE
    rows: list[dict[str, Any]] = []
    for hour in range(first_hour, now + 1, HOUR):
        minutes = [
            pool[(start // MINUTE) % len(pool)] for start in range(hour, min(hour + HOUR, now + 1), MINUTE)
        ]
        rows.append(_rollup(HOUR, hour, hour_of(minutes)))
        for offset, minute in enumerate(minutes):
            if hour + offset * MINUTE >= first_minute:
                rows.append(_rollup(MINUTE, hour + offset * MINUTE, minute))
    database = Database(database_url)
    try:
        for module in modules:
            with database.session() as session:
                for chunk in range(0, len(rows), 2000):
                    session.execute(
                        insert(StatsRollup), [{**row, "module": module} for row in rows[chunk : chunk + 2000]]
                    )
    finally:
        database.close()
    return len(rows) * len(modules)


def _rollup(resolution: int, start: int, columns: dict[str, Any]) -> dict[str, Any]:
    at = dt.datetime.fromtimestamp(start, dt.UTC)
    kinds = {"sync": columns["calls"]}
    return {"version": VERSION, "resolution": resolution, "start": at, "kinds": kinds, **columns}


# Measuring


@contextlib.contextmanager
def signed_in(url: str, token: str) -> Iterator[httpx.Client]:
    """A client with the admin's console session (`mp_session`), signed in with the bootstrap token."""
    with httpx.Client(base_url=url, timeout=30, follow_redirects=False) as client:
        _expect(client.get("/ui/sign-in"), 200, "the sign-in page")
        csrf = client.cookies.get("mp_csrf")
        if not csrf:
            raise RuntimeError("the sign-in page set no mp_csrf cookie")
        answer = client.post("/ui/sign-in/token", data={"csrf": csrf, "token": token, "next": "/ui/"})
        _expect(answer, 303, "sign in with the token")
        if not client.cookies.get("mp_session"):
            raise RuntimeError("signing in set no mp_session cookie")
        yield client


def pages(world: World) -> list[tuple[str, str, float]]:
    """Every page to measure: (name, path, target in ms)."""
    module, plain, bucket = world.stats_module, world.plain_module, world.bucket
    tab = f"/ui/modules/{module}"
    found = [
        ("modules", "/ui/modules", FAST_MS),
        ("module with statistics", tab, SLOW_MS),
        ("module without statistics", f"/ui/modules/{plain}", FAST_MS),
        ("module deployment fragment", f"{tab}/deployment", FAST_MS),
        ("module build log", f"{tab}/versions/{VERSION}", FAST_MS),
        ("module try", f"{tab}/try", FAST_MS),
        ("module docs", f"{tab}/docs", FAST_MS),
        ("module metrics 1h", f"{tab}/metrics?window=1h", FAST_MS),
        ("module metrics 24h", f"{tab}/metrics?window=24h", FAST_MS),
        ("module metrics 7d", f"{tab}/metrics?window=7d", SLOW_MS),
        ("module metrics 1h, live fragment", f"{tab}/metrics/live?window=1h", FAST_MS),
    ]
    found += [
        (f"module {name}", f"{tab}/{name}", FAST_MS) for name in ("logs", "requests", "history", "drift")
    ]
    found += [
        ("jobs", "/ui/jobs", FAST_MS),
        ("job", f"/ui/jobs/{world.job}", FAST_MS),
        ("pipelines", "/ui/pipelines", FAST_MS),
        ("pipeline", f"/ui/pipelines/{world.pipeline}", FAST_MS),
        ("storage", "/ui/storage", FAST_MS),
        ("bucket", f"/ui/storage/{bucket}", FAST_MS),
        ("users", "/ui/users", FAST_MS),
        ("user", f"/ui/users/{world.user}", FAST_MS),
    ]
    found += [(name, f"/ui/{name}", FAST_MS) for name in ("groups", "tokens", "audit", "new")]
    return found


def measure(client: httpx.Client, page: tuple[str, str, float], warmup: int, requests: int) -> Result:
    """`warmup` untimed GETs of the page, then `requests` timed ones, one after another."""
    name, path, target = page
    try:
        first = client.get(path)
    except httpx.TransportError as exc:  # a page that fails hard may drop the connection
        _say(f"   {name}: not measured ({type(exc).__name__}: {exc})")
        return Result(name, path, target, 0)
    if first.status_code != 200:
        _say(f"   {name}: not measured (HTTP {first.status_code})")
        return Result(name, path, target, first.status_code)
    for _ in range(warmup):
        client.get(path)
    took = []
    for _ in range(requests):
        started = time.perf_counter()
        answer = client.get(path)
        took.append((time.perf_counter() - started) * 1000)
        if answer.status_code != 200:
            raise RuntimeError(f"GET {path} answered {answer.status_code} while being measured")
    took.sort()
    result = Result(
        name,
        path,
        target,
        200,
        _percentile(took, 50),
        _percentile(took, 95),
        took[-1],
        len(first.content),
    )
    _say(f"   {name}: p50 {result.p50_ms:.1f} ms, p95 {result.p95_ms:.1f} ms, max {result.max_ms:.1f} ms")
    return result


def _percentile(ordered: list[float], percent: float) -> float:
    """The nearest-rank percentile of sorted values."""
    rank = max(1, -(-len(ordered) * percent // 100))
    return ordered[int(rank) - 1]


def table(results: list[Result]) -> str:
    """The results as a markdown table."""
    lines = [
        "| page | path | p50 ms | p95 ms | max ms | target ms | result |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in results:
        if r.p50_ms is None or r.p95_ms is None or r.max_ms is None:
            status = r.status or "connection dropped"
            row = f"| {r.page} | `{r.path}` | | | | {r.target_ms:.0f} | not measured ({status}) |"
        else:
            verdict = "pass" if r.passed else "FAIL"
            row = (
                f"| {r.page} | `{r.path}` | {r.p50_ms:.1f} | {r.p95_ms:.1f} | {r.max_ms:.1f} "
                f"| {r.target_ms:.0f} | {verdict} |"
            )
        lines.append(row)
    return "\n".join(lines)


# Helpers


@contextlib.contextmanager
def _timed(took: dict[str, float], step: str) -> Iterator[None]:
    started = time.perf_counter()
    yield
    took[step] = round(time.perf_counter() - started, 2)


def _steps(took: dict[str, float]) -> str:
    return ", ".join(f"{step} {seconds:.1f} s" for step, seconds in took.items())


def _expect(answer: httpx.Response, status: int, what: str) -> Any:
    if answer.status_code != status:
        raise RuntimeError(f"{what}: HTTP {answer.status_code} {answer.text[:300]}")
    return answer.json() if answer.content and "json" in answer.headers.get("content-type", "") else None


def _machine(load_before: float, load_after: float) -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (
        f"{os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}; 1-minute load average {load_before:.1f} before, "
        f"{load_after:.1f} after"
    )


def _command() -> str:
    script = Path(sys.argv[0])
    with contextlib.suppress(ValueError):
        script = script.resolve().relative_to(Path.cwd())
    return shlex.join(["python", str(script), *sys.argv[1:]])


def _say(message: str) -> None:
    print(message, flush=True)


if __name__ == "__main__":
    sys.exit(main())
