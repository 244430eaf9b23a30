"""The tables: modules, their immutable versions, each module's desired deployment, APIs, identity (users,
groups, API tokens, the audit trail), storage buckets, and what the platform observes (the request log,
statistics rollups, the publication history, drift samples and references), and the asynchronous half: the job
queue, webhook signing secrets, the webhook outbox and its delivery attempts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from modelport.core.roles import Role
from modelport.core.states import BuildStatus

__all__ = [
    "ApiDefinition",
    "ApiToken",
    "AuditEvent",
    "Base",
    "Bucket",
    "Deployment",
    "DriftReference",
    "DriftSample",
    "Group",
    "IdentityRevision",
    "Job",
    "Module",
    "ModuleEvent",
    "RequestLogEntry",
    "ServerKey",
    "StatsRollup",
    "User",
    "Version",
    "WebhookDelivery",
    "WebhookMessage",
    "WebhookSecret",
    "utcnow",
]


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """Timestamps stored in UTC and read back timezone-aware, on SQLite (which keeps no zone) too."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("timestamps must be timezone-aware")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, datetime: UtcDateTime}


class Module(Base):
    """A named module; its versions and deployment hang off it."""

    __tablename__ = "modules"

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    owner: Mapped[str | None] = mapped_column(String(255))
    manifest: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    versions: Mapped[list[Version]] = relationship(back_populates="module", cascade="all, delete-orphan")
    deployment: Mapped[Deployment | None] = relationship(
        back_populates="module", cascade="all, delete-orphan"
    )


