"""The shapes of the platform API's JSON answers, as typed dictionaries (what the client returns)."""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict

__all__ = [
    "AccessToken",
    "ApplyAction",
    "ApplyResult",
    "AuditEvent",
    "BucketAccess",
    "BucketInfo",
    "BuildStatus",
    "CallerInfo",
    "DeploymentInfo",
    "DeploymentStatus",
    "GroupInfo",
    "IdentitySource",
    "ModuleInfo",
    "NewToken",
    "ObjectInfo",
    "ObjectListing",
    "PresignMethod",
    "PresignedUrl",
    "Role",
    "ServingInfo",
    "TokenInfo",
    "TokenKind",
    "UserInfo",
    "VersionInfo",
]

BuildStatus = Literal["pending", "building", "ready", "failed"]
DeploymentStatus = Literal["pending", "progressing", "ready", "failed"]
ApplyAction = Literal["created", "configured", "unchanged", "deleted"]
Role = Literal["admin", "developer", "user"]
IdentitySource = Literal["local", "oidc"]
TokenKind = Literal["api", "session"]
BucketAccess = Literal["read", "write"]
PresignMethod = Literal["GET", "PUT"]


class ServingInfo(TypedDict):
    """Workers serving one version of a module."""

    version: str
    role: Literal["active", "canary", "previous"]
    workers: int
    ready: bool


class DeploymentInfo(TypedDict):
    """What a module should serve (`target_version`, `generation`) and what it does (`version`, `serving`)."""

    module: str
    version: str | None
    target_version: str | None
    previous_version: str | None
    canary_version: str | None
    canary_percent: int | None
    replicas: int
    generation: int
    observed_generation: int
    status: DeploymentStatus
    message: str | None
    updated_at: str | None
    serving: list[ServingInfo]


class ModuleInfo(TypedDict):
    """A module, its deployment (None before the first deploy) and how many versions it has."""

    name: str
    owner: str | None
    created_at: str
    deployment: DeploymentInfo | None
    versions: int


class VersionInfo(TypedDict):
    """A pushed version and the state of its build; `spec` and `manifest` only when one version is asked."""

    module: str
    name: str
    digest: str
    size: int
    commit: str | None
    tag: str | None
    pushed_by: str | None
    pushed_at: str
    build_status: BuildStatus
    build_error: str | None
    environment: str | None
    spec: NotRequired[dict[str, Any]]
    manifest: NotRequired[dict[str, Any]]


class ApplyResult(TypedDict):
    """What applying (or deleting) one manifest document did, or would do on a dry run."""

    kind: str
    name: str
    action: ApplyAction
    diff: str


# Identity


class AccessToken(TypedDict):
    """A short-lived bearer token, given for a user name and password."""

    access_token: str
    token_type: str
    expires_in: int
    expires_at: str


class CallerInfo(TypedDict):
    """Who the token belongs to; `token_id` is None for a caller not signed in with a stored token."""

    id: int
    name: str
    role: Role
    groups: list[str]
    source: IdentitySource
    token_id: int | None


class UserInfo(TypedDict):
    """An account: a local one (with or without a password) or one recorded at its first OIDC sign-in."""

    id: int
    name: str
    role: Role
    groups: list[str]
    source: IdentitySource
    disabled: bool
    created_at: str
    last_login_at: str | None


class GroupInfo(TypedDict):
    """A group, named by its full path (`/team/users`), and the names of its members."""

    id: int
    path: str
    members: list[str]
    created_at: str


class TokenInfo(TypedDict):
    """A stored token, known by its `prefix`; the secret itself is shown only once, by `NewToken`."""

    id: int
    name: str
    user: str
    user_id: int
    prefix: str
    kind: TokenKind
    created_at: str
    expires_at: str | None
    revoked_at: str | None


class NewToken(TokenInfo):
    """A token just created, with its secret (`token`), which the server never shows again."""

    token: str


class AuditEvent(TypedDict):
    """One recorded change: who (`actor`) did what (`action`) to what (`target`), from where, and when."""

    id: int
    at: str
    actor: str
    action: str
    target: str
    client: str | None
    request_id: str | None
    details: dict[str, Any]


# Storage


class BucketInfo(TypedDict):
    """A bucket the caller may use: its limits (None: none), what it holds, and who else may use it.

    `used_bytes` is None for the request bucket while no `Storage` manifest declares it.
    """

    name: str
    quota_bytes: int | None
    used_bytes: int | None
    retention_days: float | None
    access: BucketAccess
    groups: list[str]
    read_groups: list[str]


class ObjectInfo(TypedDict):
    """A stored object; `sha256` (hex) is None for objects written around modelport, `modified` ISO 8601."""

    key: str
    size: int
    etag: str
    content_type: str
    modified: str
    sha256: str | None


class ObjectListing(TypedDict):
    """One page of a bucket's objects in key order; with a delimiter, `prefixes` holds the "directories".

    `next_cursor` is passed back as `cursor` for the next page; None on the last one.
    """

    bucket: str
    prefix: str
    objects: list[ObjectInfo]
    prefixes: list[str]
    next_cursor: str | None


class PresignedUrl(TypedDict):
    """A URL that lets whoever holds it `method` one object, without a token, until `expires_at`."""

    url: str
    method: PresignMethod
    expires_at: str
