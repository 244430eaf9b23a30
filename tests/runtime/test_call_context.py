"""What a worker learns of the requests it serves: their ids and trace context reach `inference`
(`modelport.sdk.current_call`), and every line it prints during a call is tagged with them."""

from __future__ import annotations

import asyncio

from modelport.artifacts import read_module
from modelport.control.modules import start_module
from modelport.core.protocol import split_tag
from modelport.core.settings import Settings
from modelport.runtime.pool import CallTiming


async def test_batched_records_keep_their_own_request_and_their_prints_are_tagged(fixture_module, tmp_path):
    lines: list[tuple[str, str]] = []
    served = await start_module(
        read_module(fixture_module("traced")),
        version="v1",
        settings=Settings(data_dir=tmp_path / "data"),
        replicas=1,
        log=lambda replica, stream, line: lines.append((stream, line)),
    )
    try:
        timings = [CallTiming() for _ in range(3)]
        answers = await asyncio.gather(
            *(
                served.pool.predict(
                    [{"text": f"t{i}"}],
                    parameters={},
                    model_key="default",
                    output_fields=("request_id", "traceparent"),
                    request_id=f"request-{i}",
                    traceparent=f"00-{i:032x}-{i + 1:016x}-01",
                    timing=timing,
                )
                for i, timing in enumerate(timings)
            )
        )
        await asyncio.sleep(0.2)  # the pipes are read as the worker writes them
    finally:
        await served.drain(5)
    for i, answer in enumerate(answers):
        assert answer == [{"request_id": f"request-{i}", "traceparent": f"00-{i:032x}-{i + 1:016x}-01"}]
    assert all(timing.batch_size == 3 for timing in timings)  # one call served the three requests
    assert all(timing.replica == 0 and timing.compute > 0 for timing in timings)
    tagged = {text: ids for stream, line in lines for ids, text in [split_tag(line)] if ids}
    everyone = ("request-0", "request-1", "request-2")
    assert tagged["printed t1"] == everyone
    assert tagged["to stderr 3"] == everyone
    assert tagged["bytes line"] == everyone


def test_a_line_without_a_tag_is_left_alone():
    assert split_tag("plain text") == ((), "plain text")
    assert split_tag("\x1eonly a start") == ((), "\x1eonly a start")
    assert split_tag("\x1ea,b\x1fhello") == (("a", "b"), "hello")
