"""The request log without a server: the bounded buffer and what it drops, batched writes, calls waiting out
a locked database, retention, signed cursors, the query's validation and who sees which calls, and payload
capture (sampling, files named by their objects, redaction, truncation)."""

from __future__ import annotations

import base64
import json
import logging
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import event, func, select

from modelport.control.access import AccessPolicies, ApiAccess, ModulePolicy
from modelport.control.identity import Principal
from modelport.control.payloads import REDACTED, payload_document
from modelport.control.requests import RequestLog, _sqlite_time
from modelport.core.errors import InvalidCursor, ModelportError, ModuleNotFound, NotFound, ValidationFailed
from modelport.core.manifests import ApiLogging, Cors, ManifestError, parse_document
from modelport.core.roles import Role
from modelport.core.settings import Settings
from modelport.core.times import parse_instant
from modelport.db import ApiDefinition, Database, Module, RequestLogEntry
from modelport.obs.calls import CallPayload, CallRecord
from modelport.sdk.validation import ObjectFile, UploadedFile
from modelport.storage import LocalStore

NOW = 1_796_000_000.0  # 2026-11-30
ADMIN = Principal(1, "admin", Role.ADMIN)
OWNER = Principal(2, "dev-a", Role.DEVELOPER, frozenset({"/team-a"}))
USER = Principal(3, "ann", Role.USER, frozenset({"/callers"}))
OTHER_USER = Principal(4, "bob", Role.USER, frozenset({"/callers"}))
STRANGER = Principal(5, "dev-x", Role.DEVELOPER, frozenset({"/x/team-a"}))


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def call(number: int, **fields: Any) -> CallRecord:
    """A call of `alpha` v1 by ann, `number` milliseconds after NOW."""
    values: dict[str, Any] = {
        "id": f"{number:032x}",
        "trace_id": f"{number:032x}"[::-1],
        "at": NOW + number / 1000,
        "kind": "sync",
        "module": "alpha",
        "version": "v1",
        "replica": 0,
        "caller": "ann",
        "caller_id": 3,
        "client": "127.0.0.1",
        "status": 200,
        "code": None,
        "total": 0.010,
        "queue": 0.002,
        "compute": 0.007,
        "batch_size": 1,
        "records": 1,
        "request_bytes": 30,
        "response_bytes": 80,
    }
    return CallRecord(**{**values, **fields})


def payload(**fields: Any) -> CallPayload:
    values: dict[str, Any] = {
        "inputs": [{"text": "secret words", "n": 1}],
        "parameters": {"api_key": "k-123", "mode": "fast"},
        "outputs": [{"label": "ok", "probabilities": [0.9, 0.1]}],
        "batch": False,
        "owner": "u3",
        "uploads": {},
    }
    return CallPayload(**{**values, **fields})


def api_manifest(module: str, logging_spec: dict[str, Any]) -> dict[str, Any]:
    """An `Api` letting `/callers` call `module`, with the `logging` section given."""
    return {
        "apiVersion": "modelport/v1",
        "kind": "Api",
        "metadata": {"name": f"{module}-api"},
        "spec": {"module": module, "access": {"groups": ["/callers"]}, "logging": logging_spec},
    }


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    db = Database(database_url)
    db.migrate()
    with db.session() as session:
        session.add_all(
            [
                Module(name="alpha", owner="/team-a"),
                Module(name="beta", owner="/team-b"),
                Module(name="gamma", owner="/team-a"),
            ]
        )
        session.flush()
        alpha = {"payloads": True, "redact": ["inputs.text", "parameters.api_key"]}
        session.add(
            ApiDefinition(name="alpha-api", module_name="alpha", manifest=api_manifest("alpha", alpha))
        )
        never = {"payloads": True, "sampleRate": 0}
        session.add(
            ApiDefinition(name="gamma-api", module_name="gamma", manifest=api_manifest("gamma", never))
        )
    yield db
    db.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_log(database: Database, tmp_path: Path, clock: Clock, **settings: Any) -> RequestLog:
    policies = AccessPolicies(database)
    policies.reload()
    store = LocalStore(tmp_path / "objects")
    config = Settings(data_dir=tmp_path, **settings)
    store.create_bucket(config.request_bucket)
    return RequestLog(database, settings=config, store=store, policies=policies, clock=clock)


