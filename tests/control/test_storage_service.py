"""Buckets: policies by group, quota reservations that hold across gateways, retention with a controllable
clock, and the gateway's own presigned URLs."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import event
from sqlalchemy.pool import QueuePool

from modelport.control.access import AccessPolicies, Permit
from modelport.control.audit import Actor, AuditTrail
from modelport.control.identity import ANONYMOUS, Principal
from modelport.control.manifests import BucketNotEmpty, Manifests
from modelport.control.policies import PolicyCache
from modelport.control.storage import BucketPolicy, Storage
from modelport.core.errors import (
    BadRequest,
    BucketNotFound,
    DatabaseUnavailable,
    Forbidden,
    PayloadTooLarge,
    QuotaExceeded,
    Unauthorized,
)
from modelport.core.records import PresignedUrl
from modelport.core.roles import Role
from modelport.core.settings import Settings
from modelport.db import Database
from modelport.storage import LocalStore

ADMIN = Principal(1, "admin", Role.ADMIN)
ANA = Principal(2, "ana", Role.USER, frozenset({"/team-a"}))
BOB = Principal(3, "bob", Role.USER, frozenset({"/team-b"}))
AUDITOR = Principal(4, "audi", Role.USER, frozenset({"/auditors"}))
DEVELOPER = Principal(5, "dev", Role.DEVELOPER, frozenset({"/team-a"}))
STRANGER = Principal(6, "dev-x", Role.DEVELOPER, frozenset({"/x/team-a"}))
ANA_HERE = Actor("ana", client="10.0.0.5", request_id="req-9")


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 1, tzinfo=UTC).timestamp()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    db = Database(database_url)
    db.migrate()
    yield db
    db.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def world(database: Database, tmp_path: Path, clock: Clock) -> tuple[Storage, Manifests]:
    store = LocalStore(tmp_path / "objects")
    settings = Settings(data_dir=tmp_path, request_retention_days=1)
    audit = AuditTrail(database)
    manifests = Manifests(database, audit=audit, store=store)
    documents = [
        bucket("receipts", access={"groups": ["/team-a"], "readGroups": ["/auditors"]}, retentionDays=30),
        bucket("tiny", access={"groups": ["/team-a"]}, quota="1KiB"),
    ]
    manifests.apply(documents, actor=Actor("admin"))
    storage = Storage(database, store, audit=audit, settings=settings, clock=clock)
    storage.start()
    return storage, manifests


def bucket(name: str, **spec: object) -> dict[str, object]:
    return {"apiVersion": "modelport/v1", "kind": "Storage", "metadata": {"name": name}, "spec": spec}


def put(storage: Storage, bucket: str, key: str, data: bytes, actor: Actor | None = ANA_HERE) -> None:
    with storage.upload(
        bucket, key, size=len(data), content_type="application/octet-stream", actor=actor
    ) as upload:
        upload.write(data)
        upload.commit()


def used(storage: Storage, name: str) -> int | None:
    return next(b.used_bytes for b in storage.buckets(ADMIN) if b.name == name)


# Policies


def test_groups_read_and_write_read_groups_only_read_and_others_see_nothing(
    world: tuple[Storage, Manifests],
) -> None:
    storage, _ = world
    assert storage.require(ANA, "receipts", write=True).name == "receipts"
    assert storage.require(AUDITOR, "receipts", write=False).name == "receipts"
    with pytest.raises(Forbidden):
        storage.require(AUDITOR, "receipts", write=True)
    for principal in (BOB, STRANGER):
        with pytest.raises(BucketNotFound):
            storage.require(principal, "receipts", write=False)
    with pytest.raises(Unauthorized):
        storage.require(ANONYMOUS, "receipts", write=False)
    with pytest.raises(BucketNotFound):
        storage.require(ANA, "no-such-bucket", write=False)
    assert [b.name for b in storage.buckets(ANA)] == ["receipts", "tiny"]
    assert [b.name for b in storage.buckets(AUDITOR)] == ["receipts"]
    assert storage.buckets(BOB) == []
    assert [b.name for b in storage.buckets(ADMIN)] == ["receipts", "requests", "tiny"]
    with pytest.raises(BucketNotFound):  # the request bucket is the admins' alone
        storage.require(ANA, "requests", write=False)


def test_only_admins_declare_buckets_and_a_bucket_holding_objects_is_not_deleted(
    world: tuple[Storage, Manifests], database: Database
) -> None:
    storage, manifests = world
    policies = AccessPolicies(database)
    with pytest.raises(Forbidden):
        manifests.apply([bucket("mine")], actor=Actor("dev"), permit=Permit(DEVELOPER, policies))
    with pytest.raises(Forbidden):
        manifests.delete([bucket("tiny")], actor=Actor("dev"), permit=Permit(DEVELOPER, policies))
    assert storage.policy("mine") is None
    put(storage, "receipts", "kept", b"data")
    with pytest.raises(BucketNotEmpty):
        manifests.delete([bucket("receipts")], actor=Actor("admin"))
    assert storage.policy("receipts") is not None
    changes = manifests.delete([bucket("tiny")], actor=Actor("admin"))
    assert [(c.kind, c.name, c.action) for c in changes] == [("Storage", "tiny", "deleted")]
    assert storage.policy("tiny") is None


class Ticks:
    """A monotonic clock that moves when the test says."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_bucket_policies_in_memory_see_changes_made_here_at_once_and_outlast_an_outage(
    world: tuple[Storage, Manifests], database: Database
) -> None:
    storage, manifests = world
    ticks = Ticks()
    policies = PolicyCache(storage.policies.read, what="buckets", refresh_seconds=2, clock=ticks)
    assert await groups(policies, "receipts") == {"/team-a"}
    manifests.apply([bucket("receipts", access={"groups": ["/team-b"]})], actor=Actor("admin"))
    assert await groups(policies, "receipts") == {"/team-a"}  # memory answers until it is read again
    policies.reload()  # as the platform does once a change made through it is committed
    assert await groups(policies, "receipts") == {"/team-b"}
    manifests.apply([bucket("made-elsewhere")], actor=Actor("admin"))
    ticks.now += 0.1
    assert await policies.current("made-elsewhere") is not None  # a bucket memory lacks is read for
    assert await policies.current("no-such-bucket") is None

    with connections_from(database) as readers:
        ticks.now += 2  # memory is old: answered from it while a worker thread reads
        assert await groups(policies, "receipts") == {"/team-b"}
        await until(lambda: bool(readers))
    assert threading.get_ident() not in readers

    with unreachable(database):
        policies.reload()
        ticks.now += 10
        assert await groups(policies, "receipts") == {"/team-b"}  # the last copy read
        with pytest.raises(DatabaseUnavailable):
            await policies.current("no-such-bucket")  # whether it exists, nobody can tell now
    ticks.now += 0.1
    assert await groups(policies, "receipts") == {"/team-b"}
    await until(lambda: policies.current("no-such-bucket"), expect=None)


