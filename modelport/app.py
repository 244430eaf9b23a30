"""The composition root: settings → runtime → control → gateway. The only module that wires.

`modelport predict` runs one call through this module and exits, so what only a server needs (uvicorn, the
gateway, the database, the object store) is imported where a server is built, not when this module is.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import logging
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pydantic import SecretStr

from modelport.artifacts import pack, read_module
from modelport.control.modules import ModuleRegistry, predict, start_module
from modelport.core.errors import DatabaseUnavailable, ModelportError
from modelport.core.settings import Settings
from modelport.runtime.files import FileChecker
from modelport.sdk.validation import ParsedRequest, UploadedFile, parse_form

if TYPE_CHECKING:
    import uvicorn

    from modelport.db import Database

__all__ = [
    "CannotListen",
    "DevServer",
    "PlatformServer",
    "demo_admin_token",
    "run_dev_server",
    "run_local_predict",
    "run_platform_server",
    "uvicorn_config",
]


def worker_log_printer(name: str) -> Callable[[int, str, str], None]:
    """A log callback that prints each worker line on stderr as plain text, without its request tag."""
    from modelport.core.protocol import split_tag

    def sink(replica: int, stream: str, line: str) -> None:
        text = split_tag(line)[1]
        sys.stderr.write(f"[{name}] modelport: {text}\n" if stream == "modelport" else f"[{name}] {text}\n")

    return sink


class DevServer:
    """One module directory behind the gateway, reloaded on change."""

    def __init__(
        self, directory: Path, *, settings: Settings, workers: int | None, reload: bool = True
    ) -> None:
        from modelport.control.dev import DevModule
        from modelport.control.request_files import RequestFiles
        from modelport.gateway.app import create_app
        from modelport.storage import LocalStore

        self.settings = settings
        self.registry = ModuleRegistry()
        self.reload = reload
        self.store = LocalStore(settings.storage_dir())
        self.module = DevModule(
            directory,
            registry=self.registry,
            settings=settings,
            workers=workers,
            log_sink=worker_log_printer(directory.resolve().name),
            report=lambda message: print(f"modelport: {message}", file=sys.stderr, flush=True),
        )
        files = RequestFiles(self.store, bucket=settings.request_bucket, readable=None)
        self.app = create_app(
            registry=self.registry, settings=settings, files=files, lifespan=lambda app: self.running()
        )

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Load the module (and watch it) for as long as the context lasts."""
        stop = asyncio.Event()
        await asyncio.to_thread(self.store.create_bucket, self.settings.request_bucket)
        await self.module.load()
        watcher = asyncio.create_task(self.module.watch(stop)) if self.reload else None
        try:
            yield
        finally:
            stop.set()
            if watcher is not None:
                watcher.cancel()
                await asyncio.gather(watcher, return_exceptions=True)
            await self.module.close()


DEMO_MODULES = (
    "digits",
    "text-classifier",
    "tesseract-ocr",
    "receipt-extractor",
    "minilm-embeddings",
    "qwen-chat",
)
"""Pushed in this order: the language models last, their environments (PyTorch) take longest to build."""
DEMO_WEIGHTS = {"qwen-chat": "tiny.py"}
"""Modules whose default weights the demo makes and uploads when storage has none: the script in the
module's directory that writes them into the directory it is given (a tiny randomly initialised model)."""
DEMO_MANIFESTS = ("receipt-payments/manifests.yaml", "receipt-payments/llm.yaml")
DEMO_APPS = ("receipt-webapp",)
"""Static client applications in the gallery the demo serves under `/apps/<name>/`."""
"""Applied once the modules are deployed: the receipt pipeline and the Apis of the seed platform's gallery."""
DEMO_ACTOR = "demo"
"""Who the audit trail says pushed and deployed the demo's modules."""


class GalleryMissing(ModelportError):
    """The demo's gallery of modules is not where an installed wheel or a checkout puts it."""


