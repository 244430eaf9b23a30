"""Declarative manifests (`modelport.yaml`): Kubernetes-shaped objects, strict about unknown fields."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

__all__ = [
    "ManifestError",
    "Metadata",
    "ModelSpec",
    "ModuleManifest",
    "ModuleSpec",
    "Resources",
    "load_module_manifest",
]


class ManifestError(ValueError):
    """A manifest file is unreadable or does not match its schema."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Metadata(_Strict):
    name: str = Field(pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
    labels: dict[str, str] = {}


class ModelSpec(_Strict):
    """Where the module's weights live and how many models a worker keeps loaded."""

    key: str = "default"
    bucket: str | None = None
    path: str = "models"
    cache_size: int = Field(2, ge=1, alias="cacheSize")


class Resources(_Strict):
    replicas: int = Field(1, ge=0, le=64)
    max_batch_size: int = Field(8, ge=1, le=4096, alias="maxBatchSize")
    batch_wait_ms: float = Field(0.0, ge=0, le=10_000, alias="batchWaitMs")
    timeout_seconds: float = Field(60.0, gt=0, le=86_400, alias="timeoutSeconds")
    max_queue: int = Field(1024, ge=1, alias="maxQueue")
    threads: int | None = Field(None, ge=1, le=256)


class ModuleSpec(_Strict):
    entrypoint: str = "inference.py:inference"
    load: str | None = None
    requirements: str | None = None
    model: ModelSpec = ModelSpec()
    resources: Resources = Resources()
    env: dict[str, str] = {}
    example: dict[str, Any] | None = None

    @field_validator("entrypoint", "load")
    @classmethod
    def _file_and_function(cls, value: str | None) -> str | None:
        if value is not None and (value.count(":") != 1 or not all(value.split(":"))):
            raise ValueError("expected `file.py:function`")
        return value


class ModuleManifest(_Strict):
    api_version: Literal["modelport/v1"] = Field("modelport/v1", alias="apiVersion")
    kind: Literal["Module"] = "Module"
    metadata: Metadata
    spec: ModuleSpec = ModuleSpec()


def load_module_manifest(directory: Path) -> ModuleManifest:
    """Read the `Module` document of `directory/modelport.yaml`, or default one named after the directory."""
    path = directory / "modelport.yaml"
    if not path.exists():
        return ModuleManifest(metadata=Metadata(name=_slug(directory.resolve().name)))
    try:
        documents = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
    except yaml.YAMLError as exc:
        raise ManifestError(f"{path}: not valid YAML: {exc}") from None
    modules = [d for d in documents if isinstance(d, dict) and d.get("kind") == "Module"]
    if len(modules) != 1:
        raise ManifestError(f"{path}: expected exactly one document of kind Module, found {len(modules)}")
    try:
        return ModuleManifest.model_validate(modules[0])
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors(include_url=False)
        )
        raise ManifestError(f"{path}: {problems}") from None


def _slug(name: str) -> str:
    slug = "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")
    return slug[:63] or "module"
