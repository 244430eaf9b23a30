"""Job webhooks delivered from the outbox to a real receiver on 127.0.0.1, on each database backend: signed as
Standard Webhooks sign them (checked with the `standardwebhooks` package), retried while the receiver is down,
never redirected, signed with both secrets after a rotation, sent once however many gateways share the
outbox, and left pending, never lost, when a gateway stops mid-delivery."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from modelport.control.webhooks import Webhooks
from modelport.core.errors import WebhookSecretNotFound
from modelport.core.roles import Role
from modelport.core.settings import Settings
from modelport.db import Database, User
from modelport.db.models import WebhookMessage
from modelport.queue.jobs import JobQueue, NewJob, Outcome

METADATA = "http://169.254.169.254/latest/meta-data/"


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


Answer = Callable[[Received], tuple[int, dict[str, str]]]


class Receiver:
    """An HTTP server on 127.0.0.1 (port 0) answering each POST with `answer(request)`. It is bound at once
    but listens only from `start()`: until then, connections to it are refused."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.received: list[Received] = []
        self.release = threading.Event()  # lets answers that wait for it go
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                request = Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                receiver.received.append(request)
                status, headers = receiver.answer(request)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler, bind_and_activate=False)
        self.server.request_queue_size = 64  # every delivery of two gateways at once is let in
        self.server.server_bind()
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        self.server.server_activate()
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        if self.thread is not None:
            self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers() -> Iterator[Callable[[Answer], Receiver]]:
    made: list[Receiver] = []

    def make(answer: Answer) -> Receiver:
        made.append(Receiver(answer))
        return made[-1]

    yield make
    for receiver in made:
        receiver.close()


def ok(request: Received) -> tuple[int, dict[str, str]]:
    return 200, {}


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    database.migrate()
    try:
        yield database
    finally:
        database.close()


def add_user(database: Database, name: str) -> int:
    with database.session() as session:
        user = User(name=name, role=Role.USER)
        session.add(user)
        session.flush()
        return user.id


def settings(tmp_path: Path, **values: Any) -> Settings:
    defaults: dict[str, Any] = {
        "data_dir": tmp_path,
        "webhook_allowed_networks": ["127.0.0.0/8"],
        "webhook_retry_seconds": 0.001,
        "webhook_timeout_seconds": 5,
    }
    return Settings(**(defaults | values))


def finished_job(database: Database, user_id: int, url: str, events: tuple[str, ...] = ("completed",)) -> str:
    """A job submitted with a webhook, run and succeeded: its events wait in the outbox."""
    queue, now = JobQueue(database, ttl=3600), datetime.now(UTC)
    job_id = f"job_{uuid.uuid4().hex[:16]}"
    new = NewJob(
        id=job_id,
        kind="job",
        module="echo",
        version=None,
        caller="ann",
        caller_id=user_id,
        owner=f"user:{user_id}",
        client="127.0.0.1",
        request={"inputs": {"text": "hi"}},
        digest="digest",
        max_attempts=1,
        webhook=url,
        webhook_events=events,
    )
    queue.submit([new], now=now)
    [claimed] = queue.claim({"echo": 1}, now=now, lease=60)
    assert claimed.lease_token is not None
    outcome = Outcome(id=job_id, token=claimed.lease_token, status="succeeded", outputs={"text": "hi"})
    assert queue.finish([outcome], now=now) == {job_id}
    return job_id


def messages(database: Database, job_id: str) -> list[WebhookMessage]:
    with database.session() as session:
        query = select(WebhookMessage).where(WebhookMessage.job_id == job_id).order_by(WebhookMessage.event)
        return list(session.scalars(query))


@asynccontextmanager
async def delivering(*deliverers: Webhooks) -> AsyncIterator[None]:
    stop = asyncio.Event()
    tasks = [asyncio.create_task(webhooks.run(stop)) for webhooks in deliverers]
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 10)


