"""A module directory, read and checked without running any of its code: manifest, API and entrypoints."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

from modelport.core.manifests import Metadata, ModuleManifest, check_openai_roles, load_module_manifest
from modelport.sdk import ApiSpec
from modelport.sdk.source import read_api_spec

__all__ = ["ModuleDefinition", "read_module"]


@dataclass(frozen=True)
class ModuleDefinition:
    """A module directory, read and checked: its manifest, its API and the functions to call."""

    name: str
    directory: Path
    manifest: ModuleManifest
    spec: ApiSpec
    load: str | None


def read_module(directory: Path, *, name: str | None = None) -> ModuleDefinition:
    """Read `modelport.yaml` and the entrypoint's docstring; raises `ManifestError` or `SourceError`.

    Without a manifest the module is named `name`, else after its directory.
    """
    directory = directory.resolve()
    manifest = load_module_manifest(directory)
    if name is not None and not (directory / "modelport.yaml").exists():
        manifest = manifest.model_copy(update={"metadata": Metadata(name=name)})
    spec = read_api_spec(directory, manifest.spec.entrypoint)
    # An OpenAI role that does not fit the API fails the push or build of the version, naming the field.
    check_openai_roles(manifest, spec, source=str(directory / "modelport.yaml"))
    load = manifest.spec.load or _implicit_load(directory, manifest.spec.entrypoint)
    return ModuleDefinition(manifest.metadata.name, directory, manifest, spec, load)


def _implicit_load(directory: Path, entrypoint: str) -> str | None:
    """`file.py:load` when the entrypoint's file defines a top-level `load` function."""
    file_part = entrypoint.partition(":")[0]
    tree = ast.parse((directory / file_part).read_text(encoding="utf-8"))
    defines = any(isinstance(n, ast.FunctionDef) and n.name == "load" for n in tree.body)
    return f"{file_part}:load" if defines else None
