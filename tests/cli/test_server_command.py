"""`modelport server` refuses bad settings with a clear message instead of a traceback."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import httpx


def test_a_bad_setting_is_named_and_exits_2(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "modelport", "server", "--port", "0", "--data-dir", str(tmp_path)],
        env={**os.environ, "MODELPORT_MAX_BODY_BYTES": "5"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "MODELPORT_MAX_BODY_BYTES" in result.stderr and "1024" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "modelport.db").exists()


def test_the_demo_token_is_made_once_private_and_reused(tmp_path):
    from modelport.app import demo_admin_token

    first = demo_admin_token(tmp_path / "data")
    path = tmp_path / "data" / "demo-admin-token"
    assert first.get_secret_value().startswith("mp_") and len(first.get_secret_value()) > 40
    assert path.stat().st_mode & 0o777 == 0o600
    assert demo_admin_token(tmp_path / "data") == first


def test_host_port_and_data_dir_come_from_the_environment_when_no_option_says(tmp_path):
    data_dir = tmp_path / "from-env"
    env = {
        **os.environ,
        "MODELPORT_DATA_DIR": str(data_dir),
        "MODELPORT_HOST": "127.0.0.1",
        "MODELPORT_PORT": "0",
        "MODELPORT_BOOTSTRAP_TOKEN": "mp_test-environment-token",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "modelport", "server"],
        cwd=tmp_path,
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        assert process.stderr is not None
        url = None
        for line in process.stderr:  # the server prints its address once it listens
            match = re.search(r"serving on (http://127\.0\.0\.1:\d+)", line)
            if match:
                url = match.group(1)
                break
        assert url is not None and not url.endswith(":8000")
        assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200
        assert (data_dir / "modelport.db").is_file()
        assert not (tmp_path / ".modelport").exists()
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        if process.stderr is not None:
            process.stderr.close()


def test_requests_in_flight_get_the_drain_time_when_the_server_stops():
    from modelport.app import uvicorn_config
    from modelport.core.settings import Settings

    # uvicorn cuts the connections still open this many seconds after it was told to stop.
    assert uvicorn_config(object(), Settings(drain_seconds=45)).timeout_graceful_shutdown == 45
    assert uvicorn_config(object(), Settings(drain_seconds=0.5)).timeout_graceful_shutdown == 1
