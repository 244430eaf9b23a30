"""An ASGI application served in this process for synchronous tests: no socket, no server process.

The application's lifespan runs on an event loop in a thread of its own, where every request is handled too,
so its background tasks and the requests share one loop, as under uvicorn. `client()` gives ordinary
`httpx.Client`s, so the synchronous helpers of the end-to-end tests (`tests/drive.py`) work unchanged.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Future
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx
from platform_server import ADMIN_TOKEN
from starlette.types import ASGIApp

from modelport.app import PlatformServer
from modelport.core.settings import Settings

CLIENT_ADDRESS = ("127.0.0.1", 50000)
_TIMEOUT = 120.0


class InProcessApp:
    """`app` with `lifespan` entered on a loop thread while the `with` block lasts."""

    def __init__(self, app: ASGIApp, lifespan: Callable[[], AbstractAsyncContextManager[Any]]) -> None:
        self.app, self._lifespan = app, lifespan
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="in-process-app", daemon=True)
        self._running: AbstractAsyncContextManager[Any] | None = None

    def __enter__(self) -> Self:
        self._thread.start()
        self._running = self._lifespan()
        self.run(self._running.__aenter__())
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if self._running is not None:
                self.run(self._running.__aexit__(kind, error, tb))
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(_TIMEOUT)
            self._loop.close()

    def run(self, work: Any) -> Any:
        """Run a coroutine on the application's loop and wait for its result."""
        future: Future[Any] = asyncio.run_coroutine_threadsafe(work, self._loop)
        return future.result(_TIMEOUT)

    def client(self, headers: dict[str, str] | None = None) -> httpx.Client:
        return httpx.Client(
            transport=_Bridge(self), base_url="http://testserver", headers=headers or {}, timeout=_TIMEOUT
        )


class _Bridge(httpx.BaseTransport):
    """Hands each request to `httpx.ASGITransport` on the application's loop; the body is read there."""

    def __init__(self, served: InProcessApp) -> None:
        self.served = served
        self.transport = httpx.ASGITransport(app=served.app, client=CLIENT_ADDRESS)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        forwarded = httpx.Request(request.method, request.url, headers=request.headers, content=body)
        status, headers, content = self.served.run(self._send(forwarded))
        return httpx.Response(status, headers=headers, content=content, request=request)

    async def _send(self, request: httpx.Request) -> tuple[int, httpx.Headers, bytes]:
        response = await self.transport.handle_async_request(request)
        try:
            content = b"".join([chunk async for chunk in response.aiter_raw()])  # as sent: not decoded
        finally:
            await response.aclose()
        return response.status_code, response.headers, content


def platform_server(data_dir: Path, **settings: object) -> PlatformServer:
    """The platform's composition root with the settings a `platform` server process gets, and `settings`."""
    defaults: dict[str, object] = {
        "data_dir": data_dir,
        "bootstrap_token": ADMIN_TOKEN,
        "rollback_grace_seconds": 0,
        "drain_seconds": 10,
    }
    return PlatformServer(Settings(**{**defaults, **settings}), announce=lambda line: None)  # type: ignore[arg-type]


@dataclass
class InProcessPlatform:
    """The platform running in this process; `client(token)` talks to it without sockets, asynchronously."""

    server: PlatformServer
    token: str

    def client(self, token: str | None = None) -> httpx.AsyncClient:
        """A client of the app; `token` defaults to the admin's, and `""` sends no credentials."""
        token = self.token if token is None else token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        transport = httpx.ASGITransport(app=self.server.app, client=CLIENT_ADDRESS)
        return httpx.AsyncClient(transport=transport, base_url="http://testserver", headers=headers)


@asynccontextmanager
async def started_platform(data_dir: Path, **settings: object) -> AsyncIterator[InProcessPlatform]:
    """The platform of `platform_server`, its lifespan running on the caller's event loop."""
    server = platform_server(data_dir, **settings)
    async with server.running():
        yield InProcessPlatform(server, ADMIN_TOKEN)


@contextmanager
def served_platform(data_dir: Path, **settings: object) -> Iterator[InProcessApp]:
    """The platform of `platform_server` for synchronous tests: `.client(headers)` gives httpx clients."""
    server = platform_server(data_dir, **settings)
    with InProcessApp(server.app, server.running) as served:
        yield served
