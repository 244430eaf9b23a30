"""Metadata storage: SQLAlchemy models and Alembic migrations, on SQLite or PostgreSQL."""

from modelport.db.database import Database
from modelport.db.models import ApiDefinition, ApiToken, Base, BuildStatus, Deployment, Module, Version

__all__ = ["ApiDefinition", "ApiToken", "Base", "BuildStatus", "Database", "Deployment", "Module", "Version"]
