"""The typed Python client for the platform's HTTP API, and the saved login it starts from.

from modelport.client import Client, resolve_login

login = resolve_login()
with Client(login.url, login.token) as client:
    for module in client.modules():
        print(module["name"], module["deployment"])
"""

from __future__ import annotations

from modelport.client.api import DEFAULT_TIMEOUT, Client, Progress, Pushed
from modelport.client.config import Login, config_path, load_saved, resolve_login, save_login
from modelport.client.errors import (
    ApiError,
    ClientError,
    ConfigError,
    ConnectionFailed,
    NotLoggedIn,
    WaitTimeout,
)
from modelport.client.schema import (
    ApplyResult,
    DeploymentInfo,
    ModuleInfo,
    ServingInfo,
    VersionInfo,
)

__all__ = [
    "DEFAULT_TIMEOUT",
    "ApiError",
    "ApplyResult",
    "Client",
    "ClientError",
    "ConfigError",
    "ConnectionFailed",
    "DeploymentInfo",
    "Login",
    "ModuleInfo",
    "NotLoggedIn",
    "Progress",
    "Pushed",
    "ServingInfo",
    "VersionInfo",
    "WaitTimeout",
    "config_path",
    "load_saved",
    "resolve_login",
    "save_login",
]
