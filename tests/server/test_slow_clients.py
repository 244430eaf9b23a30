"""Slow and greedy clients against a real `modelport server`: a request head must arrive within
`MODELPORT_HEADER_TIMEOUT_SECONDS`, and one address holds at most `MODELPORT_MAX_CONNECTIONS_PER_ADDRESS`
connections. Raw sockets, since no HTTP client sends a head a byte at a time.

One server serves every test here, with a 1 s deadline and 5 connections per address.
"""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack

import httpx
import pytest
from platform_server import ADMIN_TOKEN, ServerProcess

from modelport.app import uvicorn_config
from modelport.core.settings import Settings
from modelport.gateway.connections import GuardedHttpProtocol

DEADLINE = 1.0
SLACK = 1.5
CAP = 5
REQUEST = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
HEAD_START = b"GET /healthz HTTP/1.1\r\nHost: x\r\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(
        tmp_path_factory.mktemp("slow-clients") / "server",
        token=ADMIN_TOKEN,
        env={
            "MODELPORT_HEADER_TIMEOUT_SECONDS": str(DEADLINE),
            "MODELPORT_MAX_CONNECTIONS_PER_ADDRESS": str(CAP),
        },
    )
    process.start()
    try:
        yield process
    finally:
        process.stop()


def connect(server: ServerProcess) -> socket.socket:
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=5)


def wait_closed(sock: socket.socket, seconds: float, *, meanwhile: Callable[[], None] | None = None) -> bytes:
    """What the server sends until it closes the connection, running `meanwhile` every 0.3 s; fails if the
    connection is still open after `seconds`."""
    received = b""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select([sock], [], [], min(0.3, left))
        if readable:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                return received
            if not chunk:
                return received
            received += chunk
        elif meanwhile is not None:
            meanwhile()
    pytest.fail(f"the connection is still open after {seconds} s (received {received!r})")


def parse(response: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return int(status_line.split(" ")[1]), headers, body


def exchange(sock: socket.socket) -> int:
    """Send one request on `sock` and read its whole response; the status."""
    sock.sendall(REQUEST)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed by the server after {data!r}")
        data += chunk
    status, headers, body = parse(data)
    while len(body) < int(headers["content-length"]):
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed by the server in the middle of a response")
        body += chunk
    return status


def hold(server: ServerProcess, stack: ExitStack, count: int) -> list[socket.socket]:
    """`count` connections, each answered once (so counted by the server), kept open in `stack`. Retries
    until connections closed just before are released too."""
    deadline = time.monotonic() + 10
    while True:
        with ExitStack() as attempt:
            sockets = [attempt.enter_context(connect(server)) for _ in range(count)]
            try:
                if all(exchange(sock) == 200 for sock in sockets):
                    stack.push(attempt.pop_all())
                    return sockets
            except ConnectionError:
                pass
        if time.monotonic() > deadline:
            pytest.fail(f"{count} connections from one address are not all served")


def test_the_server_uses_the_guarded_protocol_with_the_settings() -> None:
    config = uvicorn_config(object(), Settings(header_timeout_seconds=3, max_connections_per_address=7))
    assert isinstance(config.http, type) and issubclass(config.http, GuardedHttpProtocol)
    assert config.http.header_timeout == 3
    assert config.http.per_address is not None and config.http.per_address.limit == 7
    unlimited = uvicorn_config(object(), Settings(max_connections_per_address=0)).http
    assert isinstance(unlimited, type) and issubclass(unlimited, GuardedHttpProtocol)
    assert unlimited.per_address is None


@pytest.mark.slow
def test_a_head_sent_a_byte_at_a_time_is_cut_off_at_the_deadline(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url, timeout=5) as client, connect(server) as slow:
        opened = time.monotonic()
        slow.sendall(HEAD_START)

        def trickle_and_call() -> None:
            try:
                slow.sendall(b"X")
            except (BrokenPipeError, ConnectionResetError):
                return
            assert client.get("/healthz").status_code == 200

        answer = wait_closed(slow, DEADLINE + SLACK, meanwhile=trickle_and_call)
        assert time.monotonic() - opened >= DEADLINE - 0.1
        assert parse(answer)[0] == 408
        assert client.get("/healthz").status_code == 200


@pytest.mark.slow
def test_a_connection_that_sends_nothing_is_closed_at_the_deadline(server: ServerProcess) -> None:
    with connect(server) as silent:
        opened = time.monotonic()
        assert wait_closed(silent, DEADLINE + SLACK) == b""
        assert time.monotonic() - opened >= DEADLINE - 0.1


@pytest.mark.slow
def test_one_address_holds_at_most_the_cap_and_gets_its_connections_back(server: ServerProcess) -> None:
    with ExitStack() as held:
        hold(server, held, CAP)
        for _ in range(3):
            with connect(server) as extra:
                status, headers, body = parse(wait_closed(extra, 5))
                assert status == 503
                assert headers["retry-after"] == "1"
                assert headers["content-type"] == "application/json"
                assert json.loads(body)["error"]["code"] == "too_many_connections"
    # Connections closed after a request, without one, and refused ones: each is counted back, and once.
    for _ in range(10):
        with ExitStack() as churn:
            hold(server, churn, CAP)
            with connect(server) as extra:
                assert parse(wait_closed(extra, 5))[0] == 503
    for number in range(50):
        with connect(server) as sock:
            if number % 2:
                assert exchange(sock) == 200
    with ExitStack() as held:
        hold(server, held, CAP)
        with connect(server) as extra:
            assert parse(wait_closed(extra, 5))[0] == 503


@pytest.mark.slow
def test_a_keep_alive_client_keeping_pace_is_served_until_its_next_head_stalls(server: ServerProcess) -> None:
    with connect(server) as sock:
        assert exchange(sock) == 200
        for _ in range(19):
            time.sleep(0.15)  # the client's own pace, well inside the deadline
            assert exchange(sock) == 200
        answered = time.monotonic()
        sock.sendall(HEAD_START)
        assert parse(wait_closed(sock, DEADLINE + SLACK))[0] == 408
        assert time.monotonic() - answered >= DEADLINE - 0.1


@pytest.mark.slow
def test_pipelined_requests_are_answered_and_a_stalled_head_behind_them_is_cut_off(
    server: ServerProcess,
) -> None:
    with connect(server) as sock:
        sock.sendall(REQUEST + REQUEST + HEAD_START)
        answers = wait_closed(sock, DEADLINE + SLACK + 5)
        assert answers.count(b"HTTP/1.1 200 OK") == 2
        assert answers.rsplit(b"HTTP/1.1 ", 1)[1].startswith(b"408")