async def groups(policies: PolicyCache[BucketPolicy], name: str) -> frozenset[str]:
    policy = await policies.current(name)
    assert policy is not None
    return policy.groups


async def until(check: Callable[[], object], *, expect: object = True, timeout: float = 5.0) -> None:
    """Poll `check()` (awaited if it is a coroutine) until it answers `expect` without raising."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            answer = check()
            if asyncio.iscoroutine(answer):
                answer = await answer
            if answer == expect:
                return
        except DatabaseUnavailable:
            pass
        assert time.monotonic() < deadline, f"not {expect!r} within {timeout} s"
        await asyncio.sleep(0.01)


@contextmanager
def unreachable(database: Database) -> Iterator[None]:
    """The database as while its server is down: pooled connections are gone and new ones are refused."""

    def refuse() -> sqlite3.Connection:
        raise sqlite3.OperationalError("unable to open database file")

    working = database.engine.pool
    working.dispose()
    database.engine.pool = QueuePool(refuse)
    try:
        yield
    finally:
        database.engine.pool = working


@contextmanager
def connections_from(database: Database) -> Iterator[set[int]]:
    """The threads that take connections from the database's pool while the block runs."""
    threads: set[int] = set()

    def taken(*args: object) -> None:
        threads.add(threading.get_ident())

    event.listen(database.engine, "checkout", taken)
    try:
        yield threads
    finally:
        event.remove(database.engine, "checkout", taken)


# Quotas


def test_a_quota_holds_and_failed_uploads_give_their_reservation_back(
    world: tuple[Storage, Manifests],
) -> None:
    storage, _ = world
    put(storage, "tiny", "a", b"x" * 600)
    with pytest.raises(QuotaExceeded):
        storage.upload("tiny", "b", size=600, content_type="text/plain", actor=ANA_HERE)
    assert used(storage, "tiny") == 600

    def interrupted() -> None:
        with storage.upload("tiny", "c", size=400, content_type="text/plain", actor=ANA_HERE) as upload:
            upload.write(b"y" * 100)
            raise RuntimeError("the client went away")

    def short() -> None:
        with storage.upload("tiny", "c", size=400, content_type="text/plain", actor=ANA_HERE) as upload:
            upload.write(b"y" * 100)
            upload.commit()

    def long() -> None:
        with storage.upload("tiny", "c", size=4, content_type="text/plain", actor=ANA_HERE) as upload:
            upload.write(b"y" * 5)

    with pytest.raises(RuntimeError):
        interrupted()
    assert used(storage, "tiny") == 600
    with pytest.raises(BadRequest, match="ended after 100 of the 400 bytes"):
        short()
    with pytest.raises(BadRequest, match="longer than its Content-Length"):
        long()
    assert used(storage, "tiny") == 600
    assert [o.key for o in storage.store.walk("tiny")] == ["a"]
    put(storage, "tiny", "a", b"z" * 100)  # replacing gives the old bytes back
    assert used(storage, "tiny") == 100
    storage.delete("tiny", "a", actor=ANA_HERE)
    assert used(storage, "tiny") == 0


