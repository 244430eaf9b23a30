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
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import msgspec

from modelport.control.audit import Actor
from modelport.control.calls import Calls, ModuleCall, Trace
from modelport.control.identity import Principal
from modelport.control.jobs import (
    JOB_READER,
    Jobs,
    JobSubmission,
    RunningJob,
    as_error,
    error_body,
    new_call_id,
)
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
        done_parts = int(progress.get("parts", 0))
        done = min(total, done_parts * part_size)
        failed = int(progress.get("failed", 0))
        started, started_done = time.monotonic(), done
        served_version: str | None = None
        records = self._records(source, skip=done)
        for part in range(done_parts, parts):
            chunk = await asyncio.to_thread(_take, records, min(part_size, total - part * part_size))
            lines, errors, served_version = await self._part(job, principal, request, part * part_size, chunk)
            data = b"".join(lines)
            key = check_key(f"{out_prefix}part-{part:05d}.jsonl")
            await asyncio.to_thread(self._write, out_bucket, key, data, Actor(job.caller))
            done += len(chunk)
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
        outputs = {"output": request["output"], "parts": parts, "records": total, "failed": failed}
        return Outcome(
            job.id,
            running.token,
            "succeeded",
            outputs=outputs,
            served_version=served_version,
            progress={**progress, "done": total, "total": total, "eta_seconds": 0.0} if total else progress,
        )

    async def _part(
        self,
        job: Job,
        principal: Principal,
        request: dict[str, Any],
        first: int,
        records: list[dict[str, Any] | ModelportError],
    ) -> tuple[list[bytes], int, str | None]:
        """The result lines of one part, how many of its records failed, and the version that ran them."""
        served = self.calls.registry.get(job.module, job.version)
        config = served.pool.config
        # Requests of several worker batches each, so that the call path's cost is paid per hundreds of
        # records, not per record; all of them in flight fill at most half the module's queue.
        room = config.max_queue // (2 * self.settings.batch_concurrency)
        size = max(1, config.max_batch_size, min(_REQUEST_RECORDS, room))
        lines: list[bytes] = [b""] * len(records)
        failures = 0
        semaphore = asyncio.Semaphore(self.settings.batch_concurrency)

        async def run(start: int) -> None:
            nonlocal failures
            async with semaphore:
                items = records[start : start + size]
                results = await self._request(job, principal, request, items)
                for offset, result in enumerate(results):
                    index = first + start + offset
                    if isinstance(result, ModelportError):
                        failures += 1
                        line = {"index": index, "error": error_body(result)}
                    else:
                        line = {"index": index, "outputs": result}
                    lines[start + offset] = _encoder.encode(line) + b"\n"

        await asyncio.gather(*(run(start) for start in range(0, len(records), size)))
        return lines, failures, served.version

    async def _request(
        self,
        job: Job,
        principal: Principal,
        request: dict[str, Any],
        items: list[dict[str, Any] | ModelportError],
    ) -> list[dict[str, Any] | ModelportError]:
        """The outputs (or error) of each record of `items`, run as one request, or one by one if it fails."""
        valid = [item for item in items if isinstance(item, dict)]
        results: list[dict[str, Any] | ModelportError] = list(items)
        if not valid:
            return results
        try:
            outputs = await self._call(job, principal, request, valid)
        except ModelportError as exc:
            if len(valid) == 1:
                outputs = [exc]
            else:  # find the records at fault: each alone
                outputs = [(await self._request(job, principal, request, [item]))[0] for item in valid]
        answers = iter(outputs)
        return [next(answers) if isinstance(item, dict) else item for item in results]

    async def _call(
        self, job: Job, principal: Principal, request: dict[str, Any], records: list[dict[str, Any]]
    ) -> list[dict[str, Any] | ModelportError]:
        body: dict[str, Any] = {
            "inputs": [_as_inputs(record, self.calls, job.module, job.version) for record in records],
            "parameters": request.get("parameters") or {},
        }
        if request.get("output_fields"):
            body["output_fields"] = request["output_fields"]
        if request.get("model_key") is not None:
            body["model_key"] = request["model_key"]
        for attempt in range(_RETRIES):
            call = ModuleCall(
                request_id=new_call_id(),
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
                try:
                    parsed: ParsedRequest = parse_json(served.spec, body)
                except InvalidRequest as exc:
                    raise ValidationFailed(
                        "the record does not match the module's API", details=exc.details
                    ) from None
                served.in_flight += 1
                try:
                    outputs = await self.calls.run(call, parsed)
                finally:
                    served.in_flight -= 1
                return list(outputs)
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

    def _write(self, bucket: str, key: str, data: bytes, actor: Actor) -> None:
        with self.storage.upload(
            bucket, key, size=len(data), content_type="application/x-ndjson", actor=actor
        ) as upload:
            upload.write(data)
            upload.commit()


def _overlaps(source: str, output: str) -> bool:
    """Whether the parts written under `output` would be read as records of `source`: an output under the
    input prefix, or an input object that is one of the parts."""
    if source.endswith("/"):
        return output.startswith(source)
    return source.startswith(output) and _PART.fullmatch(source[len(output) :]) is not None


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


def _as_inputs(record: dict[str, Any], calls: Calls, module: str, version: str | None) -> dict[str, Any]:
    """A record's inputs: an object of the input (not JSON Lines) is given to the module's one file input."""
    reference = record.get("__object__")
    if reference is None or len(record) != 1:
        return record
    served = calls.registry.get(module, version)
    files = [field.name for field in served.spec.inputs if field.has_file]
    if len(files) != 1:
        raise ValidationFailed(
            "objects that are not JSON Lines are records only for a module with one file input",
            details=[field_error("input", "not_supported", f"module {module} has {len(files)} file inputs")],
        )
    return {files[0]: {"object": reference}}
