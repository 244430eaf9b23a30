"""`modelport predict` is one call from the shell: it loads the module and its worker, not the server.

Timing a command is flaky on a shared machine, so the guard is what it imports: the web framework, the
database and the object store's SDK are most of a server's start-up time, and a one-shot call needs none.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

SERVER_ONLY = {
    "alembic",
    "boto3",
    "botocore",
    "coredis",
    "fastapi",
    "sqlalchemy",
    "starlette",
    "uvicorn",
    "uvloop",
    "watchfiles",
}


def _clean_env() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if not name.startswith("MODELPORT_")}


def test_predict_imports_none_of_the_server(fixture_module: Callable[[str], Path]) -> None:
    directory = fixture_module("echo")
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "modelport", "predict", str(directory), "-i", "text=hi"],
        capture_output=True,
        text=True,
        env=_clean_env(),
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["outputs"] == {"text": "hi", "length": 2}
    imported = {
        line.rsplit("|", 1)[1].strip()
        for line in result.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    assert {"modelport.app", "modelport.control.modules"} <= imported  # the call ran the usual path
    assert {name.split(".")[0] for name in imported} & SERVER_ONLY == set()
