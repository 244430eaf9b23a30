"""The `world` fixture of the console's tests (see `console_world.py`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from console_world import World
from inprocess import served_platform


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("console")
    with served_platform(root / "platform") as served:
        yield World(served, root)
