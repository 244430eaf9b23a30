"""Start a server as a subprocess, wait until it answers, call it, and always stop it.

Each server runs in its own session (process group), so that the workers it spawns are stopped with it: the
harness terminates the server's PID, kills it after a timeout, then ends whatever is left in its group.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

STOP_TIMEOUT_S = 15.0
# Servers get one thread per math library: the load generator and the server share the machine's cores.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


class ServerError(RuntimeError):
    """A server did not start, did not become ready, or answered wrongly."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def running(
    argv: list[str],
    cwd: Path,
    env: dict[str, str],
    base_url: str,
    ready_path: str,
    log: Path,
    ready_timeout: float,
) -> Iterator[subprocess.Popen[Any]]:
    """Run `argv` until the block ends; ready once `GET base_url + ready_path` answers 200."""
    log.parent.mkdir(parents=True, exist_ok=True)
    environment = {**os.environ, **dict.fromkeys(THREAD_VARIABLES, "1"), "PYTHONUNBUFFERED": "1", **env}
    with log.open("w", encoding="utf-8") as out:
        out.write(f"$ {' '.join(argv)}\n")
        out.flush()
        try:
            process = subprocess.Popen(
                argv, cwd=cwd, env=environment, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        except OSError as exc:
            raise ServerError(f"could not start `{argv[0]}`: {exc}") from None
        try:
            _wait_ready(process, base_url + ready_path, ready_timeout, log)
            yield process
        finally:
            stop(process)


def cpu_seconds(session: int) -> float:
    """CPU seconds (user and system) used so far by the live processes of `session` (a server started by
    `running` leads its own; processes that start sessions of their own are not counted). Linux only."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text(encoding="ascii")
        except OSError:  # ended meanwhile
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after the command's name, which may hold spaces
        if int(fields[3]) == session:  # field 6 of proc(5): the session id
            total += int(fields[11]) + int(fields[12])  # fields 14 and 15: utime, stime
    return total / ticks


def stop(process: subprocess.Popen[Any]) -> None:
    """Terminate the server by PID, kill it after STOP_TIMEOUT_S, then end the rest of its process group."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT_S)
    group = process.pid  # start_new_session made the server the leader of its own group
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not _group_alive(group):
            return
        os.killpg(group, sig)
        deadline = time.monotonic() + STOP_TIMEOUT_S / 3
        while time.monotonic() < deadline and _group_alive(group):
            time.sleep(0.1)


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _wait_ready(process: subprocess.Popen[Any], url: str, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerError(f"exited with code {process.returncode} before it was ready:\n{tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.2)
    raise ServerError(f"not ready after {timeout:.0f} s (GET {url}):\n{tail(log)}")


def post_json(
    url: str, body: Any, *, headers: dict[str, str] | None = None, timeout: float = 10.0
) -> tuple[int, Any]:
    """POST `body` as JSON; the status and the decoded answer (the raw text when it is not JSON)."""
    data = json.dumps(body).encode()
    return request("POST", url, data, {"Content-Type": "application/json", **(headers or {})}, timeout)


def request(
    method: str, url: str, data: bytes | None, headers: dict[str, str], timeout: float = 10.0
) -> tuple[int, Any]:
    """Send one request; the status and the decoded answer (the raw text when it is not JSON)."""
    prepared = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(prepared, timeout=timeout) as response:
            status, text = response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        status, text = exc.code, exc.read().decode("utf-8", "replace")
    except OSError as exc:
        raise ServerError(f"{method} {url} failed: {exc}") from None
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def tail(log: Path, lines: int = 15) -> str:
    try:
        content = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join("    " + line for line in content[-lines:])
