"""The job queue on SQLite and PostgreSQL, with the clock in the test's hands: leases that run out and are
taken over (the old holder's outcome then counts for nothing), attempts that run out, retries that wait for
their time, idempotent submissions racing each other, cancellation in each state, claims within each
module's capacity that never hand one job to two gateways, and the sweep of expired jobs."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
from sqlalchemy import func, select

from modelport.core.errors import IdempotencyConflict, JobExists, JobFinished, JobNotFound
from modelport.db import Database
from modelport.db.models import Job, WebhookMessage
from modelport.queue import JobQueue, NewJob, Outcome
from modelport.queue.jobs import job_info

T0 = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
LEASE = 30.0
TTL = 3600.0
HOOK = "https://hooks.example/jobs"

T = TypeVar("T")


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    db = Database(database_url)
    db.migrate()
    yield db
    db.close()


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def new_job(job_id: str, *, module: str = "m", **fields: Any) -> NewJob:
    values: dict[str, Any] = {
        "id": job_id,
        "kind": "job",
        "module": module,
        "version": None,
        "caller": "ann",
        "caller_id": 7,
        "owner": "user:7",
        "client": "127.0.0.1",
        "request": {"inputs": {"text": job_id}, "parameters": {}},
        "digest": f"digest-{job_id}",
        "max_attempts": 3,
    }
    return NewJob(**(values | fields))


def submitted(queue: JobQueue, *jobs: NewJob, now: datetime = T0) -> list[Job]:
    """Queue `jobs`, each of which must be new."""
    results = queue.submit(jobs, now=now)
    made = []
    for result in results:
        assert not isinstance(result, Exception), result
        job, created = result
        assert created
        made.append(job)
    return made


def stored(database: Database, job_id: str) -> Job:
    with database.session() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def messages(database: Database, job_id: str) -> list[WebhookMessage]:
    with database.session() as session:
        query = select(WebhookMessage).where(WebhookMessage.job_id == job_id)
        return list(session.scalars(query.order_by(WebhookMessage.created_at)))


def job_count(database: Database) -> int:
    with database.session() as session:
        return int(session.scalar(select(func.count()).select_from(Job)) or 0)


def at_once(count: int, action: Callable[[int], T]) -> list[T]:
    """`action(i)` for i in range(count), each in its own thread, released together."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            barrier.wait(10)
            results[index] = action(index)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not any(thread.is_alive() for thread in threads), "a thread did not finish in 30 s"
    assert not errors, errors
    return results


def test_a_lapsed_lease_is_taken_over_and_only_the_new_holders_outcome_counts(database: Database) -> None:
    first = JobQueue(database, ttl=TTL, owner="gw-first")
    second = JobQueue(database, ttl=TTL, owner="gw-second")
    submitted(first, new_job("j1"))
    (held,) = first.claim({"m": 1}, now=T0, lease=LEASE)
    assert (held.id, held.status, held.attempts, held.leased_by) == ("j1", "running", 1, "gw-first")
    assert held.lease_token is not None
    assert stored(database, "j1").lease_expires == at(LEASE)

    assert second.claim({"m": 1}, now=at(10), lease=LEASE) == []
    (taken,) = second.claim({"m": 1}, now=at(31), lease=LEASE)
    assert (taken.id, taken.attempts, taken.leased_by) == ("j1", 2, "gw-second")
    assert taken.lease_token not in (None, held.lease_token)

    late = Outcome("j1", held.lease_token, "succeeded", outputs={"text": "first"})
    assert first.finish([late], now=at(32)) == set()
    assert stored(database, "j1").status == "running"
    lost, cancel = first.renew({"j1": held.lease_token}, now=at(33), lease=LEASE)
    assert (lost, cancel) == ({"j1"}, set())
    assert stored(database, "j1").lease_expires == at(31 + LEASE)  # the old holder extended nothing

    assert second.renew({"j1": taken.lease_token}, now=at(40), lease=LEASE) == (set(), set())
    assert stored(database, "j1").lease_expires == at(40 + LEASE)
    done = Outcome("j1", taken.lease_token, "succeeded", outputs={"text": "second"}, served_version="v1")
    assert second.finish([done], now=at(41)) == {"j1"}
    assert first.finish([late], now=at(42)) == set()
    job = stored(database, "j1")
    assert (job.status, job.outputs, job.served_version, job.attempts) == (
        "succeeded",
        {"text": "second"},
        "v1",
        2,
    )
    assert (job.finished_at, job.expires_at, job.lease_token) == (at(41), at(41 + TTL), None)
    assert second.finish([done], now=at(43)) == set()  # recorded once


