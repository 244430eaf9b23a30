"""The shapes of the platform API's JSON answers, as typed dictionaries (what the client returns)."""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict

__all__ = [
    "ApplyAction",
    "ApplyResult",
    "BuildStatus",
    "DeploymentInfo",
    "DeploymentStatus",
    "ModuleInfo",
    "ServingInfo",
    "VersionInfo",
]

BuildStatus = Literal["pending", "building", "ready", "failed"]
DeploymentStatus = Literal["pending", "progressing", "ready", "failed"]
ApplyAction = Literal["created", "configured", "unchanged", "deleted"]


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