@pytest.fixture
def request_log(database: Database, tmp_path: Path, clock: Clock) -> RequestLog:
    return make_log(database, tmp_path, clock)


def rows(database: Database) -> int:
    with database.session() as session:
        return session.scalar(select(func.count()).select_from(RequestLogEntry)) or 0


# The buffer and the flusher


def test_a_full_buffer_drops_new_calls_and_counts_them(
    database: Database, tmp_path: Path, clock: Clock
) -> None:
    request_log = make_log(database, tmp_path, clock, request_log_buffer=3)
    for number in range(5):
        request_log.observe(call(number), None)
    assert (request_log.buffered, request_log.dropped) == (3, 2)
    assert request_log.flush() == 3
    assert rows(database) == 3 and request_log.buffered == 0
    request_log.observe(call(9), None)  # room again
    assert (request_log.buffered, request_log.dropped) == (1, 2)


def test_turned_off_it_keeps_nothing(database: Database, tmp_path: Path, clock: Clock) -> None:
    request_log = make_log(database, tmp_path, clock, request_log=False)
    request_log.observe(call(1), payload())
    assert request_log.buffered == 0 and request_log.flush() == 0 and rows(database) == 0


def test_a_flush_writes_a_thousand_calls_per_transaction(request_log: RequestLog, database: Database) -> None:
    commits: list[int] = []
    event.listen(database.engine, "commit", lambda connection: commits.append(1))
    for number in range(2500):
        request_log.observe(call(number), None)
    commits.clear()
    assert request_log.flush() == 2500
    assert len(commits) == 3
    assert rows(database) == 2500


