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
    "AuthConfig",
    "BucketAccess",
    "BucketInfo",
    "BucketList",
    "BuildStatus",
    "CallerInfo",
    "DeploymentInfo",
    "DeploymentStatus",
    "DriftFeature",
    "DriftReferenceInfo",
    "DriftReport",
    "DriftVerdict",
    "DriftWindow",
    "FeatureKind",
    "FeatureSummary",
    "GroupInfo",
    "GroupList",
    "HistoryList",
    "IdentitySource",
    "JobError",
    "JobEvent",
    "JobInfo",
    "JobKind",
    "JobList",
    "JobProgress",
    "JobStatus",
    "LatencyQuantiles",
    "LatencyStats",
    "LogGap",
    "LogLine",
    "LogLines",
    "LogStream",
    "ModuleEventKind",
    "ModuleEventRecord",
    "ModuleInfo",
    "ModuleList",
    "ModuleStats",
    "NewToken",
    "ObjectInfo",
    "ObjectListing",
    "OidcClient",
    "PipelineInfo",
    "PipelineList",
    "PipelineStepInfo",
    "PresignMethod",
    "PresignedUrl",
    "Record",
    "RequestDetail",
    "RequestList",
    "RequestRecord",
    "Role",
    "RolloutInfo",
    "RolloutStatus",
    "SeriesLatency",
    "ServingInfo",
    "ServingRole",
    "StatsPoint",
    "TokenInfo",
    "TokenKind",
    "TokenList",
    "UserInfo",
    "UserList",
    "VersionDetail",
    "VersionInfo",
    "VersionList",
    "WebhookAttempt",
    "WebhookAttemptList",
    "WebhookSecret",
]

ServingRole = Literal["active", "canary", "previous"]
RolloutStatus = Literal["progressing", "failed"]
ApplyAction = Literal["created", "configured", "unchanged", "deleted"]
IdentitySource = Literal["local", "oidc"]
TokenKind = Literal["api", "session", "console"]
BucketAccess = Literal["read", "write"]
PresignMethod = Literal["GET", "PUT"]
DriftVerdict = Literal["ok", "drift", "insufficient_data"]
FeatureKind = Literal["numeric", "categorical"]
LogStream = Literal["stdout", "stderr", "modelport"]
JobStatus = Literal["queued", "running", "succeeded", "failed", "canceled"]
JobKind = Literal["job", "batch", "pipeline"]
"""A prediction of a module, a batch of them, or a call of a pipeline (its `module` is the pipeline)."""
JobEvent = Literal["started", "completed"]
ModuleEventKind = Literal[
    "push", "build", "deploy", "switch", "canary", "rollback", "scale", "failure", "delete"
]


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


class ModuleEventRecord(Record):
    """One entry of a module's publication history: what happened (`kind`), to which version (`version`,
    coming from `from_version` for a deploy, switch, rollback or canary), by whom, how it ended (`outcome`:
    `succeeded` or `failed` for a build and a switch), how long it took (`seconds`: a build's duration, a
    switch's time from the request to the new version taking calls), and the rest in `details`."""

    id: int
    module: str
    at: str
    kind: ModuleEventKind
    version: str | None
    from_version: str | None
    actor: str | None
    outcome: str | None
    seconds: float | None
    details: dict[str, Any]


class HistoryList(Record):
    """One page of a module's publication history, newest first; `next_cursor` is passed back as `cursor`
    for the older events (None on the last page)."""

    events: list[ModuleEventRecord]
    next_cursor: str | None


# Worker logs


class LogLine(Record):
    """One line of a module's worker logs: when it was written (ISO 8601, UTC, milliseconds), by which
    version and replica, on which stream (`modelport` for what the platform says about the workers), and for
    which requests (the ids of the calls the worker was serving when it printed the line)."""

    time: str
    version: str
    replica: int
    stream: LogStream
    request_ids: list[str]
    line: str


class LogLines(Record):
    """Worker log lines, oldest first."""

    lines: list[LogLine]


class LogGap(Record):
    """In a followed log: `dropped` lines were lost here because the follower read more slowly than the
    workers printed."""

    dropped: int


# Identity


class AccessToken(Record):
    """A short-lived bearer token, given for a user name and password."""

    access_token: str
    token_type: Literal["bearer"]
    expires_in: int
    expires_at: str


class OidcClient(Record):
    """The OpenID Connect provider and the public client (authorization code with PKCE) that browser
    applications sign in with; the access tokens they get are what the platform accepts."""

    issuer: str
    client_id: str


