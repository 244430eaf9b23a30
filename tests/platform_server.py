"""`modelport server` as a real process on 127.0.0.1 (port 0), for end-to-end and crash tests."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

ADMIN_TOKEN = "mp_test-admin-token-0123456789abcdef"
_SERVING = re.compile(r"serving on (http://\S+)")


class ServerProcess:
    """Starts `modelport server` with a known admin token; `stop()` ends it and everything it started."""

    def __init__(
        self,
        data_dir: Path,
        *,
        token: str,
        database_url: str | None = None,
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = (),
    ) -> None:
        self.data_dir, self.token, self.database_url = data_dir, token, database_url
        self.env, self.args = env or {}, args
        self.process: subprocess.Popen[str] | None = None
        self.url = ""
        self.output: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()

    def start(self, timeout: float = 60.0) -> None:
        command = [
            sys.executable,
            "-m",
            "modelport",
            "server",
            "--port",
            "0",
            "--data-dir",
            str(self.data_dir),
        ]
        if self.database_url:
            command += ["--database-url", self.database_url]
        command += self.args
        env = {
            **os.environ,
            "MODELPORT_BOOTSTRAP_TOKEN": self.token,
            "MODELPORT_ROLLBACK_GRACE_SECONDS": "0",
            "MODELPORT_DRAIN_SECONDS": "10",
            "COLUMNS": "200",
            **self.env,
        }
        self.output, self._lines = [], queue.Queue()
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self._reader = threading.Thread(target=self._read, args=(self.process,), daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._lines.get(timeout=0.2)
            except queue.Empty:
                continue
            if line is None:
                raise RuntimeError("the server exited during startup:\n" + "".join(self.output))
            match = _SERVING.search(line)
            if match:
                self.url = match.group(1)
                return
        self.stop()
        raise RuntimeError("the server did not start in time:\n" + "".join(self.output))

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stderr is not None
        with process.stderr:
            for line in process.stderr:
                self.output.append(line)
                self._lines.put(line)
        self._lines.put(None)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def client(self, timeout: float = 30.0) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=timeout
        )

    def children(self) -> list[int]:
        """PIDs of live processes whose parent is the server (its workers and builds)."""
        return children_of(self.pid)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`; returns the exit code."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait(10)
        self._reader.join(10)
        return code

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)
        self._reader.join(10)


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
