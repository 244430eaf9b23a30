"""`Client`: the platform's HTTP API (`/api/v1`) as typed Python calls, synchronous, over httpx.

Every call sends the bearer token (`exchange_password`, which gets one, sends none); an error status raises
`ApiError` with the server's stable code, and a server that cannot be reached raises `ConnectionFailed` naming
the URL. Passwords go only into request bodies, never into an error's message.
"""

from __future__ import annotations

import hashlib
import json
import mimetypes
import os
import secrets
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Literal, Self, TypeVar
from urllib.parse import quote

import httpx
from pydantic import ValidationError

from modelport.client.errors import ApiError, ConnectionFailed, TransferFailed, WaitTimeout
from modelport.core.records import (
    AccessToken,
    ApplyResult,
    ApplyResultList,
    AuditEvent,
    AuditList,
    AuthConfig,
    BucketInfo,
    BucketList,
    CallerInfo,
    DeploymentInfo,
    DriftReport,
    GroupInfo,
    GroupList,
    HistoryList,
    JobInfo,
    JobList,
    LogGap,
    LogLine,
    LogLines,
    ModuleInfo,
    ModuleList,
    ModuleStats,
    NewToken,
    ObjectInfo,
    ObjectListing,
    PipelineInfo,
    PipelineList,
    PresignedUrl,
    PresignMethod,
    Record,
    RequestDetail,
    RequestList,
    TokenInfo,
    TokenList,
    UserInfo,
    UserList,
    VersionDetail,
    VersionInfo,
    VersionList,
    WebhookAttemptList,
    WebhookSecret,
)
from modelport.core.roles import Role

__all__ = ["DEFAULT_TIMEOUT", "Client", "Progress", "Pushed"]

DEFAULT_TIMEOUT = 30.0
"""Seconds to wait for a connection, or for each read or write on it (not for a whole call)."""

Progress = Callable[[int, int], None]
"""Told `(bytes_moved, total)` as an upload or a download goes."""

_TRANSFER_READ_TIMEOUT = 300.0
"""Seconds an object transfer waits for the server's next bytes (at least): once an upload's last byte is
sent the server may still be storing it, and a store behind the server may be slow to start a download."""

_CHUNK = 64 * 1024
_FILE_CHUNK = 1 << 20
_ENCODED_TYPES = {"gzip": "application/gzip", "bzip2": "application/x-bzip2", "xz": "application/x-xz"}
_SHOWN_BODY = 200
_SETTLED_BUILD = ("ready", "failed")
_SETTLED_ROLLOUT = ("ready", "failed")
_FINISHED_JOB = ("succeeded", "failed", "canceled")

