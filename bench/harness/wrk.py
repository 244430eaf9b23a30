"""Load generation with wrk: a Lua script POSTs the JSON body (with any extra headers) and prints the summary
as one JSON line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RESULT_PREFIX = "BENCH_RESULT "

_SCRIPT = """\
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
%(headers)s
wrk.body = [==[%(body)s]==]

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%(prefix)s{"requests": %%d, "duration_us": %%d, "connect": %%d, "read": %%d, "write": %%d, '
    .. '"status": %%d, "timeout": %%d, "p50_us": %%d, "p99_us": %%d}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


class WrkError(RuntimeError):
    """wrk is missing, failed, or printed no result."""


@dataclass(frozen=True)
class WrkResult:
    requests: int
    duration_s: float
    p50_ms: float
    p99_ms: float
    non_2xx: int  # wrk counts answers with a status of 400 or more
    socket_errors: int  # connect, read, write and timeout errors

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def errors(self) -> int:
        return self.non_2xx + self.socket_errors


def ensure_wrk() -> str:
    """The path of `wrk`, installed with apt-get when missing and running as root."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("wrk is missing; installing it with apt-get ...", flush=True)
        for argv in (["apt-get", "update"], ["apt-get", "install", "-y", "wrk"]):
            try:
                subprocess.run(argv, capture_output=True, timeout=600, check=True)
            except (OSError, subprocess.SubprocessError) as exc:
                raise WrkError(f"`{' '.join(argv)}` failed: {exc}") from None
        found = shutil.which("wrk")
        if found:
            return found
    raise WrkError(
        "wrk is not installed. Install it with `sudo apt-get install wrk` (Debian, Ubuntu), "
        "`brew install wrk` (macOS), or build it from https://github.com/wg/wrk."
    )


def write_script(path: Path, body: Any, headers: dict[str, str] | None = None) -> Path:
    # A JSON string is a valid Lua string literal for the ASCII names and values that reach here.
    extra = "\n".join(f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in (headers or {}).items())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        _SCRIPT % {"body": json.dumps(body), "headers": extra, "prefix": RESULT_PREFIX}, encoding="utf-8"
    )
    return path


def run(
    wrk: str, url: str, script: Path, connections: int, duration_s: float, threads: int, timeout_s: float
) -> WrkResult:
    """Load `url` for `duration_s` seconds with `connections` open connections."""
    argv = [
        wrk,
        f"-t{max(1, min(threads, connections))}",
        f"-c{connections}",
        f"-d{max(1, round(duration_s))}s",
    ]
    argv += [f"--timeout={max(1, round(timeout_s))}s", "-s", str(script), url]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + timeout_s + 30)
    except subprocess.TimeoutExpired:
        raise WrkError(f"wrk ran past its time limit: {' '.join(argv)}") from None
    for line in done.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return parse(line[len(RESULT_PREFIX) :])
    raise WrkError(
        f"wrk exited with code {done.returncode} and no result:\n{done.stdout}{done.stderr}".rstrip()
    )


def parse(line: str) -> WrkResult:
    """Read the JSON line that the script's `done` callback prints."""
    data = json.loads(line)
    return WrkResult(
        requests=int(data["requests"]),
        duration_s=int(data["duration_us"]) / 1e6,
        p50_ms=int(data["p50_us"]) / 1e3,
        p99_ms=int(data["p99_us"]) / 1e3,
        non_2xx=int(data["status"]),
        socket_errors=sum(int(data[k]) for k in ("connect", "read", "write", "timeout")),
    )