def test_a_job_out_of_attempts_fails_on_takeover_and_tells_its_webhook(database: Database) -> None:
    queue = JobQueue(database, ttl=TTL, owner="gw-one")
    other = JobQueue(database, ttl=TTL, owner="gw-two")
    submitted(
        queue,
        new_job("hooked", max_attempts=2, webhook=HOOK, webhook_events=("completed",)),
        new_job("quiet", max_attempts=2),
    )
    assert {job.id for job in queue.claim({"m": 2}, now=T0, lease=LEASE)} == {"hooked", "quiet"}
    assert {job.attempts for job in other.claim({"m": 2}, now=at(31), lease=LEASE)} == {2}
    assert messages(database, "hooked") == []

    assert other.claim({"m": 2}, now=at(62), lease=LEASE) == []
    for job_id in ("hooked", "quiet"):
        job = stored(database, job_id)
        assert (job.status, job.attempts, job.finished_at, job.lease_token) == ("failed", 2, at(62), None)
        assert job.error is not None and job.error["code"] == "attempts_exhausted"
        assert job_info(job).error is not None
    (message,) = messages(database, "hooked")
    assert (message.event, message.url, message.user_id, message.state) == (
        "job.completed",
        HOOK,
        7,
        "pending",
    )
    body = json.loads(message.body)
    assert body["type"] == "job.completed"
    assert (body["data"]["id"], body["data"]["status"]) == ("hooked", "failed")
    assert body["data"]["error"]["code"] == "attempts_exhausted"
    assert messages(database, "quiet") == []  # no webhook, no message


def test_the_started_event_is_written_with_the_first_claim_only(database: Database) -> None:
    queue = JobQueue(database, ttl=TTL)
    submitted(queue, new_job("j1", webhook=HOOK, webhook_events=("started", "completed")))
    assert len(queue.claim({"m": 1}, now=T0, lease=LEASE)) == 1
    assert [m.event for m in messages(database, "j1")] == ["job.started"]
    assert json.loads(messages(database, "j1")[0].body)["data"]["status"] == "running"
    queue.claim({"m": 1}, now=at(31), lease=LEASE)
    assert [m.event for m in messages(database, "j1")] == ["job.started"]


def test_a_retried_job_waits_for_its_time(database: Database) -> None:
    queue = JobQueue(database, ttl=TTL)
    submitted(queue, new_job("j1"))
    (job,) = queue.claim({"m": 1}, now=T0, lease=LEASE)
    error = {"code": "worker_died", "message": "the worker died", "status": 503}
    retry = Outcome("j1", job.lease_token or "", "queued", error=error, run_at=at(60))
    assert queue.finish([retry], now=at(1)) == {"j1"}
    waiting = stored(database, "j1")
    assert (waiting.status, waiting.run_at, waiting.lease_token, waiting.error) == (
        "queued",
        at(60),
        None,
        error,
    )
    assert job_info(waiting).run_at == at(60).isoformat()

    assert queue.claim({"m": 1}, now=at(59), lease=LEASE) == []
    (again,) = queue.claim({"m": 1}, now=at(60), lease=LEASE)
    assert (again.id, again.attempts, again.status) == ("j1", 2, "running")
    assert again.started_at == T0  # the first run's start is kept


def test_racing_submissions_with_one_idempotency_key_make_one_job(database: Database) -> None:
    def submit(index: int) -> tuple[Job, bool] | Exception:
        queue = JobQueue(database, ttl=TTL, owner=f"gw-{index}")
        (result,) = queue.submit([new_job(f"job-{index}", idempotency_key="order-7", digest="same")], now=T0)
        return result

    results = at_once(8, submit)
    assert not [r for r in results if isinstance(r, Exception)], results
    pairs = [r for r in results if not isinstance(r, Exception)]
    assert sum(created for _, created in pairs) == 1
    assert len({job.id for job, _ in pairs}) == 1
    assert job_count(database) == 1

    queue = JobQueue(database, ttl=TTL)
    (conflict,) = queue.submit([new_job("job-x", idempotency_key="order-7", digest="other")], now=T0)
    assert isinstance(conflict, IdempotencyConflict)
    (repeat,) = queue.submit([new_job("job-y", idempotency_key="order-7", digest="same")], now=T0)
    assert not isinstance(repeat, Exception) and repeat[0].id == pairs[0][0].id and not repeat[1]
    (elsewhere,) = queue.submit(
        [new_job("job-z", idempotency_key="order-7", digest="other", owner="user:8")], now=T0
    )
    assert not isinstance(elsewhere, Exception) and elsewhere[1]  # a key is the caller's own
    assert job_count(database) == 2


