"""Fixtures mirror the composition root: settings(tmp) → dev server → app → in-process HTTP client."""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from inprocess import InProcessPlatform, served_platform, started_platform
from oidc_provider import OidcProvider
from platform_server import ADMIN_TOKEN, ServerProcess
from postgres import Cluster
from repos import git
from s3_server import S3Server

from modelport.app import DevServer

# Rich fixes a console's width when COLUMNS is set as it is made, and the command line makes its consoles at
# import; the command tests give each call its own width (pytest-xdist's workers set COLUMNS=80).
os.environ.pop("COLUMNS", None)
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


PlatformFactory = Callable[..., AbstractAsyncContextManager[InProcessPlatform]]


@pytest.fixture(scope="session")
def start_platform_app() -> PlatformFactory:
    """`start_platform_app(data_dir, **settings)`: the platform of `platform_app`, with settings of one's own
    (a `database_url`, say), as an async context manager. For a world that a module's tests share, enter it
    in a module-scoped fixture on a module-scoped event loop (`loop_scope="module"`)."""
    return started_platform


@pytest.fixture
async def platform_app(tmp_path: Path) -> AsyncIterator[InProcessPlatform]:
    """The real platform application (settings → database → services → app) on SQLite in `tmp_path`, its
    lifespan running, reached in-process through an ASGI transport."""
    async with started_platform(tmp_path / "platform") as platform:
        yield platform


@pytest.fixture
def platform_client(tmp_path: Path, database_url: str) -> Iterator[httpx.Client]:
    """An admin's client of the platform served in this process, on each database backend."""
    with (
        served_platform(tmp_path / "platform", database_url=database_url) as served,
        served.client({"Authorization": f"Bearer {ADMIN_TOKEN}"}) as client,
    ):
        yield client


@pytest.fixture
def platform(tmp_path: Path, database_url: str) -> Iterator[ServerProcess]:
    """A real `modelport server` process on 127.0.0.1 (port 0), on each database backend.

    `.url` is its address, `.token` an admin token, `.client()` an authenticated httpx client. Its modules
    may write in `tmp_path / "shared"` (`MODELPORT_WORKER_PATHS`), where tests leave them markers.
    """
    (tmp_path / "shared").mkdir()
    server = ServerProcess(
        tmp_path / "server",
        token=ADMIN_TOKEN,
        database_url=database_url,
        env={"MODELPORT_WORKER_PATHS": str(tmp_path / "shared")},
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def git_module(tmp_path: Path) -> Callable[..., Path]:
    """A fixture module committed in a fresh git repository and tagged; returns the module's directory."""

    def make(name: str, *, tag: str = "v1", module_name: str | None = None) -> Path:
        repository = tmp_path / "repos" / (module_name or name)
        shutil.copytree(FIXTURES / name, repository, ignore=shutil.ignore_patterns("__pycache__"))
        if module_name is not None:
            manifest = repository / "modelport.yaml"
            text = manifest.read_text() if manifest.exists() else ""
            if "kind: Module" not in text:
                text = f"apiVersion: modelport/v1\nkind: Module\nmetadata: {{name: {module_name}}}\n"
            else:
                text = re.sub(r"name: [a-z0-9-]+", f"name: {module_name}", text, count=1)
            manifest.write_text(text)
        git(repository, "init", "-q", "-b", "main")
        git(repository, "add", "-A")
        git(repository, "commit", "-q", "-m", "first")
        git(repository, "tag", tag)
        return repository

    return make


@pytest.fixture(scope="session")
def oidc_provider() -> Iterator[OidcProvider]:
    """One real OpenID Connect provider (oidc-provider on Node) on 127.0.0.1 for the session.

    Keycloak-shaped: issuer `http://127.0.0.1:PORT/realms/test`, audience `modelport`, public PKCE client
    `modelport-web`, users alice, bob, dave and root with password `password-<name>` (see
    `tests/oidc_provider.py`); `.tokens(user, password)` logs in. It is shared: a test that rotates keys,
    stops the provider or needs other accounts or clients makes its own `OidcProvider` instead.
    """
    with OidcProvider() as provider:
        yield provider


STORAGE_MANIFESTS = [
    {
        "apiVersion": "modelport/v1",
        "kind": "Storage",
        "metadata": {"name": "models"},
        "spec": {"access": {"groups": ["/team"]}, "quota": "1GiB", "retentionDays": 30},
    },
    {"apiVersion": "modelport/v1", "kind": "Storage", "metadata": {"name": "tiny"}, "spec": {"quota": 100}},
]


@pytest.fixture(scope="session")
def storage_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One `modelport server` (local store) with buckets `models` (1 GiB, `/team`) and `tiny` (100 bytes),
    shared by the client and command tests; each test keeps to a fresh key prefix of its own."""
    server = ServerProcess(tmp_path_factory.mktemp("storage") / "server", token=ADMIN_TOKEN)
    server.start()
    try:
        with server.client() as admin:
            applied = admin.post("/api/v1/apply", json={"documents": STORAGE_MANIFESTS})
            assert applied.status_code == 200, applied.text
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """One S3 service (moto, in its own process, checking presigned URLs) on 127.0.0.1 for the session.

    `.endpoint_url`, `.access_key_id`, `.secret_access_key`, `.region`; tests keep apart by bucket prefix.
    """
    with S3Server() as server:
        yield server
