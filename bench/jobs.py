"""Measures jobs end to end on a real `modelport server` (SQLite): echo jobs through the queue, and a batch of
digits records from a JSON Lines object.

    .venv/bin/python bench/jobs.py --duration 10 --connections 32 --records 100000

Jobs: wrk submits echo jobs (`POST /api/v1/modules/echo/jobs`, the bench user's token) for `--duration`
seconds over `--connections` connections; the harness then waits until no job is queued or running. The rate
is every accepted job over the time from the first submission to the last job's `finished_at`: submitted and
completed through the queue, end to end. The target on this 2-core machine is at least 1,000 jobs/s.

Batch: `--records` digits records (8x8 images from scikit-learn's data set, cycled) written as one JSON Lines
object to a bucket, run through `digits-batched` (dynamic batching, one replica) with `POST .../batches`. The
rate is records over the batch's run (`finished_at - started_at`); the server's resident memory is sampled
while it runs. The target is at least 25,000 records/s with flat memory.
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import platform_setup, wrk
from harness.envs import COMMON_REQUIREMENTS
from harness.models import prepare_digits, sklearn_version
from harness.paths import Paths
from harness.servers import free_port, post_json, request, running

BUCKET = "bench-data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--only", default="jobs,batch", help="jobs, batch or both")
    parser.add_argument("--ready-timeout", type=float, default=180.0)
    args = parser.parse_args()
    paths = Paths.default()
    wanted = set(args.only.split(","))
    if "jobs" in wanted:
        with platform(paths, "echo", args.ready_timeout) as (url, headers, _):
            measure_jobs(url, headers, args.duration, args.connections, paths)
    if "batch" in wanted:
        with platform(paths, "digits-batched", args.ready_timeout) as (url, headers, server_pid):
            measure_batch(url, headers, args.records, paths, server_pid)


class platform:
    """`modelport server` on SQLite with `model` deployed and opened to one user, as the main harness does."""

    def __init__(self, paths: Paths, model: str, ready_timeout: float) -> None:
        self.paths, self.model, self.ready_timeout = paths, model, ready_timeout

    def __enter__(self) -> tuple[str, dict[str, str], int]:
        model_path, _ = prepare_digits(self.paths.work)
        root = self.paths.work / "jobs" / self.model
        shutil.rmtree(root, ignore_errors=True)
        requirements = [*COMMON_REQUIREMENTS, f"scikit-learn=={sklearn_version()}"]
        module = platform_setup.module_copy(
            self.paths.bench / "modules" / self.model, root / "module", requirements
        )
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        token = f"mp_{secrets.token_urlsafe(32)}"
        argv = [str(self.paths.tools / "modelport"), "server", "--host", "127.0.0.1", "--port", str(port)]
        argv += ["--data-dir", str(root / "data")]
        env = {"MODELPORT_BOOTSTRAP_TOKEN": token, "BENCH_DIGITS_MODEL": str(model_path)}
        self._running = running(
            argv,
            self.paths.work,
            env,
            self.url,
            "/readyz",
            self.paths.logs / f"jobs-{self.model}.log",
            self.ready_timeout,
        )
        self._running.__enter__()
        headers = platform_setup.serve(self.url, self.ready_timeout, module=module, admin_token=token)
        self.admin = {"Authorization": f"Bearer {token}"}
        return self.url, headers | {"X-Admin": token}, _server_pid(port)

    def __exit__(self, *exc: object) -> None:
        self._running.__exit__(None, None, None)


def measure_jobs(url: str, headers: dict[str, str], duration: float, connections: int, paths: Paths) -> None:
    token = headers.pop("X-Admin")
    admin = {"Authorization": f"Bearer {token}"}
    script = wrk.write_script(paths.work / "jobs-echo.lua", {"inputs": {"text": "hello"}}, headers)
    binary = wrk.ensure_wrk()
    started = time.time()
    result = wrk.run(binary, f"{url}/api/v1/modules/echo/jobs", script, connections, duration, 1, 10)
    submitted_at = time.time()
    while _count(url, admin, "queued") or _count(url, admin, "running"):
        time.sleep(0.2)
    drained_at = time.time()
    last = _last_finished(url, admin)
    accepted = result.requests - result.errors
    failed = _count(url, admin, "failed")
    end = last or drained_at
    print(
        f"jobs: {accepted} accepted over {result.duration_s:.1f} s "
        f"({accepted / result.duration_s:,.0f}/s submitted, p50 {result.p50_ms:.1f} ms, "
        f"p99 {result.p99_ms:.1f} ms, {result.errors} errors); "
        f"all finished {end - submitted_at:.2f} s after the last submission; {failed} failed"
    )
    print(
        f"jobs end to end: {accepted / (end - started):,.0f} jobs/s "
        f"({accepted} jobs from the first submission to the last finish, {end - started:.2f} s)"
    )


def measure_batch(url: str, headers: dict[str, str], records: int, paths: Paths, server_pid: int) -> None:
    token = headers.pop("X-Admin")
    admin = {"Authorization": f"Bearer {token}"}
    from sklearn.datasets import load_digits

    images = load_digits().data
    lines = b"".join(
        json.dumps({"pixels": [float(v) for v in images[i % len(images)]]}).encode() + b"\n"
        for i in range(records)
    )
    storage = {
        "apiVersion": "modelport/v1",
        "kind": "Storage",
        "metadata": {"name": BUCKET},
        "spec": {"access": {"groups": [platform_setup.GROUP]}},
    }
    status, answer = post_json(f"{url}/api/v1/apply", {"documents": [storage]}, headers=admin)
    assert status == 200, answer
    put = {**admin, "Content-Type": "application/x-ndjson"}
    status, answer = request(
        "PUT", f"{url}/api/v1/storage/{BUCKET}/objects/digits.jsonl", lines, put, timeout=120
    )
    assert status in (200, 201), answer
    body = {"input": f"{BUCKET}/digits.jsonl", "output": f"{BUCKET}/results/"}
    status, job = post_json(f"{url}/api/v1/modules/digits-batched/batches", body, headers=headers)
    assert status == 202, job
    peak, baseline, samples = 0, _rss(server_pid), []
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            rss = _rss(server_pid)
            samples.append(rss)
            peak = max(peak, rss)
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    while True:
        status, job = request("GET", f"{url}/api/v1/jobs/{job['id']}?wait=30", None, headers, timeout=60)
        if job["status"] in ("succeeded", "failed", "canceled"):
            break
    stop.set()
    sampler.join()
    assert job["status"] == "succeeded", job
    seconds = (
        datetime.fromisoformat(job["finished_at"]) - datetime.fromisoformat(job["started_at"])
    ).total_seconds()
    print(
        f"batch: {records:,} records in {seconds:.2f} s = {records / seconds:,.0f} records/s "
        f"({job['outputs']['parts']} parts, {job['outputs']['failed']} failed); "
        f"server RSS {baseline / 2**20:.0f} MiB before, peak {peak / 2**20:.0f} MiB "
        f"(+{(peak - baseline) / 2**20:.0f} MiB), input {len(lines) / 2**20:.0f} MiB"
    )


def _count(url: str, headers: dict[str, str], status: str) -> int:
    _, answer = request("GET", f"{url}/api/v1/jobs?status={status}&limit=1", None, headers)
    return len(answer["jobs"])


def _last_finished(url: str, headers: dict[str, str]) -> float | None:
    _, answer = request("GET", f"{url}/api/v1/jobs?limit=200", None, headers)
    finished = [
        datetime.fromisoformat(j["finished_at"]).timestamp() for j in answer["jobs"] if j["finished_at"]
    ]
    return max(finished) if finished else None


def _server_pid(port: int) -> int:
    """The pid of the process listening on `port` (the server, not its workers)."""
    inode = None
    wanted = f":{port:04X}"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[1].endswith(wanted) and fields[3] == "0A":
                inode = fields[9]
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                if inode and fd.readlink().as_posix() == f"socket:[{inode}]":
                    return int(proc.name)
        except OSError:
            continue
    raise RuntimeError(f"no process listens on port {port}")


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


if __name__ == "__main__":
    main()
