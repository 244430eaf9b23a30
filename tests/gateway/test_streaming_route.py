"""The predict route of a module with a streaming output: server-sent events over a real socket (port 0)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import uvicorn

EVENTS = {"Accept": "text/event-stream"}


@asynccontextmanager
async def _listening(app: object) -> AsyncIterator[httpx.AsyncClient]:
    """`app` served by uvicorn on 127.0.0.1 (port 0) in this event loop, and a client of it."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="off", log_level="error"))  # type: ignore[arg-type]
    task = asyncio.ensure_future(server.serve())
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            yield client
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


async def _events(response: httpx.Response) -> AsyncIterator[tuple[str, dict[str, object]]]:
    name = ""
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            yield name, json.loads(line.removeprefix("data: "))


def _produced(directory: Path) -> int:
    log = directory / "produced.log"
    return len(log.read_text().splitlines()) if log.exists() else 0


async def test_asking_for_events_streams_the_pieces_then_the_outputs(fixture_module, serve):
    directory = fixture_module("streamer")
    async with serve(directory) as served, _listening(served.server.app) as client:
        url = served.predict_url()
        body = {"inputs": {"text": "one wait two three"}}
        async with client.stream("POST", url, json=body, headers=EVENTS) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            events = _events(response)
            first = await anext(events)
            assert first == ("chunk", {"output": "text", "delta": "one"})
            assert _produced(directory) == 1  # the module waits for `release` before its next piece
            (directory / "release").touch()
            rest = [event async for event in events]
        assert rest[:-1] == [("chunk", {"output": "text", "delta": d}) for d in (" wait", " two", " three")]
        name, done = rest[-1]
        assert name == "done"
        assert done["outputs"] == {"text": "one wait two three", "words": 4}
        whole = await client.post(url, json=body)
        assert whole.status_code == 200
        assert whole.headers["content-type"] == "application/json"
        assert whole.json()["outputs"] == done["outputs"]


async def test_stream_true_in_the_body_asks_for_events(fixture_module, serve):
    async with serve(fixture_module("streamer")) as served, _listening(served.server.app) as client:
        body = {"inputs": {"text": "a b"}, "stream": True}
        async with client.stream("POST", served.predict_url(), json=body) as response:
            events = [event async for event in _events(response)]
        assert [name for name, _ in events] == ["chunk", "chunk", "done"]
        assert events[-1][1]["outputs"] == {"text": "a b", "words": 2}


async def test_an_error_mid_stream_is_an_error_event(fixture_module, serve):
    async with serve(fixture_module("streamer")) as served, _listening(served.server.app) as client:
        body = {"inputs": {"text": "a boom"}}
        async with client.stream("POST", served.predict_url(), json=body, headers=EVENTS) as response:
            events = [event async for event in _events(response)]
        assert events[0] == ("chunk", {"output": "text", "delta": "a"})
        name, error = events[-1]
        assert name == "error"
        assert error["error"]["code"] == "module_error"  # type: ignore[index]


async def test_a_client_that_disconnects_stops_the_generation(fixture_module, serve):
    directory = fixture_module("streamer")
    async with serve(directory) as served, _listening(served.server.app) as client:
        words = " ".join(f"w{i}" for i in range(400))
        body = {"inputs": {"text": words}, "parameters": {"pause": 0.02}}
        async with client.stream("POST", served.predict_url(), json=body, headers=EVENTS) as response:
            events = _events(response)
            for _ in range(3):
                assert (await anext(events))[0] == "chunk"
        # leaving the block closed the connection mid-stream
        deadline, count, since = time.monotonic() + 5, _produced(directory), time.monotonic()
        while time.monotonic() - since < 0.3:
            assert time.monotonic() < deadline, "the generator went on after its client had gone"
            await asyncio.sleep(0.05)
            if (now := _produced(directory)) != count:
                count, since = now, time.monotonic()
        assert 3 <= count < 400
        after = await client.post(served.predict_url(), json={"inputs": {"text": "next"}})
        assert after.json()["outputs"] == {"text": "next", "words": 1}


async def test_a_module_without_a_streaming_output_answers_json(fixture_module, serve):
    async with serve(fixture_module("echo")) as served:
        response = await served.client.post(
            served.predict_url(), json={"inputs": {"text": "hi"}}, headers=EVENTS
        )
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert response.json()["outputs"]["text"] == "hi"
