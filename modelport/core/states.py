"""The states of a version's build and of a module's deployment, shared by the tables, the business rules
and the API records."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["BuildStatus", "DeploymentStatus"]


class BuildStatus(StrEnum):
    """Where a pushed version's build stands: `ready` versions may be deployed."""

    PENDING = "pending"
    BUILDING = "building"
    READY = "ready"
    FAILED = "failed"


class DeploymentStatus(StrEnum):
    """Where a module's deployment stands: `progressing` while a change is carried out, then `ready` if its
    active version serves (a new version that failed to roll out aside), `failed` if none does."""

    PENDING = "pending"
    PROGRESSING = "progressing"
    READY = "ready"
    FAILED = "failed"
