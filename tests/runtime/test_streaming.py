"""Streaming outputs: the grammar, pieces sent while the generator still runs, and cancellation."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from modelport.core.errors import InputRejected, ModuleError, WorkerDied
from modelport.sdk.spec import SpecError, parse_docstring


def _doc(*types: str) -> str:
    lines = [":param inputs.text: Text"]
    for index, type_text in enumerate(types):
        lines += [f":param outputs.o{index}: Output", f":type outputs.o{index}: {type_text}"]
    return "\n".join(lines)


@pytest.mark.parametrize("type_text", ["str, stream", "json, stream", "str, optional, stream"])
def test_an_output_may_be_declared_streaming(type_text):
    spec = parse_docstring(_doc(type_text, "int"))
    assert spec.stream_output is not None and spec.stream_output.name == "o0"
    assert parse_docstring(spec.to_docstring()) == spec
    assert spec.outputs[1].stream is False


@pytest.mark.parametrize(
    ("doc", "problem"),
    [
        (_doc("str, stream", "json, stream"), "at most one output"),
        (_doc("int, stream"), "only an output of type `str` or `json`"),
        (_doc("list[str], stream"), "only an output of type `str` or `json`"),
        (_doc("str or json, stream"), "only an output of type `str` or `json`"),
        (":param inputs.text: Text\n:type inputs.text: str, stream", "only an output"),
        (_doc("str, stream, stream"), "`stream` is given twice"),
    ],
)
def test_streaming_declarations_the_grammar_refuses(doc, problem):
    with pytest.raises(SpecError, match=problem):
        parse_docstring(doc)


def _produced(directory: Path) -> int:
    log = directory / "produced.log"
    return len(log.read_text().splitlines()) if log.exists() else 0


async def _stream(pool, text: str, pieces: list[str], **parameters: object) -> list[dict[str, object]]:
    return await pool.predict(
        [{"text": text}],
        parameters=parameters,
        model_key="default",
        output_fields=("text", "words"),
        on_chunk=lambda index, piece: pieces.append(piece),
    )


async def test_pieces_arrive_while_the_generator_still_runs(fixture_module, serve):
    directory = fixture_module("streamer")
    async with serve(directory) as served:
        pool = served.module.pool
        pieces: list[str] = []
        call = asyncio.ensure_future(_stream(pool, "one wait two three", pieces))
        deadline = time.monotonic() + 10
        while not pieces and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert pieces == ["one"]  # the module now waits for `release` before its next piece
        assert not call.done() and _produced(directory) == 1
        (directory / "release").touch()
        outputs = await asyncio.wait_for(call, 10)
        assert outputs == [{"text": "one wait two three", "words": 4}]
        assert pieces == ["one", " wait", " two", " three"]


async def test_without_a_stream_the_same_module_answers_whole_records(fixture_module, serve):
    async with serve(fixture_module("streamer")) as served:
        outputs = await served.module.pool.predict(
            [{"text": "a b"}, {"text": "c"}],
            parameters={},
            model_key="default",
            output_fields=("text", "words"),
        )
        assert outputs == [{"text": "a b", "words": 2}, {"text": "c", "words": 1}]


async def test_a_caller_that_goes_away_stops_the_generator(fixture_module, serve):
    directory = fixture_module("streamer")
    async with serve(directory) as served:
        pool = served.module.pool
        (pid,) = pool.pids
        pieces: list[str] = []
        words = " ".join(f"w{i}" for i in range(400))
        call = asyncio.ensure_future(_stream(pool, words, pieces, pause=0.02))
        deadline = time.monotonic() + 10
        while len(pieces) < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        stopped = await _settled(directory, within=5)
        assert 3 <= stopped < 400
        assert pool.pids == [pid]  # the generator was closed; the worker goes on serving
        pieces.clear()
        assert await _stream(pool, "after", pieces) == [{"text": "after", "words": 1}]


async def _settled(directory: Path, *, within: float) -> int:
    """The count of pieces produced once it stops growing (for 0.3 s), within `within` seconds."""
    deadline = time.monotonic() + within
    count, since = _produced(directory), time.monotonic()
    while time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        now = _produced(directory)
        if now != count:
            count, since = now, time.monotonic()
        elif time.monotonic() - since >= 0.3:
            return count
    raise AssertionError(f"the generator still produced pieces after {within} s ({count} so far)")


async def test_user_code_raising_mid_stream_fails_the_call(fixture_module, serve):
    async with serve(fixture_module("streamer")) as served:
        pieces: list[str] = []
        with pytest.raises(ModuleError, match="boom in the middle of the stream"):
            await _stream(served.module.pool, "a b boom c", pieces)
        assert pieces == ["a", " b"]


async def test_a_worker_that_dies_mid_stream_fails_the_call_without_a_retry(fixture_module, serve):
    directory = fixture_module("streamer")
    async with serve(directory, workers=2) as served:
        pool = served.module.pool
        pieces: list[str] = []
        call = asyncio.ensure_future(_stream(pool, "one wait two", pieces))
        deadline = time.monotonic() + 10
        while not pieces and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        (streaming,) = [w for w, sent in zip(pool._workers, pool._sent, strict=True) if sent]
        assert streaming is not None and streaming.pid is not None
        os.kill(streaming.pid, signal.SIGKILL)
        with pytest.raises(WorkerDied):
            await asyncio.wait_for(call, 10)
        assert pieces == ["one"]
        assert _produced(directory) == 1  # not sent again to the other worker


# A plain `inference` that decodes the batch in one loop (the `batch_streamer` fixture).


def _produced_by(directory: Path, index: int) -> int:
    log = directory / "produced.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return sum(line.startswith(f"{index}:") for line in lines)


async def test_streaming_records_of_concurrent_callers_are_batched(fixture_module, serve):
    async with serve(fixture_module("batch_streamer")) as served:
        pool = served.module.pool
        assert pool.batches_streams
        texts = ["a b c", "d e", "f g h i"]
        pieces: list[list[str]] = [[], [], []]
        calls = [
            pool.predict(
                [{"text": text}],
                parameters={"pause": 0.01},
                model_key="default",
                output_fields=("text", "batch"),
                on_chunk=lambda index, piece, mine=mine: mine.append(piece),
            )
            for text, mine in zip(texts, pieces, strict=True)
        ]
        outputs = await asyncio.wait_for(asyncio.gather(*calls), 20)
        assert outputs == [[{"text": text, "batch": 3}] for text in texts]
        assert ["".join(mine) for mine in pieces] == texts
        assert pieces[2] == ["f", " g", " h", " i"]


async def test_a_caller_leaving_a_batched_stream_stops_only_its_record(fixture_module, serve):
    directory = fixture_module("batch_streamer")
    async with serve(directory) as served:
        pool = served.module.pool
        long = " ".join(f"w{i}" for i in range(300))
        gone: list[str] = []
        stays: list[str] = []

        def stream(text: str, into: list[str]) -> asyncio.Future[list[dict[str, object]]]:
            return asyncio.ensure_future(
                pool.predict(
                    [{"text": text}],
                    parameters={"pause": 0.01},
                    model_key="default",
                    output_fields=("text", "batch"),
                    on_chunk=lambda index, piece: into.append(piece),
                )
            )

        leaving, staying = stream(long, gone), stream(" ".join(f"s{i}" for i in range(60)), stays)
        deadline = time.monotonic() + 10
        while len(gone) < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        leaving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await leaving
        (output,) = await asyncio.wait_for(staying, 20)
        assert output == {"text": " ".join(f"s{i}" for i in range(60)), "batch": 2}
        assert 3 <= _produced_by(directory, 0) < 120  # the loop stopped making its words
        assert _produced_by(directory, 1) == 60


async def test_a_record_the_module_rejects_fails_alone_with_its_code(fixture_module, serve):
    async with serve(fixture_module("batch_streamer")) as served:
        pool = served.module.pool
        good = pool.predict(
            [{"text": "fine words"}], parameters={}, model_key="default", output_fields=("text",)
        )
        bad = pool.predict(
            [{"text": "please reject this"}], parameters={}, model_key="default", output_fields=("text",)
        )
        answers = await asyncio.wait_for(asyncio.gather(good, bad, return_exceptions=True), 20)
        assert answers[0] == [{"text": "fine words"}]
        error = answers[1]
        assert isinstance(error, InputRejected)
        assert (error.status, error.code) == (400, "no_rejects")
        assert error.details == [
            {"field": "inputs.text", "code": "no_rejects", "message": "this module refuses the word `reject`"}
        ]
        response = await served.client.post(
            "/api/v1/modules/batch-streamer/predict", json={"inputs": {"text": "reject"}}
        )
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "no_rejects"


async def test_a_worker_dying_mid_batch_fails_the_streamed_records_and_retries_the_others(
    fixture_module, serve
):
    async with serve(fixture_module("batch_streamer"), workers=2) as served:
        pool = served.module.pool
        pieces: list[str] = []
        common = {"parameters": {"pause": 0.05}, "model_key": "default", "output_fields": ("text", "batch")}
        streamed = asyncio.ensure_future(
            pool.predict(
                [{"text": " ".join(f"s{i}" for i in range(100))}],
                on_chunk=lambda index, piece: pieces.append(piece),
                **common,
            )
        )
        whole = asyncio.ensure_future(pool.predict([{"text": "w1 w2 w3"}], **common))
        deadline = time.monotonic() + 10
        while len(pieces) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        ((busy, (batch,)),) = [(w, sent) for w, sent in zip(pool._workers, pool._sent, strict=True) if sent]
        assert len(batch) == 2  # both callers' records in the one batch
        assert busy is not None and busy.pid is not None
        os.kill(busy.pid, signal.SIGKILL)
        with pytest.raises(WorkerDied):
            await asyncio.wait_for(streamed, 10)
        # The caller that had no piece yet is answered by the other worker.
        assert await asyncio.wait_for(whole, 10) == [{"text": "w1 w2 w3", "batch": 1}]