def _gallery() -> Path:
    """The gallery the demo deploys: `modelport/gallery` in an installed wheel (package data), else the
    top-level `gallery/` of the checkout that holds this package (an editable install)."""
    package = Path(__file__).resolve().parent
    candidates = (package / "gallery", package.parent / "gallery")
    for directory in candidates:
        if all((directory / name / "modelport.yaml").is_file() for name in DEMO_MODULES):
            return directory
    raise GalleryMissing(
        f"the demo needs the gallery modules {', '.join(DEMO_MODULES)}, but neither "
        f"{candidates[0]} (an installed wheel) nor {candidates[1]} (a checkout) holds them; "
        "reinstall modelport, or run without --demo"
    )


class PlatformServer:
    """The platform: the metadata database, the services, and the gateway in front of them.

    `announce` receives what an operator must see once: a newly made admin token, the demo's progress.
    """

    def __init__(self, settings: Settings, *, announce: Callable[[str], None], demo: bool = False) -> None:
        from modelport.console.app import create_console
        from modelport.control.platform import Services
        from modelport.db import Database
        from modelport.gateway.app import create_platform_app
        from modelport.gateway.ratelimit import RateLimiter
        from modelport.runtime.environments import Environments
        from modelport.storage import open_store

        self.settings = settings
        self.announce = announce
        self.gallery = _gallery() if demo else None
        self.database = Database(settings.database())
        self.services = Services(
            settings=settings,
            database=self.database,
            environments=Environments(
                settings.data_dir / "environments", build_timeout=settings.build_timeout_seconds
            ),
            store=open_store(settings),
        )
        self.limiter = RateLimiter(settings.redis_url)
        self.app = create_platform_app(
            services=self.services,
            settings=settings,
            limiter=self.limiter,
            lifespan=lambda app: self.running(),
            apps={name: self.gallery / name for name in DEMO_APPS} if self.gallery else None,
            console=create_console(self.services),
        )

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Migrate the database, make sure an admin token exists, serve the deployments; stop them after."""
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(self.database.migrate)
        bootstrap = self.settings.bootstrap_token
        secret = await asyncio.to_thread(
            self.services.identity.ensure_bootstrap, bootstrap.get_secret_value() if bootstrap else None
        )
        if secret is not None:
            self.announce(f"admin token (shown once, keep it): {secret}")
        demo = asyncio.create_task(self._deploy_gallery(self.gallery)) if self.gallery else None
        try:
            async with self.services.running():
                yield
        finally:
            if demo is not None:
                demo.cancel()
                await asyncio.gather(demo, return_exceptions=True)
            await self.limiter.close()
            self.database.close()

    async def _deploy_gallery(self, gallery: Path) -> None:
        """Push the gallery's modules as they are on disk and deploy them where they changed."""
        from modelport.control.audit import Actor

        actor = Actor(DEMO_ACTOR)
        for name in DEMO_MODULES:
            try:
                if name in DEMO_WEIGHTS:
                    await asyncio.to_thread(self._demo_weights, gallery / name, DEMO_WEIGHTS[name], actor)
                artifact = await asyncio.to_thread(pack, gallery / name, version="demo", use_git=False)
                version = f"demo-{artifact.digest.removeprefix('sha256:')[:12]}"
                async with self.services.versions.spool(artifact.data) as spooled:
                    await self.services.versions.push(
                        artifact.name, version, spooled, actor=actor, digest=artifact.digest
                    )
                deployment = self.services.deployments.info(artifact.name)
                if deployment is None or deployment.version != version:
                    self.services.deployments.deploy(artifact.name, version, actor=actor)
                    self.announce(f"demo: deploying {artifact.name} {version}")
            except ModelportError as exc:
                self.announce(f"demo: {name} could not be deployed: {exc.message}")
        for manifests in DEMO_MANIFESTS:
            try:
                await asyncio.to_thread(self._apply_demo, gallery / manifests, actor)
            except ModelportError as exc:
                self.announce(f"demo: {manifests} could not be applied: {exc.message}")

    def _demo_weights(self, directory: Path, script: str, actor: Any) -> None:
        """Upload the module's default weights, made by `script`, where its manifest says they live, unless
        storage holds some there already (an operator's, or an earlier start's)."""
        model = read_module(directory).manifest.spec.model
        if model.bucket is None:
            return
        if self.services.storage.policy(model.bucket) is None:  # declared once: a bucket only admins use
            bucket = {"apiVersion": "modelport/v1", "kind": "Storage", "metadata": {"name": model.bucket}}
            self._apply_documents([bucket], actor)
        store, prefix = self.services.store, f"{model.path}/{model.key}/"
        if next(iter(store.walk(model.bucket, prefix=prefix)), None) is not None:
            return
        with tempfile.TemporaryDirectory() as made:
            try:
                command = [sys.executable, str(directory / script), made]
                subprocess.run(command, check=True, capture_output=True, text=True, timeout=120)
            except (OSError, subprocess.SubprocessError) as exc:
                detail = getattr(exc, "stderr", None) or exc
                raise ModelportError(f"{script} could not write the weights: {detail}") from None
            for path in sorted(Path(made).rglob("*")):
                if path.is_file():
                    key = prefix + path.relative_to(made).as_posix()
                    store.put(model.bucket, key, path.read_bytes(), content_type="application/octet-stream")
        self.announce(f"demo: made the tiny weights of {directory.name} ({model.bucket}/{prefix})")

    def _apply_demo(self, path: Path, actor: Any) -> None:
        from modelport.core.manifests import load_documents

        self._apply_documents(load_documents(path.read_text(encoding="utf-8"), source=str(path)), actor)

    def _apply_documents(self, documents: list[dict[str, Any]], actor: Any) -> None:
        changes = self.services.manifests.apply(documents, actor=actor)
        for change in changes:
            if change.action != "unchanged":
                self.announce(f"demo: {change.kind} {change.name} {change.action}")