def test_calls_answered_during_a_flush_wait_for_the_next_one(
    request_log: RequestLog, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A busy server answers calls while its log is written: a flush that took them too would never end,
    writing them a few at a time, one commit each."""
    commits: list[int] = []
    event.listen(database.engine, "commit", lambda connection: commits.append(1))
    insert = request_log._insert
    arriving = iter(range(10_000, 20_000))

    def insert_while_answering(batch: list[tuple[Any, ...]]) -> None:
        insert(batch)
        for _ in range(7):  # answered while this transaction was written
            request_log.observe(call(next(arriving)), None)

    monkeypatch.setattr(request_log, "_insert", insert_while_answering)
    for number in range(1500):
        request_log.observe(call(number), None)
    commits.clear()
    assert request_log.flush() == 1500
    assert len(commits) == 2
    assert request_log.buffered == 14  # for the next flush, in one transaction
    commits.clear()
    assert request_log.flush() == 14
    assert len(commits) == 1
    assert rows(database) == 1514


def test_a_full_batch_is_written_without_waiting_for_the_interval(
    database: Database, tmp_path: Path, clock: Clock
) -> None:
    request_log = make_log(database, tmp_path, clock, request_log_flush_seconds=60)
    request_log.start()
    try:
        for number in range(999):
            request_log.observe(call(number), None)
        assert rows(database) == 0  # the interval is a minute away
        request_log.observe(call(999), None)
        deadline = time.monotonic() + 10
        while rows(database) < 1000:
            assert time.monotonic() < deadline, "a full batch waited for the interval"
            time.sleep(0.02)
        request_log.observe(call(1000), None)
    finally:
        request_log.close()
    assert rows(database) == 1001  # what was left is written on close


def test_a_call_written_twice_is_kept_once(request_log: RequestLog, database: Database) -> None:
    request_log.observe(call(1), None)
    request_log.flush()
    request_log.observe(call(1), None)
    request_log.observe(call(2), None)
    assert request_log.flush() == 2
    assert rows(database) == 2


@pytest.fixture
def sqlite_file(tmp_path: Path) -> Iterator[tuple[Database, Path]]:
    path = tmp_path / "locked.db"
    db = Database(f"sqlite:///{path}", lock_wait=0.1)
    db.migrate()
    with db.session() as session:
        session.add(Module(name="alpha", owner="/team-a"))
    yield db, path
    db.close()


def test_calls_wait_while_the_database_is_locked_then_are_written(
    sqlite_file: tuple[Database, Path], tmp_path: Path, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    database, path = sqlite_file
    request_log = make_log(database, tmp_path, clock, request_log_buffer=4)
    with closing(sqlite3.connect(path, isolation_level=None)) as holder:
        holder.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
        for number in range(6):
            request_log.observe(call(number), None)
        with caplog.at_level(logging.WARNING, logger="modelport.requests"):
            assert request_log.flush() == 0
            assert request_log.flush() == 0
        assert (request_log.buffered, request_log.dropped) == (4, 2)
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "unavailable" in warnings[0].getMessage()
        holder.execute("ROLLBACK")
    with caplog.at_level(logging.INFO, logger="modelport.requests"):
        assert request_log.flush() == 4
    assert rows(database) == 4
    assert any("back" in r.getMessage() for r in caplog.records if r.levelno == logging.INFO)


# Retention


def test_the_sweep_deletes_calls_older_than_the_retention_in_batches(
    database: Database, tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("modelport.control.requests._SWEEP_BATCH", 2)
    request_log = make_log(database, tmp_path, clock, request_log_days=30)
    day = 86_400
    for number in range(5):
        request_log.observe(call(number, at=NOW - 31 * day + number), None)
    request_log.observe(call(10, at=NOW - 29 * day), None)
    request_log.flush()
    batches: list[int] = []
    assert request_log.sweep(now=NOW, between=lambda: batches.append(rows(database))) == 5
    assert batches == [4, 2]  # two full batches of two, then the last one
    assert rows(database) == 1
    assert request_log.sweep(now=NOW + 2 * day) == 1


def test_the_flusher_sweeps_when_it_starts_and_then_hourly(
    database: Database, tmp_path: Path, clock: Clock
) -> None:
    request_log = make_log(database, tmp_path, clock, request_log_days=1, request_log_flush_seconds=0.05)
    request_log.observe(call(1, at=NOW - 2 * 86_400), None)
    request_log.flush()
    request_log.start()
    try:
        wait_for(lambda: rows(database) == 0)
        request_log.observe(call(2, at=NOW - 2 * 86_400), None)
        wait_for(lambda: request_log.buffered == 0)
        request_log.observe(call(3), None)  # one more round of the flusher after the old call was written
        wait_for(lambda: request_log.buffered == 0)
        assert rows(database) == 2  # the next sweep is an hour away, not at every flush
        clock.now += 3601
        wait_for(lambda: rows(database) == 1)  # the old call went; the new one stays
    finally:
        request_log.close()


def wait_for(condition: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition did not come true in time"
        time.sleep(0.02)


# Reading: pages, cursors, filters


def fill(request_log: RequestLog, calls: list[CallRecord]) -> None:
    for record in calls:
        request_log.observe(record, None)
    request_log.flush()


def test_pages_go_newest_first_and_the_cursor_continues_them(request_log: RequestLog) -> None:
    # Three calls share one instant: the id orders them.
    fill(request_log, [call(n, at=NOW + (1 if n < 3 else n)) for n in range(6)])
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = request_log.list(ADMIN, module="alpha", limit=2, cursor=cursor)
        seen += [record.id for record in page.requests]
        pages += 1
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert pages == 3
    assert seen == [call(n).id for n in (5, 4, 3, 2, 1, 0)]


def test_an_edited_cursor_is_refused(request_log: RequestLog, database: Database, tmp_path: Path) -> None:
    fill(request_log, [call(n) for n in range(3)])
    cursor = request_log.list(ADMIN, limit=1).next_cursor
    assert cursor is not None
    body, _, signature = cursor.partition(".")
    at, _ = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    forged = base64.urlsafe_b64encode(json.dumps([at, "f" * 32]).encode()).rstrip(b"=").decode()
    other_server = make_log(database, tmp_path / "other", Clock())
    other_server.cursors._secret = b"another key" * 3
    for edited in (f"{forged}.{signature}", f"{body}.{signature[:-2]}xx", "garbage", "é.ü", f"{body}."):
        with pytest.raises(InvalidCursor) as refused:
            request_log.list(ADMIN, cursor=edited)
        assert (refused.value.status, refused.value.code) == (400, "invalid_cursor")
    with pytest.raises(InvalidCursor):
        other_server.list(ADMIN, cursor=cursor)


def test_the_filters_select_the_calls(request_log: RequestLog) -> None:
    fill(
        request_log,
        [
            call(1, status=200, total=0.005),
            call(2, status=503, code="overloaded", version="v2", total=0.5),
            call(3, status=422, code="validation_failed", caller="bob", caller_id=4),
            call(4, at=NOW - 7200, status=504, code="module_timeout", total=2.0),
        ],
    )

    def ids(**query: Any) -> set[str]:
        return {record.id[-1] for record in request_log.list(ADMIN, **query).requests}

    assert ids(status="5xx") == {"2", "4"}
    assert ids(status="422") == {"3"}
    assert ids(status="2XX") == {"1"}
    assert ids(code="overloaded") == {"2"}
    assert ids(version="v2") == {"2"}
    assert ids(caller="bob") == {"3"}
    assert ids(min_latency_ms=100) == {"2", "4"}
    request_log.clock = lambda: NOW + 60
    assert ids(since="1h") == {"1", "2", "3"}
    assert ids(until="1h") == {"4"}
    assert ids(since="2026-11-29T00:00:00Z", until="2026-11-30T00:00:00") == {"4"}
    assert ids(module="beta") == set()


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"status": "abc"}, "status"),
        ({"status": "600"}, "status"),
        ({"status": "5x"}, "status"),
        ({"since": "yesterday"}, "since"),
        ({"until": "12"}, "until"),
        ({"since": "99999999d"}, "since"),
        ({"since": "1h", "until": "2h"}, "since"),
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"min_latency_ms": -1.0}, "min_latency_ms"),
        ({"min_latency_ms": float("nan")}, "min_latency_ms"),
    ],
)
def test_each_bad_query_parameter_is_a_422_naming_it(
    request_log: RequestLog, query: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationFailed) as refused:
        request_log.list(ADMIN, **query)
    assert refused.value.status == 422
    assert [detail["field"] for detail in refused.value.details] == [field]


def test_every_bad_parameter_is_named_at_once(request_log: RequestLog) -> None:
    with pytest.raises(ValidationFailed) as refused:
        request_log.list(ADMIN, status="9", since="soon", limit=5000)
    assert [detail["field"] for detail in refused.value.details] == ["status", "since", "limit"]


def test_instants_are_iso_times_or_spans_before_now() -> None:
    now = datetime.fromtimestamp(NOW, UTC)
    assert parse_instant("30m", now=now).timestamp() == NOW - 1800
    assert parse_instant("7d", now=now).timestamp() == NOW - 7 * 86_400
    assert parse_instant("2w", now=now).timestamp() == NOW - 14 * 86_400
    assert parse_instant("2026-12-01T10:00:00+01:00", now=now).isoformat() == "2026-12-01T09:00:00+00:00"
    assert parse_instant("2026-12-01T10:00:00", now=now).isoformat() == "2026-12-01T10:00:00+00:00"
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_instant("1 hour", now=now)
    with pytest.raises(ValueError, match="36500 days"):
        parse_instant("999999999d", now=now)


# Who sees which calls


@pytest.fixture
def calls_of_everyone(request_log: RequestLog) -> RequestLog:
    fill(
        request_log,
        [
            call(1),  # ann calls alpha
            call(2, caller="bob", caller_id=4),  # bob calls alpha
            call(3, module="beta", caller="dev-a", caller_id=2),  # the owner of alpha calls beta
            call(4, module="beta", caller="bob", caller_id=4),  # bob calls beta
        ],
    )
    return request_log


def visible(request_log: RequestLog, principal: Principal, **query: Any) -> set[str]:
    return {record.id[-1] for record in request_log.list(principal, **query).requests}


def test_admins_see_every_call(calls_of_everyone: RequestLog) -> None:
    assert visible(calls_of_everyone, ADMIN) == {"1", "2", "3", "4"}
    assert visible(calls_of_everyone, ADMIN, module="beta") == {"3", "4"}


def test_owners_see_their_modules_calls_and_their_own(calls_of_everyone: RequestLog) -> None:
    assert visible(calls_of_everyone, OWNER) == {"1", "2", "3"}
    assert visible(calls_of_everyone, OWNER, module="alpha") == {"1", "2"}
    assert calls_of_everyone.get(OWNER, call(2).id).caller == "bob"
    with pytest.raises(ModuleNotFound):  # beta is another group's: not even its own calls by name
        calls_of_everyone.list(OWNER, module="beta")
    with pytest.raises(NotFound):
        calls_of_everyone.get(OWNER, call(4).id)


def test_users_see_only_their_own_calls(calls_of_everyone: RequestLog) -> None:
    assert visible(calls_of_everyone, USER) == {"1"}
    assert visible(calls_of_everyone, USER, module="alpha") == {"1"}
    assert calls_of_everyone.get(USER, call(1).id).id == call(1).id
    with pytest.raises(NotFound) as hidden:
        calls_of_everyone.get(USER, call(2).id)
    assert hidden.value.status == 404
    with pytest.raises(ModuleNotFound):
        calls_of_everyone.list(USER, module="beta")


def test_another_groups_developer_sees_none_of_them(calls_of_everyone: RequestLog) -> None:
    assert visible(calls_of_everyone, STRANGER) == set()
    for number in (1, 2, 3, 4):
        with pytest.raises(NotFound):
            calls_of_everyone.get(STRANGER, call(number).id)
    with pytest.raises(ModuleNotFound):
        calls_of_everyone.list(STRANGER, module="alpha")
    with pytest.raises(NotFound):
        calls_of_everyone.get(ADMIN, "not-a-request-id" * 4)


def test_a_record_keeps_the_calls_ids_latencies_and_sizes(request_log: RequestLog) -> None:
    fill(request_log, [call(7, replica=2, batch_size=4, model_key="small")])
    record = request_log.get(ADMIN, call(7).id)
    assert record.trace_id == call(7).trace_id
    assert (record.replica, record.batch_size, record.records, record.model_key) == (2, 4, 1, "small")
    assert (record.total_ms, record.queue_ms, record.compute_ms) == pytest.approx((10.0, 2.0, 7.0))
    assert (record.request_bytes, record.response_bytes) == (30, 80)
    assert record.logs_url == f"/api/v1/modules/alpha/logs?request_id={call(7).id}"
    assert record.payload is None and record.payload_key is None


# Payloads


def test_a_sampled_call_keeps_its_payload_redacted(request_log: RequestLog) -> None:
    request_log.observe(call(1), payload())
    request_log.payloads.drain()
    request_log.flush()
    record = request_log.get(ADMIN, call(1).id)
    assert record.payload_key.startswith("payloads/alpha/2026-11-30/")
    assert record.payload_key.endswith(".jsonl#0")
    assert record.payload == {
        "inputs": {"text": REDACTED, "n": 1},
        "parameters": {"api_key": REDACTED, "mode": "fast"},
        "outputs": {"label": "ok", "probabilities": [0.9, 0.1]},
        "uploads": {},
    }
    stored = request_log.store.get("requests", record.payload_key.partition("#")[0])
    assert b"secret words" not in stored and b"k-123" not in stored


def test_the_payloads_of_a_second_are_one_object_of_lines(request_log: RequestLog) -> None:
    for number in range(3):
        request_log.observe(call(number), payload())
    request_log.payloads.drain()
    request_log.flush()
    keys = [request_log.get(ADMIN, call(number).id).payload_key for number in range(3)]
    objects = {key.partition("#")[0] for key in keys}
    assert len(objects) == 1 and [key.partition("#")[2] for key in keys] == ["0", "1", "2"]
    assert list(request_log.store.walk("requests")) and all(
        request_log.get(ADMIN, call(number).id).payload is not None for number in range(3)
    )


def test_modules_without_capture_and_unsampled_calls_keep_no_payload(request_log: RequestLog) -> None:
    request_log.observe(call(1, module="beta"), payload())  # no Api of beta captures payloads
    request_log.observe(call(2, module="gamma"), payload())  # gamma's Api samples none of its calls
    request_log.payloads.drain()
    request_log.flush()
    assert request_log.get(ADMIN, call(1).id).payload_key is None
    assert request_log.get(ADMIN, call(2).id).payload_key is None
    assert list(request_log.store.walk("requests")) == []


def test_a_full_payload_queue_drops_payloads_not_calls(request_log: RequestLog) -> None:
    for number in range(request_log.payloads.capacity + 5):
        request_log.observe(call(number), payload())
    assert request_log.payloads.dropped == 5
    request_log.flush()
    last = request_log.payloads.capacity + 4
    assert request_log.get(ADMIN, call(last).id).payload_key is None
    assert request_log.get(ADMIN, call(0).id).payload_key is not None
    assert rows(request_log.database) == last + 1


def test_redaction_reaches_every_record_nested_fields_and_lists() -> None:
    batch = payload(
        inputs=[
            {"text": "a", "address": {"street": "Main 1", "city": "Oslo"}, "items": [{"pin": 1}, {"pin": 2}]},
            {"text": "b", "address": {"city": "Rome"}},
        ],
        outputs=[{"probabilities": [0.5]}, {"probabilities": [0.7]}],
        batch=True,
    )
    paths = [
        "inputs.text",
        "inputs.address.street",
        "inputs.items.pin",
        "outputs.probabilities",
        "inputs.nope",
    ]
    document = json.loads(payload_document(batch, bucket="requests", redact_paths=paths, max_bytes=65_536))
    assert document["inputs"] == [
        {
            "text": REDACTED,
            "address": {"street": REDACTED, "city": "Oslo"},
            "items": [{"pin": REDACTED}, {"pin": REDACTED}],
        },
        {"text": REDACTED, "address": {"city": "Rome"}},
    ]
    assert document["outputs"] == [{"probabilities": REDACTED}, {"probabilities": REDACTED}]
    assert batch.inputs[0]["text"] == "a"  # the call's own values are left alone


def test_files_are_named_by_their_objects_never_by_a_local_path() -> None:
    local = "/srv/modelport/uploads/tmpabc/upload-xyz"
    sent = payload(
        inputs=[
            {
                "image": {"path": local, "content_type": "image/png", "filename": "cat.png", "size": 10},
                "pages": [
                    {"path": local + "2", "content_type": "text/plain", "filename": "a.txt", "size": 1},
                    {
                        "path": "/srv/x/object-1",
                        "content_type": "text/plain",
                        "filename": "b.txt",
                        "size": 2,
                        "object": "docs/b.txt",
                    },
                ],
                "late": ObjectFile("docs/c.txt"),
                "raw": UploadedFile(local + "3", "d.bin", "application/octet-stream", 3),
            }
        ],
        uploads={"image": "uploads/u3/2026-11-30/r1/image", "pages-0": "uploads/u3/2026-11-30/r1/pages-0"},
    )
    text = payload_document(sent, bucket="requests", redact_paths=[], max_bytes=65_536)
    document = json.loads(text)
    assert document["inputs"]["image"] == {
        "object": "requests/uploads/u3/2026-11-30/r1/image",
        "content_type": "image/png",
        "filename": "cat.png",
        "size": 10,
    }
    assert [page["object"] for page in document["inputs"]["pages"]] == [
        "requests/uploads/u3/2026-11-30/r1/pages-0",
        "docs/b.txt",
    ]
    assert document["inputs"]["late"] == {"object": "docs/c.txt"}
    assert document["inputs"]["raw"] == {
        "content_type": "application/octet-stream",
        "filename": "d.bin",
        "size": 3,
    }
    assert document["uploads"] == {
        "image": "requests/uploads/u3/2026-11-30/r1/image",
        "pages-0": "requests/uploads/u3/2026-11-30/r1/pages-0",
    }
    assert b"/srv/" not in text


def test_a_payload_past_max_bytes_is_cut_and_marked() -> None:
    big = payload(inputs=[{"text": "é" * 5000}])
    for limit in (200, 1000, 4096):
        text = payload_document(big, bucket="requests", redact_paths=[], max_bytes=limit)
        assert len(text) <= limit
        document = json.loads(text)
        assert document["truncated"] is True and document["bytes"] > limit
        assert document["head"].startswith('{"inputs":{"text":"éé')
    tiny = json.loads(payload_document(big, bucket="requests", redact_paths=[], max_bytes=1))
    assert tiny == {"truncated": True, "bytes": tiny["bytes"]}
    redacted = payload_document(big, bucket="requests", redact_paths=["inputs.text"], max_bytes=200)
    assert "truncated" not in json.loads(redacted)  # redaction comes first, and made it small


def test_a_store_that_fails_loses_the_payload_not_the_call(
    request_log: RequestLog, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise ModelportError("the store is down")

    request_log.store.put = refuse  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING, logger="modelport.requests"):
        request_log.observe(call(1), payload())
        request_log.observe(call(2), payload())
        request_log.payloads.drain()
    assert request_log.payloads.failed == 2
    assert len([r for r in caplog.records if "payloads" in r.getMessage()]) == 1
    assert request_log.flush() == 2
    assert request_log.get(ADMIN, call(1).id).payload is None


# The manifest and the policy


def api_document(**logging_spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "modelport/v1",
        "kind": "Api",
        "metadata": {"name": "a"},
        "spec": {"module": "alpha", "logging": logging_spec},
    }


def test_the_manifest_checks_the_logging_section() -> None:
    parse_document(
        api_document(payloads=True, sampleRate=0.5, redact=["inputs.a.b"], maxBytes=1024), source="test"
    )
    for bad in (
        {"sampleRate": 1.5},
        {"maxBytes": 0},
        {"maxBytes": 16 * 1024 * 1024 + 1},
        {"redact": ["headers.authorization"]},
        {"redact": ["inputs"]},
        {"redact": ["inputs..text"]},
        {"payload": True},
    ):
        with pytest.raises(ManifestError):
            parse_document(api_document(**bad), source="test")


def test_a_modules_apis_merge_into_one_capture_policy() -> None:
    def api(name: str, **spec: Any) -> ApiAccess:
        logging_spec = ApiLogging.model_validate(spec) if spec else None
        return ApiAccess(name, frozenset(), False, None, Cors(), logging=logging_spec)

    quiet = ModulePolicy("m", None, (api("a"), api("b", payloads=False, redact=["inputs.x"])))
    assert quiet.payload_logging is None
    merged = ModulePolicy(
        "m",
        None,
        (
            api("a", payloads=True, sampleRate=0.1, maxBytes=2048, redact=["inputs.text"]),
            api("b", payloads=True, sampleRate=0.5, maxBytes=4096),
            api("c", payloads=False, redact=["parameters.key"]),
            api("d"),
        ),
    ).payload_logging
    assert merged is not None
    assert (merged.sample_rate, merged.max_bytes) == (0.5, 2048)
    assert merged.redact == ["inputs.text", "parameters.key"]


@given(st.floats(min_value=0, max_value=4_102_444_800, allow_nan=False))
def test_the_sqlite_time_text_is_what_datetime_writes(at: float) -> None:
    expected = datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    assert _sqlite_time(at) == expected
