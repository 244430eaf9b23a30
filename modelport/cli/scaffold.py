"""`modelport init`: write a working module skeleton (the templates and their rendering live in
`modelport.artifacts.scaffold`, which the console's new-module wizard shares)."""

from __future__ import annotations

from modelport.artifacts.scaffold import NAME_PATTERN, create_module

__all__ = ["NAME_PATTERN", "create_module"]
