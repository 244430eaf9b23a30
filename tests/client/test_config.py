"""The saved login: where it lives, how it is written, and which of option, environment and file wins."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from modelport.client import (
    ConfigError,
    Login,
    NotLoggedIn,
    config_path,
    load_saved,
    resolve_login,
    save_login,
)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"MODELPORT_CONFIG_DIR": str(tmp_path / "config")}


def test_the_config_dir_comes_from_the_environment(env: dict[str, str], tmp_path: Path) -> None:
    assert config_path(env) == tmp_path / "config" / "config.json"
    assert config_path({}).name == "config.json"


def test_a_saved_login_is_read_back(env: dict[str, str]) -> None:
    assert load_saved(env) is None
    path = save_login(Login("http://example.test:8000/", "secret"), env)
    assert json.loads(path.read_text()) == {"url": "http://example.test:8000", "token": "secret"}
    assert load_saved(env) == Login("http://example.test:8000", "secret")


def test_the_login_is_saved_owner_only_and_atomically(env: dict[str, str]) -> None:
    path = save_login(Login("http://one.test", "first"), env)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    inode = path.stat().st_ino
    save_login(Login("http://two.test", "second"), env)
    assert path.stat().st_ino != inode  # replaced by a rename, not rewritten in place
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert os.listdir(path.parent) == ["config.json"]  # no temporary file left behind
    assert load_saved(env) == Login("http://two.test", "second")


def test_a_failed_save_leaves_the_old_login(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    path = save_login(Login("http://one.test", "first"), env)

    def broken(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(ConfigError, match="disk full"):
        save_login(Login("http://two.test", "second"), env)
    assert os.listdir(path.parent) == ["config.json"]
    assert load_saved(env) == Login("http://one.test", "first")


def test_the_environment_overrides_the_saved_login(env: dict[str, str]) -> None:
    save_login(Login("http://saved.test", "saved-token"), env)
    assert resolve_login(environ=env) == Login("http://saved.test", "saved-token")
    both = {**env, "MODELPORT_URL": "http://env.test", "MODELPORT_TOKEN": "env-token"}
    assert resolve_login(environ=both) == Login("http://env.test", "env-token")
    token_only = {**env, "MODELPORT_TOKEN": "env-token"}
    assert resolve_login(environ=token_only) == Login("http://saved.test", "env-token")


def test_options_override_the_environment(env: dict[str, str]) -> None:
    both = {**env, "MODELPORT_URL": "http://env.test", "MODELPORT_TOKEN": "env-token"}
    found = resolve_login(url="http://option.test", token="option-token", environ=both)
    assert found == Login("http://option.test", "option-token")


def test_a_url_given_alone_is_used_with_the_saved_token(env: dict[str, str]) -> None:
    """The same server under another name (a tunnel, a proxy, an internal host name) keeps the login."""
    save_login(Login("http://saved.test", "saved-token"), env)
    same = {**env, "MODELPORT_URL": "http://saved.test/"}
    assert resolve_login(environ=same) == Login("http://saved.test", "saved-token")
    renamed = {**env, "MODELPORT_URL": "http://127.0.0.1:8000"}
    assert resolve_login(environ=renamed) == Login("http://127.0.0.1:8000", "saved-token")
    assert resolve_login(url="http://option.test", environ=env) == Login("http://option.test", "saved-token")
    with_token = {**renamed, "MODELPORT_TOKEN": "env-token"}
    assert resolve_login(environ=with_token) == Login("http://127.0.0.1:8000", "env-token")


def test_not_logged_in_says_how_to_log_in(env: dict[str, str]) -> None:
    with pytest.raises(NotLoggedIn) as caught:
        resolve_login(environ=env)
    assert str(caught.value) == (
        "not logged in: run `modelport login URL --token T` or set MODELPORT_URL and MODELPORT_TOKEN"
    )
    with pytest.raises(NotLoggedIn):
        resolve_login(environ={**env, "MODELPORT_URL": "http://env.test"})


def test_a_broken_config_file_is_reported(env: dict[str, str]) -> None:
    path = config_path(env)
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read"):
        resolve_login(environ=env)
    path.write_text("[]")
    with pytest.raises(ConfigError, match="not a saved login"):
        load_saved(env)


@pytest.mark.parametrize("url", ["example.test:8000", "ftp://example.test", "http://", ""])
def test_a_url_must_be_http(url: str) -> None:
    with pytest.raises(ConfigError, match="http:// or https://"):
        Login(url, "token")


def test_the_token_stays_out_of_the_repr() -> None:
    assert "secret" not in repr(Login("http://example.test", "secret"))
