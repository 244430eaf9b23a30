"""Per-caller rate limits: counts, headers, a count shared through a real Redis, failing open without it."""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from modelport.gateway import ratelimit
from modelport.gateway.ratelimit import Decision, RateLimiter


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A throwaway `redis-server` on 127.0.0.1, no persistence; `stop()` ends exactly the one it started."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server not found; run scripts/install-system-deps.sh")
        self.port = port or _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            cwd=directory,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._wait_until_ready()

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.02)
        self.stop()
        raise RuntimeError("redis-server did not answer PING within 10 s")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    started: list[RedisServer] = []

    def start(port: int | None = None) -> RedisServer:
        server = RedisServer(tmp_path, port)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
async def limiters() -> AsyncIterator[Callable[[str | None], RateLimiter]]:
    made: list[RateLimiter] = []

    def make(url: str | None = None) -> RateLimiter:
        made.append(RateLimiter(url))
        return made[-1]

    yield make
    for limiter in made:
        await limiter.close()


async def hits(limiter: RateLimiter, key: str, rate: str, count: int) -> list[Decision]:
    return [await limiter.hit(key, rate) for _ in range(count)]


# In memory


async def test_the_limit_admits_n_requests_then_refuses(limiters: Callable[[str | None], RateLimiter]):
    first, second, third, refused = await hits(limiters(None), "api:alice", "3/minute", 4)

    assert [d.allowed for d in (first, second, third, refused)] == [True, True, True, False]
    assert [d.remaining for d in (first, second, third, refused)] == [2, 1, 0, 0]
    assert first.headers() == {
        "RateLimit-Limit": "3",
        "RateLimit-Remaining": "2",
        "RateLimit-Reset": "60",
        "RateLimit-Policy": "3;w=60",
    }
    headers = refused.headers()
    assert headers["RateLimit-Limit"] == "3"
    assert headers["RateLimit-Remaining"] == "0"
    assert headers["RateLimit-Policy"] == "3;w=60"
    assert headers["Retry-After"] == headers["RateLimit-Reset"]
    assert 1 <= int(headers["Retry-After"]) <= 60
    assert 59 < refused.reset_after <= 60


async def test_the_window_frees_a_request_when_retry_after_says(
    limiters: Callable[[str | None], RateLimiter],
):
    limiter = limiters(None)
    *_, refused = await hits(limiter, "api:bob", "2/second", 3)

    assert not refused.allowed
    assert refused.headers()["Retry-After"] == "1"
    assert 0 < refused.reset_after <= 1
    # Knocking again costs nothing while refused (the moving window records no refused request).
    started, deadline = time.monotonic(), time.monotonic() + refused.reset_after + 1
    while not (again := await limiter.hit("api:bob", "2/second")).allowed and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    let_in_after = time.monotonic() - started

    assert again.allowed, f"still refused {let_in_after:.2f} s on; reset_after: {refused.reset_after:.2f}"
    assert let_in_after >= refused.reset_after - 0.02, "let in before the window freed a request"


async def test_keys_are_counted_apart(limiters: Callable[[str | None], RateLimiter]):
    limiter = limiters(None)
    await hits(limiter, "api:alice", "1/minute", 1)

    assert not (await limiter.hit("api:alice", "1/minute")).allowed
    assert (await limiter.hit("api:bob", "1/minute")).allowed
    assert (await limiter.hit("other-api:alice", "1/minute")).allowed


async def test_each_rate_has_its_own_window(limiters: Callable[[str | None], RateLimiter]):
    limiter = limiters(None)
    await hits(limiter, "api:alice", "1/minute", 1)

    assert not (await limiter.hit("api:alice", "1/minute")).allowed
    assert (await limiter.hit("api:alice", "2/minute")).allowed
    assert (await limiter.hit("api:alice", "10 per second")).allowed


@pytest.mark.parametrize(
    ("rate", "policy"),
    [
        ("60/minute", "60;w=60"),
        ("10 per second", "10;w=1"),
        ("5/hours", "5;w=3600"),
        ("1 per day", "1;w=86400"),
    ],
)
async def test_rates_are_read_in_the_limits_notation(
    limiters: Callable[[str | None], RateLimiter], rate: str, policy: str
):
    decision = await limiters(None).hit("api:alice", rate)

    assert decision.policy == policy
    assert decision.headers()["RateLimit-Policy"] == policy


@pytest.mark.parametrize("rate", ["sixty a minute", "60/fortnight", "1/second;5/minute"])
async def test_a_malformed_rate_is_an_error(limiters: Callable[[str | None], RateLimiter], rate: str):
    with pytest.raises(ValueError):
        await limiters(None).hit("api:alice", rate)


