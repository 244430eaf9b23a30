"""Drift: whether what a module version is sent, and what it answers, still looks like it did at first.

`Drift` is a call observer. Of each successful call it keeps the features its module declares
(`obs/drift.py` says which), at most `drift_max_samples_per_minute` records per module version (a token
bucket, so bursts are cut, not the steady flow), and writes them to `drift_samples` in batches from its own
thread, where they stay `drift_days`. Taking note on the event loop only copies a few values into a bounded
buffer; a version whose calls send images is noted wholly from `observe_files`, in the worker thread that
sees the uploads on disk, so that each record's features are taken together and the images are decoded off
the event loop.

Each version is compared with its reference, set by the module's `Api` manifest (`spec.monitoring.drift`,
read through the policy in memory): its first `referenceCalls` sampled records, copied into
`drift_references` once that many exist (so that the retention sweep may take the samples), or a JSONL
object in storage whose records give their features the same way. The window is the last `windowCalls`
samples taken after the reference; a verdict needs the whole reference and a full window.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import io
import json
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote_to_bytes

from sqlalchemy import CursorResult, and_, delete, exists, func, insert, or_, select
from sqlalchemy.exc import IntegrityError

from modelport.control.access import AccessPolicies
from modelport.control.modules import ModuleRegistry
from modelport.control.storage import Storage
from modelport.core.errors import (
    BucketNotFound,
    ModelportError,
    ModuleNotFound,
    VersionNotFound,
)
from modelport.core.manifests import DriftMonitoring
from modelport.core.records import DriftReferenceInfo, DriftReport, DriftVerdict, DriftWindow
from modelport.core.settings import Settings
from modelport.db import Database, Deployment, DriftReference, DriftSample, Version
from modelport.db.database import failure
from modelport.obs.calls import CallPayload, CallRecord
from modelport.obs.drift import MIN_VALUES, FileSource, Plan, Value, compare, image_features, plan_of
from modelport.sdk.spec import ApiSpec
from modelport.storage import ObjectStore

__all__ = ["FIRST_CALLS", "Drift", "StoredFiles"]

log = logging.getLogger("modelport.drift")

FIRST_CALLS = "first-calls"
FLUSH_SECONDS = 1.0
"""How often buffered samples are written (at most this much is lost if the server is killed)."""
SWEEP_SECONDS = 3600.0
SCORES_SECONDS = 30.0
"""How often the scores `scores()` hands out are computed again, while someone asks for them."""
OBJECT_CHECK_SECONDS = 60.0
"""How often a reference object is checked for a change (or, after a failure, read again)."""
MAX_BUFFERED = 50_000
"""Samples held while they wait to be written (the oldest go first when the database cannot take them)."""
MAX_REFERENCE_BYTES = 64 * 1024 * 1024
MAX_REFERENCE_RECORDS = 10_000
INSERT_CHUNK = 1000


@dataclass(frozen=True, slots=True)
class _Sample:
    module: str
    version: str
    at: float
    features: dict[str, Value]


@dataclass
class _Reference:
    """A version's reference as a report uses it: its values by feature, or why there are none."""

    source: str
    needed: int
    values: dict[str, list[Value]] = field(default_factory=dict)
    calls: int = 0
    after: tuple[datetime, int] | None = None
    """The (time, id) of the last sample it was taken from: the window starts after it."""
    message: str | None = None


class StoredFiles(FileSource):
    """The files of a reference object's records: `{"object": "bucket/key"}` in storage, or `data:` URLs;
    `check(bucket)` raises unless the module may read the bucket."""

    def __init__(self, store: ObjectStore, *, check: Callable[[str], None], settings: Settings) -> None:
        super().__init__(max_pixels=settings.max_image_pixels)
        self.store, self.check, self.max_bytes = store, check, settings.max_upload_bytes

    def size(self, value: Any) -> int | None:
        data = self._bytes(value)
        return None if data is None else len(data)

    def image(self, value: Any) -> tuple[float, float, float] | None:
        data = self._bytes(value)
        return None if data is None else image_features(io.BytesIO(data), max_pixels=self.max_pixels)

    def _bytes(self, value: Any) -> bytes | None:
        if isinstance(value, str) and value.startswith("data:"):
            header, _, data = value.partition(",")
            try:
                return (
                    base64.b64decode(data, validate=True)
                    if header.endswith(";base64")
                    else unquote_to_bytes(data)
                )
            except binascii.Error:
                return None
        ref = value.get("object") if isinstance(value, dict) else None
        if not isinstance(ref, str) or "/" not in ref:
            return None
        bucket, key = ref.split("/", 1)
        self.check(bucket)
        if self.store.head(bucket, key).size > self.max_bytes:
            return None
        return self.store.get(bucket, key)


