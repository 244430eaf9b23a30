"""Request bodies cannot exhaust the gateway: memory held, time taken, and what a form may keep in memory.

The first tests drive a real server process whose memory is measured (`VmRSS`) while clients send it large
bodies in parallel, stop half-way or trickle; the last ones run the layer and the predict route in process.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import io
import json
import os
import select
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from drive import deploy, wait_built, wait_deployment
from PIL import Image
from platform_server import ADMIN_TOKEN, ServerProcess
from pydantic import ValidationError
from starlette.types import Message, Receive, Scope, Send

from modelport.artifacts import Artifact, pack
from modelport.core.settings import Settings
from modelport.gateway.middleware import BodyLimit, Limits

MiB = 1024 * 1024
MAX_BODY = 4 * MiB
IN_FLIGHT = MAX_BODY  # one call body at a time, so that "the whole budget" is one request of the largest size
MAX_ARTIFACT = 40 * MiB
BODY_TIMEOUT = 1.0
PREDICT = "/api/v1/modules/echo/predict"
ECHO = Path(__file__).parents[1] / "fixtures" / "modules" / "echo"
CALL_HEAD, CALL_TAIL = b'{"inputs": {"text": "', b'"}, "output_fields": ["length"]}'


class PeakRss:
    """The largest resident set of process `pid` while the block runs, sampled every few milliseconds."""

    def __init__(self, pid: int) -> None:
        self.pid, self.base, self.peak = pid, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakRss:
        self.base = self.peak = rss(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self.peak = max(self.peak, rss(self.pid))

    @property
    def growth(self) -> int:
        return self.peak - self.base

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, rss(self.pid))


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"process {pid} reports no VmRSS")


def call_body(size: int) -> bytes:
    """A call of the `echo` module that is exactly `size` bytes long."""
    return CALL_HEAD + b"x" * (size - len(CALL_HEAD) - len(CALL_TAIL)) + CALL_TAIL


def open_request(
    url: str, path: str, length: int, first: bytes = b"", content_type: str = "application/json"
) -> socket.socket:
    """A request whose head and the `first` bytes of its body are sent; the rest is the caller's to send."""
    parts = urlsplit(url)
    assert parts.hostname and parts.port
    connection = socket.create_connection((parts.hostname, parts.port), timeout=10)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {parts.hostname}\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {length}\r\n\r\n"
    )
    connection.sendall(head.encode() + first)
    return connection


def answered(connection: socket.socket, timeout: float = 0.0) -> bool:
    return bool(select.select([connection], [], [], timeout)[0])


def read_response(connection: socket.socket) -> tuple[int, dict[str, str], Any]:
    response = http.client.HTTPResponse(connection)
    response.begin()
    body = response.read()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, json.loads(body)


