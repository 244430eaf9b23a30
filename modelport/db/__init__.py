"""Metadata storage: SQLAlchemy models and Alembic migrations, on SQLite or PostgreSQL."""

from modelport.db.database import Database
from modelport.db.models import (
    ApiDefinition,
    ApiToken,
    AuditEvent,
    Base,
    Bucket,
    Deployment,
    Group,
    IdentityRevision,
    Module,
    ServerKey,
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
    "Group",
    "IdentityRevision",
    "Module",
    "ServerKey",
    "User",
    "Version",
]