class Drift:
    """Drift watching for every module version the `registry` serves (see the module's docstring)."""

    def __init__(
        self,
        database: Database,
        *,
        registry: ModuleRegistry,
        policies: AccessPolicies,
        storage: Storage,
        store: ObjectStore,
        settings: Settings,
    ) -> None:
        self.database, self.registry, self.policies = database, registry, policies
        self.storage, self.store, self.settings = storage, store, settings
        self.files = FileSource(max_pixels=settings.max_image_pixels)
        self._plans: dict[tuple[str, str], Plan] = {}
        self._tokens: dict[tuple[str, str], tuple[float, float]] = {}
        self._lock = threading.Lock()
        self._samples: deque[_Sample] = deque(maxlen=MAX_BUFFERED)
        self._touched: set[tuple[str, str]] = set()
        self._referenced: dict[tuple[str, str], str] = {}
        """The reference each version has in the database (its configuration's text), so a tick need not
        look again."""
        self._object_errors: dict[tuple[str, str], tuple[float, str]] = {}
        self._object_checked: dict[tuple[str, str], float] = {}
        self._scores: Mapping[tuple[str, str], float] = {}
        self._scores_at: float | None = None
        self._scores_asked = False
        self._swept_at: float | None = None
        self._failing = False

    # Taking note of calls

    def observe(self, record: CallRecord, payload: CallPayload | None) -> None:
        """On the event loop: copy the features of a successful call's records into the buffer (a version
        whose calls send images waits for `observe_files`)."""
        plan = self._plan_for(record, payload)
        if plan is not None and payload is not None and not plan.images:
            self._take(record, payload, plan)

    def observe_files(self, record: CallRecord, payload: CallPayload) -> None:
        """In a worker thread, the uploads still on disk: the features of a version whose calls send
        images."""
        plan = self._plan_for(record, payload)
        if plan is not None and plan.images:
            self._take(record, payload, plan)

    def _plan_for(self, record: CallRecord, payload: CallPayload | None) -> Plan | None:
        if record.status != 200 or payload is None or payload.outputs is None:
            return None
        key = (record.module, record.version)
        plan = self._plans.get(key)
        if plan is None:
            served = self.registry.versions(record.module).get(record.version)
            if served is None:
                return None
            plan = self._plans[key] = plan_of(served.spec)
        return plan if plan.rules else None

    def _take(self, record: CallRecord, payload: CallPayload, plan: Plan) -> None:
        assert payload.outputs is not None
        key = (record.module, record.version)
        count = self._admit(key, min(len(payload.inputs), len(payload.outputs)))
        for inputs, outputs in zip(payload.inputs[:count], payload.outputs[:count], strict=True):
            features = plan.take(inputs, outputs, self.files)
            if features:
                self._samples.append(_Sample(record.module, record.version, record.at, features))
        if count:
            with self._lock:
                self._touched.add(key)

    def _admit(self, key: tuple[str, str], wanted: int) -> int:
        """How many of `wanted` records the version's token bucket lets through now (it holds a minute's
        worth, `drift_max_samples_per_minute`, and refills at that pace)."""
        capacity = float(self.settings.drift_max_samples_per_minute)
        now = time.monotonic()
        with self._lock:
            tokens, at = self._tokens.get(key, (capacity, now))
            tokens = min(capacity, tokens + (now - at) * capacity / 60.0)
            admitted = min(wanted, math.floor(tokens))
            self._tokens[key] = (tokens - admitted, now)
        return admitted

    # The background work

    async def run(self, stop: asyncio.Event) -> None:
        """Write samples, take references, sweep old samples and compute the scores asked for, until `stop`;
        then write what is left."""
        while not stop.is_set():
            await asyncio.to_thread(self.tick)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), FLUSH_SECONDS)
        await asyncio.to_thread(self.close)

    def close(self) -> None:
        """Write the samples still buffered (in a thread), as the server stops; a failure is logged."""
        try:
            self.flush()
        except Exception as exc:
            log.warning("drift: %d samples were not written: %s", len(self._samples), failure(exc))

    def tick(self) -> None:
        """One round of the background work (in a thread); what fails is logged and tried again later."""
        try:
            self.flush()
            self._take_references()
            now = time.monotonic()
            if self._swept_at is None or now - self._swept_at >= SWEEP_SECONDS:
                self.sweep()
                self._forget_stopped()
                self._swept_at = now
            if self._scores_asked and (self._scores_at is None or now - self._scores_at >= SCORES_SECONDS):
                self.refresh_scores()
        except Exception as exc:
            if not self._failing:
                log.warning("drift: %s; trying again", failure(exc), exc_info=True)
            self._failing = True
        else:
            self._failing = False

    def flush(self) -> int:
        """Write the buffered samples; returns how many. Those the database refuses go back to the buffer."""
        taken: list[_Sample] = []
        while self._samples:
            try:
                taken.append(self._samples.popleft())
            except IndexError:
                break
        if not taken:
            return 0
        rows = [
            {
                "module": s.module,
                "version": s.version,
                "at": datetime.fromtimestamp(s.at, UTC),
                "features": s.features,
            }
            for s in taken
        ]
        try:
            with self.database.session() as session:
                for start in range(0, len(rows), INSERT_CHUNK):
                    session.execute(insert(DriftSample), rows[start : start + INSERT_CHUNK])
        except Exception:
            room = MAX_BUFFERED - len(self._samples)
            if room > 0:  # the newest first: the buffer drops the oldest
                self._samples.extendleft(reversed(taken[-room:]))
            raise
        return len(taken)

    def sweep(self, *, now: datetime | None = None) -> int:
        """Delete samples older than `drift_days`, and the references of versions that are gone; returns how
        many samples went."""
        cutoff = (now or datetime.now(UTC)) - timedelta(days=self.settings.drift_days)
        with self.database.session() as session:
            done = session.execute(delete(DriftSample).where(DriftSample.at < cutoff))
            removed = done.rowcount if isinstance(done, CursorResult) else 0
            gone = ~exists().where(
                Version.module_name == DriftReference.module, Version.name == DriftReference.version
            )
            session.execute(delete(DriftReference).where(gone))
        return removed

    def _forget_stopped(self) -> None:
        """Drop what memory holds of versions no longer running."""
        running = {(s.name, s.version) for s in self.registry.running()}
        for table in (self._plans, self._tokens, self._referenced, self._object_checked, self._object_errors):
            for key in [key for key in table if key not in running]:
                table.pop(key, None)

    # References

    def _take_references(self) -> None:
        with self._lock:
            touched, self._touched = self._touched, set()
        for module, version in touched:
            policy = self.policies.policy(module)
            if policy is None:
                continue
            config = policy.drift
            if self._referenced.get((module, version)) == config.model_dump_json():
                continue
            plan = self._stored_plan(module, version)
            if plan is not None:
                self._reference(module, version, config, plan)

    def _reference(self, module: str, version: str, config: DriftMonitoring, plan: Plan) -> _Reference:
        """The version's reference for `config`: the stored one if it was taken for it, else taken now if it
        can be."""
        key = (module, version)
        with self.database.session() as session:
            row = session.get(DriftReference, key)
            stored = _stored(row, config) if row is not None else None
        if stored is not None and (config.reference_object is None or not self._object_changed(key, config)):
            self._referenced[key] = config.model_dump_json()
            return stored
        self._referenced.pop(key, None)
        taken = (
            self._first_calls(key, config)
            if config.reference_object is None
            else self._object(key, config, plan)
        )
        if taken.message is None:
            self._store(key, config, taken)
            self._referenced[key] = config.model_dump_json()
        return taken

    def _first_calls(self, key: tuple[str, str], config: DriftMonitoring) -> _Reference:
        """The version's first `referenceCalls` samples, once it has that many (counted first: while they
        are collected, no features are read)."""
        needed = config.reference_calls
        mine = (DriftSample.module == key[0], DriftSample.version == key[1])
        with self.database.session() as session:
            count = session.scalar(select(func.count()).select_from(DriftSample).where(*mine)) or 0
            if count < needed:
                message = f"taking the reference: {count} of the first {needed} calls sampled"
                return _Reference(FIRST_CALLS, needed, message=message)
            query = select(DriftSample.at, DriftSample.id, DriftSample.features).where(*mine)
            rows = session.execute(query.order_by(DriftSample.at, DriftSample.id).limit(needed)).all()
        last = rows[-1]
        return _Reference(
            FIRST_CALLS, needed, _columns(row.features for row in rows), len(rows), (last.at, last.id)
        )

    def _object(self, key: tuple[str, str], config: DriftMonitoring, plan: Plan) -> _Reference:
        """The reference read from its JSONL object (a failure is told, and tried again a minute later)."""
        assert config.reference_object is not None
        bucket, name = config.reference_object
        error = self._object_errors.get(key)
        recent = error is not None and time.monotonic() - error[0] < OBJECT_CHECK_SECONDS
        if error is not None and recent and error[1].startswith(config.reference + ":"):
            return _Reference(config.reference, MIN_VALUES, message=error[1])
        try:
            records = self._read_object(key[0], bucket, name, plan)
        except (ModelportError, ValueError) as exc:
            reason = exc.message if isinstance(exc, ModelportError) else str(exc)
            message = f"{config.reference}: cannot read the reference object: {reason}"
            self._object_errors[key] = (time.monotonic(), message)
            return _Reference(config.reference, MIN_VALUES, message=message)
        self._object_errors.pop(key, None)
        self._object_checked[key] = time.monotonic()
        if len(records) < MIN_VALUES:
            message = f"{config.reference}: {len(records)} records give features, {MIN_VALUES} are needed"
            return _Reference(config.reference, MIN_VALUES, message=message)
        return _Reference(config.reference, MIN_VALUES, _columns(records), len(records))

    def _read_object(self, module: str, bucket: str, name: str, plan: Plan) -> list[dict[str, Value]]:
        """The features of each record of a JSONL reference object (at most `MAX_REFERENCE_RECORDS`)."""
        check = self._readable_by(module)
        check(bucket)
        if self.store.head(bucket, name).size > MAX_REFERENCE_BYTES:
            raise ValueError(f"it is larger than {MAX_REFERENCE_BYTES // 2**20} MiB")
        files = StoredFiles(self.store, check=check, settings=self.settings)
        records: list[dict[str, Value]] = []
        lines = self.store.get(bucket, name).decode("utf-8").splitlines()
        for number, line in enumerate(lines, start=1):
            if len(records) >= MAX_REFERENCE_RECORDS:
                break
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"line {number} is not JSON: {exc.msg}") from None
            if not isinstance(record, dict) or not isinstance(record.get("inputs", {}), dict):
                raise ValueError(f'line {number}: expected {{"inputs": {{...}}, "outputs": {{...}}}}')
            outputs = record.get("outputs", {})
            features = plan.take(
                record.get("inputs", {}), outputs if isinstance(outputs, dict) else {}, files
            )
            if features:
                records.append(features)
        return records

    def _readable_by(self, module: str) -> Callable[[str], None]:
        """A check that raises unless `module`'s owner group may read a bucket (modules without an owner are
        the admins', who may read every bucket): a developer cannot read another group's bucket through
        its module's reference."""
        policy = self.policies.policy(module)
        owner = policy.owner if policy is not None else None

        def check(bucket: str) -> None:
            allowed = self.storage.policy(bucket)
            if allowed is None or (owner is not None and owner not in allowed.groups | allowed.read_groups):
                raise BucketNotFound(f"no bucket named {bucket!r} that {owner or 'the admins'} may read")

        return check

    def _object_changed(self, key: tuple[str, str], config: DriftMonitoring) -> bool:
        """Whether the reference object was written again since its features were taken (looked at once a
        minute at most)."""
        checked = self._object_checked.get(key)
        if checked is not None and time.monotonic() - checked < OBJECT_CHECK_SECONDS:
            return False
        assert config.reference_object is not None
        self._object_checked[key] = time.monotonic()
        with self.database.session() as session:
            row = session.get(DriftReference, key)
            taken_at = row.updated_at if row is not None else None
        try:
            modified = self.store.head(*config.reference_object).modified
        except ModelportError:
            return False  # gone or unreachable: keep comparing with what was read
        return taken_at is None or modified > taken_at

    def _store(self, key: tuple[str, str], config: DriftMonitoring, taken: _Reference) -> None:
        after = {"at": taken.after[0].isoformat(), "id": taken.after[1]} if taken.after else None
        row = DriftReference(
            module=key[0],
            version=key[1],
            source=FIRST_CALLS if config.reference_object is None else "object",
            reference=None if config.reference_object is None else config.reference,
            calls=taken.calls,
            features={"values": taken.values, "after": after},
            updated_at=datetime.now(UTC),
        )
        try:
            with self.database.session() as session:
                session.merge(row)
        except IntegrityError:  # another gateway took it at the same moment: the same reference
            pass

    # Reports

    def report(self, module: str, version: str | None = None) -> DriftReport:
        """The version's recent calls against its reference (`version` None: the active version). For
        threads: it reads the database."""
        self.flush()
        version = self._version(module, version)
        policy = self.policies.policy(module)
        if policy is None:
            raise ModuleNotFound(f"no module named {module!r}")
        config = policy.drift
        plan = self._stored_plan(module, version)
        if plan is None:
            raise VersionNotFound(f"module {module!r} has no version {version!r}")
        reference = self._reference(module, version, config, plan)
        recent = self._window(module, version, config.window_calls, reference.after)
        features = compare(plan, reference.values, [f for _, f in recent], threshold=config.threshold)
        complete = reference.message is None and len(recent) >= config.window_calls
        verdict: DriftVerdict = "insufficient_data"
        if complete and any(feature.verdict == "drift" for feature in features):
            verdict = "drift"
        elif complete and any(feature.verdict == "ok" for feature in features):
            verdict = "ok"
        return DriftReport(
            module=module,
            version=version,
            threshold=config.threshold,
            reference=DriftReferenceInfo(
                source=config.reference,
                calls=reference.calls,
                needed=reference.needed,
                message=reference.message,
            ),
            window=DriftWindow(
                calls=len(recent),
                needed=config.window_calls,
                since=recent[-1][0].isoformat() if recent else None,
            ),
            verdict=verdict,
            features=features if reference.message is None else [],
        )

    def _version(self, module: str, version: str | None) -> str:
        if version is not None:
            return version
        active = self.registry.active(module)
        if active is not None:
            return active.version
        with self.database.session() as session:
            deployed = session.scalar(
                select(Deployment.active_version).where(Deployment.module_name == module)
            )
        if deployed is None:
            raise VersionNotFound(f"module {module!r} has no active version; name one with ?version=")
        return deployed

    def _stored_plan(self, module: str, version: str) -> Plan | None:
        with self.database.session() as session:
            spec = session.scalar(
                select(Version.spec).where(Version.module_name == module, Version.name == version)
            )
        return None if spec is None else plan_of(ApiSpec.from_dict(spec))

    def _window(
        self, module: str, version: str, size: int, after: tuple[datetime, int] | None
    ) -> list[tuple[datetime, dict[str, Value]]]:
        """The last `size` samples (newest first) taken after `after`."""
        query = (
            select(DriftSample.at, DriftSample.features)
            .where(DriftSample.module == module, DriftSample.version == version)
            .order_by(DriftSample.at.desc(), DriftSample.id.desc())
            .limit(size)
        )
        if after is not None:
            at, last = after
            query = query.where(or_(DriftSample.at > at, and_(DriftSample.at == at, DriftSample.id > last)))
        with self.database.session() as session:
            return [(row.at, row.features) for row in session.execute(query)]

    # Scores for the metrics

    def scores(self) -> Mapping[tuple[str, str], float]:
        """(module, feature) → the latest PSI of each module's active version, as last computed (again at
        most every 30 s, in the background, while someone asks)."""
        self._scores_asked = True
        return self._scores

    def refresh_scores(self) -> None:
        """Compute the scores of every active version now (in a thread)."""
        scores: dict[tuple[str, str], float] = {}
        for served in self.registry.served():
            try:
                report = self.report(served.name, served.version)
            except ModelportError:
                continue
            for feature in report.features:
                if feature.psi is not None:
                    scores[(served.name, feature.name)] = feature.psi
        self._scores, self._scores_at = scores, time.monotonic()


def _stored(row: DriftReference, config: DriftMonitoring) -> _Reference | None:
    """The stored reference, if it was taken for `config`; None otherwise."""
    if config.reference_object is None:
        if row.source != FIRST_CALLS or row.calls != config.reference_calls:
            return None
        needed = config.reference_calls
    elif row.source != "object" or row.reference != config.reference:
        return None
    else:
        needed = MIN_VALUES
    after = row.features.get("after")
    return _Reference(
        config.reference,
        needed,
        row.features.get("values", {}),
        row.calls,
        (datetime.fromisoformat(after["at"]), after["id"]) if after else None,
    )


def _columns(samples: Iterable[Mapping[str, Value]]) -> dict[str, list[Value]]:
    """Samples (feature → value) as columns (feature → values)."""
    columns: dict[str, list[Value]] = {}
    for sample in samples:
        for name, value in sample.items():
            columns.setdefault(name, []).append(value)
    return columns
