"""The distinct outcomes of running user code, one fixture module each."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from modelport.core.errors import SetupFailed
from modelport.runtime.process import LOG_LINE_BYTES


async def test_echo_returns_declared_outputs_only(fixture_module, serve):
    async with serve(fixture_module("echo")) as served:
        response = await served.predict(inputs={"text": "hi"}, parameters={"suffix": "!"})
        assert response.status_code == 200
        body = response.json()
        assert body["outputs"] == {"text": "hi!", "length": 2}
        assert response.headers["X-Model-Version"] == body["version"]
        assert response.headers["X-Request-Id"] == body["request_id"]


async def test_output_fields_are_honoured(fixture_module, serve):
    async with serve(fixture_module("echo")) as served:
        response = await served.predict(inputs={"text": "hi"}, output_fields=["length"])
        assert response.json()["outputs"] == {"length": 2}


async def test_user_code_raised_fails_the_request_and_the_worker_lives(fixture_module, serve):
    async with serve(fixture_module("raises")) as served:
        pids = served.module.pool.pids
        response = await served.predict(inputs={"text": "boom"})
        assert response.status_code == 500
        error = response.json()["error"]
        assert error["code"] == "module_error"
        assert "ValueError: cannot handle boom" in error["message"]
        assert "Traceback" not in response.text
        ok = await served.predict(inputs={"text": "fine"})
        assert ok.status_code == 200
        assert served.module.pool.pids == pids


async def test_import_error_is_a_clear_startup_error(fixture_module, serve):
    async with serve(fixture_module("import_error")) as served:
        assert served.server.registry.served() == []
        problem = served.server.registry.problems["import-error"]
        assert "import failed" in problem and "module_that_does_not_exist" in problem
        response = await served.client.post(
            "/api/v1/modules/import-error/predict", json={"inputs": {"text": "x"}}
        )
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "module_unavailable"
        assert "Retry-After" in response.headers
        ready = await served.client.get("/readyz")
        assert ready.status_code == 503


async def test_load_failure_is_a_clear_startup_error(fixture_module, serve):
    async with serve(fixture_module("load_fails")) as served:
        problem = served.server.registry.problems["load-fails"]
        assert "load failed" in problem and "weights for default are missing" in problem


async def test_worker_death_answers_503_fast_and_the_worker_is_replaced(fixture_module, serve):
    async with serve(fixture_module("dies")) as served:
        (first_pid,) = served.module.pool.pids
        started = time.monotonic()
        response = await served.predict(inputs={"text": "die"})
        assert time.monotonic() - started < 2
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "worker_died"
        assert int(response.headers["Retry-After"]) >= 1
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            response = await served.predict(inputs={"text": "alive?"})
            if response.status_code == 200:
                break
            await asyncio.sleep(0.2)
        assert response.status_code == 200
        assert response.json()["outputs"]["pid"] != first_pid
        assert not _alive(first_pid)


async def test_worker_death_retries_once_on_another_worker(fixture_module, serve):
    directory = fixture_module("dies")
    async with serve(directory, workers=2) as served:
        assert len(served.module.pool.pids) == 2
        response = await served.predict(inputs={"text": "die-once"})
        assert response.status_code == 200
        victim = int((directory / "died-once.marker").read_text())
        assert response.json()["outputs"]["pid"] != victim
        assert not _alive(victim)


async def test_a_record_that_kills_every_worker_fails_after_one_retry(fixture_module, serve):
    async with serve(fixture_module("dies"), workers=2) as served:
        started = time.monotonic()
        response = await served.predict(inputs={"text": "die"})
        assert time.monotonic() - started < 3
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "worker_died"
        assert "Retry-After" in response.headers


async def test_hung_call_times_out_with_504_and_the_worker_is_replaced(fixture_module, serve):
    async with serve(fixture_module("hangs")) as served:
        (first_pid,) = served.module.pool.pids
        started = time.monotonic()
        response = await served.predict(inputs={"text": "hang"})
        assert 0.9 < time.monotonic() - started < 5
        assert response.status_code == 504
        assert response.json()["error"]["code"] == "module_timeout"
        assert not _alive(first_pid)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            response = await served.predict(inputs={"text": "quick"})
            if response.status_code == 200:
                break
            await asyncio.sleep(0.2)
        assert response.status_code == 200


async def test_wrong_return_shapes_are_reported(fixture_module, serve):
    async with serve(fixture_module("bad_output")) as served:
        expected = {
            "short": "returned 0 results for 1 inputs",
            "not_list": "must return a list",
            "not_dict": "must be a dict of outputs",
            "missing": "lacks the declared output `count`",
            "wrong_type": "expected an integer",
            "unserialisable": "cannot be returned as JSON",
        }
        for mode, message in expected.items():
            response = await served.predict(inputs={"mode": mode})
            assert response.status_code == 500, mode
            error = response.json()["error"]
            assert error["code"] == "bad_module_output", mode
            assert message in error["message"], (mode, error)
        assert (await served.predict(inputs={"mode": "ok"})).json()["outputs"] == {"count": 1}


async def test_prints_go_to_the_log_and_never_corrupt_the_channel(fixture_module, serve, capsys):
    async with serve(fixture_module("prints")) as served:
        for i in range(3):
            response = await served.predict(inputs={"text": f"t{i}"})
            assert response.status_code == 200
            assert response.json()["outputs"] == {"text": f"t{i}"}
    captured = capsys.readouterr()
    assert "printed at import" in captured.err
    assert "stdout line for t2" in captured.err
    assert "stderr line" in captured.err


async def test_long_printed_lines_are_cut_and_never_wedge_the_worker(fixture_module, serve, capsys):
    async with serve(fixture_module("prints")) as served:
        for _ in range(20):  # 20 MB of output, far more than a pipe holds
            response = await asyncio.wait_for(served.predict(inputs={"text": "long"}), timeout=30)
            assert response.status_code == 200
        answered = await asyncio.wait_for(served.predict(inputs={"text": "short"}), timeout=30)
        assert answered.json()["outputs"] == {"text": "short"}
    lines = capsys.readouterr().err.splitlines()
    cut = [line for line in lines if line.endswith(f"[line cut at {LOG_LINE_BYTES} bytes]")]
    assert len(cut) >= 20 and all(len(line) < LOG_LINE_BYTES + 100 for line in cut)
    assert sum("after the long line" in line for line in lines) == 20
    assert "stdout line for short" in "\n".join(lines)


async def test_setup_failure_surfaces_through_start_module(fixture_module):
    from modelport.artifacts import read_module
    from modelport.control.modules import start_module
    from modelport.core.settings import Settings

    directory = fixture_module("load_fails")
    with pytest.raises(SetupFailed) as failure:
        await start_module(
            read_module(directory),
            version="t",
            settings=Settings(data_dir=directory / ".data"),
            replicas=1,
            log=lambda replica, stream, line: None,
        )
    assert failure.value.status == 503
    assert "RuntimeError" in failure.value.message


def _alive(pid: int, wait: float = 5.0) -> bool:
    """Whether `pid` still runs after up to `wait` seconds (a zombie counts as gone)."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return False
        except FileNotFoundError:
            return False
        time.sleep(0.05)
    return True


async def test_an_idle_worker_that_dies_is_replaced_before_any_call(fixture_module, serve):
    async with serve(fixture_module("dies")) as served:
        (first_pid,) = served.module.pool.pids
        os.kill(first_pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and served.module.pool.pids in ([], [first_pid]):
            await asyncio.sleep(0.05)
        (second_pid,) = served.module.pool.pids
        assert second_pid != first_pid
        while time.monotonic() < deadline and not served.module.pool.ready:
            await asyncio.sleep(0.05)
        response = await served.predict(inputs={"text": "alive?"})
        assert response.status_code == 200 and response.json()["outputs"]["pid"] == second_pid


async def test_calls_during_a_replacement_wait_for_the_new_worker(fixture_module, serve):
    async with serve(fixture_module("dies")) as served:
        (first_pid,) = served.module.pool.pids
        os.kill(first_pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while first_pid in served.module.pool.pids and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert first_pid not in served.module.pool.pids, "the pool did not notice its worker's death"
        # The call comes while the replacement waits out its backoff (1 s).
        response = await served.predict(inputs={"text": "alive?"})
        assert response.status_code == 200
        assert response.json()["outputs"]["pid"] != first_pid