def closed_by_server(connection: socket.socket, timeout: float = 5.0) -> bool:
    connection.settimeout(timeout)
    try:
        return connection.recv(1) == b""
    except ConnectionResetError:
        return True


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with small body limits and the `echo` module deployed."""
    root = tmp_path_factory.mktemp("bodies")
    limits = {
        "MODELPORT_MAX_BODY_BYTES": str(MAX_BODY),
        "MODELPORT_MAX_BODY_BYTES_IN_FLIGHT": str(IN_FLIGHT),
        "MODELPORT_MAX_ARTIFACT_BYTES": str(MAX_ARTIFACT),
        "MODELPORT_BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT),
    }
    process = ServerProcess(root / "server", token=ADMIN_TOKEN, env=limits)
    process.start()
    try:
        directory = shutil.copytree(ECHO, root / "echo", ignore=shutil.ignore_patterns("__pycache__"))
        with process.client() as client:
            assert push(client, pack(directory, version="v1", use_git=False)).status_code == 201
            assert wait_built(client, "echo", "v1")["build_status"] == "ready"
            deployment = wait_deployment(client, "echo", deploy(client, "echo", "v1")["generation"])
            assert deployment["status"] == "ready", deployment
        yield process
    finally:
        process.stop()


def push(client: httpx.Client, artifact: Artifact, *, digest: str | None = None) -> httpx.Response:
    return client.post(
        f"/api/v1/modules/{artifact.name}/versions",
        params={"version": artifact.version},
        content=artifact.data,
        headers={"Content-Type": "application/gzip", "X-Content-Digest": digest or artifact.digest},
    )


def push_stream(url: str, version: str, prefix: bytes, blob: bytes) -> httpx.Response:
    """Push `prefix + blob` (not a valid artifact) with its right digest, streamed from the shared `blob`."""
    digest = hashlib.sha256(prefix)
    digest.update(blob)

    def chunks() -> Iterator[bytes]:
        yield prefix
        view = memoryview(blob)
        for start in range(0, len(blob), MiB):
            yield bytes(view[start : start + MiB])

    headers = {
        "Authorization": f"Bearer {ADMIN_TOKEN}",
        "Content-Type": "application/gzip",
        "Content-Length": str(len(prefix) + len(blob)),
        "X-Content-Digest": f"sha256:{digest.hexdigest()}",
    }
    with httpx.Client(base_url=url, timeout=60) as client:
        return client.post(
            "/api/v1/modules/echo/versions", params={"version": version}, content=chunks(), headers=headers
        )


@pytest.mark.slow
def test_parallel_large_bodies_keep_the_gateway_memory_bounded(server):
    calls, artifacts = 10, 10
    body = call_body(MAX_BODY)
    blob = os.urandom(MAX_ARTIFACT - MiB)
    admitted = IN_FLIGHT // MAX_BODY
    pushes: list[httpx.Response] = []
    with ExitStack() as sockets, PeakRss(server.pid) as memory:
        # Every call sends its head and half its body, and holds the rest back.
        held = [
            sockets.enter_context(open_request(server.url, PREDICT, len(body), body[: len(body) // 2]))
            for _ in range(calls)
        ]
        refused: list[socket.socket] = []  # answered before the rest of their bodies was sent
        deadline = time.monotonic() + 10
        while len(refused) < calls - admitted and time.monotonic() < deadline:
            refused += select.select([c for c in held if c not in refused], [], [], 0.1)[0]
        # While the admitted calls wait for the rest of their bodies, version artifacts arrive in parallel.
        threads = [
            threading.Thread(
                target=lambda i=i: pushes.append(push_stream(server.url, f"big{i}", os.urandom(16), blob))
            )
            for i in range(artifacts)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        waiting = [c for c in held if c not in refused]
        for connection in waiting:
            connection.sendall(body[len(body) // 2 :])
        answers = [read_response(c) for c in held]
    sent = calls * len(body) + artifacts * (len(blob) + 16)
    assert memory.growth < sent / 4, (
        f"the server grew by {memory.growth / MiB:.0f} MiB for {sent / MiB:.0f} MiB"
    )
    assert len(refused) == calls - admitted
    for status, headers, error in (a for c, a in zip(held, answers, strict=True) if c in refused):
        assert (status, error["error"]["code"]) == (503, "overloaded")
        assert int(headers["retry-after"]) >= 1
    for status, _, answer in (a for c, a in zip(held, answers, strict=True) if c not in refused):
        assert status == 200 and answer["outputs"]["length"] == len(body) - len(CALL_HEAD) - len(CALL_TAIL)
    assert len(pushes) == artifacts
    for push in pushes:
        # Streamed whole and hashed: the digest matched, and the bytes are no artifact.
        assert push.status_code == 400 and push.json()["error"]["code"] == "invalid_module", push.text
    with server.client() as client:
        too_big = client.post(
            "/api/v1/modules/echo/versions", params={"version": "huge"}, content=b"x" * (MAX_ARTIFACT + 1)
        )
        assert too_big.status_code == 413
        normal = client.post(PREDICT, json={"inputs": {"text": "still here"}})
        assert normal.status_code == 200 and normal.json()["outputs"]["text"] == "still here"


@pytest.mark.slow
def test_an_artifact_near_its_limit_is_spooled_to_disk_and_its_digest_checked(server, tmp_path):
    directory = shutil.copytree(ECHO, tmp_path / "echo", ignore=shutil.ignore_patterns("__pycache__"))
    (directory / "weights.bin").write_bytes(os.urandom(MAX_ARTIFACT - 2 * MiB))  # incompressible
    artifact = pack(directory, version="weights", use_git=False)
    assert MAX_ARTIFACT - 3 * MiB < artifact.size <= MAX_ARTIFACT
    with server.client() as client:
        with PeakRss(server.pid) as memory:
            response = push(client, artifact)
        assert response.status_code == 201, response.text
        assert (response.json()["digest"], response.json()["size"]) == (artifact.digest, artifact.size)
        assert memory.growth < artifact.size / 4, f"the server grew by {memory.growth / MiB:.0f} MiB"
        stored = server.data_dir / "artifacts" / f"{artifact.digest.replace(':', '-')}.tar.gz"
        assert stored.read_bytes() == artifact.data
        damaged = push(client, replace(artifact, version="damaged"), digest="sha256:" + "0" * 64)
        assert damaged.status_code == 400, damaged.text
        assert "damaged in transit" in damaged.json()["error"]["message"]
        names = [v["name"] for v in client.get("/api/v1/modules/echo/versions").json()["versions"]]
        assert sorted(names) == ["v1", "weights"]
    assert not list((server.data_dir / "tmp").iterdir())


@contextmanager
def holding_the_budget(url: str, client: httpx.Client, body: bytes) -> Iterator[socket.socket]:
    """A call of `body` (the whole budget) sent half-way, once the server holds it: a small call gets 503."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with open_request(url, PREDICT, len(body), body[: len(body) // 2]) as call:
            probe = client.post(PREDICT, json={"inputs": {"text": "x"}})
            while probe.status_code == 200 and not answered(call) and time.monotonic() < deadline:
                probe = client.post(PREDICT, json={"inputs": {"text": "x"}})
            if probe.status_code == 503:
                assert probe.json()["error"]["code"] == "overloaded"
                yield call
                return
            # A probe arrived first and the call was refused: send it again.
    raise AssertionError("no call of the whole budget was ever held")


