"""Health checks of idle workers: a worker that stops answering is replaced before a call reaches it."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from modelport.artifacts import read_module
from modelport.runtime.pool import PoolConfig, WorkerPool
from modelport.runtime.process import WorkerLaunch, WorkerProcess

INTERVAL, TIMEOUT = 0.2, 0.5

SLEEPS = '''
import os
import time


def inference(parameters, inputs, output_fields, model_key, model=None):
    """Sleep for the record's seconds.

    :param inputs.seconds: How long to take
    :type inputs.seconds: float
    :param outputs.pid: The worker's process id
    :type outputs.pid: int
    """
    time.sleep(sum(r["seconds"] for r in inputs))
    return [{"pid": os.getpid()} for r in inputs]
'''


@asynccontextmanager
async def started_pool(directory: Path, log: list[str], **options: float) -> AsyncIterator[WorkerPool]:
    """A one-worker pool of the module in `directory`, its health checks paced by `options`."""
    definition = read_module(directory)
    spec = definition.manifest.spec
    output_dir = directory / "outputs"
    output_dir.mkdir()
    launch = WorkerLaunch(
        config={
            "module_dir": str(directory),
            "entrypoint": spec.entrypoint,
            "load": definition.load,
            "spec": definition.spec.to_dict(),
            "default_model_key": spec.model.key,
            "models_dir": str(directory / spec.model.path),
            "cache_size": spec.model.cache_size,
            "output_dir": str(output_dir),
        }
    )
    config = PoolConfig(
        name=definition.name, launch=launch, output_names=definition.spec.output_names, **options
    )
    pool = WorkerPool(config, log=lambda replica, stream, line: log.append(line))
    await pool.start()
    try:
        yield pool
    finally:
        await pool.close(grace=5)


@pytest.fixture
def sleeps(tmp_path: Path) -> Path:
    directory = tmp_path / "sleeps"
    directory.mkdir()
    (directory / "inference.py").write_text(SLEEPS)
    return directory


@pytest.fixture
def pings(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """The verdict of every health check the pool makes."""
    verdicts: list[bool] = []
    ping = WorkerProcess.ping

    async def recorded(self: WorkerProcess, timeout: float) -> bool:
        verdict = await ping(self, timeout)
        verdicts.append(verdict)
        return verdict

    monkeypatch.setattr(WorkerProcess, "ping", recorded)
    return verdicts


async def until(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition did not hold in time"
        await asyncio.sleep(0.01)


async def sleep_call(pool: WorkerPool, seconds: float) -> int:
    (outputs,) = await pool.predict(
        [{"seconds": seconds}], parameters={}, model_key="default", output_fields=("pid",)
    )
    return int(outputs["pid"])


def stopped(pid: int) -> bool:
    """Whether `pid` is a stopped process (state T), as SIGSTOP leaves it."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "T"
    except FileNotFoundError:
        return False


async def test_a_stopped_idle_worker_is_replaced_and_calls_go_to_the_new_one(sleeps, pings):
    log: list[str] = []
    async with started_pool(sleeps, log, health_interval=INTERVAL, health_timeout=TIMEOUT) as pool:
        (pid,) = pool.pids
        os.kill(pid, signal.SIGSTOP)
        try:
            halted = time.monotonic()
            # The check's verdict is told once the kill is complete (its output read to the end), which may
            # be a moment after the process is gone from the pool.
            await until(lambda: pid not in pool.pids and False in pings, timeout=INTERVAL + TIMEOUT + 6.0)
            assert not stopped(pid)  # killed, not left stopped
            assert any("did not answer a health check within 0.5 s" in line for line in log)
            answered_by = await asyncio.wait_for(sleep_call(pool, 0), 10)
            assert answered_by != pid and pool.pids == [answered_by]
            assert time.monotonic() - halted < 5  # backoff (1 s) and a start, not the call timeout (60 s)
        finally:
            if stopped(pid):
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGKILL)


async def test_a_healthy_worker_answers_its_checks_and_a_busy_one_is_left_alone(sleeps, pings):
    log: list[str] = []
    async with started_pool(sleeps, log, health_interval=0.05, health_timeout=0.2) as pool:
        (pid,) = pool.pids
        await until(lambda: len(pings) >= 3, timeout=5)
        # A call far longer than a check's interval and timeout together: the worker is not pinged meanwhile.
        assert await sleep_call(pool, 1.0) == pid
        await until(lambda: len(pings) >= 30, timeout=10)
        assert all(pings)
        assert pool.pids == [pid]
        assert not any("health check" in line for line in log)