def test_racing_submissions_of_one_chosen_id_make_one_job(database: Database) -> None:
    def submit(index: int) -> tuple[Job, bool] | Exception:
        queue = JobQueue(database, ttl=TTL, owner=f"gw-{index}")
        (result,) = queue.submit([new_job("mine", chosen_id=True, digest="same")], now=T0)
        return result

    results = at_once(8, submit)
    assert not [r for r in results if isinstance(r, Exception)], results
    pairs = [r for r in results if not isinstance(r, Exception)]
    assert sum(created for _, created in pairs) == 1
    assert {job.id for job, _ in pairs} == {"mine"}
    assert job_count(database) == 1

    queue = JobQueue(database, ttl=TTL)
    (conflict,) = queue.submit([new_job("mine", chosen_id=True, digest="other")], now=T0)
    assert isinstance(conflict, JobExists)
    (someone_else,) = queue.submit([new_job("mine", chosen_id=True, digest="same", owner="user:8")], now=T0)
    assert isinstance(someone_else, JobExists)
    assert job_count(database) == 1


def test_a_refused_submission_leaves_the_others_of_its_transaction_queued(database: Database) -> None:
    queue = JobQueue(database, ttl=TTL)
    submitted(queue, new_job("first", idempotency_key="k"))
    results = queue.submit(
        [new_job("second"), new_job("third", idempotency_key="k", digest="other"), new_job("fourth")], now=T0
    )
    assert isinstance(results[1], IdempotencyConflict)
    assert [r[0].id for r in (results[0], results[2]) if not isinstance(r, Exception)] == ["second", "fourth"]
    assert job_count(database) == 3


def test_cancel_a_queued_job_at_once_a_running_one_through_its_holder_a_finished_one_not(
    database: Database,
) -> None:
    queue = JobQueue(database, ttl=TTL)
    submitted(queue, new_job("waiting", webhook=HOOK, webhook_events=("completed",)))
    canceled = queue.cancel("waiting", now=at(1))
    assert (canceled.status, canceled.finished_at, canceled.expires_at) == ("canceled", at(1), at(1 + TTL))
    assert canceled.error is not None and canceled.error["code"] == "canceled"
    assert [m.event for m in messages(database, "waiting")] == ["job.completed"]
    assert queue.claim({"m": 5}, now=at(2), lease=LEASE) == []

    submitted(queue, new_job("busy"))
    (job,) = queue.claim({"m": 5}, now=at(3), lease=LEASE)
    token = job.lease_token or ""
    asked = queue.cancel("busy", now=at(4))
    assert (asked.status, asked.cancel_requested) == ("running", True)
    assert queue.renew({"busy": token}, now=at(5), lease=LEASE) == (set(), {"busy"})
    stopped = Outcome("busy", token, "canceled", error={"code": "canceled", "message": "x", "status": 499})
    assert queue.finish([stopped], now=at(6)) == {"busy"}
    assert stored(database, "busy").status == "canceled"

    for job_id in ("waiting", "busy"):
        with pytest.raises(JobFinished):
            queue.cancel(job_id, now=at(7))
    with pytest.raises(JobNotFound):
        queue.cancel("nobody", now=at(7))


def test_a_job_asked_to_cancel_is_not_run_again(database: Database) -> None:
    queue = JobQueue(database, ttl=TTL, owner="gw-one")
    other = JobQueue(database, ttl=TTL, owner="gw-two")
    submitted(queue, new_job("retried"), new_job("orphaned"))
    tokens = {job.id: job.lease_token or "" for job in queue.claim({"m": 2}, now=T0, lease=LEASE)}
    for job_id in tokens:
        assert queue.cancel(job_id, now=at(1)).cancel_requested

    error = {"code": "worker_died", "message": "the worker died", "status": 503}
    retry = Outcome("retried", tokens["retried"], "queued", error=error, run_at=at(2))
    assert queue.finish([retry], now=at(2)) == {"retried"}
    assert other.claim({"m": 2}, now=at(31), lease=LEASE) == []  # nor its holder's, nor a lapsed lease
    for job_id in tokens:
        job = stored(database, job_id)
        assert (job.status, job.attempts) == ("canceled", 1)
        assert job.error is not None and job.error["code"] == "canceled"


