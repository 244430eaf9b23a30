"""Deadlines of calls in the pool: a caller is answered by its deadline, and what it left queued is dropped.

The module notes every record it receives in `received.log`; a text starting with `hold` keeps its worker
busy until the test creates the file `release`. With `maxBatchSize: 1` and two calls in flight per worker
(the pool's pipeline), two held records occupy the only worker and the next one waits in the queue.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from manifests import FIXTURES

from modelport.core.errors import ModuleTimeout, Overloaded, QueueTimeout
from modelport.runtime.pool import WorkerPool


def held_module(root: Path, *, max_queue: int = 1024) -> Path:
    directory = root / "held"
    directory.mkdir(parents=True)
    shutil.copy(FIXTURES / "held" / "inference.py", directory / "inference.py")
    (directory / "modelport.yaml").write_text(
        "apiVersion: modelport/v1\nkind: Module\nmetadata: {name: held}\n"
        f"spec:\n  resources: {{maxBatchSize: 1, maxQueue: {max_queue}}}\n"
    )
    return directory


def received(directory: Path) -> list[str]:
    log = directory / "received.log"
    return log.read_text().split() if log.exists() else []


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition did not hold in time"
        await asyncio.sleep(0.01)


async def call(pool: WorkerPool, text: str, **options: Any) -> str:
    (outputs,) = await pool.predict(
        [{"text": text}], parameters={}, model_key="default", output_fields=("text",), **options
    )
    return str(outputs["text"])


async def occupy(pool: WorkerPool, directory: Path) -> list[asyncio.Task[str]]:
    """Two held calls: one running in the worker, the next already sent to it; the queue is empty."""
    held = [asyncio.create_task(call(pool, "hold-1"))]
    await until(lambda: received(directory) == ["hold-1"])
    held.append(asyncio.create_task(call(pool, "hold-2")))
    await until(lambda: pool.busy == 2 and pool.queued == 0)
    return held


async def test_a_queued_call_is_answered_at_its_deadline_and_never_reaches_the_worker(tmp_path, serve):
    directory = held_module(tmp_path)
    async with serve(directory) as served:
        pool = served.module.pool
        held = await occupy(pool, directory)
        started = time.monotonic()
        with pytest.raises(QueueTimeout) as timed_out:
            await call(pool, "late", deadline=started + 0.3)
        assert 0.3 <= time.monotonic() - started < 1.0
        assert (timed_out.value.status, timed_out.value.code) == (504, "queue_timeout")
        assert pool.queued == 0
        (directory / "release").touch()
        assert await asyncio.gather(*held) == ["hold-1", "hold-2"]
        assert await call(pool, "after") == "after"
        assert received(directory) == ["hold-1", "hold-2", "after"]


async def test_a_call_in_a_worker_is_answered_at_its_deadline_and_the_worker_lives(tmp_path, serve):
    directory = held_module(tmp_path)
    async with serve(directory) as served:
        pool = served.module.pool
        pids = pool.pids
        started = time.monotonic()
        with pytest.raises(ModuleTimeout) as timed_out:
            await call(pool, "hold-1", deadline=started + 0.3)
        assert 0.3 <= time.monotonic() - started < 1.0
        assert timed_out.value.code == "module_timeout"
        (directory / "release").touch()
        assert await call(pool, "after") == "after"  # the discarded answer came first, on the same worker
        assert pool.pids == pids
        assert received(directory) == ["hold-1", "after"]


async def test_calls_past_their_deadline_or_cancelled_free_their_place_in_the_queue(tmp_path, serve):
    directory = held_module(tmp_path, max_queue=1)
    async with serve(directory) as served:
        pool = served.module.pool
        held = await occupy(pool, directory)
        with pytest.raises(QueueTimeout):
            await call(pool, "expired", deadline=time.monotonic() + 0.1)
        gone = asyncio.create_task(call(pool, "gone"))
        await until(lambda: pool.queued == 1)
        gone.cancel()
        await asyncio.wait([gone])
        assert pool.queued == 0
        waiting = asyncio.create_task(call(pool, "waiting"))  # the one place in the queue is free
        await until(lambda: pool.queued == 1)
        with pytest.raises(Overloaded):  # and now it is taken
            await call(pool, "refused")
        (directory / "release").touch()
        assert await asyncio.gather(*held, waiting) == ["hold-1", "hold-2", "waiting"]
        assert received(directory) == ["hold-1", "hold-2", "waiting"]