class AuthConfig(Record):
    """How a browser application signs in to this platform: through `oidc`, or, where that is None, with a
    modelport token (`mp_...`)."""

    oidc: OidcClient | None


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


# The request log


class RequestRecord(Record):
    """One answered call of a module, as the request log keeps it: its ids (`id` is the answer's
    `X-Request-Id`, `trace_id` the W3C trace), who made it, what it got (`status`, `code`), where its time
    went (milliseconds: `total_ms` from arrival to answer, `queue_ms` waiting for a worker, `compute_ms` of
    the batch that answered it), the batch (`batch_size` records, `records` of them its own), the bytes in
    and out, and `payload_key`, the request-bucket object holding its payload when it was captured."""

    id: str
    trace_id: str
    at: str
    kind: str
    module: str
    version: str
    replica: int | None
    caller: str
    caller_id: int | None
    client: str | None
    status: int
    code: str | None
    total_ms: float
    queue_ms: float
    compute_ms: float
    batch_size: int
    records: int
    request_bytes: int
    response_bytes: int
    model_key: str | None
    payload_key: str | None
    parent_id: str | None = None
    """A pipeline step's call (`kind` `pipeline`): the request id of the pipeline call it was part of."""
    pipeline: str | None = None
    step: str | None = None


class RequestList(Record):
    """One page of the calls the caller may see, newest first; `next_cursor` is passed back as `cursor` for
    the older ones (None on the last page)."""

    requests: list[RequestRecord]
    next_cursor: str | None


class RequestDetail(RequestRecord):
    """One call with its captured payload (`inputs`, `parameters`, `outputs`, `uploads`, redacted as the
    module's `Api` says; None when it was not captured or is no longer kept) and where its log lines are."""

    payload: dict[str, Any] | None
    logs_url: str


# Statistics


class LatencyQuantiles(Record):
    """Latency percentiles in milliseconds, each within 1 % of the true value (None: no call measured)."""

    p50: float | None
    p90: float | None
    p95: float | None
    p99: float | None


class LatencyStats(LatencyQuantiles):
    """The whole call's percentiles (at the top, and again as `total`), with those of the wait for a
    worker (`queue`: calls that reached a queue) and of the computation (`compute`: calls a worker ran)."""

    total: LatencyQuantiles
    queue: LatencyQuantiles
    compute: LatencyQuantiles


class SeriesLatency(Record):
    """One point's whole-call latency percentiles in milliseconds (None: no calls in it)."""

    p50: float | None
    p95: float | None
    p99: float | None


class StatsPoint(Record):
    """One step of a series, from `start` (ISO 8601, UTC): a step without calls has zero counts."""

    start: str
    calls: int
    errors: int
    throughput_rps: float
    """Calls a second over the step (over its elapsed part, for the current one)."""
    latency_ms: SeriesLatency


class ModuleStats(Record):
    """A module's calls over `window` (all versions, or `version`): totals, then `series` in `step`s, the
    last one holding now. `errors` are calls answered 5xx; `codes` counts calls by error code (`ok` for
    answers without one); `batch_sizes` counts the calls a worker ran by the size of their batch; `kinds`
    counts calls by kind (`sync`, `job`: a run of a job, `batch`: a request of a batch)."""

    module: str
    version: str | None
    window: str
    step: str
    calls: int
    errors: int
    error_rate: float
    throughput_rps: float
    request_bytes: int
    response_bytes: int
    codes: dict[str, int]
    batch_sizes: dict[str, int]
    kinds: dict[str, int] = Field(default_factory=dict)
    latency_ms: LatencyStats
    series: list[StatsPoint]


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


# Drift


class FeatureSummary(Record):
    """What one feature's values look like: how many there are and, for numbers, their mean, median and
    range, or, for categories, the share of the most common ones (at most 10, the largest first)."""

    count: int
    mean: float | None
    median: float | None
    min: float | None
    max: float | None
    shares: dict[str, float] | None


class DriftFeature(Record):
    """One feature compared: its PSI against the reference (and, for numbers, the two-sample KS statistic
    and its p-value), what the values look like on each side, and whether it drifts."""

    name: str
    kind: FeatureKind
    psi: float | None
    ks: float | None
    p_value: float | None
    verdict: DriftVerdict
    reference_summary: FeatureSummary
    recent_summary: FeatureSummary


