"""`Client`: the platform's HTTP API (`/api/v1`) as typed Python calls, synchronous, over httpx.

Every call sends the bearer token (`exchange_password`, which gets one, sends none); an error status raises
`ApiError` with the server's stable code, and a server that cannot be reached raises `ConnectionFailed` naming
the URL. Passwords go only into request bodies, never into an error's message.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Self, cast
from urllib.parse import quote

import httpx

from modelport.client.errors import ApiError, ConnectionFailed, WaitTimeout
from modelport.client.schema import (
    AccessToken,
    ApplyResult,
    AuditEvent,
    CallerInfo,
    DeploymentInfo,
    GroupInfo,
    ModuleInfo,
    NewToken,
    Role,
    TokenInfo,
    UserInfo,
    VersionInfo,
)

__all__ = ["DEFAULT_TIMEOUT", "Client", "Progress", "Pushed"]

DEFAULT_TIMEOUT = 30.0
"""Seconds to wait for a connection, or for each read or write on it (not for a whole call)."""

Progress = Callable[[int, int], None]
"""Told `(bytes_sent, total)` as an upload goes."""

_CHUNK = 64 * 1024
_SHOWN_BODY = 200
_SETTLED_BUILD = ("ready", "failed")
_SETTLED_ROLLOUT = ("ready", "failed")


@dataclass(frozen=True)
class Pushed:
    """The version a push stored; `created` is False when the same content was already there."""

    version: VersionInfo
    created: bool


class Client:
    """A session with one platform server, authenticated by a bearer token.

    `timeout` bounds connecting and each read or write, in seconds. `transport` replaces the network (tests
    pass `httpx.MockTransport`). An empty `token` sends no `Authorization` header. Use it as a context
    manager, or call `close()`.
    """

    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        headers = {"User-Agent": "modelport-client"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(
            base_url=self.url,
            headers=headers,
            timeout=timeout,
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    # Modules and versions

    def modules(self) -> list[ModuleInfo]:
        """Every module the token may see."""
        return cast(list[ModuleInfo], self._json("GET", "/api/v1/modules")["modules"])

    def module(self, module: str) -> ModuleInfo:
        return cast(ModuleInfo, self._json("GET", _path(module)))

    def versions(self, module: str) -> list[VersionInfo]:
        """The module's versions, newest first."""
        return cast(list[VersionInfo], self._json("GET", _path(module, "versions"))["versions"])

    def version(self, module: str, version: str) -> VersionInfo:
        """One version, with its `spec` once built."""
        return cast(VersionInfo, self._json("GET", _path(module, "versions", version)))

    def push(
        self,
        artifact: bytes,
        *,
        module: str,
        version: str,
        commit: str | None = None,
        tag: str | None = None,
        progress: Progress | None = None,
    ) -> Pushed:
        """Upload a packed version (the `tar.gz` bytes), streamed so that `progress` can follow it.

        Pushing the same content under the same name again is harmless (`created` is False); other content
        under a name already used is refused with `ApiError` code `version_exists`.
        """
        params = _present(version=version, commit=commit, tag=tag)
        headers = {
            "Content-Type": "application/gzip",
            "Content-Length": str(len(artifact)),
            "X-Content-Digest": f"sha256:{hashlib.sha256(artifact).hexdigest()}",
        }
        response = self._send(
            "POST",
            _path(module, "versions"),
            params=params,
            headers=headers,
            content=_chunks(artifact, progress),
        )
        return Pushed(version=cast(VersionInfo, response.json()), created=response.status_code == 201)

    def delete_module(self, module: str) -> None:
        """Delete the module, its versions and its deployment."""
        self._send("DELETE", _path(module))

    # Deployments

    def deploy(
        self, module: str, version: str, *, replicas: int | None = None, canary: int | None = None
    ) -> DeploymentInfo:
        """Start rolling `version` out; with `canary` it becomes the canary at that percent (0 removes it).

        Returns at once with the new `generation`; `wait_deployment` follows the rollout.
        """
        body = _present(version=version, replicas=replicas, canary_percent=canary)
        return cast(DeploymentInfo, self._json("POST", _path(module, "deploy"), json=body))

    def rollback(self, module: str) -> DeploymentInfo:
        """Roll back to the previous version (`ApiError` code `no_previous_version` when there is none)."""
        return cast(DeploymentInfo, self._json("POST", _path(module, "rollback")))

    def logs(self, module: str, *, build: str | None = None, tail: int = 200) -> str:
        """The build log of version `build`, or else the last `tail` lines of the workers' logs."""
        params: dict[str, str | int] = {"build": build} if build is not None else {"tail": tail}
        return self._send("GET", _path(module, "logs"), params=params).text

    # Manifests

    def apply(self, documents: list[dict[str, Any]], *, dry_run: bool = False) -> list[ApplyResult]:
        """Create or update what the manifest documents describe; on a dry run only say what would change."""
        return self._documents("/api/v1/apply", documents, dry_run=dry_run)

    def diff(self, documents: list[dict[str, Any]]) -> list[ApplyResult]:
        """What `apply` would change, without changing it."""
        return self.apply(documents, dry_run=True)

    def delete(self, documents: list[dict[str, Any]], *, dry_run: bool = False) -> list[ApplyResult]:
        """Delete what the manifest documents name."""
        return self._documents("/api/v1/delete", documents, dry_run=dry_run)

    # Waiting

    def wait_build(self, module: str, version: str, *, timeout: float, poll: float = 0.25) -> VersionInfo:
        """Poll until the version's build is `ready` or `failed`; `WaitTimeout` if it takes longer."""
        deadline = time.monotonic() + timeout
        while True:
            info = self.version(module, version)
            if info["build_status"] in _SETTLED_BUILD:
                return info
            status = info["build_status"]
            message = f"the build of {module} {version} did not finish within {timeout:g} s (it is {status})"
            _pause(deadline, poll, WaitTimeout(message, info))

    def wait_deployment(
        self, module: str, generation: int, *, timeout: float, poll: float = 0.25
    ) -> DeploymentInfo:
        """Poll until the deployment has seen `generation` and settled (`ready` or `failed`).

        `WaitTimeout` (with the deployment last seen) if that takes longer than `timeout` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            deployment = self.module(module)["deployment"]
            if (
                deployment is not None
                and deployment["observed_generation"] >= generation
                and deployment["status"] in _SETTLED_ROLLOUT
            ):
                return deployment
            message = f"the rollout of {module} did not finish within {timeout:g} s"
            if deployment is not None and deployment["message"]:
                message += f": {deployment['message']}"
            _pause(deadline, poll, WaitTimeout(message, deployment))

    # Identity

    @classmethod
    def exchange_password(
        cls,
        url: str,
        username: str,
        password: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> AccessToken:
        """Trade a user name and password for a short-lived bearer token; no token is needed to ask.

        A wrong pair raises `ApiError` code `invalid_credentials` (401); too many failed tries raise
        `too_many_attempts` (429), whose message says when to try again.
        """
        body = {"username": username, "password": password}
        with cls(url, "", timeout=timeout, transport=transport) as anonymous:
            return cast(AccessToken, anonymous._json("POST", "/api/v1/auth/token", json=body))

    def me(self) -> CallerInfo:
        """Who the token belongs to: name, role, groups, and the token's own id."""
        return cast(CallerInfo, self._json("GET", "/api/v1/auth/me"))

    def users(self) -> list[UserInfo]:
        """Every account (admins only)."""
        return cast(list[UserInfo], self._json("GET", "/api/v1/users")["users"])

    def user(self, user_id: int) -> UserInfo:
        return cast(UserInfo, self._json("GET", f"/api/v1/users/{user_id:d}"))

    def create_user(
        self,
        name: str,
        *,
        role: Role | None = None,
        groups: list[str] | None = None,
        password: str | None = None,
    ) -> UserInfo:
        """Create an account, with role `user` and no groups unless given. Without a password it signs in
        only through OIDC or with tokens an admin makes for it. A name already taken is `ApiError` `conflict`.
        """
        body = _present(name=name, role=role, groups=groups, password=password)
        return cast(UserInfo, self._json("POST", "/api/v1/users", json=body))

    def update_user(
        self,
        user_id: int,
        *,
        role: Role | None = None,
        groups: list[str] | None = None,
        password: str | None = None,
        disabled: bool | None = None,
    ) -> UserInfo:
        """Change what is given: `groups` replaces the groups; `disabled` stops (or allows) sign-ins."""
        body = _present(role=role, groups=groups, password=password, disabled=disabled)
        return cast(UserInfo, self._json("PATCH", f"/api/v1/users/{user_id:d}", json=body))

    def delete_user(self, user_id: int) -> None:
        """Delete the account and revoke its tokens."""
        self._send("DELETE", f"/api/v1/users/{user_id:d}")

    def groups(self) -> list[GroupInfo]:
        """Every group (admins only)."""
        return cast(list[GroupInfo], self._json("GET", "/api/v1/groups")["groups"])

    def group(self, group_id: int) -> GroupInfo:
        return cast(GroupInfo, self._json("GET", f"/api/v1/groups/{group_id:d}"))

    def create_group(self, path: str) -> GroupInfo:
        """Create a group named by its full path, such as `/team/users`."""
        return cast(GroupInfo, self._json("POST", "/api/v1/groups", json={"path": path}))

    def delete_group(self, group_id: int) -> None:
        self._send("DELETE", f"/api/v1/groups/{group_id:d}")

    def tokens(self, *, user: int | None = None) -> list[TokenInfo]:
        """The caller's tokens, or (admins only) those of the user with id `user`."""
        params = _present(user=user)
        return cast(list[TokenInfo], self._json("GET", "/api/v1/tokens", params=params)["tokens"])

    def create_token(
        self, name: str, *, expires_in_days: int | None = None, user: int | None = None
    ) -> NewToken:
        """Make an API token for the caller, or (admins only) for the user with id `user`; it never expires
        unless `expires_in_days` (1 to 3650) is given. The answer's `token` is the secret, shown only now."""
        body = _present(name=name, expires_in_days=expires_in_days, user=user)
        return cast(NewToken, self._json("POST", "/api/v1/tokens", json=body))

    def revoke_token(self, token_id: int) -> None:
        """Revoke a token at once; it is refused from the next request on."""
        self._send("DELETE", f"/api/v1/tokens/{token_id:d}")

    def audit(
        self,
        *,
        actor: str | None = None,
        action: str | None = None,
        target: str | None = None,
        since: datetime | str | None = None,
        before: int | None = None,
        limit: int | None = None,
    ) -> list[AuditEvent]:
        """Recorded changes, newest first (admins only): those matching every filter given, at or after
        `since`, with an id below `before` (to page back), at most `limit` (1 to 1000; the server's default
        is 100)."""
        when = since.isoformat() if isinstance(since, datetime) else since
        params = _present(actor=actor, action=action, target=target, since=when, before=before, limit=limit)
        return cast(list[AuditEvent], self._json("GET", "/api/v1/audit", params=params)["events"])

    # HTTP

    def _documents(self, path: str, documents: list[dict[str, Any]], *, dry_run: bool) -> list[ApplyResult]:
        body = {"documents": documents, "dry_run": dry_run}
        return cast(list[ApplyResult], self._json("POST", path, json=body)["results"])

    def _json(
        self, method: str, path: str, *, json: Any = None, params: Mapping[str, str | int] | None = None
    ) -> Any:
        response = self._send(method, path, json=json, params=params)
        try:
            return response.json()
        except ValueError:
            raise ApiError(
                response.status_code, "invalid_response", f"the server's answer to {path} is not JSON"
            ) from None

    def _send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        content: Iterator[bytes] | None = None,
    ) -> httpx.Response:
        try:
            response = self._http.request(
                method, path, params=params, json=json, headers=headers, content=content
            )
        except httpx.TimeoutException:
            raise ConnectionFailed(self.url, "the server did not answer in time") from None
        except httpx.TransportError as exc:
            raise ConnectionFailed(self.url, str(exc) or type(exc).__name__) from None
        if response.is_error:
            raise _api_error(response)
        return response


