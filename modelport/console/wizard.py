"""(being written)"""

from __future__ import annotations

from starlette.routing import BaseRoute

from modelport.console.web import Console

__all__ = ["routes"]


def routes(console: Console) -> list[BaseRoute]:
    return []