def demo_admin_token(data_dir: Path) -> SecretStr:
    """The demo's admin token, made once and kept (mode 0600) in the data directory so restarts reuse it."""
    from modelport.control.identity import new_secret

    path = data_dir / "demo-admin-token"
    if not path.is_file():
        data_dir.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(new_secret())
    return SecretStr(path.read_text().strip())


class CannotListen(ModelportError):
    """The server cannot listen where it was asked to: another process has the port, or the system refuses
    the address."""

    code = "cannot_listen"


def run_platform_server(settings: Settings, *, demo: bool, announce: Callable[[str], None]) -> None:
    """Serve the platform until stopped. Before anything starts, a database that cannot be opened raises
    `DatabaseUnavailable` and an address that cannot be listened on `CannotListen`."""
    try:
        server = PlatformServer(settings, announce=announce, demo=demo)
    except GalleryMissing as exc:
        raise SystemExit(f"error: {exc.message}") from None
    settings.data_dir.mkdir(parents=True, exist_ok=True)  # where the default SQLite database lives
    _reach_database(server.database, settings.database())
    _serve(
        server.app,
        settings,
        on_ready=lambda url: announce(f"serving on {url}"),
        log_level=logging.INFO,
        on_stopping=server.services.logs.end_follows,
    )


def run_dev_server(
    directory: Path,
    *,
    settings: Settings,
    workers: int | None,
    reload: bool,
    on_ready: Callable[[str, str], None],
) -> None:
    """Serve one module directory; `on_ready(url, module)` names the module as its URLs do. An address that
    cannot be listened on raises `CannotListen` before the module starts."""
    server = DevServer(directory, settings=settings, workers=workers, reload=reload)
    _serve(server.app, settings, on_ready=lambda url: on_ready(url, server.module.name))


def uvicorn_config(app: Any, settings: Settings) -> uvicorn.Config:
    """How uvicorn serves `app`: on stopping, requests in flight get `drain_seconds` to finish, as calls in a
    version being replaced do. Each request head must arrive within `header_timeout_seconds` and one address
    holds at most `max_connections_per_address` connections, so slow clients cannot hold the server's."""
    import uvicorn

    from modelport.gateway.connections import guarded_http_protocol

    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http=guarded_http_protocol(
            header_timeout=settings.header_timeout_seconds,
            max_per_address=settings.max_connections_per_address,
        ),
        timeout_graceful_shutdown=math.ceil(settings.drain_seconds),
    )


