"""Batch inference: every record of a JSON Lines object (or of every object under a prefix) through a module,
the results written as JSON Lines in input order.

A batch is a job of kind `batch` (`control/jobs.py`): it is queued, leased, retried and canceled like any
job. Its records are cut into *parts* of `MODELPORT_BATCH_PART_RECORDS`; each part runs through the one call
path (`control/calls.py`) in requests of the module's `maxBatchSize` records, `MODELPORT_BATCH_CONCURRENCY`
of them in the module's queue at once, so the module's dynamic batching fills its workers. A part's results
are written whole, as one object (`part-00000.jsonl`, one line a record: `{"index": i, "outputs": {...}}` or
`{"index": i, "error": {...}}`), and only then counted in the job's progress. A batch that resumes (after a
crash, on another gateway) skips the parts it has written: no record is written twice, and memory holds one
part at a time.

A request of records that fails is run again record by record, so that one bad record costs only its own
line. Errors worth retrying (the module unavailable, a timeout) retry the request a few times, then stop the
run: the job's own retry resumes it later from its last part.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass
from typing import Any

import msgspec

from modelport.control.audit import Actor
from modelport.control.calls import Calls, ModuleCall, Trace, as_error, new_request_id
from modelport.control.identity import Principal
from modelport.control.jobs import JOB_READER, Jobs, JobSubmission, RunningJob, error_body
from modelport.control.storage import Storage
from modelport.core.errors import (
    BadRequest,
    DatabaseUnavailable,
    ModelportError,
    ModuleTimeout,
    ModuleUnavailable,
    NotFound,
    ObjectNotFound,
    StorageUnavailable,
    ValidationFailed,
    field_error,
)
from modelport.core.names import BUCKET_NAME
from modelport.core.records import JobInfo
from modelport.core.roles import Role
from modelport.core.settings import Settings
from modelport.db.models import Job
from modelport.queue import Outcome
from modelport.sdk.spec import ApiSpec
from modelport.sdk.validation import InvalidRequest, ParsedRequest, parse_json
from modelport.storage import ObjectStore, check_key

__all__ = ["BatchSubmission", "Batches"]

_PART = re.compile(r"part-(\d{5,})\.jsonl$")
_RETRIES = 4
"""Tries of one request of records when the module is unavailable or times out, before the run stops."""
_RETRYABLE = (ModuleUnavailable, ModuleTimeout, DatabaseUnavailable, StorageUnavailable)
_JSONL = (".jsonl", ".ndjson", ".json")
_REQUEST_RECORDS = 256
"""Records per request of a batch through the call path (the pool cuts it into the module's batches)."""
_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()


@dataclass(frozen=True)
class BatchSubmission:
    """What to run: `input` (`bucket/key` or `bucket/prefix/`), where the results go (`output`, a prefix),
    and what applies to every record."""

    input: str
    output: str
    parameters: dict[str, Any]
    output_fields: list[str] | None = None
    model_key: str | None = None


@dataclass
class _Source:
    """The input: its bucket, and its objects in key order with whether each is JSON Lines."""

    bucket: str
    objects: list[tuple[str, bool]]


class Batches:
    """Batches of the modules `jobs` runs; their objects are in `store`, under the buckets' policies."""

    def __init__(
        self, jobs: Jobs, *, calls: Calls, storage: Storage, store: ObjectStore, settings: Settings
    ) -> None:
        self.jobs = jobs
        self.calls = calls
        self.storage = storage
        self.store = store
        self.settings = settings
        jobs.executors["batch"] = self._run

    async def submit(
        self,
        call: ModuleCall,
        submission: BatchSubmission,
        *,
        idempotency_key: str | None = None,
        webhook: str | None = None,
        events: tuple[str, ...] = ("completed",),
    ) -> tuple[JobInfo, bool]:
        """Queue a batch for the module `call` was routed to, once its input is found and readable by the
        caller, its output bucket writable by the caller, and its first record and parameters valid."""
        served = call.served
        assert served is not None
        output = submission.output if submission.output.endswith("/") else submission.output + "/"
        problems = []
        for name, value in (("input", submission.input), ("output", output)):
            bucket, _, rest = value.partition("/")
            if not BUCKET_NAME.match(bucket) or not rest:
                problems.append(field_error(name, "invalid", "expected bucket/key or bucket/prefix/"))
        if not problems and _overlaps(submission.input, output):
            problems.append(
                field_error(
                    "output",
                    "overlaps_input",
                    "write the results outside the input: a resumed batch would read them as records",
                )
            )
        if problems:
            raise ValidationFailed("the batch is not valid", details=problems)
        source = await asyncio.to_thread(self._source, call.principal, submission.input)
        out_bucket = output.partition("/")[0]
        await asyncio.to_thread(self.storage.require, call.principal, out_bucket, write=True)
        check_key(output.partition("/")[2] + "part-00000.jsonl")
        first = await asyncio.to_thread(self._first_record, source)
        body: dict[str, Any] = {
            "inputs": [first] if first is not None else [],
            "parameters": submission.parameters,
        }
        if submission.output_fields:
            body["output_fields"] = submission.output_fields
        if submission.model_key is not None:
            body["model_key"] = submission.model_key
        if first is not None:
            try:
                parse_json(served.spec, body)
            except InvalidRequest as exc:
                raise ValidationFailed(
                    "the batch's first record or its parameters do not match the module's API",
                    details=exc.details,
                ) from None
        request = {
            "input": submission.input,
            "output": output,
            "parameters": submission.parameters,
            "output_fields": submission.output_fields,
            "model_key": submission.model_key,
        }
        job = JobSubmission(
            kind="batch", request=request, idempotency_key=idempotency_key, webhook=webhook, events=events
        )
        return await self.jobs.submit(call, None, job)

    def _source(self, principal: Principal, reference: str) -> _Source:
        bucket, _, key = reference.partition("/")
        self.storage.require(principal, bucket, write=False)
        missing = ObjectNotFound(f"no object {reference!r}, or none you may read")
        if not key.endswith("/"):
            try:
                self.store.head(bucket, check_key(key))
            except NotFound:
                raise missing from None
            return _Source(bucket, [(key, True)])
        objects = [(info.key, info.key.endswith(_JSONL)) for info in self.store.walk(bucket, prefix=key)]
        if not objects:
            raise missing
        return _Source(bucket, sorted(objects))

    def _first_record(self, source: _Source) -> dict[str, Any] | None:
        for record in self._records(source):
            if isinstance(record, dict):
                return record
            raise ValidationFailed(
                "the batch's first record cannot be read",
                details=[field_error("input", "invalid_record", record.message)],
            )
        return None

    def _records(self, source: _Source, *, skip: int = 0) -> Iterator[dict[str, Any] | ModelportError]:
        """Each record of the input in order, after the first `skip`; a line that is not a JSON object is its
        error, in its place."""
        seen = 0
        for key, jsonl in source.objects:
            if not jsonl:
                seen += 1
                if seen > skip:
                    yield {"__object__": f"{source.bucket}/{key}"}
                continue
            with self.store.reader(source.bucket, key) as reader:
                pending = b""
                for chunk in reader:
                    pending += chunk
                    lines = pending.split(b"\n")
                    pending = lines.pop()
                    for line in lines:
                        if line.strip():
                            seen += 1
                            if seen > skip:
                                yield _record(line)
                if pending.strip():
                    seen += 1
                    if seen > skip:
                        yield _record(pending)

    def _count(self, source: _Source) -> int:
        """How many records the input holds."""
        return sum(
            1 if not jsonl else sum(1 for _ in self._lines(source.bucket, key))
            for key, jsonl in source.objects
        )

    def _lines(self, bucket: str, key: str) -> Iterator[None]:
        with self.store.reader(bucket, key) as reader:
            pending = b""
            for chunk in reader:
                pending += chunk
                parts = pending.split(b"\n")
                pending = parts.pop()
                for line in parts:
                    if line.strip():
                        yield None
            if pending.strip():
                yield None

    # running

    async def _run(self, job: Job, running: RunningJob) -> Outcome:
        request = job.request
        principal = Principal(user_id=job.caller_id, name=job.caller, role=Role.USER)
        source = await asyncio.to_thread(self._source, JOB_READER, request["input"])
        total = await asyncio.to_thread(self._count, source)
        out_bucket, _, out_prefix = request["output"].partition("/")
        part_size = self.settings.batch_part_records
        parts = max(1, -(-total // part_size))
        progress = dict(job.progress or {})
        done_parts, failed = int(progress.get("parts", 0)), int(progress.get("failed", 0))
        # Parts written after the last progress was recorded (the gateway stopped in between) are kept.
        adopted, more_failed = await asyncio.to_thread(
            self._written_parts, job.id, out_bucket, out_prefix, done_parts, parts
        )
        done_parts, failed = done_parts + adopted, failed + more_failed
        done = min(total, done_parts * part_size)
        started, started_done = time.monotonic(), done
        served_version: str | None = None
        records = self._records(source, skip=done)
        pending: asyncio.Future[_Part] | None = None
        try:
            for part in range(done_parts, parts):
                first = part * part_size
                if pending is None:
                    pending = self._prepare(job, request, records, first, min(part_size, total - first))
                prepared = await pending
                following = first + part_size
                pending = None
                if part + 1 < parts:  # read and check the next part while this one runs
                    pending = self._prepare(
                        job, request, records, following, min(part_size, total - following)
                    )
                lines, errors, served_version = await self._part(job, principal, request, prepared)
                key = check_key(f"{out_prefix}part-{part:05d}.jsonl")
                await _finished(
                    asyncio.to_thread(self._write, out_bucket, key, b"".join(lines), Actor(job.caller))
                )
                done += len(prepared.records)
                failed += errors
                elapsed = time.monotonic() - started
                rate = (done - started_done) / elapsed if elapsed > 0 else None
                progress = {
                    "done": done,
                    "total": total,
                    "failed": failed,
                    "rate": rate,
                    "eta_seconds": (total - done) / rate if rate else None,
                    "parts": part + 1,
                }
                await asyncio.to_thread(self.jobs.queue.progress, job.id, running.token, progress)
        finally:
            if pending is not None:
                pending.cancel()
        outputs = {"output": request["output"], "parts": parts, "records": total, "failed": failed}
        if not progress or progress.get("done") != total:
            progress = {"done": total, "total": total, "failed": failed, "rate": None, "parts": parts}
        return Outcome(
            job.id,
            running.token,
            "succeeded",
            outputs=outputs,
            served_version=served_version,
            progress={**progress, "eta_seconds": 0.0},
        )

    def _prepare(
        self,
        job: Job,
        request: dict[str, Any],
        records: Iterator[dict[str, Any] | ModelportError],
        first: int,
        count: int,
    ) -> asyncio.Future[_Part]:
        """The next `count` records, read and checked in a thread, cut into requests."""
        served = self.calls.registry.get(job.module, job.version)
        config = served.pool.config
        # Requests of several worker batches each, so that the call path's cost is paid per hundreds of
        # records, not per record; all of them in flight fill at most half the module's queue.
        room = config.max_queue // (2 * self.settings.batch_concurrency)
        size = max(1, config.max_batch_size, min(_REQUEST_RECORDS, room))

        def prepare() -> _Part:
            taken = _take(records, count)
            requests = [
                _checked(served.spec, request, first + start, taken[start : start + size])
                for start in range(0, len(taken), size)
            ]
            return _Part(first, taken, requests)

        return asyncio.ensure_future(asyncio.to_thread(prepare))

    async def _part(
        self, job: Job, principal: Principal, request: dict[str, Any], part: _Part
    ) -> tuple[list[bytes], int, str | None]:
        """The result lines of one part, how many of its records failed, and the version that ran them."""
        lines: list[bytes] = [b""] * len(part.records)
        failures = 0
        semaphore = asyncio.Semaphore(self.settings.batch_concurrency)
        version: str | None = None

        async def run(checked: _Request) -> None:
            nonlocal failures, version
            async with semaphore:
                results, version = await self._request(job, principal, request, checked)
                for offset, result in enumerate(results):
                    index = checked.first + offset
                    if isinstance(result, ModelportError):
                        failures += 1
                        line = {"index": index, "error": error_body(result)}
                    else:
                        line = {"index": index, "outputs": result}
                    lines[index - part.first] = _encoder.encode(line) + b"\n"

        await asyncio.gather(*(run(checked) for checked in part.requests))
        return lines, failures, version

    async def _request(
        self, job: Job, principal: Principal, request: dict[str, Any], checked: _Request
    ) -> tuple[list[dict[str, Any] | ModelportError], str | None]:
        """The outputs (or error) of each record of a request, run as one request, or one by one if it
        fails; and the version that ran it."""
        results: list[dict[str, Any] | ModelportError] = list(checked.items)
        if checked.parsed is None:
            return results, None
        try:
            outputs, version = await self._call(job, principal, checked.parsed)
        except ModelportError as exc:
            version = None
            valid = [item for item in checked.items if isinstance(item, dict)]
            if len(valid) == 1:
                outputs = [exc]
            else:  # find the records at fault: each alone
                outputs = []
                for item in valid:
                    alone = _checked(self._spec(job), request, checked.first, [item])
                    answer, version = await self._request(job, principal, request, alone)
                    outputs.append(answer[0])
        answers = iter(outputs)
        return [next(answers) if isinstance(item, dict) else item for item in results], version

    def _spec(self, job: Job) -> ApiSpec:
        return self.calls.registry.get(job.module, job.version).spec

    async def _call(
        self, job: Job, principal: Principal, parsed: ParsedRequest
    ) -> tuple[list[dict[str, Any] | ModelportError], str]:
        for attempt in range(_RETRIES):
            call = ModuleCall(
                request_id=new_request_id(),
                trace=Trace.continuing(job.traceparent),
                principal=principal,
                owner=job.owner,
                client=job.client,
                kind="batch",
                reader=JOB_READER,
            )
            status, code = 200, None
            try:
                served = self.calls.route(call, job.module, job.version)
                served.in_flight += 1
                try:
                    outputs = await self.calls.run(call, _fresh(parsed))
                finally:
                    served.in_flight -= 1
                return list(outputs), served.version
            except asyncio.CancelledError:
                status, code = 499, "canceled"
                raise
            except Exception as exc:
                error = as_error(exc)
                status, code = error.status, error.code
                if not isinstance(error, _RETRYABLE):
                    raise error from None
                if attempt == _RETRIES - 1:
                    raise  # the run stops here; the job's retry resumes from its last part
                await asyncio.sleep(min(30.0, 0.5 * 2**attempt))
            finally:
                self.calls.finish(call, status=status, code=code, response_bytes=0)
                if call.workdir is not None or call.uploads:
                    await asyncio.to_thread(self.calls.settle, call)
        raise AssertionError("unreachable")

    def _written_parts(
        self, job_id: str, bucket: str, prefix: str, recorded: int, parts: int
    ) -> tuple[int, int]:
        """Parts after the first `recorded` that this job wrote before it stopped (the marker
        `_batch.json` under the output names the job), as (how many in a row, their failed records); on a
        first run the marker is written."""
        marker = check_key(f"{prefix}_batch.json")
        try:
            with self.store.reader(bucket, marker) as reader:
                owner = json.loads(b"".join(reader)).get("job")
        except (ModelportError, ValueError, OSError):
            owner = None
        if owner != job_id:
            body = json.dumps({"job": job_id}).encode()
            self._write(bucket, marker, body, Actor("modelport"), content_type="application/json")
            return 0, 0
        adopted = failed = 0
        for part in range(recorded, parts):
            key = check_key(f"{prefix}part-{part:05d}.jsonl")
            try:
                with self.store.reader(bucket, key) as reader:
                    data = b"".join(reader)
            except ModelportError:
                break
            adopted += 1
            failed += sum(
                1 for line in data.splitlines() if line.strip() and "error" in _decoder.decode(line)
            )
        return adopted, failed

    def _write(
        self, bucket: str, key: str, data: bytes, actor: Actor, *, content_type: str = "application/x-ndjson"
    ) -> None:
        with self.storage.upload(
            bucket, key, size=len(data), content_type=content_type, actor=actor
        ) as upload:
            upload.write(data)
            upload.commit()


def _overlaps(source: str, output: str) -> bool:
    """Whether the parts written under `output` would be read as records of `source`: an output under the
    input prefix, or an input object that is one of the parts."""
    if source.endswith("/"):
        return output.startswith(source)
    return source.startswith(output) and _PART.fullmatch(source[len(output) :]) is not None


@dataclass
class _Request:
    """Records of a part run as one request: `items` (a record, or the error of a line that is not one)
    from input index `first`, and the valid ones parsed (None: none is valid)."""

    first: int
    items: list[dict[str, Any] | ModelportError]
    parsed: ParsedRequest | None


@dataclass
class _Part:
    first: int
    records: list[dict[str, Any] | ModelportError]
    requests: list[_Request]


def _checked(
    spec: ApiSpec, request: dict[str, Any], first: int, items: list[dict[str, Any] | ModelportError]
) -> _Request:
    """`items` checked against the module's API: a record that does not fit becomes its error."""
    body: dict[str, Any] = {"parameters": request.get("parameters") or {}}
    if request.get("output_fields"):
        body["output_fields"] = request["output_fields"]
    if request.get("model_key") is not None:
        body["model_key"] = request["model_key"]
    items = [_as_inputs(item, spec) if isinstance(item, dict) else item for item in items]
    valid = [item for item in items if isinstance(item, dict)]
    if not valid:
        return _Request(first, items, None)
    try:
        return _Request(first, items, parse_json(spec, {**body, "inputs": valid}))
    except InvalidRequest:
        pass
    checked: list[dict[str, Any] | ModelportError] = []
    for item in items:
        if isinstance(item, dict):
            try:
                parse_json(spec, {**body, "inputs": [item]})
            except InvalidRequest as exc:
                item = ValidationFailed("the record does not match the module's API", details=exc.details)
        checked.append(item)
    valid = [item for item in checked if isinstance(item, dict)]
    return _Request(first, checked, parse_json(spec, {**body, "inputs": valid}) if valid else None)


def _fresh(parsed: ParsedRequest) -> ParsedRequest:
    """A copy of a parsed request whose records a call may change (file values are replaced in place)."""
    return ParsedRequest(
        [dict(record) for record in parsed.records],
        parsed.parameters,
        parsed.output_fields,
        parsed.model_key,
        parsed.batch,
    )


async def _finished(write: Awaitable[None]) -> None:
    """Await a part's write; a batch canceled meanwhile waits for it to land before it stops, so that no
    part appears after the job says it was canceled."""
    task = asyncio.ensure_future(write)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await task
        raise


def _take(
    records: Iterator[dict[str, Any] | ModelportError], count: int
) -> list[dict[str, Any] | ModelportError]:
    taken = []
    for record in records:
        taken.append(record)
        if len(taken) == count:
            break
    return taken


def _record(line: bytes) -> dict[str, Any] | ModelportError:
    try:
        value = _decoder.decode(line)
    except msgspec.DecodeError as exc:
        return BadRequest(f"the line is not valid JSON: {exc}")
    if not isinstance(value, dict):
        return BadRequest("the line is not a JSON object")
    inner = value.get("inputs")
    if len(value) == 1 and isinstance(inner, dict):
        return inner
    return value


def _as_inputs(record: dict[str, Any], spec: ApiSpec) -> dict[str, Any] | ModelportError:
    """A record's inputs: an object of the input (not JSON Lines) is given to the module's one file input."""
    reference = record.get("__object__")
    if reference is None or len(record) != 1:
        return record
    files = [field.name for field in spec.inputs if field.has_file]
    if len(files) != 1:
        return ValidationFailed(
            "objects that are not JSON Lines are records only for a module with one file input",
            details=[field_error("input", "not_supported", f"the module has {len(files)} file inputs")],
        )
    return {files[0]: {"object": reference}}