class DriftReferenceInfo(Record):
    """Where the reference comes from (`first-calls`, or the `bucket/key` of a JSONL object), how many
    calls it holds (0 until it is taken), how many it needs, and why there is none yet (`message`)."""

    source: str
    calls: int
    needed: int
    message: str | None


class DriftWindow(Record):
    """The recent calls compared with the reference: how many, how many a verdict needs, and when the
    oldest of them arrived."""

    calls: int
    needed: int
    since: str | None


class DriftReport(Record):
    """A module version's recent calls against its reference: `drift` when any feature drifts,
    `insufficient_data` while the reference or the window is not complete yet."""

    module: str
    version: str
    threshold: float
    reference: DriftReferenceInfo
    window: DriftWindow
    verdict: DriftVerdict
    features: list[DriftFeature]


# Jobs, batches and webhooks


class JobError(Record):
    """Why a job failed (or was canceled): the error's stable `code`, its message and details, as a
    synchronous call would have answered them, with the HTTP `status` it would have had."""

    code: str
    message: str
    status: int
    details: Any = None


class JobProgress(Record):
    """How far a batch has got: records `done` of `total` (None until the input is counted), of them
    `failed`, the rate of this run in records per second, the estimated seconds left, and the results
    parts written."""

    done: int
    total: int | None
    failed: int
    rate: float | None
    eta_seconds: float | None
    parts: int | None = None


class JobInfo(Record):
    """One asynchronous job (`kind` `job`: one prediction; `batch`: a file of records). `version` is the
    version it is pinned to (None: the active one when it runs), `served_version` the one that ran it.
    `attempts` counts runs started; `run_at` is when a queued job may run next (after a retryable
    failure, a backoff). A job that `succeeded` has `outputs` shaped like a synchronous answer's (one
    record or a list); file outputs are stored objects. `webhook` is where its events go, when it has one."""

    id: str
    kind: JobKind
    module: str
    version: str | None
    served_version: str | None
    status: JobStatus
    caller: str
    created_at: str
    started_at: str | None
    finished_at: str | None
    run_at: str | None
    expires_at: str | None
    attempts: int
    max_attempts: int
    outputs: Any = None
    error: JobError | None = None
    progress: JobProgress | None = None
    webhook: str | None = None
    webhook_events_filter: list[JobEvent] = Field(default_factory=list)
    request_id: str | None = None
    """The request-log id of the job's last run."""
    output: str | None = None
    """A batch's results: the `bucket/prefix` its JSON Lines parts are written under."""


class JobList(Record):
    """One page of the jobs the caller may see, newest first; pass `next_cursor` back as `cursor`."""

    jobs: list[JobInfo]
    next_cursor: str | None


class WebhookAttempt(Record):
    """One attempt to deliver a job's event: the Standard Webhooks message id (`webhook-id`, the same for
    every attempt of one event), when, where, the receiver's status (None: no answer), the error when it
    failed, how long it took, and whether the event was delivered by it."""

    message_id: str
    event: str
    attempt: int
    at: str
    url: str
    status: int | None
    error: str | None
    duration_ms: float
    delivered: bool


class WebhookAttemptList(Record):
    """Every delivery attempt of a job's events, oldest first, and the events still waiting to be
    delivered (`pending`) with when their next attempt is due."""

    attempts: list[WebhookAttempt]
    pending: list[dict[str, Any]]


class WebhookSecret(Record):
    """The caller's webhook signing secret (`whsec_…`, in the Standard Webhooks format): shown once, when it
    is made or rotated; afterwards only `created_at` is told and `secret` is None."""

    secret: str | None
    created_at: str


# Pipelines


class PipelineStepInfo(Record):
    """One step of a pipeline: the module it calls, the version it is pinned to (None: the active one), the
    version that runs it now, and `problem`, why it cannot run (None: it can)."""

    name: str
    module: str
    version: str | None
    serving: str | None
    needs: list[str]
    problem: str | None


class PipelineInfo(Record):
    """A pipeline the caller may call: `ready` when every step can run now; `inputs`, `parameters` and
    `outputs` name its API's fields (empty when it cannot run); `manifest` is its stored manifest."""

    name: str
    owner: str | None
    ready: bool
    steps: list[PipelineStepInfo]
    inputs: list[str]
    parameters: list[str]
    outputs: list[str]
    manifest: dict[str, Any]


class PipelineList(Record):
    pipelines: list[PipelineInfo]