@pytest.mark.slow
def test_a_body_abandoned_half_way_gives_its_reservation_back(server):
    body = call_body(MAX_BODY)
    with server.client() as client:
        for _ in range(3):
            with holding_the_budget(server.url, client, body):
                pass  # the client goes away half-way through its body
            deadline = time.monotonic() + 10
            whole = client.post(PREDICT, content=body, headers={"Content-Type": "application/json"})
            while whole.status_code == 503 and time.monotonic() < deadline:
                whole = client.post(PREDICT, content=body, headers={"Content-Type": "application/json"})
            assert whole.status_code == 200, whole.text


@pytest.mark.slow
@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        (PREDICT, "application/json"),
        ("/api/v1/modules/echo/versions?version=slow", "application/gzip"),
        ("/api/v1/apply", "application/json"),
    ],
)
def test_a_trickled_or_stalled_body_gets_408_and_its_connection_closed(server, path, content_type):
    for trickle in (True, False):
        started = time.monotonic()
        connection = open_request(server.url, path, 1000, b"{", content_type)
        with connection:
            while not answered(connection, 0.2) and time.monotonic() - started < 10:
                if trickle:
                    connection.sendall(b" ")
            elapsed = time.monotonic() - started
            status, headers, error = read_response(connection)
            assert (status, error["error"]["code"]) == (408, "body_timeout"), (path, trickle, error)
            assert elapsed < BODY_TIMEOUT + 3, (path, trickle, elapsed)
            assert headers["connection"] == "close" and closed_by_server(connection)


# The layer in process


class Exchange:
    """A request as the layer sees it: its body arrives in `pieces`, the last one only once `gate` is set."""

    def __init__(self, pieces: list[bytes], gate: asyncio.Event | None = None) -> None:
        self.pieces, self.gate = list(pieces), gate
        self.reads = 0
        self.sent: list[Message] = []

    async def receive(self) -> Message:
        self.reads += 1
        if not self.pieces:
            await asyncio.Event().wait()  # the client stays connected
        if len(self.pieces) == 1 and self.gate is not None:
            await self.gate.wait()
        piece = self.pieces.pop(0)
        return {"type": "http.request", "body": piece, "more_body": bool(self.pieces)}

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    @property
    def statuses(self) -> list[int]:
        return [m["status"] for m in self.sent if m["type"] == "http.response.start"]


async def read_all(scope: Scope, receive: Receive, send: Send) -> None:
    """A route that reads its whole body, then answers 200."""
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"read"})


def http_scope(length: int | None, path: str = "/call") -> Scope:
    headers = [(b"content-length", str(length).encode())] if length is not None else []
    return {"type": "http", "method": "POST", "path": path, "headers": headers}


def gate_layer(tmp_path: Path, app: Any = read_all, **values: Any) -> BodyLimit:
    """The layer over `app`: calls held in memory, `/upload` streamed to disk; room for two 1 KiB bodies."""
    settings = Settings(data_dir=tmp_path, max_body_bytes=1024, max_body_bytes_in_flight=2048, **values)
    held, streamed = Limits(1024, 1024), Limits(10_000, 0)
    return BodyLimit(
        app, limits=lambda scope: streamed if scope["path"] == "/upload" else held, settings=settings
    )