def test_a_full_bucket_may_replace_an_object_with_one_no_larger(world: tuple[Storage, Manifests]) -> None:
    storage, _ = world
    put(storage, "tiny", "a", b"a" * 524)
    put(storage, "tiny", "b", b"b" * 500)
    assert used(storage, "tiny") == 1024  # full
    put(storage, "tiny", "a", b"A" * 524)  # the same size: no growth
    put(storage, "tiny", "b", b"B" * 100)  # smaller: gives 400 back
    assert used(storage, "tiny") == 624
    with pytest.raises(QuotaExceeded):
        put(storage, "tiny", "b", b"B" * 501)  # grows by 401 of the 400 left
    assert storage.store.get("tiny", "b") == b"B" * 100
    put(storage, "tiny", "b", b"B" * 500)
    assert used(storage, "tiny") == 1024 == sum(o.size for o in storage.store.walk("tiny"))


def test_concurrent_uploads_cannot_overshoot_the_quota(world: tuple[Storage, Manifests]) -> None:
    storage, _ = world
    results: list[str] = []

    def upload(index: int) -> None:
        try:
            put(storage, "tiny", f"k{index}", b"x" * 300)
            results.append("stored")
        except QuotaExceeded:
            results.append("refused")

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == ["refused"] * 5 + ["stored"] * 3  # 3 x 300 <= 1024 < 4 x 300
    assert used(storage, "tiny") == 900 == sum(o.size for o in storage.store.walk("tiny"))


# Retention and recounting


def test_objects_past_retention_are_deleted_and_usage_is_recounted(
    world: tuple[Storage, Manifests], clock: Clock
) -> None:
    storage, _ = world
    clock.now = time.time()  # objects are stamped with the real time; the sweep's clock moves from there
    put(storage, "receipts", "old", b"o" * 10)
    storage.store.put("requests", "uploads/x/old", b"r", content_type="text/plain")
    storage.store.put("tiny", "written-around", b"w" * 50, content_type="text/plain")  # not via the API
    assert storage.sweep() == {"receipts": 0, "tiny": 0, "requests": 0}
    assert used(storage, "tiny") == 50  # recounted from the store
    clock.now += 20 * 86_400  # past the request bucket's day, within the receipts' 30 days
    assert storage.sweep() == {"receipts": 0, "tiny": 0, "requests": 1}
    assert [o.key for o in storage.store.walk("receipts")] == ["old"]
    assert used(storage, "receipts") == 10
    clock.now += 11 * 86_400
    assert storage.sweep()["receipts"] == 1
    assert list(storage.store.walk("receipts")) == []
    assert used(storage, "receipts") == 0
    assert [o.key for o in storage.store.walk("tiny")] == ["written-around"]  # no retention: kept


# Presigned URLs of the gateway


def test_gateway_presigned_urls_cover_one_object_one_method_until_expiry(
    world: tuple[Storage, Manifests], clock: Clock
) -> None:
    storage, _ = world
    made = storage.presign(
        "receipts", "a b/c.png", method="PUT", expires_in=60, base_url="http://gw:1/", actor=ANA_HERE, size=10
    )
    assert made.url.startswith("http://gw:1/api/v1/storage/receipts/objects/a%20b/c.png?expires=")
    assert made.expires_at == datetime.fromtimestamp(clock.now + 60, UTC).isoformat()
    assert made.size == 10
    query = dict(part.split("=") for part in made.url.split("?")[1].split("&"))

    def check(method: str, bucket_name: str, key: str, expires: str, **sizes: str | None) -> None:
        sizes = {"size": query["size"], "content_length": "10", **sizes}
        storage.check_signature(method, bucket_name, key, expires, query["signature"], **sizes)

    check("PUT", "receipts", "a b/c.png", query["expires"])
    for method, bucket_name, key in [
        ("GET", "receipts", "a b/c.png"),
        ("PUT", "receipts", "a b/c.pngx"),
        ("PUT", "tiny", "a b/c.png"),
        ("DELETE", "receipts", "a b/c.png"),
    ]:
        with pytest.raises(Forbidden):
            check(method, bucket_name, key, query["expires"])
    with pytest.raises(Forbidden):  # a later expiry is not covered by the signature
        check("PUT", "receipts", "a b/c.png", str(int(query["expires"]) + 1))
    with pytest.raises(Forbidden):  # nor another size
        check("PUT", "receipts", "a b/c.png", query["expires"], size="11", content_length="11")
    with pytest.raises(Forbidden, match="exactly 10 bytes"):  # and the body must be that size
        check("PUT", "receipts", "a b/c.png", query["expires"], content_length="11")
    with pytest.raises(Forbidden, match="exactly 10 bytes"):
        check("PUT", "receipts", "a b/c.png", query["expires"], content_length=None)
    clock.now += 61
    with pytest.raises(Forbidden, match="expired"):
        check("PUT", "receipts", "a b/c.png", query["expires"])
    with pytest.raises(BadRequest):
        storage.presign(
            "receipts", "k", method="GET", expires_in=10**9, base_url="http://gw/", actor=ANA_HERE
        )


