"""One worker process as the gateway sees it: spawn, handshake, calls with ids, death detection.

A worker that dies fails its in-flight call at once with `WorkerDied`; nothing waits on a dead process.
Its stdout and stderr are read line by line and handed to a log callback, so module prints never touch the
control channel. A streaming call's `Chunk`s go to its callback as they arrive; cancelling a streaming call
tells the worker to stop it (`Cancel`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

import msgspec

from modelport.core.errors import SetupFailed, WorkerDied
from modelport.core.protocol import (
    HEADER_SIZE,
    Call,
    CallFailed,
    Cancel,
    Chunk,
    Ping,
    Pong,
    Ready,
    Result,
    Shutdown,
    decode_to_gateway,
    encode,
    frame,
    frame_length,
)
from modelport.core.protocol import SetupFailed as SetupFailedMessage
from modelport.runtime.isolation import worker_environment

__all__ = ["LOG_LINE_BYTES", "LogSink", "ProcessState", "WorkerLaunch", "WorkerProcess"]

LogSink = Callable[[int, str, str], None]
"""Receives (replica, stream, line) for every line a module's workers print (stream `stdout` or `stderr`) and
for what the pool says about them (stream `modelport`)."""

LOG_LINE_BYTES = 16 * 1024
"""The longest line of a worker's output that goes to the log whole; longer ones are cut."""
_READ_BYTES = 64 * 1024
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")


class ProcessState(StrEnum):
    STARTING = "starting"
    READY = "ready"
    BUSY = "busy"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


@dataclass(frozen=True)
class WorkerLaunch:
    """How to start a worker: the interpreter, the worker config (without its fd) and the environment."""

    config: dict[str, object]
    python: str = sys.executable
    threads: int = 1
    env: dict[str, str] = field(default_factory=dict)
    startup_timeout: float = 300.0
    home: str | None = None
    """The worker's working directory, `HOME` and `TMPDIR`: a directory of its own (None: the server's)."""


