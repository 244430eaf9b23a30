"""Read a module's `ApiSpec` from its source without importing it."""

from __future__ import annotations

import ast
from pathlib import Path

from modelport.sdk.spec import ApiSpec, SpecError, parse_docstring

__all__ = ["SourceError", "read_api_spec"]


class SourceError(ValueError):
    """The entrypoint cannot be found or its docstring does not parse; `line` is a line of `path`."""

    def __init__(self, path: Path, line: int | None, message: str) -> None:
        where = f"{path}:{line}" if line else str(path)
        super().__init__(f"{where}: {message}")
        self.path, self.line, self.message = path, line, message


def read_api_spec(module_dir: Path, entrypoint: str) -> ApiSpec:
    """Parse the docstring of `entrypoint` (`file.py:function`) found under `module_dir`."""
    file_part, _, name = entrypoint.partition(":")
    path = module_dir / file_part
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except FileNotFoundError:
        raise SourceError(path, None, "file not found") from None
    except (SyntaxError, UnicodeDecodeError) as exc:
        raise SourceError(path, getattr(exc, "lineno", None), f"cannot be parsed: {exc}") from None
    function = next(
        (
            node
            for node in tree.body
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name
        ),
        None,
    )
    if function is None:
        raise SourceError(path, None, f"no top-level function `{name}`")
    first = function.body[0] if function.body else None
    if not (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    ):
        raise SourceError(path, function.lineno, f"`{name}` has no docstring; its docstring declares the API")
    try:
        return parse_docstring(first.value.value)
    except SpecError as exc:
        raise SourceError(path, first.lineno + exc.line - 1, exc.message) from None