def test_one_cycle_queues_records_and_claims_and_a_refused_insert_spoils_none_of_it(
    database: Database,
) -> None:
    queue = JobQueue(database, ttl=TTL)
    submitted(queue, new_job("old"))
    (held,) = queue.claim({"m": 1}, now=T0, lease=LEASE)
    done = Outcome("old", held.lease_token or "", "succeeded", outputs={"text": "old"})
    results, recorded, claimed = queue.cycle([new_job("new")], [done], {"m": 5}, now=at(1), lease=LEASE)
    assert [r[1] for r in results if not isinstance(r, Exception)] == [True]
    assert recorded == {"old"} and [job.id for job in claimed] == ["new"]
    assert queue.statuses(["old", "new"]) == {"old": "succeeded", "new": "running"}

    submitted(queue, new_job("later"), now=at(2))
    token = claimed[0].lease_token or ""
    results, recorded, claimed = queue.cycle(
        [new_job("old"), new_job("fresh")],  # "old" is taken: the transaction fails, and is done again
        [Outcome("new", token, "succeeded")],
        {"m": 5},
        now=at(3),
        lease=LEASE,
    )
    assert isinstance(results[0], JobExists)
    assert not isinstance(results[1], Exception) and results[1][1]
    assert recorded == {"new"} and sorted(job.id for job in claimed) == ["fresh", "later"]
    assert stored(database, "old").outputs == {"text": "old"}


def test_a_claim_takes_at_most_each_modules_capacity_oldest_first(database: Database) -> None:
    queue = JobQueue(database, ttl=TTL)
    submitted(queue, *(new_job(f"a{i}", module="a") for i in range(4)), now=T0)
    submitted(queue, *(new_job(f"b{i}", module="b") for i in range(3)), now=at(-1))
    claimed = queue.claim({"a": 2, "b": 0}, now=at(1), lease=LEASE)
    assert sorted(job.id for job in claimed) == ["a0", "a1"]
    assert queue.claim({"a": 0, "b": 0, "c": 5}, now=at(1), lease=LEASE) == []
    rest = queue.claim({"a": 5, "b": 1}, now=at(1), lease=LEASE)
    assert sorted(job.id for job in rest) == ["a2", "a3", "b0"]
    assert queue.statuses(["a0", "b1", "b2", "nobody"]) == {"a0": "running", "b1": "queued", "b2": "queued"}


def test_gateways_claiming_at_once_never_take_the_same_job(database: Database) -> None:
    queue = JobQueue(database, ttl=TTL)
    ids = [f"job-{i:03d}" for i in range(200)]
    submitted(queue, *(new_job(job_id, module=("a", "b")[i % 2]) for i, job_id in enumerate(ids)))
    taken: list[tuple[str, str]] = []
    lock = threading.Lock()

    def claim_until_empty(index: int) -> None:
        gateway = JobQueue(database, ttl=TTL, owner=f"gw-{index}")
        while True:
            with lock:
                if len(taken) >= len(ids):
                    return
            jobs = gateway.claim({"a": 3, "b": 2}, now=at(1), lease=300)
            with lock:
                taken.extend((job.id, gateway.owner) for job in jobs)

    at_once(6, claim_until_empty)
    counts = Counter(job_id for job_id, _ in taken)
    assert sorted(counts) == ids
    assert set(counts.values()) == {1}
    holders = dict(taken)
    for job_id in ids[::17]:
        job = stored(database, job_id)
        assert (job.status, job.attempts, job.leased_by) == ("running", 1, holders[job_id])


def test_the_sweep_removes_finished_jobs_past_their_expiry_only(database: Database) -> None:
    queue = JobQueue(database, ttl=TTL)
    hooked = new_job("old-done", webhook=HOOK, webhook_events=("completed",))
    submitted(queue, hooked, new_job("old-failed"), new_job("new-done"), new_job("waiting"), new_job("busy"))
    claimed = {job.id: job.lease_token or "" for job in queue.claim({"m": 5}, now=T0, lease=LEASE)}
    assert len(claimed) == 5
    assert queue.finish(
        [
            Outcome("old-done", claimed["old-done"], "succeeded", outputs={}),
            Outcome("old-failed", claimed["old-failed"], "failed", error={"code": "x", "message": "x"}),
        ],
        now=at(1),
    ) == {"old-done", "old-failed"}
    assert queue.finish([Outcome("new-done", claimed["new-done"], "succeeded")], now=at(100)) == {"new-done"}
    queue.release({"waiting": claimed["waiting"]}, now=at(2))
    assert stored(database, "waiting").status == "queued"
    assert len(messages(database, "old-done")) == 1

    assert queue.sweep(now=at(1 + TTL)) == []  # expiring now is not yet past it
    swept = queue.sweep(now=at(2 + TTL))
    assert sorted(job.id for job in swept) == ["old-done", "old-failed"]
    assert queue.statuses(["old-done", "old-failed", "new-done", "waiting", "busy"]) == {
        "new-done": "succeeded",
        "waiting": "queued",
        "busy": "running",
    }
    assert messages(database, "old-done") == []
    assert [job.id for job in queue.sweep(now=at(10 * TTL))] == ["new-done"]
    assert queue.statuses(["new-done", "waiting", "busy"]) == {"waiting": "queued", "busy": "running"}
