"""`modelport init`: write a working module skeleton from the templates in `cli/templates/module/`.

Every template file ends in `.tmpl`, so that the templates are never imported, collected by pytest or
type-checked as part of the package; the suffix is dropped when the file is written. `gitignore` becomes
`.gitignore`, and `test_module.py` is named after the module (`test_receipt_ocr.py`) so that the tests of
several modules in one repository do not collide. Templates are Jinja2 with `{{ name }}` and
`{{ identifier }}` (the name with `_` for `-`) placeholders.
"""

from __future__ import annotations

import re
import shutil
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path, PurePosixPath

import jinja2

__all__ = ["NAME_PATTERN", "create_module"]

# The same rule as `metadata.name` in a manifest (modelport.core.manifests.Metadata).
NAME_PATTERN = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")

_SUFFIX = ".tmpl"
_RENAMES = {"gitignore": ".gitignore", "test_module.py": "test_{identifier}.py"}


def create_module(name: str, parent: Path) -> Path:
    """Create the module `name` in `parent/name/` and return its path.

    Raises ValueError for a name that is not a valid module name and FileExistsError when `parent/name`
    exists and is not an empty directory. Nothing is left behind when writing fails.
    """
    _check_name(name)
    target = parent / name
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise FileExistsError(f"{target} already exists and is not empty; choose another name or directory")
    rendered = _render(name)
    created = not target.exists()
    try:
        for relative, text in rendered.items():
            path = target.joinpath(*relative.parts)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    except BaseException:
        if created:
            shutil.rmtree(target, ignore_errors=True)
        raise
    return target


def _check_name(name: str) -> None:
    if NAME_PATTERN.fullmatch(name):
        return
    if len(name) > 63:
        problem = f"is {len(name)} characters long"
    elif not name:
        problem = "is empty"
    else:
        problem = "is not allowed"
    raise ValueError(
        f"module name {name!r} {problem}: use 1 to 63 lowercase letters, digits and hyphens, "
        "starting and ending with a letter or digit (for example `digits` or `receipt-ocr`)"
    )


def _render(name: str) -> dict[PurePosixPath, str]:
    """Render every template into memory first, so that a template error writes nothing."""
    environment = jinja2.Environment(
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701 - renders Python, YAML and Markdown files, not HTML
    )
    context = {"name": name, "identifier": name.replace("-", "_")}
    out: dict[PurePosixPath, str] = {}
    for relative, source in _templates(files("modelport.cli") / "templates" / "module", PurePosixPath()):
        out[_output_path(relative, context)] = environment.from_string(source).render(context)
    return out


def _templates(directory: Traversable, prefix: PurePosixPath) -> list[tuple[PurePosixPath, str]]:
    found: list[tuple[PurePosixPath, str]] = []
    for entry in sorted(directory.iterdir(), key=lambda e: e.name):
        if entry.is_dir():
            if entry.name != "__pycache__":
                found.extend(_templates(entry, prefix / entry.name))
        elif entry.name.endswith(_SUFFIX):
            found.append((prefix / entry.name, entry.read_text(encoding="utf-8")))
    return found


def _output_path(relative: PurePosixPath, context: dict[str, str]) -> PurePosixPath:
    stem = relative.name.removesuffix(_SUFFIX)
    return relative.with_name(_RENAMES.get(stem, stem).format(**context))
