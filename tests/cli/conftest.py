"""Fixtures of the command tests: no saved login, a server URL nothing listens on, no server at all, or a
scripted one."""

from __future__ import annotations

import functools
import os
import socket
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from modelport.cli import platform as platform_cli
from modelport.client import Client


def _unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def server_url(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """No saved login of the machine's user, a server URL nothing listens on, and git without its config."""
    url = f"http://127.0.0.1:{_unused_port()}"
    monkeypatch.setenv("MODELPORT_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("MODELPORT_URL", url)
    monkeypatch.setenv("MODELPORT_TOKEN", "tok")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for role in ("AUTHOR", "COMMITTER"):
        monkeypatch.setenv(f"GIT_{role}_NAME", "Test")
        monkeypatch.setenv(f"GIT_{role}_EMAIL", "test@example.com")
    return url


@pytest.fixture
def no_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if a command so much as creates a client."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the command tried to contact a server")

    monkeypatch.setattr(platform_cli, "Client", refuse)


Handler = Callable[[httpx.Request], httpx.Response]


@pytest.fixture
def answer(monkeypatch: pytest.MonkeyPatch, server_url: str) -> Callable[[Handler], list[httpx.Request]]:
    """Log the commands in to `server_url` and make their client answer with `handler`; returns the list of
    requests it receives."""

    def install(handler: Handler) -> list[httpx.Request]:
        seen: list[httpx.Request] = []

        def record(request: httpx.Request) -> httpx.Response:
            request.read()
            seen.append(request)
            return handler(request)

        monkeypatch.setattr(
            platform_cli, "Client", functools.partial(Client, transport=httpx.MockTransport(record))
        )
        return seen

    return install