class WorkerProcess:
    """A live worker: `start()` returns once it is ready (or raises `SetupFailed`)."""

    def __init__(self, launch: WorkerLaunch, *, name: str, log: LogSink, replica: int = 0) -> None:
        self.launch, self.name, self._log, self.replica = launch, name, log, replica
        self.state = ProcessState.STARTING
        self.pid: int | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pending: dict[int, asyncio.Future[Result | CallFailed]] = {}
        self._pongs: dict[int, asyncio.Future[Pong]] = {}
        self._streams: dict[int, Callable[[Chunk], None]] = {}
        self.batches_streams = False
        """The worker said (`Ready`) that its module batches streaming records."""
        self._checked = asyncio.Event()
        self._checked.set()  # cleared while a health check waits for its answer
        self._next_id = 0
        self._tasks: list[asyncio.Task[None]] = []
        self.exited = asyncio.Event()

    @property
    def accepting(self) -> bool:
        """Ready for calls: started, handshake done, not stopping."""
        return self.state in (ProcessState.READY, ProcessState.BUSY)

    @property
    def alive(self) -> bool:
        return self.state in (ProcessState.STARTING, ProcessState.READY, ProcessState.BUSY)

    async def start(self) -> None:
        parent, child = socket.socketpair()
        try:
            config = {**self.launch.config, "fd": child.fileno()}
            self._process = await asyncio.create_subprocess_exec(
                self.launch.python,
                "-m",
                "modelport.runtime.worker",
                msgspec.json.encode(config).decode(),
                pass_fds=(child.fileno(),),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=self._environment(),
                cwd=self.launch.home,
                start_new_session=True,
            )
        finally:
            child.close()
        self.pid = self._process.pid
        self._reader, self._writer = await asyncio.open_connection(sock=parent)
        assert self._process.stdout is not None and self._process.stderr is not None
        self._tasks = [
            asyncio.create_task(self._pump(self._process.stdout, "stdout")),
            asyncio.create_task(self._pump(self._process.stderr, "stderr")),
            asyncio.create_task(self._watch()),
        ]
        await self._handshake()

    def _environment(self) -> dict[str, str]:
        env = {**worker_environment(self.launch.env), "PYTHONUNBUFFERED": "1"}
        if self.launch.home is not None:
            env.update(HOME=self.launch.home, TMPDIR=self.launch.home)
        for variable in _THREAD_VARIABLES:
            env.setdefault(variable, str(self.launch.threads))
        return env

    async def _handshake(self) -> None:
        try:
            payload = await asyncio.wait_for(self._read_frame(), self.launch.startup_timeout)
        except TimeoutError:
            await self.kill()
            raise SetupFailed(
                f"worker {self.name} did not become ready within {self.launch.startup_timeout:.0f} s"
            ) from None
        if payload is None:
            code = await self._process_exit_code()
            self.state = ProcessState.FAILED
            raise SetupFailed(f"worker {self.name} exited during startup (exit code {code}); see its log")
        message = decode_to_gateway(payload)
        if isinstance(message, SetupFailedMessage):
            self.state = ProcessState.FAILED
            await self._process_exit_code()
            raise SetupFailed(f"{message.stage} failed: {message.message}")
        if not isinstance(message, Ready):
            await self.kill()
            raise SetupFailed(f"worker {self.name} sent {type(message).__name__} before it was ready")
        self.state = ProcessState.READY
        self.batches_streams = message.batches_streams
        self._tasks.append(asyncio.create_task(self._receive()))

    async def call(
        self,
        call_args: dict[str, object],
        *,
        on_chunk: Callable[[Chunk], None] | None = None,
        on_sent: Callable[[int], None] | None = None,
    ) -> Result | CallFailed:
        """Send one call and wait for its answer; raises `WorkerDied` if the process goes away first.

        With `on_chunk`, the call streams: each `Chunk` of it goes to `on_chunk` before the answer, and
        cancelling the call sends the worker a `Cancel` of it. `on_sent` is given the call's id once it is
        sent (for `drop`)."""
        if not self.alive or self._writer is None:
            raise WorkerDied(f"worker {self.name} is not running")
        self._next_id += 1
        message = Call(id=self._next_id, stream=on_chunk is not None, **call_args)  # type: ignore[arg-type]
        future: asyncio.Future[Result | CallFailed] = asyncio.get_running_loop().create_future()
        self._pending[message.id] = future
        if on_chunk is not None:
            self._streams[message.id] = on_chunk
        self.state = ProcessState.BUSY
        try:
            self._writer.write(frame(encode(message)))
            if on_sent is not None:
                on_sent(message.id)
            if self._writer.transport.get_write_buffer_size() > 1 << 20:
                await self._writer.drain()
            return await future
        except asyncio.CancelledError:
            if on_chunk is not None and (future.cancelled() or not future.done()):  # no answer yet
                self._cancel(message.id)
            raise
        finally:
            self._pending.pop(message.id, None)
            if on_chunk is not None:
                self._streams.pop(message.id, None)
            if self.state is ProcessState.BUSY and not self._pending:
                self.state = ProcessState.READY

    def drop(self, call_id: int, index: int) -> None:
        """Stop the stream of record `index` of the streaming call `call_id` (its caller went away); the
        call's other records go on."""
        self._cancel(call_id, index)

    def _cancel(self, call_id: int, index: int | None = None) -> None:
        if self._writer is not None and not self._writer.is_closing():
            with contextlib.suppress(ConnectionError):
                self._writer.write(frame(encode(Cancel(id=call_id, index=index))))

    async def ping(self, timeout: float) -> bool:
        """Check that an idle worker still reads its messages: send `Ping` and wait up to `timeout` s for
        its `Pong`. A worker that does not answer in time (hung, stopped) is killed and False returned;
        raises `WorkerDied` if it dies meanwhile. Calls wait for the verdict (`checked`), so none is sent
        to a worker about to be killed. A worker running a call is not checked (True)."""
        if self.state is not ProcessState.READY or self._pending or self._writer is None:
            return True
        self._next_id += 1
        ping = Ping(id=self._next_id)
        future: asyncio.Future[Pong] = asyncio.get_running_loop().create_future()
        self._pongs[ping.id] = future
        self._checked.clear()
        try:
            self._writer.write(frame(encode(ping)))
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            await self.kill()
            return False
        finally:
            self._pongs.pop(ping.id, None)
            self._checked.set()
        return True

    async def checked(self) -> None:
        """Return once no health check is waiting for its answer; `accepting` then tells its verdict."""
        await self._checked.wait()

    async def _read_frame(self) -> bytes | None:
        assert self._reader is not None
        try:
            header = await self._reader.readexactly(HEADER_SIZE)
            return await self._reader.readexactly(frame_length(header))
        except (asyncio.IncompleteReadError, ConnectionError):
            return None

    async def _receive(self) -> None:
        while (payload := await self._read_frame()) is not None:
            message = decode_to_gateway(payload)
            if isinstance(message, Result | CallFailed):
                future = self._pending.get(message.id)
                if future is not None and not future.done():
                    future.set_result(message)
            elif isinstance(message, Chunk) and (stream := self._streams.get(message.id)) is not None:
                stream(message)
            elif isinstance(message, Pong) and (pong := self._pongs.get(message.id)) and not pong.done():
                pong.set_result(message)
        self._fail_pending()

    def _fail_pending(self) -> None:
        if self.state is not ProcessState.STOPPING:
            self.state = ProcessState.STOPPED
        for future in self._pending.values():
            if not future.done():
                future.set_exception(WorkerDied(f"worker {self.name} died while handling the request"))
        for pong in self._pongs.values():
            if not pong.done():
                pong.set_exception(WorkerDied(f"worker {self.name} died during a health check"))

    async def _pump(self, stream: asyncio.StreamReader, name: str) -> None:
        """Hand each line of the worker's output to the log, never leaving the pipe unread (a worker whose
        pipe fills stops): a line longer than `LOG_LINE_BYTES` is cut there and the rest of it dropped."""
        pending, cutting = b"", False
        while chunk := await stream.read(_READ_BYTES):
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                if cutting:  # the end of a line already cut
                    cutting = False
                    continue
                self._log(self.replica, name, line.decode("utf-8", "replace"))
            if len(pending) > LOG_LINE_BYTES:
                if not cutting:
                    kept = pending[:LOG_LINE_BYTES].decode("utf-8", "replace")
                    self._log(self.replica, name, f"{kept} [line cut at {LOG_LINE_BYTES} bytes]")
                    cutting = True
                pending = b""
        if pending and not cutting:
            self._log(self.replica, name, pending.decode("utf-8", "replace"))

    async def _watch(self) -> None:
        assert self._process is not None
        await self._process.wait()
        if self._writer is not None:
            self._writer.close()
        self._fail_pending()
        self.state = ProcessState.STOPPED if self.state is not ProcessState.FAILED else self.state
        self.exited.set()

    async def _process_exit_code(self) -> int | None:
        assert self._process is not None
        with contextlib.suppress(TimeoutError):
            return await asyncio.wait_for(self._process.wait(), 10)
        await self.kill()
        return self._process.returncode

    async def stop(self, grace: float = 10.0) -> None:
        """Ask the worker to finish its call and exit; kill it after `grace` seconds."""
        if self._process is None or self._process.returncode is not None:
            return
        self.state = ProcessState.STOPPING
        if self._writer is not None and not self._writer.is_closing():
            with contextlib.suppress(ConnectionError):
                self._writer.write(frame(encode(Shutdown())))
        try:
            await asyncio.wait_for(self._process.wait(), grace)
        except TimeoutError:
            await self.kill()
        await self._finish_tasks()

    async def kill(self) -> None:
        if self._process is not None and self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGKILL)
            await self._process.wait()
        await self._finish_tasks()

    async def _finish_tasks(self) -> None:
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 5)
