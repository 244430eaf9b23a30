"""Importing a gallery module's `inference.py` from its file, as the platform's worker does.

Standard library only: the LitServe and BentoML servers import it from their own environments.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def import_file(name: str, path: Path | str) -> ModuleType:
    """The module in `path`, imported as `name` and entered in `sys.modules` (a dataclass in it looks its
    module up there)."""
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