class Version(Base):
    """An immutable, content-addressed artifact of a module, and the outcome of its build."""

    __tablename__ = "versions"
    __table_args__ = (UniqueConstraint("module_name", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    module_name: Mapped[str] = mapped_column(ForeignKey("modules.name", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    digest: Mapped[str] = mapped_column(String(71))
    size: Mapped[int] = mapped_column(Integer)
    commit: Mapped[str | None] = mapped_column(String(64))
    tag: Mapped[str | None] = mapped_column(String(255))
    pushed_by: Mapped[str | None] = mapped_column(String(255))
    pushed_at: Mapped[datetime] = mapped_column(default=utcnow)
    spec: Mapped[dict[str, Any]] = mapped_column(default=dict)
    manifest: Mapped[dict[str, Any]] = mapped_column(default=dict)
    build_status: Mapped[BuildStatus] = mapped_column(
        Enum(BuildStatus, native_enum=False, length=16, values_callable=lambda e: [m.value for m in e]),
        default=BuildStatus.PENDING,
    )
    build_log: Mapped[str] = mapped_column(Text, default="")
    build_error: Mapped[str | None] = mapped_column(Text)
    environment: Mapped[str | None] = mapped_column(String(128))

    module: Mapped[Module] = relationship(back_populates="versions")


class Deployment(Base):
    """The desired state of a module; a reconciler makes the running replicas match it."""

    __tablename__ = "deployments"

    module_name: Mapped[str] = mapped_column(ForeignKey("modules.name", ondelete="CASCADE"), primary_key=True)
    active_version: Mapped[str | None] = mapped_column(String(64))
    target_version: Mapped[str | None] = mapped_column(String(64))
    previous_version: Mapped[str | None] = mapped_column(String(64))
    canary_version: Mapped[str | None] = mapped_column(String(64))
    canary_percent: Mapped[int] = mapped_column(Integer, default=0)
    replicas: Mapped[int] = mapped_column(Integer, default=1)
    generation: Mapped[int] = mapped_column(Integer, default=0)
    observed_generation: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(32), default="pending")
    message: Mapped[str] = mapped_column(Text, default="")
    failed_version: Mapped[str | None] = mapped_column(String(64))
    """The version whose rollout in this generation failed (its target or canary), and why (`failure`)."""
    failure: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    module: Mapped[Module] = relationship(back_populates="deployment")


class ApiDefinition(Base):
    """An applied `Api` manifest: the public face of a module or of a pipeline (one of the two is set)."""

    __tablename__ = "apis"

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    module_name: Mapped[str | None] = mapped_column(
        ForeignKey("modules.name", ondelete="CASCADE"), index=True
    )
    pipeline_name: Mapped[str | None] = mapped_column(
        ForeignKey("pipelines.name", ondelete="CASCADE"), index=True
    )
    manifest: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class PipelineDefinition(Base):
    """An applied `Pipeline` manifest: a graph of module calls served like a module."""

    __tablename__ = "pipelines"

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    owner: Mapped[str | None] = mapped_column(String(255))
    manifest: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


memberships = Table(
    "memberships",
    Base.metadata,
    Column("user_id", ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("group_id", ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True, index=True),
)


class User(Base):
    """A person or service: a local account (Argon2id password hash) or an OIDC subject seen once."""

    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("issuer", "subject"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    role: Mapped[Role] = mapped_column(
        Enum(Role, native_enum=False, length=16, values_callable=lambda e: [m.value for m in e])
    )
    password_hash: Mapped[str | None] = mapped_column(String(255))
    issuer: Mapped[str | None] = mapped_column(String(512))
    subject: Mapped[str | None] = mapped_column(String(255))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column()

    groups: Mapped[list[Group]] = relationship(secondary=memberships, back_populates="members")
    tokens: Mapped[list[ApiToken]] = relationship(back_populates="user", cascade="all, delete-orphan")


class Group(Base):
    """A group, named by its full path (`/team/users`), as Keycloak names them."""

    __tablename__ = "groups"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    path: Mapped[str] = mapped_column(String(255), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    members: Mapped[list[User]] = relationship(secondary=memberships, back_populates="groups")


class ApiToken(Base):
    """A bearer token of one user, stored only as a digest of its secret; `kind` is `api` (made on
    purpose, long-lived), `session` (handed out for a password, short-lived) or `console` (a web console
    session, revoked when it signs out)."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(16), default="api")
    prefix: Mapped[str] = mapped_column(String(32), index=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column()

    user: Mapped[User] = relationship(back_populates="tokens")


class IdentityRevision(Base):
    """One row counting changes that can invalidate a verified token: revocations, user and group changes.

    Gateways keep verified tokens in memory and read this one number per request to know whether they may.
    """

    __tablename__ = "identity_revision"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    revision: Mapped[int] = mapped_column(Integer, default=0)


class AuditEvent(Base):
    """One change to the platform's state: who made it, what it was, when, and from where."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(255), index=True)
    action: Mapped[str] = mapped_column(String(64), index=True)
    target: Mapped[str] = mapped_column(String(255), index=True)
    client: Mapped[str | None] = mapped_column(String(64))
    request_id: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)


class Bucket(Base):
    """An applied `Storage` manifest, and how many bytes the bucket holds.

    `used_bytes` is reserved before each upload through the platform (one conditional UPDATE, so concurrent
    uploads on several gateways cannot overshoot `quota_bytes`) and recounted from the store periodically.
    """

    __tablename__ = "buckets"

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    manifest: Mapped[dict[str, Any]] = mapped_column(default=dict)
    quota_bytes: Mapped[int | None] = mapped_column(BigInteger)
    used_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    counted_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ServerKey(Base):
    """A secret every gateway of the platform shares, such as the key that signs presigned URLs."""

    __tablename__ = "server_keys"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    secret: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class RequestLogEntry(Base):
    """One answered call of a module (the request log). Written in batches off the request path; swept
    after `MODELPORT_REQUEST_LOG_DAYS`."""

    __tablename__ = "request_log"
    __table_args__ = (
        Index("ix_request_log_module_at", "module", "at", "id"),
        Index("ix_request_log_caller_at", "caller_id", "at", "id"),
        Index("ix_request_log_at", "at", "id"),
        Index(
            "ix_request_log_parent",
            "parent_id",
            sqlite_where=text("parent_id IS NOT NULL"),
            postgresql_where=text("parent_id IS NOT NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    trace_id: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime] = mapped_column()
    kind: Mapped[str] = mapped_column(String(16))
    module: Mapped[str] = mapped_column(String(63))
    version: Mapped[str] = mapped_column(String(64))
    replica: Mapped[int | None] = mapped_column(Integer)
    caller: Mapped[str] = mapped_column(String(255))
    caller_id: Mapped[int | None] = mapped_column(Integer)
    client: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[int] = mapped_column(Integer)
    code: Mapped[str | None] = mapped_column(String(64))
    total_ms: Mapped[float] = mapped_column(Float)
    queue_ms: Mapped[float] = mapped_column(Float)
    compute_ms: Mapped[float] = mapped_column(Float)
    batch_size: Mapped[int] = mapped_column(Integer)
    records: Mapped[int] = mapped_column(Integer)
    request_bytes: Mapped[int] = mapped_column(BigInteger)
    response_bytes: Mapped[int] = mapped_column(BigInteger)
    model_key: Mapped[str | None] = mapped_column(String(128))
    payload: Mapped[str | None] = mapped_column(String(1024))
    """The key of the captured payload object in the request bucket (None: not captured)."""
    parent_id: Mapped[str | None] = mapped_column(String(32))
    """A pipeline step's call: the request id of the pipeline call it is part of."""
    pipeline: Mapped[str | None] = mapped_column(String(63))
    step: Mapped[str | None] = mapped_column(String(63))


class StatsRollup(Base):
    """A module version's calls in one interval (`resolution` seconds from `start`): counts, and mergeable
    quantile sketches of latency, so that any window reads rollups and several gateways add up."""

    __tablename__ = "stats_rollups"
    __table_args__ = (
        UniqueConstraint("module", "version", "resolution", "start"),
        Index("ix_stats_rollups_module_start", "module", "resolution", "start"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    module: Mapped[str] = mapped_column(String(63))
    version: Mapped[str] = mapped_column(String(64))
    resolution: Mapped[int] = mapped_column(Integer)
    start: Mapped[datetime] = mapped_column()
    calls: Mapped[int] = mapped_column(BigInteger, default=0)
    errors: Mapped[int] = mapped_column(BigInteger, default=0)
    codes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    """Calls by error code (and `ok`)."""
    batches: Mapped[dict[str, Any]] = mapped_column(default=dict)
    """Calls by the size of the batch that answered them."""
    kinds: Mapped[dict[str, Any]] = mapped_column(default=dict)
    """Calls by kind: `sync`, `job`, `batch`."""
    request_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    response_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    total: Mapped[bytes] = mapped_column(LargeBinary)
    queue: Mapped[bytes] = mapped_column(LargeBinary)
    compute: Mapped[bytes] = mapped_column(LargeBinary)


class ModuleEvent(Base):
    """One entry of a module's publication history: a push, a build, a deploy, a canary, a rollback, a scale,
    a failure."""

    __tablename__ = "module_events"
    __table_args__ = (Index("ix_module_events_module_at", "module", "at", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    module: Mapped[str] = mapped_column(String(63))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    kind: Mapped[str] = mapped_column(String(32))
    version: Mapped[str | None] = mapped_column(String(64))
    from_version: Mapped[str | None] = mapped_column(String(64))
    actor: Mapped[str | None] = mapped_column(String(255))
    outcome: Mapped[str | None] = mapped_column(String(32))
    seconds: Mapped[float | None] = mapped_column(Float)
    """How long it took (a build, the switch of a deploy)."""
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)


class DriftSample(Base):
    """The features of one call (numbers, categories, text lengths, image sizes and brightness), kept for
    comparing a recent window with the reference."""

    __tablename__ = "drift_samples"
    __table_args__ = (Index("ix_drift_samples_module_version_at", "module", "version", "at", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    module: Mapped[str] = mapped_column(String(63))
    version: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column()
    features: Mapped[dict[str, Any]] = mapped_column(default=dict)


class DriftReference(Base):
    """What a module version's features looked like at the start (its first calls) or in a reference
    object; recent calls are compared with it."""

    __tablename__ = "drift_references"

    module: Mapped[str] = mapped_column(String(63), primary_key=True)
    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    source: Mapped[str] = mapped_column(String(32))
    """`first-calls` or `object`."""
    reference: Mapped[str | None] = mapped_column(String(1024))
    """The `bucket/key` of a JSONL reference object."""
    calls: Mapped[int] = mapped_column(Integer, default=0)
    features: Mapped[dict[str, Any]] = mapped_column(default=dict)
    """Feature name → its reference values (or summary)."""
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Job(Base):
    """One asynchronous job: a prediction (`kind` `job`) or a file of records (`batch`), queued in the
    database so that it outlives any gateway. A gateway claims a job by taking its lease (`lease_token`
    until `lease_expires`, renewed while it runs); a lease that runs out puts the job back. Only the
    holder of the current lease may record its outcome, so each job's result is recorded once."""

    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("owner", "idempotency_key"),
        Index("ix_jobs_claim", "module", "status", "run_at"),
        Index("ix_jobs_lease", "status", "lease_expires"),
        Index("ix_jobs_module_created", "module", "created_at", "id"),
        Index("ix_jobs_caller_created", "caller_id", "created_at", "id"),
        Index("ix_jobs_created", "created_at", "id"),
        Index("ix_jobs_expires", "expires_at"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    module: Mapped[str] = mapped_column(String(63))
    version: Mapped[str | None] = mapped_column(String(64))
    """The version the job is pinned to (None: the module's active version when it runs)."""
    served_version: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    caller: Mapped[str] = mapped_column(String(255))
    caller_id: Mapped[int | None] = mapped_column(Integer)
    owner: Mapped[str] = mapped_column(String(255))
    """The caller's key: whose files the job's are, and the scope of its idempotency key."""
    client: Mapped[str | None] = mapped_column(String(64))
    request: Mapped[dict[str, Any]] = mapped_column(default=dict)
    """What to run: a prediction's body (files as stored objects) or a batch's input and output."""
    digest: Mapped[str] = mapped_column(String(64))
    """SHA-256 of the canonical request: the same key (or id) with another request is refused."""
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    traceparent: Mapped[str | None] = mapped_column(String(64))
    webhook: Mapped[str | None] = mapped_column(String(2048))
    webhook_events: Mapped[list[str]] = mapped_column(JSON, default=list)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=1)
    run_at: Mapped[datetime] = mapped_column()
    """When a queued job may run (now, or after a retry's backoff)."""
    lease_token: Mapped[str | None] = mapped_column(String(32))
    leased_by: Mapped[str | None] = mapped_column(String(64))
    lease_expires: Mapped[datetime | None] = mapped_column()
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()
    expires_at: Mapped[datetime | None] = mapped_column()
    """When a finished job, its inputs and its outputs are swept."""
    outputs: Mapped[Any] = mapped_column(JSON, nullable=True)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    progress: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    request_id: Mapped[str | None] = mapped_column(String(32))
    """The request-log id of the job's last run."""


class WebhookSecret(Base):
    """A caller's webhook signing secret (Standard Webhooks `whsec_`), shown once when made or rotated."""

    __tablename__ = "webhook_secrets"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    secret: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    previous: Mapped[str | None] = mapped_column(String(128))
    """The secret before the last rotation: messages are signed with both until `previous_until`, so that
    receivers can switch without missing one."""
    previous_until: Mapped[datetime | None] = mapped_column()


class WebhookMessage(Base):
    """One event of a job to deliver (the outbox): written in the same transaction as the job's change, so
    that no event is lost; its `body` is fixed then, so every attempt sends the same bytes under the same
    `webhook-id`."""

    __tablename__ = "webhook_messages"
    __table_args__ = (Index("ix_webhook_messages_due", "state", "next_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    event: Mapped[str] = mapped_column(String(32))
    url: Mapped[str] = mapped_column(String(2048))
    user_id: Mapped[int | None] = mapped_column(Integer)
    """Whose secret signs it."""
    body: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    """`pending`, `delivered`, or `failed` once every retry is spent."""
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    next_at: Mapped[datetime] = mapped_column(default=utcnow)
    """When the next attempt is due (a deliverer that takes it moves this past its own attempt)."""


class WebhookDelivery(Base):
    """One attempt to deliver a webhook message, as the receiver answered it."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    message_id: Mapped[str] = mapped_column(ForeignKey("webhook_messages.id", ondelete="CASCADE"), index=True)
    job_id: Mapped[str] = mapped_column(String(64), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    url: Mapped[str] = mapped_column(String(2048))
    status: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[float] = mapped_column(Float)
    delivered: Mapped[bool] = mapped_column(Boolean, default=False)
