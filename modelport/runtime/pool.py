"""A pool of worker processes for one module version, with dynamic batching and supervision.

Records from concurrent requests wait in one queue. Each replica has a loop that takes the next batch (up to
`max_batch_size` records with the same `model_key`, holding a partial batch up to `batch_wait` seconds), sends
it to its worker as one call, and splits the answer back to the waiting requests. A failed merged call is
retried record by record so one bad input fails only its own request (unless `load` failed: that fails them
all at once). Dead workers are replaced with backoff; their in-flight records are retried once on another live
worker, or fail fast with 503.

Every call has a deadline: its caller is answered 504 then, whether its records still wait in the queue
(they are dropped, never sent) or are in a worker (the answer is discarded). Records whose caller has gone,
by deadline or disconnect, stop counting against `max_queue` at once and are never sent. Idle workers are
pinged every `health_interval` seconds; one that does not answer within `health_timeout` (hung, stopped) is
killed and replaced before a call reaches it.

A streaming call (`predict(..., on_chunk=...)`) gets the pieces of the module's streaming output at
`on_chunk` as the worker produces them. Its records are batched like any others when the module batches
streams (a plain `inference` taking the batch); a generator function's records go to a worker alone. A caller
that goes away stops its records' generation (the worker is told to `Cancel` them; the batch's other records
go on), and a worker that dies once pieces went out fails the records it streamed instead of retrying them.
A record the module rejects (`RejectedInput`) fails alone with 400, as a failing record does with 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from modelport.core.errors import (
    BadModuleOutput,
    InputRejected,
    ModelportError,
    ModuleError,
    ModuleTimeout,
    ModuleUnavailable,
    Overloaded,
    QueueTimeout,
    SetupFailed,
    WorkerDied,
)
from modelport.core.protocol import CallFailed, Chunk, Result
from modelport.runtime.process import LogSink, WorkerLaunch, WorkerProcess

__all__ = ["CallTiming", "PoolConfig", "WorkerPool"]

_MAX_BACKOFF = 30.0
_CRASH_LOOP = 3


@dataclass(frozen=True)
class PoolConfig:
    name: str
    launch: WorkerLaunch
    output_names: tuple[str, ...]
    replicas: int = 1
    max_batch_size: int = 8
    batch_wait: float = 0.0
    timeout: float = 60.0
    max_queue: int = 1024
    pipeline: int = 2
    """Calls in flight per worker: the next call is already in the socket while the worker computes."""
    health_interval: float = 5.0
    """Seconds between two health checks (`Ping`) of an idle worker."""
    health_timeout: float = 2.0
    """Seconds an idle worker has to answer a health check before it is killed and replaced."""


@dataclass
class CallTiming:
    """Where a call's time went, filled in by `WorkerPool.predict` (for a request of several records, the
    slowest record's figures)."""

    queue: float = 0.0
    """Seconds its records waited for a worker (until the last one was sent)."""
    compute: float = 0.0
    """Seconds the worker spent on the call that answered it (the whole batch)."""
    batch_size: int = 0
    """Records in the batch that answered it (its own and other requests')."""
    replica: int | None = None
    """The replica that answered it (None: no worker took it)."""


@dataclass(eq=False)
class _Item:
    record: dict[str, Any]
    parameters: dict[str, Any]
    model_key: str
    output_fields: tuple[str, ...]
    future: asyncio.Future[dict[str, Any]]
    model_path: str | None = None
    request_id: str = ""
    traceparent: str = ""
    enqueued: float = field(default_factory=time.monotonic)
    sent: float = 0.0
    compute: float = 0.0
    batch_size: int = 0
    replica: int | None = None
    retried: bool = False
    solo: bool = False
    background: bool = False
    """Asynchronous work (a job's, a batch's): it waits behind synchronous calls."""
    on_chunk: Callable[[Any], None] | None = None
    """A streaming record's callback, given each piece of its streaming output."""
    streamed: bool = False
    """Pieces of it have reached its caller: it cannot be retried."""
    queued: bool = False
    """In the queue and counted there; a record whose caller is gone stays in the deque uncounted until
    `take` skips it or the queue is compacted."""


