"""Manifests and module trees that tests build their platforms from."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent / "fixtures" / "modules"


def module_copy(root: Path, fixture: str, name: str, owner: str | None) -> Path:
    """A copy of a fixture module under `root`, named `name` and owned by the group `owner`."""
    directory = root / name
    shutil.copytree(FIXTURES / fixture, directory, ignore=shutil.ignore_patterns("__pycache__"))
    spec = f"spec: {{owner: '{owner}'}}\n" if owner else ""
    (directory / "modelport.yaml").write_text(
        f"apiVersion: modelport/v1\nkind: Module\nmetadata: {{name: {name}}}\n{spec}"
    )
    return directory


def api(name: str, module: str, **spec: Any) -> dict[str, Any]:
    """An `Api` manifest for `module`."""
    return {
        "apiVersion": "modelport/v1",
        "kind": "Api",
        "metadata": {"name": name},
        "spec": {"module": module, **spec},
    }


def bucket(name: str, group: str) -> dict[str, Any]:
    """A `Storage` manifest: the bucket `name`, read and written by `group`."""
    return {
        "apiVersion": "modelport/v1",
        "kind": "Storage",
        "metadata": {"name": name},
        "spec": {"access": {"groups": [group]}},
    }
