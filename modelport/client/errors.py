"""What the client raises: the server's refusals, unreachable servers, waits that ran out, missing logins."""

from __future__ import annotations

from typing import Any

__all__ = [
    "ApiError",
    "ClientError",
    "ConfigError",
    "ConnectionFailed",
    "NotLoggedIn",
    "TransferFailed",
    "WaitTimeout",
]


class ClientError(Exception):
    """Base of every error the client raises."""


class ApiError(ClientError):
    """The server answered with an error status; `code` is its stable machine code."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(f"{message} ({code})")
        self.status = status
        self.code = code
        self.message = message
        self.details = details


class ConnectionFailed(ClientError):
    """The server could not be reached, or stopped answering."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot reach {url}: {reason}")
        self.url = url
        self.reason = reason


class WaitTimeout(ClientError):
    """A wait ran out before the build or rollout finished; `last` is the state last seen (None if none)."""

    def __init__(self, message: str, last: Any = None) -> None:
        super().__init__(message)
        self.last = last


class NotLoggedIn(ClientError):
    """Neither a saved login nor `MODELPORT_URL` and `MODELPORT_TOKEN` name the server to talk to."""


class ConfigError(ClientError):
    """The saved configuration cannot be read or written."""


class TransferFailed(ClientError):
    """An upload or download did not complete intact: the file changed size while it was sent, the
    connection was cut, or the bytes received do not match the object's checksum. A download that fails
    leaves no file behind."""
