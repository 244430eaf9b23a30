"""Buckets as the platform sees them: who may use each, how much it may hold, how long objects stay.

A bucket is declared by a `Storage` manifest (applied like the other kinds). Admins may use every bucket;
members of `access.groups` read and write it, members of `access.readGroups` only read it; to anyone else
the bucket does not exist (404). The request bucket (`request_bucket`, where uploads of synchronous calls and
file outputs are kept) exists without a manifest: only admins see it, and its files are kept
`request_retention_days` days unless a `Storage` manifest of that name says otherwise.

Quotas hold across gateways: each upload reserves its declared size with one conditional UPDATE before the
first byte is stored, and gives back what it does not use. Objects written around the platform (straight to
S3 through a presigned URL) are counted when `sweep` recounts the bucket.

Presigned URLs: on S3 the store signs them; on the local store the gateway serves them, signed with
HMAC-SHA256 under a key kept in the database, so every gateway accepts them. A URL is good for one method on
one object until it expires.

Browsers ask about a bucket's CORS rules on the event loop, before any credentials: a `PolicyCache`
(`control/policies.py`) keeps every bucket's policy in memory for them, read again in a worker thread every
few seconds and at once after a change made through this process. While the database is unavailable the
copy read last keeps answering.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from pydantic import ValidationError
from sqlalchemy import select, update

from modelport.control.audit import Actor, AuditTrail
from modelport.control.identity import Principal
from modelport.control.policies import PolicyCache
from modelport.core.errors import (
    BadRequest,
    BucketNotFound,
    Forbidden,
    ObjectNotFound,
    PayloadTooLarge,
    QuotaExceeded,
    Unauthorized,
)
from modelport.core.manifests import Cors, StorageManifest
from modelport.core.records import BucketInfo, ObjectInfo, ObjectListing, PresignedUrl, PresignMethod
from modelport.core.roles import Role
from modelport.core.settings import Settings
from modelport.db import Bucket, Database
from modelport.db.keys import server_secret
from modelport.storage import ObjectInfo as StoredObject
from modelport.storage import ObjectStore, ObjectWriter, check_key, check_prefix

__all__ = ["BucketPolicy", "Storage", "Upload", "object_info"]

log = logging.getLogger("modelport.storage")

_PRESIGN_KEY = "presign"


@dataclass(frozen=True)
class BucketPolicy:
    """What one bucket allows, and to whom."""

    name: str
    groups: frozenset[str] = frozenset()
    read_groups: frozenset[str] = frozenset()
    quota_bytes: int | None = None
    retention_days: float | None = None
    cors: Cors | None = None
    declared: bool = True
    """False for the request bucket while no `Storage` manifest names it."""

    def may_read(self, principal: Principal) -> bool:
        return self.may_write(principal) or bool(self.read_groups & principal.groups)

    def may_write(self, principal: Principal) -> bool:
        return principal.role == Role.ADMIN or bool(self.groups & principal.groups)


class Upload:
    """One object being uploaded into a bucket: its quota reservation and its writer.

    The reservation is what the bucket grows by: the object's size less that of the object it replaces.
    `commit` publishes the object, settles the usage (a smaller replacement gives bytes back) and records the
    upload in the audit trail as `actor`'s; `abort`, or leaving a `with` block without a commit, drops the
    bytes and the reservation.
    """

    def __init__(
        self,
        storage: Storage,
        bucket: str,
        key: str,
        *,
        size: int,
        replaced: int,
        writer: ObjectWriter,
        actor: Actor | None,
    ) -> None:
        self._storage, self.bucket, self.key, self.size, self.writer = storage, bucket, key, size, writer
        self.actor = actor
        self._growth = size - replaced
        self._reserved = max(0, self._growth)
        self._done = False

    def write(self, chunk: bytes) -> None:
        if self.writer.written + len(chunk) > self.size:
            raise BadRequest(f"the body is longer than its Content-Length ({self.size} bytes)")
        self.writer.write(chunk)

    def commit(self) -> ObjectInfo:
        if self.writer.written != self.size:
            raise BadRequest(
                f"the body ended after {self.writer.written} of the {self.size} bytes its Content-Length "
                "announced"
            )
        info = self.writer.commit()
        self._done = True
        self._storage._release(self.bucket, self._reserved - self._growth)
        if self.actor is not None:
            where = f"bucket/{self.bucket}"
            self._storage.audit.record(self.actor, "object.put", where, key=self.key, size=self.size)
        return object_info(info)

    def abort(self) -> None:
        if not self._done:
            self._done = True
            self.writer.abort()
            self._storage._release(self.bucket, self._reserved)

    def __enter__(self) -> Upload:
        return self

    def __exit__(self, *_: object) -> None:
        self.abort()  # nothing to drop after a commit; everything if the block left without one


class Storage:
    """The platform's buckets over one `ObjectStore`."""

    def __init__(
        self,
        database: Database,
        store: ObjectStore,
        *,
        audit: AuditTrail,
        settings: Settings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.database = database
        self.store = store
        self.audit = audit
        self.settings = settings
        self.clock = clock
        self._presign_key: bytes | None = None
        self._lock = threading.Lock()
        self.policies = PolicyCache(self._read_policies, what="the buckets' policies", refresh_seconds=2.0)
        """Every bucket's policy in memory, for the event loop."""

    def start(self) -> None:
        """Make sure every declared bucket, and the request bucket, exists in the store."""
        self.store.create_bucket(self.settings.request_bucket)
        with self.database.session() as session:
            names = list(session.scalars(select(Bucket.name)))
        for name in names:
            self.store.create_bucket(name)

    # Policies

    def policy(self, name: str) -> BucketPolicy | None:
        with self.database.session() as session:
            row = session.get(Bucket, name)
            manifest = row.manifest if row is not None else None
        if manifest is None:
            return self._undeclared_request_bucket() if name == self.settings.request_bucket else None
        return _policy(name, manifest)

    async def cors(self, bucket: str) -> Cors | None:
        """The CORS rules of a bucket, if it has any: from memory (`policies`), so that a preflight waits on
        the database only for a bucket memory lacks."""
        policy = await self.policies.current(bucket)
        return None if policy is None else policy.cors

    def require(self, principal: Principal, bucket: str, *, write: bool) -> BucketPolicy:
        """The bucket's policy if `principal` may read it (and write it, with `write`); else what to say."""
        policy = self.policy(bucket)
        if policy is None or not policy.may_read(principal):
            if principal.is_anonymous:
                raise Unauthorized("send a bearer token as `Authorization: Bearer <token>`")
            raise BucketNotFound(f"no bucket named {bucket!r}")
        if write and not policy.may_write(principal):
            raise Forbidden(f"you may read bucket {bucket!r} but not change it")
        return policy

    def buckets(self, principal: Principal) -> list[BucketInfo]:
        """The buckets `principal` may read, with their limits and usage, by name."""
        return [
            _describe(policy, used, principal) for policy, used in self._all() if policy.may_read(principal)
        ]

    def _all(self) -> list[tuple[BucketPolicy, int | None]]:
        """Every bucket's policy and counted usage (None for the request bucket while undeclared), by name."""
        with self.database.session() as session:
            rows = [(row.name, row.manifest, row.used_bytes) for row in session.scalars(select(Bucket))]
        found: list[tuple[BucketPolicy, int | None]] = [
            (_policy(name, manifest), used) for name, manifest, used in rows
        ]
        if self.settings.request_bucket not in {name for name, _, _ in rows}:
            found.append((self._undeclared_request_bucket(), None))
        return sorted(found, key=lambda item: item[0].name)

    def _read_policies(self) -> dict[str, BucketPolicy]:
        return {policy.name: policy for policy, _ in self._all()}

    def _undeclared_request_bucket(self) -> BucketPolicy:
        name, days = self.settings.request_bucket, self.settings.request_retention_days
        return BucketPolicy(name, retention_days=days, declared=False)

    # Objects

    def objects(
        self, bucket: str, *, prefix: str, delimiter: str | None, cursor: str | None, limit: int
    ) -> ObjectListing:
        """One page of the objects whose keys start with `prefix`, in key order."""
        page = self.store.list(
            bucket, prefix=check_prefix(prefix), delimiter=delimiter, cursor=cursor, limit=limit
        )
        return ObjectListing(
            bucket=bucket,
            prefix=prefix,
            objects=[object_info(info) for info in page.objects],
            prefixes=page.prefixes,
            next_cursor=page.next_cursor,
        )

    def upload(self, bucket: str, key: str, *, size: int, content_type: str, actor: Actor | None) -> Upload:
        """Reserve what the bucket grows by and open a writer; `QuotaExceeded` if it does not fit.

        Replacing an object needs room only for the difference. (Two uploads replacing the same key at once
        may settle the usage a little off; the next sweep recounts it.) `actor` is who the audit trail
        records; None for an upload through a presigned URL, whose holder is nobody known."""
        check_key(key)
        replaced = self._size_of(bucket, key)
        reserved = max(0, size - replaced)
        self._reserve(bucket, reserved)
        try:
            writer = self.store.writer(bucket, key, content_type=content_type)
            return Upload(self, bucket, key, size=size, replaced=replaced, writer=writer, actor=actor)
        except BaseException:
            self._release(bucket, reserved)
            raise

    def delete(self, bucket: str, key: str, *, actor: Actor) -> None:
        check_key(key)
        size = self._size_of(bucket, key)
        if not self.store.delete(bucket, key):
            raise ObjectNotFound(f"no object {key!r} in bucket {bucket!r}")
        self._release(bucket, size)
        self.audit.record(actor, "object.delete", f"bucket/{bucket}", key=key)

    def _size_of(self, bucket: str, key: str) -> int:
        try:
            return self.store.head(bucket, key).size
        except ObjectNotFound:
            return 0

    def _reserve(self, bucket: str, size: int) -> None:
        if size <= 0:
            return
        with self.database.session() as session:
            quota = session.scalar(select(Bucket.quota_bytes).where(Bucket.name == bucket))
            statement = update(Bucket).where(Bucket.name == bucket)
            if quota is not None:
                statement = statement.where(Bucket.used_bytes + size <= Bucket.quota_bytes)
            done = session.execute(statement.values(used_bytes=Bucket.used_bytes + size))
            if quota is not None and done.rowcount == 0:  # type: ignore[attr-defined]
                used = session.scalar(select(Bucket.used_bytes).where(Bucket.name == bucket)) or 0
                raise QuotaExceeded(
                    f"bucket {bucket!r} holds {used} of its {quota} bytes; {size} more do not fit",
                    details={"quota_bytes": quota, "used_bytes": used, "size": size},
                )

    def _release(self, bucket: str, size: int) -> None:
        if size:
            with self.database.session() as session:
                session.execute(
                    update(Bucket).where(Bucket.name == bucket).values(used_bytes=Bucket.used_bytes - size)
                )

    # Presigned URLs

    def presign(
        self,
        bucket: str,
        key: str,
        *,
        method: PresignMethod,
        expires_in: int,
        base_url: str,
        actor: Actor,
        size: int | None = None,
    ) -> PresignedUrl:
        """A URL for `method` on one object, good for `expires_in` seconds; `base_url` is this gateway's.
        A `PUT` URL uploads exactly `size` bytes, which must fit the object-size limit and the bucket's quota
        now: whoever holds the URL is held to that size, on S3 as here. Handing one out is recorded in the
        audit trail as `actor`'s."""
        check_key(key)
        if not 1 <= expires_in <= self.settings.presign_max_seconds:
            raise BadRequest(f"expires_in must be between 1 and {self.settings.presign_max_seconds} seconds")
        if method == "PUT":
            if size is None:
                raise BadRequest("a PUT URL uploads one object of a known size: send `size` in bytes")
            if size > self.settings.max_object_bytes:
                raise PayloadTooLarge(
                    f"an object of {size} bytes exceeds the limit of {self.settings.max_object_bytes} bytes"
                )
            self._check_room(bucket, size)
        elif size is not None:
            raise BadRequest("`size` is for PUT URLs: a GET URL downloads the object as it is")
        expires = math.ceil(self.clock()) + expires_in  # never shorter than asked
        url = self.store.presign(bucket, key, method=method, expires_in=expires_in, size=size)
        if url is None:
            signature = self._signature(method, bucket, key, expires, size)
            path = f"/api/v1/storage/{bucket}/objects/{quote(key, safe='/')}"
            sized = "" if size is None else f"&size={size}"
            url = f"{base_url.rstrip('/')}{path}?expires={expires}{sized}&signature={signature}"
        details: dict[str, Any] = {"key": key, "method": method}
        if size is not None:
            details["size"] = size
        self.audit.record(actor, "object.presign", f"bucket/{bucket}", **details)
        expires_at = datetime.fromtimestamp(expires, UTC).isoformat()
        return PresignedUrl(url=url, method=method, expires_at=expires_at, size=size)

    def check_signature(
        self,
        method: str,
        bucket: str,
        key: str,
        expires: str,
        signature: str,
        *,
        size: str | None = None,
        content_length: str | None = None,
    ) -> None:
        """Accept a request made with a presigned URL of this gateway, or raise what to answer. A `PUT` must
        send the `Content-Length` the URL was signed for."""
        signed: PresignMethod = "GET" if method in ("GET", "HEAD") else "PUT"
        if method not in ("GET", "HEAD", "PUT") or not expires.isdigit():
            raise Forbidden(f"a presigned URL does not allow {method}")
        if signed == "PUT" and (size is None or not size.isdigit()):
            raise Forbidden("this presigned URL names no size to upload")
        bound = int(size) if signed == "PUT" and size is not None else None
        expected = self._signature(signed, bucket, key, int(expires), bound)
        if not hmac.compare_digest(expected, signature):
            raise Forbidden("the URL's signature does not match this object and method")
        if int(expires) < self.clock():
            raise Forbidden("this presigned URL has expired")
        if bound is not None and content_length != str(bound):
            raise Forbidden(f"this presigned URL uploads exactly {bound} bytes (Content-Length: {bound})")

    def _signature(self, method: PresignMethod, bucket: str, key: str, expires: int, size: int | None) -> str:
        message = f"{method}\n{bucket}\n{key}\n{expires}"
        if size is not None:
            message += f"\n{size}"
        return hmac.new(self._secret(), message.encode(), hashlib.sha256).hexdigest()

    def _secret(self) -> bytes:
        """The signing key every gateway shares, made by whichever asks first."""
        if self._presign_key is None:
            with self._lock:
                if self._presign_key is None:
                    self._presign_key = server_secret(self.database, _PRESIGN_KEY)
        return self._presign_key

    def _check_room(self, bucket: str, size: int) -> None:
        """Refuse now an upload of `size` bytes that the bucket's quota has no room for."""
        with self.database.session() as session:
            row = session.get(Bucket, bucket)
            if row is not None and row.quota_bytes is not None and row.used_bytes + size > row.quota_bytes:
                raise QuotaExceeded(
                    f"bucket {bucket!r} has no room for {size} bytes "
                    f"({row.used_bytes} of {row.quota_bytes} bytes used)"
                )

    # Upkeep

    def sweep(self) -> dict[str, int]:
        """Delete objects past their bucket's retention and recount each bucket's usage; returns the number
        of objects deleted per bucket. The inputs of jobs (`jobs/` in the request bucket) live as long as
        their job, which sweeps them itself: a job queued longer than the retention still finds them."""
        deleted: dict[str, int] = {}
        now = datetime.fromtimestamp(self.clock(), UTC)
        for policy, _ in self._all():
            cutoff = now - timedelta(days=policy.retention_days) if policy.retention_days else None
            used, count = 0, 0
            for info in self.store.walk(policy.name):
                kept_by_job = policy.name == self.settings.request_bucket and info.key.startswith("jobs/")
                if cutoff is not None and info.modified < cutoff and not kept_by_job:
                    if self.store.delete(policy.name, info.key):
                        count += 1
                    continue
                used += info.size
            deleted[policy.name] = count
            if policy.declared:
                self._recount(policy.name, used, now)
            if count:
                log.info("deleted %d objects past retention from bucket %s", count, policy.name)
        self.store.sweep()
        return deleted

    def _recount(self, bucket: str, used: int, now: datetime) -> None:
        with self.database.session() as session:
            session.execute(
                update(Bucket).where(Bucket.name == bucket).values(used_bytes=used, counted_at=now)
            )


def _policy(name: str, manifest: dict[str, Any]) -> BucketPolicy:
    try:
        storage = StorageManifest.model_validate(manifest)
    except ValidationError:  # written by an older schema: closed until applied again
        return BucketPolicy(name)
    spec = storage.spec
    return BucketPolicy(
        name,
        groups=frozenset(spec.access.groups),
        read_groups=frozenset(spec.access.read_groups),
        quota_bytes=spec.quota_bytes,
        retention_days=spec.retention_days,
        cors=spec.cors if spec.cors.enabled else None,
    )


def _describe(policy: BucketPolicy, used: int | None, principal: Principal) -> BucketInfo:
    return BucketInfo(
        name=policy.name,
        quota_bytes=policy.quota_bytes,
        used_bytes=used,
        retention_days=policy.retention_days,
        access="write" if policy.may_write(principal) else "read",
        groups=sorted(policy.groups),
        read_groups=sorted(policy.read_groups),
    )


def object_info(info: StoredObject) -> ObjectInfo:
    """An object of the store as the API describes it."""
    return ObjectInfo(
        key=info.key,
        size=info.size,
        etag=info.etag,
        content_type=info.content_type,
        modified=info.modified.isoformat(),
        sha256=info.sha256,
    )
