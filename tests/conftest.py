"""Fixtures mirror the composition root: settings(tmp) → dev server → app → in-process HTTP client."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from postgres import Cluster

from modelport.app import DevServer
from modelport.control.modules import ServedModule
from modelport.core.settings import Settings

FIXTURES = Path(__file__).parent / "fixtures" / "modules"


@dataclass
class Served:
    client: httpx.AsyncClient
    server: DevServer

    @property
    def module(self) -> ServedModule:
        return self.server.registry.served()[0]

    def predict_url(self) -> str:
        return f"/api/v1/modules/{self.module.name}/predict"

    async def predict(self, **body: object) -> httpx.Response:
        return await self.client.post(self.predict_url(), json=body)


@pytest.fixture
def fixture_module(tmp_path: Path) -> Callable[[str], Path]:
    """Copy a fixture module into a fresh directory and return its path."""

    def copy(name: str) -> Path:
        target = tmp_path / "modules" / name
        shutil.copytree(FIXTURES / name, target, ignore=shutil.ignore_patterns("__pycache__"))
        return target

    return copy


ServeFactory = Callable[..., AbstractAsyncContextManager[Served]]


@pytest.fixture
def serve(tmp_path: Path) -> ServeFactory:
    """Serve a module directory in-process; the workers are real processes."""

    @asynccontextmanager
    async def start(directory: Path, *, workers: int | None = 1, **settings: object) -> AsyncIterator[Served]:
        config = Settings(data_dir=tmp_path / "data", **settings)  # type: ignore[arg-type]
        server = DevServer(directory, settings=config, workers=workers, reload=False)
        async with server.running():
            transport = httpx.ASGITransport(app=server.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://modelport.test") as client:
                yield Served(client, server)

    return start


@pytest.fixture(scope="session")
def postgres() -> Iterator[Cluster]:
    """One PostgreSQL server for the session; each test that needs one gets a fresh database in it."""
    cluster = Cluster()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database on each backend modelport supports."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'modelport.db'}"
    cluster: Cluster = request.getfixturevalue("postgres")
    return cluster.create_database(f"t{uuid.uuid4().hex[:12]}")