class _BatchQueue:
    """Records waiting for a worker; `take` forms batches of one model_key.

    Records of asynchronous work (jobs, batches) wait in a queue of their own behind the synchronous calls'
    queue: a worker takes them only when no synchronous call waits, so a flood of jobs never delays a caller
    who waits on the connection (a batch still fills up with them).

    Its length counts only the records whose callers still wait: `discard` uncounts the records of a caller
    that has gone, at once, and drops them from the deques once they make up most of them."""

    def __init__(self) -> None:
        self._items: deque[_Item] = deque()
        self._background: deque[_Item] = deque()
        self._waiting = 0
        self._waiting_background = 0
        self._changed = asyncio.Event()

    def __len__(self) -> int:
        return self._waiting

    @property
    def foreground(self) -> int:
        """Records of synchronous calls waiting: what a synchronous call queues behind."""
        return self._waiting - self._waiting_background

    def _uncount(self, item: _Item) -> None:
        item.queued = False
        self._waiting -= 1
        if item.background:
            self._waiting_background -= 1

    def put(self, item: _Item, *, front: bool = False) -> None:
        if item.future.done():
            return
        items = self._background if item.background else self._items
        (items.appendleft if front else items.append)(item)
        item.queued = True
        self._waiting += 1
        self._waiting_background += item.background
        self._changed.set()

    def discard(self, items: Sequence[_Item]) -> None:
        """Uncount the records of a caller that stopped waiting (they are never sent)."""
        for item in items:
            if item.queued:
                self._uncount(item)
        if len(self._items) + len(self._background) > 2 * self._waiting + 64:
            self._items = deque(item for item in self._items if item.queued)
            self._background = deque(item for item in self._background if item.queued)

    def drain(self) -> list[_Item]:
        items = [item for item in (*self._items, *self._background) if item.queued]
        for item in items:
            item.queued = False
        self._items.clear()
        self._background.clear()
        self._waiting = self._waiting_background = 0
        return items

    async def take(self, max_size: int, wait: float) -> list[_Item]:
        first = await self._first()
        batch = [first]
        if first.solo:
            return batch
        self._fill(batch, max_size)
        deadline = first.enqueued + wait
        while len(batch) < max_size and (remaining := deadline - time.monotonic()) > 0:
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
            self._fill(batch, max_size)
        return batch

    async def _first(self) -> _Item:
        while True:
            for items in (self._items, self._background):
                while items:
                    item = self._pop(items)
                    if not item.future.done():
                        return item
            self._changed.clear()
            await self._changed.wait()

    def _fill(self, batch: list[_Item], max_size: int) -> None:
        key, path = batch[0].model_key, batch[0].model_path
        for items in (self._items, self._background):
            while items and len(batch) < max_size:
                head = items[0]
                if head.future.done():
                    self._pop(items)
                    continue
                if head.solo or head.model_key != key or head.model_path != path:
                    break
                batch.append(self._pop(items))

    def _pop(self, items: deque[_Item]) -> _Item:
        item = items.popleft()
        if item.queued:
            self._uncount(item)
        return item