_R = TypeVar("_R", bound=Record)


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
        self._transfer_timeout = httpx.Timeout(timeout, read=max(timeout, _TRANSFER_READ_TIMEOUT))
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
        return self._record(ModuleList, "GET", "/api/v1/modules").modules

    def module(self, module: str) -> ModuleInfo:
        return self._record(ModuleInfo, "GET", _path(module))

    def versions(self, module: str) -> list[VersionInfo]:
        """The module's versions, newest first."""
        return self._record(VersionList, "GET", _path(module, "versions")).versions

    def version(self, module: str, version: str) -> VersionDetail:
        """One version, with its parsed API (`spec`) and its manifest."""
        return self._record(VersionDetail, "GET", _path(module, "versions", version))

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
        return Pushed(version=_parse(VersionInfo, response), created=response.status_code == 201)

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
        return self._record(DeploymentInfo, "POST", _path(module, "deploy"), json=body)

    def rollback(self, module: str) -> DeploymentInfo:
        """Roll back to the previous version (`ApiError` code `no_previous_version` when there is none)."""
        return self._record(DeploymentInfo, "POST", _path(module, "rollback"))

    def build_log(self, module: str, version: str) -> str:
        """The whole build log of `version`."""
        return self._send("GET", _path(module, "logs"), params={"build": version}).text

    def logs(
        self,
        module: str,
        *,
        version: str | None = None,
        replica: int | None = None,
        since: str | datetime | None = None,
        tail: int = 200,
        request_id: str | None = None,
    ) -> list[LogLine]:
        """The last `tail` lines of the module's worker logs, oldest first; only those of `version`, of
        `replica`, written since `since` (a time, or a span before now such as `10m`), printed for the request
        `request_id`, when given."""
        params = _log_query(version, replica, since, tail, request_id)
        return self._record(LogLines, "GET", _path(module, "logs"), params=params).lines

    def follow_logs(
        self,
        module: str,
        *,
        version: str | None = None,
        replica: int | None = None,
        since: str | datetime | None = None,
        tail: int = 200,
        request_id: str | None = None,
    ) -> Iterator[LogLine | LogGap]:
        """The lines `logs` gives, then each new one as the workers print it, until the server stops or the
        iterator is closed; a `LogGap` says where lines were lost because they were read too slowly. The
        server comments every 15 seconds while nothing happens, so a quiet log does not time out."""
        params = {**_log_query(version, replica, since, tail, request_id), "follow": "true"}
        headers = {"Accept": "text/event-stream"}
        with self._stream("GET", _path(module, "logs"), params=params, headers=headers) as response:
            yield from _log_events(response.iter_lines())

    # Statistics

    def stats(
        self, module: str, *, window: str = "1h", step: str = "1m", version: str | None = None
    ) -> ModuleStats:
        """The module's calls over the last `window` (5m, 1h, 24h, 7d, 30d), with a series in `step`s (1m,
        5m, 1h); only `version`'s calls when given. `ApiError` 422 names the field when the step does not
        divide the window or makes more than 10080 points."""
        params = _present(window=window, step=step, version=version)
        return self._record(ModuleStats, "GET", _path(module, "stats"), params=params)

    # History

    def history(
        self,
        module: str,
        *,
        kinds: Sequence[str] | None = None,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> HistoryList:
        """One page of the module's publication history, newest first: events of the `kinds` given (push,
        build, deploy, switch, canary, rollback, scale, failure, delete), at or after `since`, before `until`,
        at most `limit` (1 to 1000; the server's default is 100). Pass the page's `next_cursor` as `cursor`
        for the older events."""
        start = since.isoformat() if isinstance(since, datetime) else since
        end = until.isoformat() if isinstance(until, datetime) else until
        kind = ",".join(kinds) if kinds else None
        params = _present(kind=kind, since=start, until=end, limit=limit, cursor=cursor)
        return self._record(HistoryList, "GET", _path(module, "history"), params=params)

    # Drift

    def drift(self, module: str, *, version: str | None = None) -> DriftReport:
        """The module's recent calls against its reference, feature by feature, with a verdict (`ok`,
        `drift`, `insufficient_data`); `version`'s when given, else the active version's."""
        return self._record(DriftReport, "GET", _path(module, "drift"), params=_present(version=version))

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
            if info.build_status in _SETTLED_BUILD:
                return info
            status = info.build_status
            message = f"the build of {module} {version} did not finish within {timeout:g} s (it is {status})"
            _pause(deadline, poll, WaitTimeout(message, info))

    def wait_deployment(
        self, module: str, generation: int, *, timeout: float, poll: float = 0.25
    ) -> DeploymentInfo:
        """Poll until the deployment has seen `generation` and settled (`ready` or `failed`). A new version
        that failed to roll out while the active one kept serving settles `ready`, with `rollout` failed.

        `WaitTimeout` (with the deployment last seen) if that takes longer than `timeout` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            deployment = self.module(module).deployment
            if (
                deployment is not None
                and deployment.observed_generation >= generation
                and deployment.status in _SETTLED_ROLLOUT
            ):
                return deployment
            message = f"the rollout of {module} did not finish within {timeout:g} s"
            if deployment is not None and deployment.message:
                message += f": {deployment.message}"
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
            return anonymous._record(AccessToken, "POST", "/api/v1/auth/token", json=body)

    def auth_config(self) -> AuthConfig:
        """How browser applications sign in to this server: its OpenID Connect issuer and public client, or
        `oidc` None (sign in with a token)."""
        return self._record(AuthConfig, "GET", "/api/v1/auth/config")

    def me(self) -> CallerInfo:
        """Who the token belongs to: name, role, groups, and the token's own id."""
        return self._record(CallerInfo, "GET", "/api/v1/auth/me")

    def users(self) -> list[UserInfo]:
        """Every account (admins only)."""
        return self._record(UserList, "GET", "/api/v1/users").users

    def user(self, user_id: int) -> UserInfo:
        return self._record(UserInfo, "GET", f"/api/v1/users/{user_id:d}")

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
        return self._record(UserInfo, "POST", "/api/v1/users", json=body)

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
        return self._record(UserInfo, "PATCH", f"/api/v1/users/{user_id:d}", json=body)

    def delete_user(self, user_id: int) -> None:
        """Delete the account and revoke its tokens."""
        self._send("DELETE", f"/api/v1/users/{user_id:d}")

    def groups(self) -> list[GroupInfo]:
        """Every group (admins only)."""
        return self._record(GroupList, "GET", "/api/v1/groups").groups

    def group(self, group_id: int) -> GroupInfo:
        return self._record(GroupInfo, "GET", f"/api/v1/groups/{group_id:d}")

    def create_group(self, path: str) -> GroupInfo:
        """Create a group named by its full path, such as `/team/users`."""
        return self._record(GroupInfo, "POST", "/api/v1/groups", json={"path": path})

    def delete_group(self, group_id: int) -> None:
        self._send("DELETE", f"/api/v1/groups/{group_id:d}")

    def tokens(self, *, user: int | None = None) -> list[TokenInfo]:
        """The caller's tokens, or (admins only) those of the user with id `user`."""
        params = _present(user=user)
        return self._record(TokenList, "GET", "/api/v1/tokens", params=params).tokens

    def create_token(
        self, name: str, *, expires_in_days: int | None = None, user: int | None = None
    ) -> NewToken:
        """Make an API token for the caller, or (admins only) for the user with id `user`; it never expires
        unless `expires_in_days` (1 to 3650) is given. The answer's `token` is the secret, shown only now."""
        body = _present(name=name, expires_in_days=expires_in_days, user=user)
        return self._record(NewToken, "POST", "/api/v1/tokens", json=body)

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
        return self._record(AuditList, "GET", "/api/v1/audit", params=params).events

    # Storage

    def buckets(self) -> list[BucketInfo]:
        """The buckets the token may use, with their quotas, usage and retention."""
        return self._record(BucketList, "GET", "/api/v1/storage").buckets

    def objects(
        self,
        bucket: str,
        *,
        prefix: str = "",
        delimiter: Literal["/"] | None = None,
        cursor: str | None = None,
        limit: int = 1000,
    ) -> ObjectListing:
        """One page of the bucket's objects whose keys start with `prefix`, in key order, at most `limit`
        (1 to 1000). With `delimiter="/"` the keys holding a further `/` after the prefix are folded into
        `prefixes` (the "directories"). Pass the page's `next_cursor` as `cursor` to get the next one."""
        params = _present(prefix=prefix or None, delimiter=delimiter, cursor=cursor, limit=limit)
        return self._record(ObjectListing, "GET", _bucket_path(bucket), params=params)

    def object_pages(
        self, bucket: str, *, prefix: str = "", delimiter: Literal["/"] | None = None, limit: int = 1000
    ) -> Iterator[ObjectListing]:
        """Every page of a listing, fetched as they are consumed."""
        cursor: str | None = None
        while True:
            page = self.objects(bucket, prefix=prefix, delimiter=delimiter, cursor=cursor, limit=limit)
            yield page
            if page.next_cursor is None:
                return
            if page.next_cursor == cursor:
                raise ApiError(200, "invalid_response", f"the listing of bucket {bucket!r} does not advance")
            cursor = page.next_cursor

    def walk_objects(self, bucket: str, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object whose key starts with `prefix`, in key order, over as many pages as it takes."""
        for page in self.object_pages(bucket, prefix=prefix):
            yield from page.objects

    def upload(
        self,
        bucket: str,
        key: str,
        source: Path,
        *,
        content_type: str | None = None,
        progress: Progress | None = None,
    ) -> ObjectInfo:
        """Store the file `source` as object `key`, replacing any object of that key.

        The file is streamed in chunks, its size sent as `Content-Length`; `progress` is told
        `(bytes_sent, total)`. The content type is `content_type`, else guessed from the file's name, else
        `application/octet-stream`. A bucket without room raises `ApiError` code `quota_exceeded`; a file
        that shrinks while it is read, `TransferFailed`.
        """
        source = Path(source)
        with source.open("rb") as file:
            size = os.fstat(file.fileno()).st_size
            headers = {"Content-Type": content_type or _guess_type(source), "Content-Length": str(size)}
            response = self._send(
                "PUT",
                _object_path(bucket, key),
                headers=headers,
                content=_file_chunks(file, size, progress, source),
                timeout=self._transfer_timeout,
            )
        return _parse(ObjectInfo, response)

    def download(
        self, bucket: str, key: str, target: Path, *, progress: Progress | None = None
    ) -> ObjectInfo:
        """Save object `key` as the file `target`, whose directory must exist; returns what its headers say.

        The bytes stream into a temporary file beside `target`, which is renamed into place only once the
        download is whole and matches the SHA-256 the server sent (when it sent one); otherwise it is removed,
        `target` is left as it was, and `TransferFailed` says why. `progress` is told `(bytes_received,
        total)`.
        """
        target = Path(target)
        name = f"{bucket}/{key}"
        with self._stream("GET", _object_path(bucket, key)) as response:
            size = _length(response.headers)
            expected = response.headers.get("X-Checksum-Sha256")
            partial = target.with_name(f".{target.name[:100]}.{secrets.token_hex(4)}.part")
            try:
                with partial.open("xb") as file:
                    received, digest = _receive(response, file, size, progress, name)
                    file.flush()
                    os.fsync(file.fileno())
                if expected is not None and digest != expected.lower():
                    raise TransferFailed(
                        f"the download of {name} does not match its checksum (sha256 {digest}, expected "
                        f"{expected}); nothing was saved"
                    )
                os.replace(partial, target)
            except BaseException:
                partial.unlink(missing_ok=True)
                raise
        return _object_info(key, response.headers, received)

    def stat_object(self, bucket: str, key: str) -> ObjectInfo:
        """What the server knows of one object, without its bytes (a `HEAD`)."""
        try:
            response = self._send("HEAD", _object_path(bucket, key))
        except ApiError as exc:
            if exc.status == 404 and exc.code == "http_404":  # the answer to a HEAD has no body to say more
                raise ApiError(
                    404, "not_found", f"no object {key!r} in bucket {bucket!r} (or no such bucket)"
                ) from None
            raise
        return _object_info(key, response.headers, _length(response.headers) or 0)

    def delete_object(self, bucket: str, key: str) -> None:
        """Delete one object (`ApiError` code `object_not_found` when there is none)."""
        self._send("DELETE", _object_path(bucket, key))

    def presign(
        self,
        bucket: str,
        key: str,
        *,
        method: PresignMethod = "GET",
        expires_in: int = 3600,
        size: int | None = None,
    ) -> PresignedUrl:
        """A URL that lets whoever holds it download (`GET`) or upload (`PUT`, exactly `size` bytes) one
        object without a token, for `expires_in` seconds."""
        body: dict[str, object] = {"key": key, "method": method, "expires_in": expires_in}
        if size is not None:
            body["size"] = size
        return self._record(PresignedUrl, "POST", _bucket_path(bucket, "presign"), json=body)

    # The request log

    def requests(
        self,
        module: str | None = None,
        *,
        version: str | None = None,
        status: str | int | None = None,
        code: str | None = None,
        caller: str | None = None,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        min_latency_ms: float | None = None,
        pipeline: str | None = None,
        parent: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> RequestList:
        """One page of the calls the token may see, newest first: of `module` (all it may see when None),
        matching each filter given. `status` is a status (200) or a class (`5xx`); `since` and `until` are
        times or spans before now (`30m`, `1h`, `7d`); at most `limit` (1 to 1000; the server's default is
        100); `pipeline` and `parent` (a pipeline call's request id) give the steps of pipeline calls. Pass
        the page's `next_cursor` as `cursor` for the older calls."""
        params = _present(
            module=module,
            version=version,
            status=str(status) if status is not None else None,
            code=code,
            caller=caller,
            since=since.isoformat() if isinstance(since, datetime) else since,
            until=until.isoformat() if isinstance(until, datetime) else until,
            min_latency_ms=str(min_latency_ms) if min_latency_ms is not None else None,
            pipeline=pipeline,
            parent=parent,
            limit=limit,
            cursor=cursor,
        )
        return self._record(RequestList, "GET", "/api/v1/requests", params=params)

    def request(self, request_id: str) -> RequestDetail:
        """One call (its `X-Request-Id`), with its captured payload and where its log lines are."""
        return self._record(RequestDetail, "GET", f"/api/v1/requests/{quote(request_id, safe='')}")

    # Jobs and batches

    def submit_job(
        self,
        module: str,
        inputs: Mapping[str, Any] | None = None,
        *,
        parameters: Mapping[str, Any] | None = None,
        files: Mapping[str, Path] | None = None,
        output_fields: Sequence[str] | None = None,
        model_key: str | None = None,
        version: str | None = None,
        webhook: str | None = None,
        webhook_events: Sequence[str] | None = None,
        idempotency_key: str | None = None,
        pipeline: bool = False,
    ) -> JobInfo:
        """Queue one prediction of `module` (of the pipeline of that name, with `pipeline`) and return the job
        as queued; `wait_job` follows it.

        The request is a predict call's: JSON, or, when `files` (input name → path) is given, even empty, a
        multipart form whose text values the server reads by their declared types (as it reads `modelport
        predict`'s `-i` and `-p`). `version` pins the job to one version (else the active one when it runs).
        `webhook` is told of the `webhook_events` (`started`, `completed`; the server's default:
        `completed`). The same `idempotency_key` with the same request gives back the job it made
        (`ApiError` `idempotency_conflict` with another request).
        """
        body = _job_body(inputs, parameters, output_fields, model_key, webhook, webhook_events)
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key is not None else None
        with ExitStack() as opened:
            parts = None if files is None else _form_parts(body, files, opened)
            path = _pipeline_path(module, "jobs") if pipeline else _path(module, "jobs")
            response = self._send(
                "POST",
                path,
                params=_present(version=version),
                headers=headers,
                json=None if parts else body,
                files=parts or None,
                timeout=self._transfer_timeout if files else None,
            )
        return _parse(JobInfo, response)

    def put_job(
        self,
        job_id: str,
        module: str,
        inputs: Mapping[str, Any] | None = None,
        *,
        parameters: Mapping[str, Any] | None = None,
        output_fields: Sequence[str] | None = None,
        model_key: str | None = None,
        version: str | None = None,
        webhook: str | None = None,
        webhook_events: Sequence[str] | None = None,
    ) -> JobInfo:
        """Queue a JSON job under an id of the caller's choosing, as `submit_job` does. Putting the same
        request again gives back the job already there; another request under the id is `ApiError`
        `job_exists`."""
        body = _job_body(inputs, parameters, output_fields, model_key, webhook, webhook_events)
        body |= _present(module=module, version=version)
        return self._record(JobInfo, "PUT", _job_path(job_id), json=body)

    def job(self, job_id: str, *, wait: float | None = None) -> JobInfo:
        """One job; with `wait` the server holds the answer until the job finishes or `wait` seconds pass
        (at most its `job_max_wait_seconds`: longer is `ApiError` 422)."""
        params = _present(wait=None if wait is None else _seconds(wait))
        timeout = None if wait is None else self._long_poll(wait)
        return _parse(JobInfo, self._send("GET", _job_path(job_id), params=params, timeout=timeout))

    def jobs(
        self,
        *,
        module: str | None = None,
        status: str | None = None,
        since: datetime | str | None = None,
        limit: int = 100,
        cursor: str | None = None,
        kind: str | None = None,
    ) -> JobList:
        """One page of the jobs the token may see, newest first: of `module`, in `status`, of `kind` (`job`
        or `batch`), created at or after `since` (a time, or a span before now such as `1h`), at most
        `limit`. `status` is `queued`, `running`, `succeeded`, `failed` or `canceled`. Pass the page's
        `next_cursor` as `cursor` for the older jobs."""
        when = since.isoformat() if isinstance(since, datetime) else since
        params = _present(module=module, status=status, kind=kind, since=when, limit=limit, cursor=cursor)
        return self._record(JobList, "GET", "/api/v1/jobs", params=params)

    def cancel_job(self, job_id: str) -> JobInfo:
        """Cancel a queued or running job (`ApiError` code `job_finished` once it has finished)."""
        return self._record(JobInfo, "POST", _job_path(job_id, "cancel"))

    def wait_job(self, job_id: str, *, timeout: float, poll_wait: float = 30) -> JobInfo:
        """Long-poll until the job has finished (succeeded, failed or canceled) and return it; `WaitTimeout`
        (with the job last seen) if it has not within `timeout` seconds. Each poll asks the server to hold
        its answer for up to `poll_wait` seconds."""
        deadline = time.monotonic() + timeout
        info = self.job(job_id)
        while info.status not in _FINISHED_JOB:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                message = f"job {job_id} did not finish within {timeout:g} s (it is {info.status})"
                raise WaitTimeout(message, info)
            info = self.job(job_id, wait=min(poll_wait, remaining))
        return info

    def job_deliveries(self, job_id: str) -> WebhookAttemptList:
        """Every attempt to deliver the job's webhook events, oldest first, and the events still pending."""
        return self._record(WebhookAttemptList, "GET", _job_path(job_id, "deliveries"))

    def submit_batch(
        self,
        module: str,
        *,
        input: str,
        output: str,
        parameters: Mapping[str, Any] | None = None,
        output_fields: Sequence[str] | None = None,
        model_key: str | None = None,
        webhook: str | None = None,
    ) -> JobInfo:
        """Queue a batch: every record of `input` (a JSON Lines object `bucket/key`, or every object under
        `bucket/prefix/`) through `module`, the results written as JSON Lines parts under `output`
        (`bucket/prefix/`). The job's `progress` says how far it has got."""
        body = {"input": input, "output": output}
        body |= _present(
            parameters=dict(parameters) if parameters is not None else None,
            output_fields=list(output_fields) if output_fields is not None else None,
            model_key=model_key,
            webhook=webhook,
        )
        return self._record(JobInfo, "POST", _path(module, "batches"), json=body)

    # Webhooks

    def pipelines(self) -> list[PipelineInfo]:
        """The pipelines the token may call, each step with the version it runs now."""
        return self._record(PipelineList, "GET", "/api/v1/pipelines").pipelines

    def pipeline(self, name: str) -> PipelineInfo:
        """One pipeline the token may call (`ApiError` 404 `pipeline_not_found` otherwise)."""
        return self._record(PipelineInfo, "GET", _pipeline_path(name))

    def webhook_secret(self) -> WebhookSecret:
        """When the caller's webhook signing secret was made; the secret itself is not shown again."""
        return self._record(WebhookSecret, "GET", "/api/v1/webhooks/secret")

    def rotate_webhook_secret(self) -> WebhookSecret:
        """Make the caller's webhook signing secret, or replace it; the answer holds it, shown only now."""
        return self._record(WebhookSecret, "POST", "/api/v1/webhooks/secret")

    # HTTP

    def _documents(self, path: str, documents: list[dict[str, Any]], *, dry_run: bool) -> list[ApplyResult]:
        body = {"documents": documents, "dry_run": dry_run}
        return self._record(ApplyResultList, "POST", path, json=body).results

    def _record(
        self,
        kind: type[_R],
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str | int] | None = None,
    ) -> _R:
        return _parse(kind, self._send(method, path, json=json, params=params))

    def _send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        content: Iterator[bytes] | None = None,
        files: list[tuple[str, _Part]] | None = None,
        timeout: httpx.Timeout | None = None,
    ) -> httpx.Response:
        try:
            response = self._http.request(
                method,
                path,
                params=params,
                json=json,
                headers=headers,
                content=content,
                files=files,
                timeout=timeout or httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.TimeoutException:
            raise ConnectionFailed(self.url, "the server did not answer in time") from None
        except httpx.TransportError as exc:
            raise ConnectionFailed(self.url, str(exc) or type(exc).__name__) from None
        if response.is_error:
            raise _api_error(response)
        return response

    def _long_poll(self, wait: float) -> httpx.Timeout:
        """The client's timeouts, with `wait` more seconds to read the answer the server holds back."""
        usual = self._http.timeout
        read = None if usual.read is None else usual.read + wait
        return httpx.Timeout(connect=usual.connect, read=read, write=usual.write, pool=usual.pool)

    @contextmanager
    def _stream(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Iterator[httpx.Response]:
        """A response whose body is read as it arrives, inside the `with` block; error statuses raise."""
        try:
            with self._http.stream(
                method, path, params=params, headers=headers, timeout=self._transfer_timeout
            ) as response:
                if response.is_error:
                    response.read()
                    raise _api_error(response)
                yield response
        except httpx.TimeoutException:
            raise ConnectionFailed(self.url, "the server did not answer in time") from None
        except httpx.TransportError as exc:
            raise ConnectionFailed(self.url, str(exc) or type(exc).__name__) from None


def _path(module: str, *parts: str) -> str:
    return "/".join(["/api/v1/modules", *(quote(p, safe="") for p in (module, *parts))])


def _pipeline_path(pipeline: str, *parts: str) -> str:
    return "/".join(["/api/v1/pipelines", *(quote(p, safe="") for p in (pipeline, *parts))])


def _job_path(job_id: str, *parts: str) -> str:
    return "/".join(["/api/v1/jobs", *(quote(p, safe="") for p in (job_id, *parts))])


def _bucket_path(bucket: str, *parts: str) -> str:
    if not bucket:
        raise ValueError("a bucket name is needed")
    return "/".join(["/api/v1/storage", *(quote(p, safe="") for p in (bucket, *parts))])


def _object_path(bucket: str, key: str) -> str:
    """The object's URL path, its key percent-encoded once. `.` and `..` segments are encoded too, so that
    they reach the server (which refuses them) instead of being resolved away by URL normalisation."""
    segments = (quote(s, safe="") if s not in (".", "..") else s.replace(".", "%2E") for s in key.split("/"))
    return f"{_bucket_path(bucket, 'objects')}/{'/'.join(segments)}"


def _guess_type(path: Path) -> str:
    kind, encoding = mimetypes.guess_type(path.name, strict=False)
    if encoding is not None:  # `x.tar.gz` holds gzip bytes, whatever the tar inside
        return _ENCODED_TYPES.get(encoding, "application/octet-stream")
    return kind or "application/octet-stream"


def _file_chunks(file: BinaryIO, size: int, progress: Progress | None, source: Path) -> Iterator[bytes]:
    """The first `size` bytes of `file`, as `Content-Length` announced them."""
    sent = 0
    if progress:
        progress(0, size)
    while sent < size:
        chunk = file.read(min(_FILE_CHUNK, size - sent))
        if not chunk:
            raise TransferFailed(f"{source} shrank while it was uploaded ({sent} of {_bytes(size)} read)")
        sent += len(chunk)
        yield chunk
        if progress:
            progress(sent, size)


def _receive(
    response: httpx.Response, file: BinaryIO, size: int | None, progress: Progress | None, name: str
) -> tuple[int, str]:
    """Copy the body into `file`; returns the bytes received and their SHA-256 (hex)."""
    digest = hashlib.sha256()
    received = 0
    total = size if size is not None else 0
    if progress:
        progress(0, total)
    try:
        for chunk in response.iter_bytes():
            file.write(chunk)
            digest.update(chunk)
            received += len(chunk)
            if progress:
                progress(received, max(total, received))
    except httpx.HTTPError as exc:
        got = f"{received} of {_bytes(size)}" if size is not None else _bytes(received)
        raise TransferFailed(
            f"the download of {name} was cut short after {got}: {str(exc) or type(exc).__name__}"
        ) from None
    if size is not None and received != size:
        raise TransferFailed(f"the download of {name} ended after {received} of its {_bytes(size)}")
    return received, digest.hexdigest()


def _bytes(count: int) -> str:
    return f"{count} byte" if count == 1 else f"{count} bytes"


def _length(headers: httpx.Headers) -> int | None:
    """The body's size as `Content-Length` gives it; None when it is absent or counts encoded bytes."""
    length = headers.get("Content-Length", "")
    encoded = headers.get("Content-Encoding", "identity") != "identity"
    return int(length) if length.isdigit() and not encoded else None


def _parse(kind: type[_R], response: httpx.Response) -> _R:
    """The answer as a `kind` record; `ApiError` code `invalid_response` when it is not one."""
    path = response.request.url.path
    try:
        answer = response.json()
    except ValueError:
        raise ApiError(
            response.status_code, "invalid_response", f"the server's answer to {path} is not JSON"
        ) from None
    try:
        return kind.model_validate(answer)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        message = f"the server's answer to {path} is not a {kind.__name__} ({where}: {first['msg']})"
        raise ApiError(response.status_code, "invalid_response", message) from None


def _object_info(key: str, headers: httpx.Headers, size: int) -> ObjectInfo:
    """An object as the headers of a `GET` or `HEAD` describe it."""
    return ObjectInfo(
        key=key,
        size=size,
        etag=headers.get("ETag", "").removeprefix("W/").strip('"'),
        content_type=headers.get("Content-Type", "application/octet-stream"),
        modified=_http_date(headers.get("Last-Modified")),
        sha256=headers.get("X-Checksum-Sha256"),
    )


def _http_date(value: str | None) -> str:
    """An HTTP date as ISO 8601, or "" when there is none that can be read."""
    if not value:
        return ""
    try:
        return parsedate_to_datetime(value).isoformat()
    except (TypeError, ValueError):
        return ""


def _log_query(
    version: str | None, replica: int | None, since: str | datetime | None, tail: int, request_id: str | None
) -> dict[str, str | int]:
    when = since.isoformat() if isinstance(since, datetime) else since
    return _present(version=version, replica=replica, since=when, tail=tail, request_id=request_id)


def _log_events(lines: Iterator[str]) -> Iterator[LogLine | LogGap]:
    """The records of a followed log's server-sent events: `data:` lines, the event's name before them
    (`gap` for lost lines); comments and other events are passed over."""
    event = ""
    for line in lines:
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            kind: type[LogLine | LogGap] | None = LogGap if event == "gap" else None if event else LogLine
            if kind is not None:
                try:
                    yield kind.model_validate_json(line[5:].strip())
                except ValidationError:
                    message = f"an event of the followed log is not a {kind.__name__}: {line[:_SHOWN_BODY]}"
                    raise ApiError(200, "invalid_response", message) from None
        elif not line:
            event = ""


_Part = tuple[str | None, str | BinaryIO, str | None]
"""A multipart part: its file name (None for a text field), its content, and its content type."""


def _job_body(
    inputs: Mapping[str, Any] | None,
    parameters: Mapping[str, Any] | None,
    output_fields: Sequence[str] | None,
    model_key: str | None,
    webhook: str | None,
    events: Sequence[str] | None,
) -> dict[str, Any]:
    """A job's request as JSON: a predict call's body, and where its events go."""
    return {"inputs": dict(inputs or {})} | _present(
        parameters=dict(parameters) if parameters is not None else None,
        output_fields=list(output_fields) if output_fields is not None else None,
        model_key=model_key,
        webhook=webhook,
        webhook_events_filter=list(events) if events is not None else None,
    )


def _form_parts(
    body: dict[str, Any], files: Mapping[str, Path], opened: ExitStack
) -> list[tuple[str, _Part]]:
    """The job's request as the parts of a predict form: `inputs.<name>` and `parameters.<name>` text
    fields, the `files` as `inputs.<name>` file parts (opened in `opened`), and a part per item of a list."""
    parts: list[tuple[str, _Part]] = []
    for key, value in body.items():
        if key in ("inputs", "parameters"):
            parts.extend((f"{key}.{name}", (None, _text(item), None)) for name, item in value.items())
        elif isinstance(value, list):
            parts.extend((key, (None, _text(item), None)) for item in value)
        else:
            parts.append((key, (None, _text(value), None)))
    for name, source in files.items():
        path = Path(source)
        file = opened.enter_context(path.open("rb"))
        parts.append((f"inputs.{name}", (path.name, file, _guess_type(path))))
    return parts


def _text(value: Any) -> str:
    """A form field's text: strings as they are, anything else as JSON (which the server reads back by the
    field's declared type: `3`, `true`, `[1, 2]`)."""
    return value if isinstance(value, str) else json.dumps(value)


def _seconds(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".")


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