async def until(check: Callable[[], Any], *, timeout: float = 15) -> Any:
    """Poll `check` (in a thread: it may read the database) until it answers something true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = await asyncio.to_thread(check)
        if found:
            return found
        await asyncio.sleep(0.02)
    raise AssertionError(f"nothing came within {timeout} s")


async def test_events_are_delivered_signed_once_the_receiver_is_up(
    database: Database, tmp_path: Path, receivers: Callable[[Answer], Receiver]
) -> None:
    user = add_user(database, "ann")
    webhooks = Webhooks(database, settings=settings(tmp_path))
    secret = webhooks.rotate(user).secret
    assert secret is not None and secret.startswith("whsec_")
    answers = iter([503])  # the first request once it listens is answered 503, the others 200
    receiver = receivers(lambda request: (next(answers, 200), {}))
    job_id = finished_job(database, user, receiver.url, events=("started", "completed"))

    async with delivering(webhooks):
        await until(lambda: webhooks.attempts(job_id).attempts)  # connection refused, at least once
        receiver.start()
        await until(lambda: not webhooks.attempts(job_id).pending)

    sent = messages(database, job_id)
    assert [(m.event, m.state) for m in sent] == [
        ("job.completed", "delivered"),
        ("job.started", "delivered"),
    ]
    history = webhooks.attempts(job_id)
    for message in sent:
        tried = [a for a in history.attempts if a.message_id == message.id]
        assert (
            [a.attempt for a in tried]
            == list(range(1, len(tried) + 1))
            == list(range(1, message.attempts + 1))
        )
        assert {a.event for a in tried} == {message.event} and {a.url for a in tried} == {receiver.url}
        assert tried[0].status is None and "Connect" in (tried[0].error or "") and not tried[0].delivered
        assert (tried[-1].status, tried[-1].error, tried[-1].delivered) == (200, None, True)
        assert not any(a.delivered for a in tried[:-1])
    assert [a.status for a in history.attempts].count(503) == 1
    assert [a.at for a in history.attempts] == sorted(a.at for a in history.attempts)

    # One webhook-id per event, the same on every attempt, each with the event's exact body.
    by_id: dict[str, set[bytes]] = {}
    for request in receiver.received:
        by_id.setdefault(request.headers["webhook-id"], set()).add(request.body)
    assert by_id == {m.id: {m.body.encode()} for m in sent}
    for request in receiver.received:
        headers = request.headers
        assert request.path == "/hook"
        assert headers["content-type"] == "application/json"
        assert headers["user-agent"] == "modelport-webhooks"
        assert headers["host"] == f"127.0.0.1:{receiver.port}"
        payload = Webhook(secret).verify(request.body, headers)
        assert payload["data"]["id"] == job_id
        with pytest.raises(WebhookVerificationError):
            Webhook("whsec_" + "A" * 43 + "=").verify(request.body, headers)
    started = next(r for r in receiver.received if r.headers["webhook-id"] == sent[1].id)
    assert Webhook(secret).verify(started.body, started.headers)["type"] == "job.started"


async def test_a_redirect_is_an_attempt_that_failed_and_is_never_followed(
    database: Database, tmp_path: Path, receivers: Callable[[Answer], Receiver]
) -> None:
    user = add_user(database, "ann")
    webhooks = Webhooks(database, settings=settings(tmp_path, webhook_retry_seconds=30))
    webhooks.rotate(user)
    receiver = receivers(lambda request: (302, {"location": METADATA}))
    receiver.start()
    job_id = finished_job(database, user, receiver.url)

    async with delivering(webhooks):
        [attempt] = await until(lambda: webhooks.attempts(job_id).attempts)

    assert (attempt.status, attempt.delivered) == (302, False)
    assert attempt.error == "the receiver answered 302; redirects are not followed"
    assert [request.path for request in receiver.received] == ["/hook"]
    [pending] = webhooks.attempts(job_id).pending
    assert pending["attempts"] == 1 and pending["event"] == "job.completed"
    assert datetime.fromisoformat(pending["next_at"]) > datetime.now(UTC)  # the next try, 30 s ± 10 % on


async def test_after_a_rotation_messages_are_signed_with_both_secrets_for_a_day(
    database: Database, tmp_path: Path, receivers: Callable[[Answer], Receiver]
) -> None:
    user = add_user(database, "ann")
    webhooks = Webhooks(database, settings=settings(tmp_path))
    assert not webhooks.has_secret(user)
    with pytest.raises(WebhookSecretNotFound):
        webhooks.secret_info(user)
    old, new = webhooks.rotate(user), webhooks.rotate(user)
    assert old.secret and new.secret and old.secret != new.secret
    assert webhooks.has_secret(user)
    assert webhooks.secret_info(user) == new.model_copy(update={"secret": None})
    receiver = receivers(ok)
    receiver.start()
    job_id = finished_job(database, user, receiver.url)

    async with delivering(webhooks):
        await until(lambda: not webhooks.attempts(job_id).pending)

    [request] = receiver.received
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    for secret in (old.secret, new.secret):
        assert Webhook(secret).verify(request.body, request.headers)["type"] == "job.completed"

    # A day on, the previous secret signs no more.
    later = Webhooks(database, settings=settings(tmp_path), clock=lambda: time.time() + 25 * 3600)
    second = finished_job(database, user, receiver.url)
    async with delivering(later):
        await until(lambda: not later.attempts(second).pending)
    assert len(receiver.received[-1].headers["webhook-signature"].split(" ")) == 1


async def test_an_event_whose_caller_has_no_secret_fails_unsent(
    database: Database, tmp_path: Path, receivers: Callable[[Answer], Receiver]
) -> None:
    user = add_user(database, "ann")
    webhooks = Webhooks(database, settings=settings(tmp_path))
    receiver = receivers(ok)
    receiver.start()
    job_id = finished_job(database, user, receiver.url)

    async with delivering(webhooks):
        [attempt] = await until(lambda: webhooks.attempts(job_id).attempts)

    assert attempt.status is None and not attempt.delivered
    assert attempt.error == "the job's caller has no webhook signing secret any more"
    assert [m.state for m in messages(database, job_id)] == ["failed"]
    assert receiver.received == []


async def test_retries_end_webhook_retry_hours_after_the_event(
    database: Database, tmp_path: Path, receivers: Callable[[Answer], Receiver]
) -> None:
    user = add_user(database, "ann")
    ahead = [0.0]
    webhooks = Webhooks(
        database, settings=settings(tmp_path, webhook_retry_seconds=5), clock=lambda: time.time() + ahead[0]
    )
    webhooks.rotate(user)
    receiver = receivers(lambda request: (503, {}))
    receiver.start()
    job_id = finished_job(database, user, receiver.url)

    async with delivering(webhooks):
        await until(lambda: webhooks.attempts(job_id).attempts)
        [pending] = webhooks.attempts(job_id).pending
        retry_in = datetime.fromisoformat(pending["next_at"]).timestamp() - time.time()
        assert 4.5 - 0.5 <= retry_in <= 5.5  # 5 s ± 10 %, less the time since
        ahead[0] = 36 * 3600  # the default retry_hours: the retry due then is the last
        webhooks.wake()
        await until(lambda: messages(database, job_id)[0].state == "failed")

    history = webhooks.attempts(job_id)
    assert [(a.attempt, a.status) for a in history.attempts] == [(1, 503), (2, 503)]
    assert history.pending == []


async def test_gateways_sharing_the_outbox_send_each_event_once(
    database: Database, tmp_path: Path, receivers: Callable[[Answer], Receiver]
) -> None:
    user = add_user(database, "ann")
    first, second = (Webhooks(database, settings=settings(tmp_path)) for _ in range(2))
    first.rotate(user)

    def slow(request: Received) -> tuple[int, dict[str, str]]:
        time.sleep(0.02)  # deliveries overlap, so both gateways are claiming while the others are in flight
        return 200, {}

    receiver = receivers(slow)
    receiver.start()
    jobs = [finished_job(database, user, receiver.url) for _ in range(24)]

    async with delivering(first, second):
        await until(lambda: all(not first.attempts(job).pending for job in jobs))

    ids = [request.headers["webhook-id"] for request in receiver.received]
    assert len(ids) == len(set(ids)) == 24
    assert all(len(first.attempts(job).attempts) == 1 for job in jobs)


async def test_a_stopped_gateway_leaves_its_delivery_pending_and_due(
    database: Database, tmp_path: Path, receivers: Callable[[Answer], Receiver]
) -> None:
    user = add_user(database, "ann")
    webhooks = Webhooks(database, settings=settings(tmp_path, webhook_timeout_seconds=30))
    webhooks.rotate(user)
    receiver = receivers(lambda request: (200 if receiver.release.wait(10) else 500, {}))
    receiver.start()
    job_id = finished_job(database, user, receiver.url)

    stop = asyncio.Event()
    running = asyncio.create_task(webhooks.run(stop))
    await until(lambda: receiver.received)  # the receiver holds the delivery
    stopped_at = time.monotonic()
    stop.set()
    await asyncio.wait_for(running, 10)
    assert time.monotonic() - stopped_at < 3

    [message] = messages(database, job_id)
    assert (message.state, message.attempts) == ("pending", 0)
    assert message.next_at <= datetime.now(UTC)  # due again at once, for this gateway or another
    assert webhooks.attempts(job_id).attempts == []


async def test_each_delivery_checks_its_url_again(
    database: Database, tmp_path: Path, receivers: Callable[[Answer], Receiver]
) -> None:
    """The check at submission is not trusted later: a URL the guard refuses now is not called."""
    user = add_user(database, "ann")
    closed = Webhooks(
        database, settings=settings(tmp_path, webhook_allowed_networks=[], webhook_retry_seconds=30)
    )
    closed.rotate(user)
    receiver = receivers(ok)
    receiver.start()
    job_id = finished_job(database, user, receiver.url)

    async with delivering(closed):
        [attempt] = await until(lambda: closed.attempts(job_id).attempts)

    assert attempt.status is None and not attempt.delivered
    assert "host 127.0.0.1 is a loopback address" in (attempt.error or "")
    assert receiver.received == []
