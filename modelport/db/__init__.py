"""Metadata storage: SQLAlchemy models and Alembic migrations, on SQLite or PostgreSQL."""

from modelport.db.database import Database
from modelport.db.models import (
    ApiDefinition,
    ApiToken,
    AuditEvent,
    Base,
    Bucket,
    Deployment,
    DriftReference,
    DriftSample,
    Group,
    IdentityRevision,
    Module,
    ModuleEvent,
    RequestLogEntry,
    ServerKey,
    StatsRollup,
    User,
    Version,
)

__all__ = [
    "ApiDefinition",
    "ApiToken",
    "AuditEvent",
    "Base",
    "Bucket",
    "Database",
    "Deployment",
    "DriftReference",
    "DriftSample",
    "Group",
    "IdentityRevision",
    "Module",
    "ModuleEvent",
    "RequestLogEntry",
    "ServerKey",
    "StatsRollup",
    "User",
    "Version",
]
