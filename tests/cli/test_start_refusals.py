"""`modelport dev` and `modelport server` refuse to start, with one line and exit 2, when what they need at
start is not there: their port (another process has it) or their database (unreachable, or unusable)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

PASSWORD = "s3cret-4b7e9d21"  # must never appear in the output


def _modelport(*args: str) -> subprocess.CompletedProcess[str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("MODELPORT_")}
    return subprocess.run(
        [sys.executable, "-m", "modelport", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port on 127.0.0.1 that another socket holds for the length of the test."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield int(holder.getsockname()[1])


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_dev_on_a_port_in_use_says_so_in_one_line(
    fixture_module: Callable[[str], Path], taken_port: int
) -> None:
    directory = fixture_module("echo")
    result = _modelport("dev", str(directory), "--host", "127.0.0.1", "--port", str(taken_port))
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        f"modelport: port {taken_port} on 127.0.0.1 is in use; stop what uses it or pass --port"
    ]


def test_server_on_a_port_in_use_says_so_in_one_line(tmp_path: Path, taken_port: int) -> None:
    data_dir = tmp_path / "data"
    result = _modelport(
        "server", "--host", "127.0.0.1", "--port", str(taken_port), "--data-dir", str(data_dir)
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        f"modelport: port {taken_port} on 127.0.0.1 is in use; stop what uses it or pass --port"
    ]


def test_an_unreachable_database_is_named_without_its_password(tmp_path: Path) -> None:
    port = _closed_port()
    url = f"postgresql://modelport:{PASSWORD}@127.0.0.1:{port}/modelport"
    result = _modelport("server", "--port", "0", "--data-dir", str(tmp_path / "data"), "--database-url", url)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        f"modelport: cannot reach the database at postgresql://modelport@127.0.0.1:{port}/modelport: "
        "connection refused"
    ]
    assert PASSWORD not in result.stderr + result.stdout


def test_a_sqlite_database_in_a_missing_directory_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    url = f"sqlite:///{missing / 'modelport.db'}"
    result = _modelport("server", "--port", "0", "--data-dir", str(tmp_path / "data"), "--database-url", url)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        f"modelport: cannot open the database at {url}: unable to open database file"
    ]
    assert not missing.exists()


def test_an_error_longer_than_a_terminal_line_is_still_one_line_when_piped(tmp_path: Path) -> None:
    missing = tmp_path / ("a-directory-with-a-long-name-" * 4) / "module"
    done = _modelport("predict", str(missing), "-i", "text=x")
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and str(missing) in done.stderr, done.stderr
