"""Fixtures for the platform server tests."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture
def client(platform: Any) -> Any:
    with platform.client() as http:
        yield http
