"""The platform API's answers, each described once: control returns these records, the gateway declares and
sends them (so the OpenAPI document derives from them), and the client parses the JSON back into them.

Records are frozen and ignore fields they do not know, so that an older client still reads a newer server's
answers. Times are ISO 8601 strings, as they travel.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from modelport.core.roles import Role
from modelport.core.states import BuildStatus, DeploymentStatus

__all__ = [
    "AccessToken",
    "ApplyAction",
    "ApplyResult",
    "ApplyResultList",
    "AuditEvent",
    "AuditList",
    "BucketAccess",
    "BucketInfo",
    "BucketList",
    "BuildStatus",
    "CallerInfo",
    "DeploymentInfo",
    "DeploymentStatus",
    "GroupInfo",
    "GroupList",
    "IdentitySource",
    "ModuleInfo",
    "ModuleList",
    "NewToken",
    "ObjectInfo",
    "ObjectListing",
    "PresignMethod",
    "PresignedUrl",
    "Record",
    "Role",
    "RolloutInfo",
    "RolloutStatus",
    "ServingInfo",
    "ServingRole",
    "TokenInfo",
    "TokenKind",
    "TokenList",
    "UserInfo",
    "UserList",
    "VersionDetail",
    "VersionInfo",
    "VersionList",
]

ServingRole = Literal["active", "canary", "previous"]
RolloutStatus = Literal["progressing", "failed"]
ApplyAction = Literal["created", "configured", "unchanged", "deleted"]
IdentitySource = Literal["local", "oidc"]
TokenKind = Literal["api", "session"]
BucketAccess = Literal["read", "write"]
PresignMethod = Literal["GET", "PUT"]


class Record(BaseModel):
    """The base of every record: immutable, and blind to fields added after it was written."""

    model_config = ConfigDict(frozen=True, extra="ignore")


# Modules, versions and deployments


class ServingInfo(Record):
    """Workers serving one version of a module."""

    version: str
    role: ServingRole
    workers: int
    ready: bool


class RolloutInfo(Record):
    """A version on its way to taking calls (`progressing`), or one whose rollout failed (`failed`, with
    why in `message`) while the deployment went on as it was."""

    version: str
    status: RolloutStatus
    message: str


class DeploymentInfo(Record):
    """What a module should serve (`target_version`, `generation`) and what it does (`version`, `serving`).

    `status` says where the deployment stands: `progressing` while a change is carried out, then `ready`
    when its active version serves, `failed` when none does. A new version that fails to build, start or
    warm up leaves the active version serving: the deployment is `ready` and `rollout` says which version
    failed and why, until the next change.
    """

    module: str
    version: str | None
    target_version: str | None
    previous_version: str | None
    canary_version: str | None
    canary_percent: int
    replicas: int
    generation: int
    observed_generation: int
    status: DeploymentStatus
    message: str
    updated_at: str | None
    serving: list[ServingInfo]
    rollout: RolloutInfo | None = None


class ModuleInfo(Record):
    """A module, its deployment (None before the first deploy) and how many versions it has."""

    name: str
    owner: str | None
    created_at: str
    deployment: DeploymentInfo | None
    versions: int


class ModuleList(Record):
    """The modules the caller may manage, by name."""

    modules: list[ModuleInfo]


class VersionInfo(Record):
    """A pushed version and the state of its build."""

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


class VersionDetail(VersionInfo):
    """One version asked for by name: its info, its parsed API (`spec`) and its manifest."""

    spec: dict[str, Any]
    manifest: dict[str, Any]


class VersionList(Record):
    """A module's versions, newest first."""

    versions: list[VersionInfo]


class ApplyResult(Record):
    """What applying (or deleting) one manifest document did, or would do on a dry run."""

    kind: str
    name: str
    action: ApplyAction
    diff: str
    message: str = ""
    """What else applying it does, in words: `scaled to 2 replicas` when a module's deployment is scaled."""


class ApplyResultList(Record):
    """One result per object the documents name, in document order."""

    results: list[ApplyResult]


# Identity


class AccessToken(Record):
    """A short-lived bearer token, given for a user name and password."""

    access_token: str
    token_type: Literal["bearer"]
    expires_in: int
    expires_at: str


class CallerInfo(Record):
    """Who the token belongs to; `token_id` is None for a caller not signed in with a stored token."""

    id: int
    name: str
    role: Role
    groups: list[str]
    source: IdentitySource
    token_id: int | None


class UserInfo(Record):
    """An account: a local one (with or without a password) or one recorded at its first OIDC sign-in."""

    id: int
    name: str
    role: Role
    groups: list[str]
    source: IdentitySource
    disabled: bool
    created_at: str
    last_login_at: str | None


class UserList(Record):
    """Every account, by id."""

    users: list[UserInfo]


class GroupInfo(Record):
    """A group, named by its full path (`/team/users`), and the names of its members."""

    id: int
    path: str
    members: list[str]
    created_at: str


class GroupList(Record):
    """Every group, by path."""

    groups: list[GroupInfo]


class TokenInfo(Record):
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

    token: str = Field(description="The token's secret: shown this once, never again.")


class TokenList(Record):
    """Tokens, by id."""

    tokens: list[TokenInfo]


class AuditEvent(Record):
    """One recorded change: who (`actor`) did what (`action`) to what (`target`), from where, and when."""

    id: int
    at: str
    actor: str
    action: str
    target: str
    client: str | None
    request_id: str | None
    details: dict[str, Any]


class AuditList(Record):
    """Audit events, newest first."""

    events: list[AuditEvent]


# Storage


class BucketInfo(Record):
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


class BucketList(Record):
    """The buckets the caller may use, by name."""

    buckets: list[BucketInfo]


class ObjectInfo(Record):
    """A stored object; `sha256` (hex) is None for objects written around modelport, `modified` ISO 8601."""

    key: str
    size: int
    etag: str
    content_type: str
    modified: str
    sha256: str | None


class ObjectListing(Record):
    """One page of a bucket's objects in key order; with a delimiter, `prefixes` holds the "directories".

    `next_cursor` is passed back as `cursor` for the next page; None on the last one.
    """

    bucket: str
    prefix: str
    objects: list[ObjectInfo]
    prefixes: list[str]
    next_cursor: str | None


class PresignedUrl(Record):
    """A URL that lets whoever holds it `method` one object, without a token, until `expires_at`."""

    url: str
    method: PresignMethod
    expires_at: str
    size: int | None = None
    """The exact size a `PUT` URL uploads (sent as `Content-Length`)."""