def _path(module: str, *parts: str) -> str:
    return "/".join(["/api/v1/modules", *(quote(p, safe="") for p in (module, *parts))])


def _present(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _chunks(data: bytes, progress: Progress | None) -> Iterator[bytes]:
    total = len(data)
    if progress:
        progress(0, total)
    for start in range(0, total, _CHUNK):
        chunk = data[start : start + _CHUNK]
        yield chunk
        if progress:
            progress(start + len(chunk), total)


def _pause(deadline: float, poll: float, timeout: WaitTimeout) -> None:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise timeout
    time.sleep(min(poll, remaining))


def _api_error(response: httpx.Response) -> ApiError:
    """The error the server described in `{"error": {...}}`, or one made from the status line; a
    `Retry-After` in seconds is added to the message."""
    status = response.status_code
    retry = response.headers.get("Retry-After", "")
    later = f"; try again in {retry} s" if retry.isdigit() else ""
    try:
        error = response.json()["error"]
        return ApiError(status, str(error["code"]), str(error["message"]) + later, error.get("details"))
    except (ValueError, KeyError, TypeError, AttributeError):
        pass
    text = " ".join(response.text.split())[:_SHOWN_BODY]
    message = f"{status} {response.reason_phrase}" + (f": {text}" if text else "")
    return ApiError(status, f"http_{status}", message + later)
