"""`modelport server` refuses bad settings with a clear message instead of a traceback."""

from __future__ import annotations

import os
import subprocess
import sys


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
