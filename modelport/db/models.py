"""The tables: modules, their immutable versions, each module's desired deployment, and API tokens."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar

from sqlalchemy import JSON, DateTime, Dialect, Enum, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

__all__ = ["ApiDefinition", "ApiToken", "Base", "BuildStatus", "Deployment", "Module", "Version", "utcnow"]


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


class BuildStatus(StrEnum):
    PENDING = "pending"
    BUILDING = "building"
    READY = "ready"
    FAILED = "failed"


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
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    module: Mapped[Module] = relationship(back_populates="deployment")


class ApiDefinition(Base):
    """An applied `Api` manifest: the public face of a module."""

    __tablename__ = "apis"

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    module_name: Mapped[str] = mapped_column(ForeignKey("modules.name", ondelete="CASCADE"), index=True)
    manifest: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ApiToken(Base):
    """An API token, stored only as a digest of its secret."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(255))
    prefix: Mapped[str] = mapped_column(String(32), index=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column()