def test_every_gateway_signs_with_the_same_key(world: tuple[Storage, Manifests], database: Database) -> None:
    storage, _ = world
    other = Storage(
        database, storage.store, audit=storage.audit, settings=storage.settings, clock=storage.clock
    )
    made = storage.presign("receipts", "k", method="GET", expires_in=60, base_url="http://a/", actor=ANA_HERE)
    query = dict(part.split("=") for part in made.url.split("?")[1].split("&"))
    other.check_signature("GET", "receipts", "k", query["expires"], query["signature"])
    other.check_signature("HEAD", "receipts", "k", query["expires"], query["signature"])


def test_upload_urls_are_for_a_size_that_fits_the_limit_and_the_quota(
    world: tuple[Storage, Manifests],
) -> None:
    storage, _ = world

    def presign_put(bucket_name: str, size: int | None) -> PresignedUrl:
        return storage.presign(
            bucket_name, "more", method="PUT", expires_in=60, base_url="http://gw/", actor=ANA_HERE, size=size
        )

    with pytest.raises(BadRequest, match="send `size`"):
        presign_put("receipts", None)
    with pytest.raises(PayloadTooLarge):
        presign_put("receipts", storage.settings.max_object_bytes + 1)
    with pytest.raises(QuotaExceeded, match="no room for 1025 bytes"):
        presign_put("tiny", 1025)  # a 1 KiB quota
    put(storage, "tiny", "half", b"f" * 512)
    assert presign_put("tiny", 512).size == 512
    with pytest.raises(QuotaExceeded):
        presign_put("tiny", 513)
    with pytest.raises(BadRequest, match="for PUT URLs"):
        storage.presign(
            "tiny", "half", method="GET", expires_in=60, base_url="http://gw/", actor=ANA_HERE, size=1
        )
    put(storage, "tiny", "full", b"f" * 512)
    with pytest.raises(QuotaExceeded):
        presign_put("tiny", 1)
    assert storage.presign(
        "tiny", "full", method="GET", expires_in=60, base_url="http://gw/", actor=ANA_HERE
    ).url


# What the API sees


def test_a_listing_describes_objects_as_the_api_does(world: tuple[Storage, Manifests]) -> None:
    storage, _ = world
    for key in ["a/1", "a/2", "b"]:
        put(storage, "receipts", key, b"data")
    listing = storage.objects("receipts", prefix="", delimiter="/", cursor=None, limit=1000)
    assert (listing.bucket, listing.prefix, listing.prefixes, listing.next_cursor) == (
        "receipts",
        "",
        ["a/"],
        None,
    )
    (only,) = listing.objects
    assert (only.key, only.size, only.content_type) == ("b", 4, "application/octet-stream")
    assert only.sha256 == hashlib.sha256(b"data").hexdigest()
    assert datetime.fromisoformat(only.modified).tzinfo is not None


def test_uploads_deletions_and_urls_are_recorded_as_their_actors(world: tuple[Storage, Manifests]) -> None:
    storage, _ = world
    put(storage, "receipts", "by-ana", b"data")
    put(storage, "receipts", "by-url", b"data", actor=None)  # through a presigned URL: nobody to name
    storage.delete("receipts", "by-ana", actor=ANA_HERE)
    storage.presign("receipts", "k", method="GET", expires_in=60, base_url="http://gw/", actor=ANA_HERE)
    events = reversed(storage.audit.events(target="bucket/receipts"))
    assert [(e.actor, e.action, e.details, e.client, e.request_id) for e in events] == [
        ("ana", "object.put", {"key": "by-ana", "size": 4}, "10.0.0.5", "req-9"),
        ("ana", "object.delete", {"key": "by-ana"}, "10.0.0.5", "req-9"),
        ("ana", "object.presign", {"key": "k", "method": "GET"}, "10.0.0.5", "req-9"),
    ]