async def test_declared_bodies_are_reserved_before_they_are_read_and_given_back(tmp_path):
    layer = gate_layer(tmp_path)
    gate = asyncio.Event()
    first, second = Exchange([b"a" * 512, b"a" * 512], gate), Exchange([b"b" * 512, b"b" * 512], gate)
    running = [asyncio.create_task(layer(http_scope(1024), e.receive, e.send)) for e in (first, second)]
    while first.reads + second.reads < 4:  # both have read their first half and wait for the rest
        await asyncio.sleep(0)
    refused = Exchange([b"c"])
    await layer(http_scope(1), refused.receive, refused.send)
    assert refused.statuses == [503] and refused.reads == 0
    upload = Exchange([b"u" * 5000, b"u" * 5000])
    await layer(http_scope(10_000, "/upload"), upload.receive, upload.send)
    assert upload.statuses == [200]
    gate.set()
    await asyncio.gather(*running)
    assert first.statuses == second.statuses == [200] and layer.free == 2048


async def test_a_chunked_body_is_counted_as_it_arrives(tmp_path):
    layer = gate_layer(tmp_path)
    gate = asyncio.Event()
    holding = [Exchange([b"a" * 512, b"a" * 512], gate), Exchange([b"b" * 300, b"b" * 300], gate)]
    running = [
        asyncio.create_task(layer(http_scope(length), e.receive, e.send))
        for e, length in zip(holding, (1024, 600), strict=True)
    ]
    while not all(e.reads for e in holding):
        await asyncio.sleep(0)
    assert layer.free == 2048 - 1024 - 600
    chunked = Exchange([b"c" * 400, b"c" * 400, b"c"])
    await layer(http_scope(None), chunked.receive, chunked.send)
    assert chunked.statuses == [503] and chunked.reads == 2  # refused once its bytes passed what was left
    assert layer.free == 2048 - 1024 - 600
    gate.set()
    await asyncio.gather(*running)
    over = Exchange([b"d" * 1000, b"d" * 1000])
    await layer(http_scope(None), over.receive, over.send)
    assert over.statuses == [413] and layer.free == 2048


async def test_a_route_that_fails_gives_its_reservation_back(tmp_path):
    async def failing(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        raise RuntimeError("the route broke")

    layer = gate_layer(tmp_path, failing)
    exchange = Exchange([b"a" * 1024])
    with pytest.raises(RuntimeError):
        await layer(http_scope(1024), exchange.receive, exchange.send)
    assert layer.free == 2048


async def test_a_stalled_body_is_answered_408_whatever_the_route_makes_of_it(tmp_path):
    async def converting(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await receive()
            await receive()
        except Exception:  # as FastAPI does: any failure to read the body becomes a 400
            await send({"type": "http.response.start", "status": 400, "headers": []})
            await send({"type": "http.response.body", "body": b"bad"})

    layer = gate_layer(tmp_path, converting, body_timeout_seconds=0.05)
    stalled = Exchange([b"a" * 10, b"never"], gate=asyncio.Event())
    await layer(http_scope(1024), stalled.receive, stalled.send)
    assert stalled.statuses == [408]
    assert (b"connection", b"close") in stalled.sent[0]["headers"]
    assert json.loads(stalled.sent[1]["body"])["error"]["code"] == "body_timeout"
    assert layer.free == 2048


def test_the_budget_must_hold_the_largest_body(tmp_path):
    with pytest.raises(ValidationError) as refused:
        Settings(data_dir=tmp_path, max_body_bytes=2 * MiB, max_body_bytes_in_flight=MiB)
    assert [error["loc"] for error in refused.value.errors()] == [("max_body_bytes_in_flight",)]


# Forms


async def test_a_form_text_field_over_a_mebibyte_is_413(fixture_module, serve):
    async with serve(fixture_module("typed")) as served:
        fields = {"inputs.count": "1", "inputs.name": "x" * (MiB + 1)}
        response = await served.client.post(
            "/api/v1/modules/typed/predict", files={k: (None, v) for k, v in fields.items()}
        )
        assert response.status_code == 413
        error = response.json()["error"]
        assert error["code"] == "payload_too_large" and "'inputs.name'" in error["message"]


async def test_a_forms_files_go_to_disk_and_only_what_it_holds_in_memory_counts(fixture_module, serve):
    url = "/api/v1/modules/files/predict"
    document = os.urandom(512 * 1024)
    png = io.BytesIO()
    Image.new("RGB", (8, 8)).save(png, format="PNG")
    async with serve(fixture_module("files"), max_body_bytes=64 * 1024) as served:
        response = await served.client.post(
            url,
            files={
                "inputs.image": ("photo.png", png.getvalue(), "image/png"),
                "inputs.document": ("notes.bin", document, "application/octet-stream"),
            },
        )
        assert response.status_code == 200, response.text
        assert response.json()["outputs"]["info"]["document"]["size"] == len(document)
        text = {f"parameters.p{i}": (None, "x" * 20_000) for i in range(4)}
        too_much = await served.client.post(url, files=text)
        assert too_much.status_code == 413
        assert "held in memory" in too_much.json()["error"]["message"]