class WorkerPool:
    """The replicas of one module version. `start()` returns when every replica is ready."""

    def __init__(self, config: PoolConfig, *, log: LogSink) -> None:
        self.config = config
        self._log = log
        self._queue = _BatchQueue()
        self._workers: list[WorkerProcess | None] = [None] * config.replicas
        self._loops: list[asyncio.Task[None]] = []
        self._busy = 0
        self._closing = False
        self._backoff = [1.0] * config.replicas
        self._failures = [0] * config.replicas
        self._restarting = [asyncio.Lock() for _ in range(config.replicas)]
        self._sent: list[list[list[_Item]]] = [[] for _ in range(config.replicas)]
        """The batches each slot's worker has been sent and has not answered yet."""
        self.failure: str | None = None
        self.calls = 0
        self.batched_records = 0
        self.restarts = 0
        """Workers started again after one died, hung or timed out (failed starts included)."""

    # lifecycle

    async def start(self) -> None:
        """Start every replica; if one fails to set up, stop the rest and raise `SetupFailed`."""
        starts = [self._spawn(slot) for slot in range(self.config.replicas)]
        results = await asyncio.gather(*starts, return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            await self._stop_workers(grace=5)
            error = errors[0]
            raise error if isinstance(error, SetupFailed) else SetupFailed(str(error))
        self._loops = [
            asyncio.create_task(self._serve(slot))
            for slot in range(self.config.replicas)
            for _ in range(self.config.pipeline)
        ]
        self._loops += [asyncio.create_task(self._supervise(slot)) for slot in range(self.config.replicas)]
        self._loops += [asyncio.create_task(self._check_health(slot)) for slot in range(self.config.replicas)]

    async def close(self, *, grace: float = 30.0) -> None:
        """Stop taking work, let queued and in-flight records finish (up to `grace` s), stop the workers."""
        self._closing = True
        deadline = time.monotonic() + grace
        while (len(self._queue) or self._busy) and time.monotonic() < deadline and self.live_workers:
            await asyncio.sleep(0.02)
        for loop in self._loops:
            loop.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        self._fail_queue(ModuleUnavailable(f"module {self.config.name} is shutting down"))
        await self._stop_workers(grace=max(1.0, deadline - time.monotonic()))

    async def _stop_workers(self, *, grace: float) -> None:
        workers = [w for w in self._workers if w is not None]
        await asyncio.gather(*(w.stop(grace) for w in workers), return_exceptions=True)

    # state

    @property
    def live_workers(self) -> int:
        return sum(1 for w in self._workers if w is not None and w.alive)

    @property
    def ready(self) -> bool:
        return self.live_workers > 0 and not self._closing

    @property
    def pids(self) -> list[int]:
        return [w.pid for w in self._workers if w is not None and w.alive and w.pid is not None]

    @property
    def batches_streams(self) -> bool:
        """Whether the module batches streaming records (its workers said so when they started)."""
        return any(worker is not None and worker.batches_streams for worker in self._workers)

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def busy(self) -> int:
        """Batches taken from the queue and not yet answered (each replica runs up to `pipeline`)."""
        return self._busy

    @property
    def sync_timeout(self) -> float:
        """How long a call whose caller sets no deadline may take: `timeout` waiting for a worker, then
        `timeout` running."""
        return 2 * self.config.timeout

    # requests

    async def predict(
        self,
        records: Sequence[dict[str, Any]],
        *,
        parameters: dict[str, Any],
        model_key: str,
        output_fields: tuple[str, ...],
        model_path: str | None = None,
        deadline: float | None = None,
        request_id: str = "",
        traceparent: str = "",
        timing: CallTiming | None = None,
        background: bool = False,
        on_chunk: Callable[[int, Any], None] | None = None,
    ) -> list[dict[str, Any]]:
        """Run the records through the module; one output dict per record, in order.

        `model_path` is the local directory of `model_key`'s weights (None: the module's own directory).
        `deadline` (a `time.monotonic()` instant; None: `sync_timeout` from now) is when the caller is
        answered at the latest: `QueueTimeout` if no record had reached a worker, `ModuleTimeout` if one had.
        Cancelling the call (its client went away) drops its records that still wait in the queue.
        `request_id` and `traceparent` go to the worker with the records; `timing`, when given, is filled in
        with where the call's time went, whatever its outcome. `background` records (a job's, a batch's) wait
        until no synchronous call does. `on_chunk` streams the call: each record goes to a worker alone, and
        `on_chunk(index, piece)` is given each piece of record `index`'s streaming output as it comes."""
        deadline = time.monotonic() + self.sync_timeout if deadline is None else deadline
        if self._closing or (not self.live_workers and self.failure is not None):
            # While a worker is being replaced, calls queue for it; a crash-looping pool fails them fast.
            retry = min(self._backoff) if self._backoff else 1.0
            raise ModuleUnavailable(f"module {self.config.name} has no running worker", retry_after=retry)
        queued = len(self._queue) if background else self._queue.foreground
        if queued + len(records) > self.config.max_queue:
            raise Overloaded(f"module {self.config.name} has {len(self._queue)} records waiting")
        loop = asyncio.get_running_loop()
        items = [
            _Item(
                record,
                parameters,
                model_key,
                output_fields,
                loop.create_future(),
                model_path,
                request_id,
                traceparent,
                background=background,
            )
            for record in records
        ]
        if on_chunk is not None:
            solo = not self.batches_streams
            for index, item in enumerate(items):
                item.solo, item.on_chunk = solo, _for_record(on_chunk, index)
        for item in items:
            self._queue.put(item)
        try:
            results = asyncio.gather(*(item.future for item in items))
            return list(await asyncio.wait_for(results, max(0.0, deadline - time.monotonic())))
        except TimeoutError:
            if all(item.queued for item in items):
                raise QueueTimeout(
                    f"no worker of module {self.config.name} was free before the call's deadline"
                ) from None
            raise ModuleTimeout(
                f"module {self.config.name} did not answer before the call's deadline"
            ) from None
        finally:
            for item in items:
                item.future.cancel()
            self._queue.discard(items)
            if timing is not None:
                _time(timing, items)

    async def abort(self, request_id: str) -> bool:
        """Stop the computation of `request_id`'s records (its caller has cancelled the call, which already
        dropped those still queued): a worker that has been sent only this request's records is killed, and
        replaced as after a crash. A worker also computing other callers' records is left to finish, and
        this request's answer is discarded. Returns whether a worker was stopped."""
        stopped = False
        for slot, batches in enumerate(self._sent):
            worker = self._workers[slot]
            mine = [all(item.request_id == request_id for item in batch) for batch in batches]
            if worker is not None and mine and all(mine):
                self._log(slot, "modelport", f"stopping worker {worker.name}: its call was canceled")
                await worker.kill()
                stopped = True
        return stopped

    # the replica loop

    async def _spawn(self, slot: int) -> WorkerProcess:
        worker = WorkerProcess(
            self.config.launch, name=f"{self.config.name}-{slot}", log=self._log, replica=slot
        )
        self._workers[slot] = worker
        await worker.start()
        return worker

    async def _supervise(self, slot: int) -> None:
        """Replace the slot's worker whenever it dies, busy or idle, with growing backoff."""
        while not self._closing:
            worker = self._workers[slot]
            if worker is not None and worker.alive:
                await worker.exited.wait()
                continue
            async with self._restarting[slot]:
                if not self._accepting(slot) and not self._closing:
                    await self._restart(slot)

    async def _check_health(self, slot: int) -> None:
        """Ping the slot's worker whenever it is idle; one that does not answer in time is killed, and the
        supervisor replaces it while calls wait in the queue, as after a crash."""
        while True:
            await asyncio.sleep(self.config.health_interval)
            worker = self._workers[slot]
            if worker is None or not worker.accepting:
                continue
            with contextlib.suppress(WorkerDied):  # it died meanwhile: the supervisor replaces it
                if not await worker.ping(self.config.health_timeout):
                    self._log(
                        slot,
                        "modelport",
                        f"worker {worker.name} did not answer a health check within "
                        f"{self.config.health_timeout:g} s; replacing it",
                    )

    async def _serve(self, slot: int) -> None:
        while True:
            worker = self._workers[slot]
            if worker is None or not worker.accepting:
                await asyncio.sleep(0.02)  # the supervisor is replacing it
                continue
            batch = await self._queue.take(self.config.max_batch_size, self.config.batch_wait)
            self._busy += 1
            try:
                await self._run(slot, worker, batch)
            finally:
                self._busy -= 1

    def _accepting(self, slot: int) -> bool:
        worker = self._workers[slot]
        return worker is not None and worker.accepting

    async def _restart(self, slot: int) -> bool:
        name = f"{self.config.name}-{slot}"
        self._log(slot, "modelport", f"worker {name} stopped; starting it again in {self._backoff[slot]:g} s")
        await asyncio.sleep(self._backoff[slot])
        self._backoff[slot] = min(self._backoff[slot] * 2, _MAX_BACKOFF)
        self.restarts += 1
        try:
            await self._spawn(slot)
        except SetupFailed as exc:
            self._failures[slot] += 1
            if self._failures[slot] >= _CRASH_LOOP:
                self.failure = f"crash loop: {exc.message}"
            self._log(slot, "modelport", f"restarting worker {name} failed: {exc.message}")
            if not self.live_workers:
                self._fail_queue(ModuleUnavailable(exc.message, retry_after=self._backoff[slot]))
            return False
        return True

    async def _run(self, slot: int, worker: WorkerProcess, batch: list[_Item]) -> None:
        await worker.checked()  # a health check is waiting for its answer: its verdict comes first
        if not worker.accepting:  # it died while this loop waited for work: another loop takes the batch
            for item in reversed(batch):
                self._queue.put(item, front=True)
            return
        batch = [item for item in batch if not item.future.done()]  # callers gone while the batch filled
        if not batch:
            return
        fields = _union(batch)
        call = {
            "records": [item.record for item in batch],
            "parameters": [item.parameters for item in batch],
            "output_fields": list(fields),
            "model_key": batch[0].model_key,
            "model_path": batch[0].model_path,
            "request_ids": [item.request_id for item in batch],
            "traceparents": [item.traceparent for item in batch],
        }
        sent = time.monotonic()
        for item in batch:
            item.sent, item.batch_size, item.replica = sent, len(batch), slot
        self._sent[slot].append(batch)
        try:
            if all(item.on_chunk is None for item in batch):
                answer = await asyncio.wait_for(worker.call(call), self.config.timeout)
            elif (streamed := await self._stream(worker, call, batch)) is None:
                return  # its callers went away; the worker was told to stop
            else:
                answer = streamed
        except TimeoutError:
            await worker.kill()
            self._settle(batch, ModuleTimeout(f"the module did not answer within {self.config.timeout:g} s"))
            return
        except WorkerDied as exc:
            self._on_death(batch, exc)
            return
        finally:
            self._sent[slot].remove(batch)
        self.calls += 1
        self.batched_records += len(batch)
        for item in batch:
            item.compute = answer.seconds if isinstance(answer, Result) else time.monotonic() - sent
        if isinstance(answer, Result):
            self._backoff[slot], self._failures[slot] = 1.0, 0
            self._deliver(batch, answer)
            return
        error = _failure(answer)
        if len(batch) > 1 and answer.code != "load_failed":  # find the record that fails, alone
            for item in reversed(batch):
                if item.streamed:  # its caller has part of an answer: it cannot start again
                    self._settle([item], error)
                else:
                    item.solo = True
                    self._queue.put(item, front=True)
        else:
            self._settle(batch, error)

    async def _stream(
        self, worker: WorkerProcess, call: dict[str, Any], batch: list[_Item]
    ) -> Result | CallFailed | None:
        """The answer to a streaming call, whose records' pieces go to their callers as they come; None if
        every caller went away first (the call is then canceled). A caller that goes away meanwhile has its
        record dropped by the worker. Raises `TimeoutError` past the pool's timeout, `WorkerDied` if the
        worker dies."""
        sent: list[int] = []

        def on_chunk(chunk: Chunk) -> None:
            item = batch[chunk.index] if 0 <= chunk.index < len(batch) else None
            if item is not None and item.on_chunk is not None and not item.future.done():
                item.streamed = True
                item.on_chunk(chunk.piece)

        task: asyncio.Future[Result | CallFailed] = asyncio.ensure_future(
            worker.call(call, on_chunk=on_chunk, on_sent=sent.append)
        )
        waiting: dict[asyncio.Future[Any], int] = {item.future: index for index, item in enumerate(batch)}
        deadline = time.monotonic() + self.config.timeout
        try:
            while waiting:
                done, _ = await asyncio.wait(
                    (task, *waiting),
                    timeout=max(0.0, deadline - time.monotonic()),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if task in done:
                    return task.result()
                if not done:
                    raise TimeoutError
                for future in [future for future in waiting if future.done()]:
                    index = waiting.pop(future)
                    if waiting and sent:
                        worker.drop(sent[0], index)
        finally:
            if not task.done():
                task.cancel()  # sends the worker a `Cancel`
        with contextlib.suppress(asyncio.CancelledError, WorkerDied):
            await task
        return None

    def _deliver(self, batch: list[_Item], answer: Result) -> None:
        for item, outputs in zip(batch, answer.outputs, strict=True):
            if not item.future.done():
                item.future.set_result({k: outputs[k] for k in item.output_fields if k in outputs})

    def _on_death(self, batch: list[_Item], error: WorkerDied) -> None:
        others = self.live_workers > 0
        for item in batch:
            if others and not item.retried and not item.streamed:
                item.retried = True
                self._queue.put(item, front=True)
            elif not item.future.done():
                item.future.set_exception(WorkerDied(error.message))

    def _settle(self, batch: list[_Item], error: ModelportError) -> None:
        for item in batch:
            if not item.future.done():
                item.future.set_exception(error)

    def _fail_queue(self, error: ModelportError) -> None:
        self._settle(self._queue.drain(), error)


def _failure(answer: CallFailed) -> ModelportError:
    """The error a failed call's records get."""
    if answer.code == "rejected_input":
        return InputRejected(answer.message, code=answer.reason or "invalid_input", field=answer.field)
    error_class = BadModuleOutput if answer.code == "bad_module_output" else ModuleError
    return error_class(answer.message)


def _time(timing: CallTiming, items: list[_Item]) -> None:
    now = time.monotonic()
    sent = [item for item in items if item.sent]
    timing.queue = max((item.sent or now) - item.enqueued for item in items) if items else 0.0
    if sent:
        slowest = max(sent, key=lambda item: item.sent + item.compute)
        timing.compute = slowest.compute or now - slowest.sent
        timing.batch_size = slowest.batch_size
        timing.replica = slowest.replica


def _for_record(on_chunk: Callable[[int, Any], None], index: int) -> Callable[[Any], None]:
    return lambda piece: on_chunk(index, piece)


def _union(batch: list[_Item]) -> tuple[str, ...]:
    fields: dict[str, None] = {}
    for item in batch:
        fields.update(dict.fromkeys(item.output_fields))
    return tuple(fields)
