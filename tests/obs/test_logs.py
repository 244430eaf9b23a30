"""Worker logs on disk and live: one JSON object per line, the request tag parsed out, secrets redacted,
rotation by size, reads across the rotated files with filters, and followers that lose lines (and are told
how many) rather than hold the writer up."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from modelport.core.protocol import REQUEST_TAG, REQUEST_TAG_END
from modelport.obs.logs import LogEntry, LogGap, ModuleLogs, log_time


def tagged(text: str, *ids: str) -> str:
    """A line as a worker prints it during a call serving `ids`."""
    return f"{REQUEST_TAG}{','.join(ids)}{REQUEST_TAG_END}{text}"


def entry(
    line: str, *, time: str = "2026-01-01T00:00:00.000Z", version: str = "v1", replica: int = 0
) -> LogEntry:
    return LogEntry(time, version, replica, "stdout", (), line)


@pytest.fixture
def logs(tmp_path: Path) -> Iterator[ModuleLogs]:
    made = ModuleLogs(tmp_path / "logs")
    yield made
    made.close()


def test_each_line_is_one_json_object_with_its_replica_stream_and_requests(logs: ModuleLogs) -> None:
    before = log_time(datetime.now(UTC))
    sink = logs.sink("echo", "v1")
    sink(0, "stdout", tagged("inside a call", "r1", "r2"))
    sink(1, "stderr", "between calls")
    sink(1, "modelport", "worker echo-1 stopped; starting it again in 1 s")
    stored = [json.loads(line) for line in (logs.root / "echo.log").read_text().splitlines()]
    assert [list(row) for row in stored] == [
        ["time", "version", "replica", "stream", "request_ids", "line"]
    ] * 3
    assert [(r["replica"], r["stream"], r["request_ids"], r["line"]) for r in stored] == [
        (0, "stdout", ["r1", "r2"], "inside a call"),
        (1, "stderr", [], "between calls"),
        (1, "modelport", [], "worker echo-1 stopped; starting it again in 1 s"),
    ]
    assert all(r["version"] == "v1" and before <= r["time"] <= log_time(datetime.now(UTC)) for r in stored)
    assert REQUEST_TAG not in (logs.root / "echo.log").read_text()
    assert datetime.fromisoformat(stored[0]["time"]).tzinfo is not None
    assert len(stored[0]["time"]) == len("2026-01-02T03:04:05.678Z")


def test_secrets_are_redacted_before_they_are_stored(logs: ModuleLogs) -> None:
    logs.sink("echo", "v1")(0, "stdout", tagged("calling with Authorization: Bearer abcdefghijkl", "r1"))
    logs.sink("echo", "v1")(0, "stdout", "token=mp_0123456789abcdef password=hunter2")
    text = (logs.root / "echo.log").read_text()
    assert "abcdefghijkl" not in text and "mp_0123456789abcdef" not in text and "hunter2" not in text
    assert [e.request_ids for e in logs.read("echo")] == [("r1",), ()]


def test_files_rotate_by_size_and_reads_span_the_backups(tmp_path: Path) -> None:
    logs = ModuleLogs(tmp_path, max_bytes=2000, backups=2)
    sink = logs.sink("echo", "v1")
    for number in range(60):
        sink(0, "stdout", f"line {number:03d} " + "x" * 40)
    logs.close()
    files = sorted(path.name for path in tmp_path.iterdir())
    assert files == ["echo.log", "echo.log.1", "echo.log.2"]  # the oldest backups were dropped
    assert all(path.stat().st_size <= 2000 for path in tmp_path.iterdir())
    kept = [e.line.split()[1] for e in logs.read("echo", tail=1000)]
    assert kept == [f"{n:03d}" for n in range(int(kept[0]), 60)]  # in order, none missing, across files
    assert len(kept) > len((tmp_path / "echo.log").read_text().splitlines())
    assert [e.line.split()[1] for e in logs.read("echo", tail=3)] == ["057", "058", "059"]


def test_a_rotated_log_keeps_rotating_after_a_restart(tmp_path: Path) -> None:
    first = ModuleLogs(tmp_path, max_bytes=1000, backups=1)
    first.sink("echo", "v1")(0, "stdout", "a" * 900)
    first.close()
    second = ModuleLogs(tmp_path, max_bytes=1000, backups=1)
    second.sink("echo", "v1")(0, "stdout", "b" * 900)  # the size on disk counts: this one rotates
    second.close()
    assert [e.line[0] for e in second.read("echo")] == ["a", "b"]
    assert (tmp_path / "echo.log.1").read_text().count("\n") == 1


def test_reads_filter_by_version_replica_request_and_time(logs: ModuleLogs) -> None:
    old, new = logs.sink("echo", "v1"), logs.sink("echo", "v2")
    old(0, "stdout", tagged("v1 call", "r1"))
    old(1, "stderr", "v1 replica 1")
    new(0, "stdout", tagged("batched", "r2", "r3"))
    new(1, "stdout", tagged("v2 replica 1", "r22"))
    logs.write("echo", entry("long ago", time="2020-01-01T00:00:00.000Z", version="v2"))
    logs.sink("other", "v1")(0, "stdout", tagged("another module", "r2"))

    def lines(**query: object) -> list[str]:
        return [e.line for e in logs.read("echo", **query)]  # type: ignore[arg-type]

    assert lines() == ["v1 call", "v1 replica 1", "batched", "v2 replica 1", "long ago"]
    assert lines(version="v2") == ["batched", "v2 replica 1", "long ago"]
    assert lines(replica=1) == ["v1 replica 1", "v2 replica 1"]
    assert lines(request_id="r2") == ["batched"]  # not r22, and not another module's
    assert lines(request_id="r3", version="v1") == []
    assert lines(tail=2) == ["v2 replica 1", "long ago"]
    # `since` stops at the first older line, reading backwards: the lines are in time order.
    assert lines(since=datetime.now(UTC) - timedelta(minutes=1)) == []
    logs.sink("echo", "v3")(0, "stdout", "just now")
    assert lines(since=datetime.now(UTC) - timedelta(minutes=1)) == ["just now"]
    assert logs.read("nothing-logged") == []
    with pytest.raises(ValueError, match="not a module name"):
        logs.read("../escape")


def test_a_line_cut_short_is_passed_over(logs: ModuleLogs) -> None:
    logs.sink("echo", "v1")(0, "stdout", "whole")
    with (logs.root / "echo.log").open("ab") as file:
        file.write(b'{"time": "2026-01-01T00:00:00.000Z", "vers')
    assert [e.line for e in logs.read("echo")] == ["whole"]


async def test_followers_get_new_matching_lines_in_order(logs: ModuleLogs) -> None:
    sink = logs.sink("echo", "v1")
    sink(0, "stdout", "before")
    with logs.follow("echo", request_id="r1") as mine, logs.follow("echo") as everything:
        sink(0, "stdout", tagged("first", "r1"))
        sink(1, "stdout", tagged("someone else's", "r2"))
        logs.sink("other", "v1")(0, "stdout", tagged("another module", "r1"))
        sink(0, "stderr", tagged("second", "r1"))
        assert [(await mine.get(1)).line for _ in range(2)] == ["first", "second"]  # type: ignore[union-attr]
        got = [await everything.get(1) for _ in range(3)]
        assert [item.line for item in got] == ["first", "someone else's", "second"]  # type: ignore[union-attr]
        with pytest.raises(TimeoutError):
            await mine.get(0.05)
    assert await mine.get(1) is None  # leaving the block ends the follow
    sink(0, "stdout", tagged("after", "r1"))
    assert logs._followers == {}


async def test_a_slow_follower_loses_lines_and_is_told_how_many(tmp_path: Path) -> None:
    logs = ModuleLogs(tmp_path, follow_buffer=5)
    sink = logs.sink("echo", "v1")
    with logs.follow("echo") as follower:
        for number in range(12):
            sink(0, "stdout", f"line {number}")  # never blocks, however slow the reader
        first = [await follower.get(1) for _ in range(5)]
        assert [item.line for item in first] == [f"line {n}" for n in range(5)]  # type: ignore[union-attr]
        sink(0, "stdout", "line 12")
        assert await follower.get(1) == LogGap(dropped=7)  # lines 5 to 11, reported where they were lost
        assert (await follower.get(1)).line == "line 12"  # type: ignore[union-attr]
        for number in range(13, 20):
            sink(0, "stdout", f"line {number}")
    rest = []
    while (item := await follower.get(1)) is not None:
        rest.append(item)
    assert rest[-1] == LogGap(dropped=2)  # the count comes before the end, even with no later line
    assert [item.line for item in rest[:-1]] == [f"line {n}" for n in range(13, 18)]  # type: ignore[union-attr]
    assert len(logs.read("echo", tail=100)) == 20  # the file has every line
    logs.close()


async def test_ending_every_follow_leaves_the_log_writable(logs: ModuleLogs) -> None:
    with logs.follow("echo") as follower:
        logs.end_follows()
        assert await follower.get(1) is None
        logs.sink("echo", "v1")(0, "stdout", "still written")
    assert [e.line for e in logs.read("echo")] == ["still written"]