def _serve(
    app: Any,
    settings: Settings,
    *,
    on_ready: Callable[[str], None],
    log_level: int = logging.WARNING,
    on_stopping: Callable[[], None] | None = None,
) -> None:
    """Serve `app` until stopped; `on_stopping` runs, on the event loop, as the server starts to stop and
    before it waits for open connections, so that streams without an end (followed logs) end then."""
    import uvicorn
    import uvloop

    from modelport.obs import redact as redaction

    class Server(uvicorn.Server):
        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            if on_stopping is not None:
                on_stopping()
            await super().shutdown(sockets)

    sockets = _listen(settings.host, settings.port)
    uvicorn_server = Server(uvicorn_config(app, settings))
    redaction.install(log_level)  # after uvicorn configured its loggers

    async def serve() -> None:
        task = asyncio.create_task(uvicorn_server.serve(sockets=sockets))
        while not uvicorn_server.started and not task.done():
            await asyncio.sleep(0.05)
        if uvicorn_server.started:
            port = uvicorn_server.servers[0].sockets[0].getsockname()[1]
            # What the server made to start (modules, routes, the database's metadata) lives as long as it
            # does: kept out of the collector's sight, the objects of calls are collected without it.
            gc.collect()
            gc.freeze()
            on_ready(f"http://{settings.host}:{port}")
        await task

    uvloop.run(serve())


def _listen(host: str, port: int) -> list[socket.socket]:
    """The server's sockets, bound before anything starts (as uvicorn would bind them: every address `host`
    names), so a taken port is reported at once rather than after the workers started or the database was
    migrated."""
    sockets: list[socket.socket] = []
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        for family, address in dict.fromkeys((info[0], info[4]) for info in found):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise CannotListen(f"port {port} on {host} is in use; stop what uses it or pass --port") from None
        raise CannotListen(f"cannot listen on port {port} of {host}: {exc.strerror or exc}") from None
    return sockets


def _reach_database(database: Database, url: str) -> None:
    """Connect once before serving, so a database that cannot be reached (or a URL it cannot be opened
    with) is one clear `DatabaseUnavailable` rather than a failed start deep in the server."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        with database.engine.connect():
            pass
    except SQLAlchemyError as exc:
        verb = "open" if database.dialect == "sqlite" else "reach"
        message = f"cannot {verb} the database at {_without_password(url)}: {_connect_failure(exc)}"
        raise DatabaseUnavailable(message) from None


def _without_password(url: str) -> str:
    """`url` as a message may show it: without the password, or the query that may hold one."""
    parts = urlsplit(url)
    if parts.password is None and not parts.query:
        return url
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{parts.username}@{host}" if parts.username else host
    return f"{parts.scheme}://{netloc}{parts.path}"


def _connect_failure(error: BaseException) -> str:
    """The driver's words for why it could not connect, without where to (the message names the URL)."""
    driver = getattr(error, "orig", None) or error
    first_line = str(driver).strip().split("\n", 1)[0]
    reason = first_line.rsplit(" failed: ", 1)[-1].strip()  # psycopg: "connection to server at ... failed: "
    return reason[:1].lower() + reason[1:] if reason[1:2].islower() else reason


async def run_local_predict(
    directory: Path,
    *,
    form: list[tuple[str, str | Path]],
    settings: Settings,
) -> dict[str, Any]:
    """Run one request against a module directory in worker processes, without HTTP."""
    definition = read_module(directory)
    served = await start_module(
        definition, version="local", settings=settings, replicas=1, log=worker_log_printer(definition.name)
    )
    workdir = Path(tempfile.mkdtemp(dir=_uploads(settings)))
    try:
        request = _local_request(definition.spec, form)
        FileChecker(
            directory=workdir,
            max_upload_bytes=settings.max_upload_bytes,
            max_image_pixels=settings.max_image_pixels,
        ).resolve(definition.spec, request)
        outputs = await predict(served, request)
        return {"outputs": outputs[0], "module": definition.name, "version": served.version}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        await served.pool.close(grace=5)


def _local_request(spec: Any, form: list[tuple[str, str | Path]]) -> ParsedRequest:
    items: list[tuple[str, str | UploadedFile]] = []
    for name, value in form:
        if isinstance(value, Path):
            items.append((name, UploadedFile(str(value.resolve()), value.name, "", value.stat().st_size)))
        else:
            items.append((name, value))
    return parse_form(spec, items)


def _uploads(settings: Settings) -> Path:
    path = settings.data_dir / "uploads"
    path.mkdir(parents=True, exist_ok=True)
    return path
