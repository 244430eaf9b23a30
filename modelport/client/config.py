"""The saved login: which server to talk to and with which token, kept in the user's config directory.

`config.json` holds `{"url", "token"}`, written atomically and readable by its owner only. The directory is
the platform's usual one for modelport, or `MODELPORT_CONFIG_DIR`. `MODELPORT_URL` and `MODELPORT_TOKEN`
override what is saved, each on its own, and explicit values (the CLI's `--url` and `--token`) override both.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import click

from modelport.client.errors import ConfigError, NotLoggedIn

__all__ = ["CONFIG_FILE", "Login", "config_path", "load_saved", "resolve_login", "save_login"]

CONFIG_FILE = "config.json"
_APP_NAME = "modelport"
_NOT_LOGGED_IN = "not logged in: run `modelport login URL --token T` or set MODELPORT_URL and MODELPORT_TOKEN"


@dataclass(frozen=True)
class Login:
    """A server's base URL (no trailing slash) and a bearer token for it."""

    url: str
    token: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "url", normalise_url(self.url))

    def __repr__(self) -> str:
        return f"Login(url={self.url!r}, token=<{len(self.token)} characters>)"


def normalise_url(url: str) -> str:
    """`url` without surrounding spaces or a trailing slash; it must be an http(s) URL."""
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")) or len(url) <= len("https://"):
        raise ConfigError(f"{url!r} is not a server URL: it must start with http:// or https://")
    return url


def config_path(environ: Mapping[str, str] | None = None) -> Path:
    """Where the saved login lives: `$MODELPORT_CONFIG_DIR/config.json`, else the user config directory."""
    environ = os.environ if environ is None else environ
    directory = environ.get("MODELPORT_CONFIG_DIR") or click.get_app_dir(_APP_NAME)
    return Path(directory).expanduser() / CONFIG_FILE


def load_saved(environ: Mapping[str, str] | None = None) -> Login | None:
    """The saved login, or None when there is none."""
    path = config_path(environ)
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    if not isinstance(saved, dict) or not isinstance(saved.get("url"), str):
        raise ConfigError(f"{path} is not a saved login; log in again")
    token = saved.get("token")
    return Login(saved["url"], token if isinstance(token, str) else "")


def save_login(login: Login, environ: Mapping[str, str] | None = None) -> Path:
    """Save the login for later commands, replacing any saved one; returns the file's path.

    The file is written beside its final place with mode 0600 and renamed over it, so a reader sees the old
    login or the new one, never half of one, and no other user can read the token at any moment.
    """
    path = config_path(environ)
    body = json.dumps({"url": login.url, "token": login.token}, indent=2) + "\n"
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(prefix=f".{CONFIG_FILE}.", dir=path.parent)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc}") from None
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:  # mkstemp creates it with mode 0600
            file.write(body)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise ConfigError(f"cannot write {path}: {exc}") from None
    return path


def resolve_login(
    *, url: str | None = None, token: str | None = None, environ: Mapping[str, str] | None = None
) -> Login:
    """The login to use: explicit values, else `MODELPORT_URL` / `MODELPORT_TOKEN`, else the saved login.

    Each of the URL and the token is overridden on its own: a URL given alone (the same server under another
    name, through a tunnel or a proxy) is used with the saved token, and a token given alone with the saved
    URL. `NotLoggedIn` when no URL or no token is found.
    """
    environ = os.environ if environ is None else environ
    url = url or environ.get("MODELPORT_URL") or None
    token = token or environ.get("MODELPORT_TOKEN") or None
    if url is None or token is None:
        saved = load_saved(environ)
        if saved is not None:
            url = url or saved.url
            token = token or saved.token or None
    if url is None or token is None:
        raise NotLoggedIn(_NOT_LOGGED_IN)
    return Login(url, token)
