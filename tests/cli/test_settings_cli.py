"""The commands that build `Settings` refuse ones that can never work: exit 2, one line per setting on stderr
naming its variable, no traceback, and never a secret."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from modelport.cli.main import app

SECRET = "not-a-token-3f9a7c1e5b"  # must never appear in the output
PASSWORD = "hunter2-8d41be07c2"  # likewise

runner = CliRunner()


@pytest.fixture(autouse=True)
def no_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """No `MODELPORT_*` variable of the machine running the tests, and no server may start: a command that
    got past its settings fails at once instead of serving."""
    for name in list(os.environ):
        if name.startswith("MODELPORT_"):
            monkeypatch.delenv(name)
    monkeypatch.setitem(sys.modules, "modelport.app", None)


def command(name: str, directory: Path) -> list[str]:
    if name == "server":
        return ["server", "--port", "0", "--data-dir", str(directory / "data")]
    if name == "dev":
        return ["dev", str(directory), "--port", "0"]
    return ["predict", str(directory)]


@pytest.mark.parametrize("name", ["server", "dev", "predict"])
@pytest.mark.parametrize(
    ("variable", "value", "secret"),
    [
        ("MODELPORT_BOOTSTRAP_TOKEN", SECRET, SECRET),
        ("MODELPORT_S3_SECRET_ACCESS_KEY", SECRET, SECRET),
        ("MODELPORT_DATABASE_URL", f"mysql://modelport:{PASSWORD}@db/modelport", PASSWORD),
        ("MODELPORT_REDIS_URL", f"http://:{PASSWORD}@redis:6379", PASSWORD),
        ("MODELPORT_OIDC_AUDIENCE", "modelport", None),
        ("MODELPORT_LOGIN_ATTEMPTS", "0/minute", None),
    ],
)
def test_a_bad_setting_exits_2_naming_its_variable(
    name: str, variable: str, value: str, secret: str | None, tmp_path: Path
) -> None:
    result = runner.invoke(app, command(name, tmp_path), env={variable: value, "COLUMNS": "60"})
    assert result.exit_code == 2, result.output
    [line] = result.stderr.splitlines()
    assert line.startswith(f"modelport: invalid setting {variable}: ")
    assert result.stdout == ""
    if secret is not None:
        assert secret not in result.output


def test_each_bad_setting_gets_its_own_line(tmp_path: Path) -> None:
    env = {"MODELPORT_BOOTSTRAP_TOKEN": SECRET, "MODELPORT_REQUEST_BUCKET": "Requests"}
    result = runner.invoke(app, command("server", tmp_path), env=env)
    assert result.exit_code == 2
    assert sorted(line.split(":")[1] for line in result.stderr.splitlines()) == [
        " invalid setting MODELPORT_BOOTSTRAP_TOKEN",
        " invalid setting MODELPORT_REQUEST_BUCKET",
    ]
    assert SECRET not in result.output


def test_a_bad_option_is_named_with_its_variable(tmp_path: Path) -> None:
    result = runner.invoke(app, ["server", "--host", "", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert result.stderr.startswith("modelport: invalid setting MODELPORT_HOST (--host): must not be empty")


@pytest.mark.parametrize("name", ["server", "dev"])
def test_a_data_dir_that_cannot_be_made_is_refused(name: str, tmp_path: Path) -> None:
    blocker = tmp_path / ("data" if name == "server" else ".modelport")
    blocker.write_text("a file where the data directory goes")
    result = runner.invoke(app, command(name, tmp_path))
    assert result.exit_code == 2
    assert result.stderr.startswith("modelport: invalid setting MODELPORT_DATA_DIR")
    assert "is not a directory" in result.stderr


def test_the_real_command_refuses_without_a_traceback(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "modelport", "dev", str(tmp_path), "--port", "0"],
        env={**os.environ, "MODELPORT_BOOTSTRAP_TOKEN": SECRET},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("modelport: invalid setting MODELPORT_BOOTSTRAP_TOKEN: must be mp_")
    assert "Traceback" not in result.stderr
    assert SECRET not in result.stderr + result.stdout
    assert not (tmp_path / ".modelport").exists()