def test_an_unknown_storage_is_refused_without_echoing_the_url():
    with pytest.raises(ValueError, match="'memcached'") as caught:
        RateLimiter("memcached://user:s3cret@cache:11211")

    assert "s3cret" not in str(caught.value)


def test_headers_round_the_reset_up_and_never_announce_zero_when_refused():
    refused = Decision(allowed=False, limit=5, remaining=0, reset_after=0.01, policy="5;w=1")
    allowed = Decision(allowed=True, limit=5, remaining=4, reset_after=12.2, policy="5;w=60")

    assert refused.headers()["Retry-After"] == "1"
    assert refused.headers()["RateLimit-Reset"] == "1"
    assert allowed.headers()["RateLimit-Reset"] == "13"
    assert "Retry-After" not in allowed.headers()


# Redis


@pytest.mark.slow
async def test_limiters_sharing_a_redis_share_the_count(
    redis_server: Callable[..., RedisServer], limiters: Callable[[str | None], RateLimiter]
):
    server = redis_server()
    one, other = limiters(server.url), limiters(server.url.replace("redis://", "async+redis://"))

    assert (await one.hit("api:alice", "3/minute")).allowed
    assert (await other.hit("api:alice", "3/minute")).remaining == 1
    assert (await one.hit("api:alice", "3/minute")).allowed
    refused = await other.hit("api:alice", "3/minute")

    assert not refused.allowed
    assert 1 <= int(refused.headers()["Retry-After"]) <= 60
    assert (await other.hit("api:bob", "3/minute")).allowed


@pytest.mark.slow
async def test_a_stopped_redis_fails_open_with_one_warning(
    redis_server: Callable[..., RedisServer],
    limiters: Callable[[str | None], RateLimiter],
    caplog: pytest.LogCaptureFixture,
):
    caplog.set_level(logging.WARNING, logger="modelport.ratelimit")
    server = redis_server()
    limiter = limiters(server.url)
    assert (await limiter.hit("api:alice", "1/minute")).allowed
    server.stop()

    decisions = await hits(limiter, "api:alice", "1/minute", 3)

    assert all(d.allowed for d in decisions)
    assert decisions[0].headers()["RateLimit-Limit"] == "1"
    warnings = [r for r in caplog.records if r.name == "modelport.ratelimit"]
    assert len(warnings) == 1  # rate-limited: one warning for the whole outage
    assert warnings[0].levelno == logging.WARNING
    assert "letting requests through" in warnings[0].getMessage()
    assert "ConnectionError" in warnings[0].getMessage()


@pytest.mark.slow
async def test_counting_resumes_when_redis_is_back(
    redis_server: Callable[..., RedisServer],
    limiters: Callable[[str | None], RateLimiter],
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setattr(ratelimit, "_RETRY_AFTER_FAILURE_SECONDS", 0.0)
    server = redis_server()
    limiter = limiters(server.url)
    await limiter.hit("api:alice", "1/minute")
    server.stop()
    assert (await limiter.hit("api:alice", "1/minute")).allowed  # open: nothing to count with

    redis_server(server.port)  # the same address, empty

    assert (await limiter.hit("api:alice", "1/minute")).allowed
    assert not (await limiter.hit("api:alice", "1/minute")).allowed


async def test_an_unreachable_redis_fails_open(
    limiters: Callable[[str | None], RateLimiter], caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.WARNING, logger="modelport.ratelimit")
    limiter = limiters(f"redis://127.0.0.1:{_free_port()}/0")

    decision = await limiter.hit("api:alice", "1/minute")

    assert decision.allowed
    assert "ConnectionError" in caplog.text


async def test_a_hung_redis_delays_one_request_not_every_one(caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.WARNING, logger="modelport.ratelimit")
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        limiter = RateLimiter(f"redis://127.0.0.1:{silent.getsockname()[1]}/0", timeout=0.05)
        try:
            started = time.monotonic()
            first = await limiter.hit("api:alice", "1/minute")
            first_took = time.monotonic() - started
            started = time.monotonic()
            later = await hits(limiter, "api:alice", "1/minute", 5)
            later_took = time.monotonic() - started
        finally:
            await limiter.close()

    assert first.allowed
    assert all(d.allowed for d in later)
    assert first_took >= 0.05
    assert later_took < first_took / 2  # the storage was left alone
    assert "TimeoutError" in caplog.text
