"""The console's logs and requests tabs, and a call's page, on a platform served in-process.

The module `prints` (the fixture that prints a line on stdout and one on stderr during each call) is deployed
once; an `Api` lets `/callers` call it and captures payloads. `ann` is a user in `/callers`, `out` a developer
of another group. The admin calls it twice (once with `<script>` in its text), `ann` once.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from html import unescape

import httpx
import msgspec
import pytest
from console_world import ConsoleSession, World
from manifests import api
from starlette.types import ASGIApp, Message

from modelport.obs.logs import LogEntry

SCRIPT = "<script>alert('logged')</script>"
_LINK = re.compile(r'href="/ui/modules/prints/requests/([0-9a-f]+)"')


@dataclass
class Calls:
    ids: dict[str, str] = field(default_factory=dict)
    """The request id of each call, by the text it sent."""
    tokens: dict[str, str] = field(default_factory=dict)


def wait_for(check: Callable[[], httpx.Response | None], what: str, timeout: float = 15) -> httpx.Response:
    """The first answer `check` gives that is not None, polling until `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found is not None:
            return found
        assert time.monotonic() < deadline, f"{what} did not happen in {timeout} s"
        time.sleep(0.1)


def predict(client: httpx.Client, text: str) -> str:
    answer = client.post("/api/v1/modules/prints/predict", json={"inputs": {"text": text}})
    assert answer.status_code == 200, answer.text
    return answer.headers["x-request-id"]


@pytest.fixture(scope="module")
def calls(world: World) -> Calls:
    world.module("prints")
    made = Calls()
    with world.api() as admin:
        for path in ("/callers", "/outsiders"):
            assert admin.post("/api/v1/groups", json={"path": path}).status_code == 201
        for name, role, group in (("ann", "user", "/callers"), ("out", "developer", "/outsiders")):
            user = admin.post("/api/v1/users", json={"name": name, "role": role, "groups": [group]})
            assert user.status_code == 201, user.text
            token = admin.post("/api/v1/tokens", json={"name": "tests", "user": user.json()["id"]})
            made.tokens[name] = token.json()["token"]
        document = api("prints-api", "prints", access={"groups": ["/callers"]}, logging={"payloads": True})
        assert admin.post("/api/v1/apply", json={"documents": [document]}).status_code == 200
        made.ids["first call"] = predict(admin, "first call")
        made.ids[SCRIPT] = predict(admin, SCRIPT)
    with world.api(made.tokens["ann"]) as ann:
        made.ids["ann's call"] = predict(ann, "ann's call")
    return made


def listed(
    session: ConsoleSession, request_id: str, path: str = "/ui/modules/prints/requests"
) -> httpx.Response:
    """The requests page once the request log has written the call."""

    def check() -> httpx.Response | None:
        page = session.get(path)
        assert page.status_code == 200, page.text
        return page if f'data-request="{request_id}"' in page.text else None

    return wait_for(check, f"call {request_id} listed")


def logs_page(session: ConsoleSession, needle: str, query: str = "") -> httpx.Response:
    """The logs page once it holds `needle` (the workers' pipes are read as they print)."""

    def check() -> httpx.Response | None:
        page = session.get(f"/ui/modules/prints/logs{query}")
        assert page.status_code == 200, page.text
        return page if needle in page.text else None

    return wait_for(check, f"{needle!r} logged")


def test_the_logs_tab_shows_a_line_printed_during_a_call_with_a_link_to_the_call(
    world: World, calls: Calls
) -> None:
    admin = world.console()
    request_id = calls.ids["first call"]
    page = logs_page(admin, "stdout line for first call")
    line = next(row for row in page.text.splitlines() if "stdout line for first call" in row)
    assert f'href="/ui/modules/prints/requests/{request_id}">{request_id}</a>' in line
    assert 'class="log-line log-stdout"' in line and "v1/0" in line
    assert '<script src="/ui/static/logs.js" defer></script>' in page.text
    follow = "/api/v1/modules/prints/logs?follow=true&amp;tail=5000"
    assert f'data-follow="{follow}"' in page.text

    filtered = logs_page(admin, "stdout line for first call", f"?request_id={request_id}")
    assert set(_LINK.findall(filtered.text)) == {request_id}
    assert "request_id=" + request_id in unescape(filtered.text)  # the follow keeps the filter


def test_the_follow_the_page_opens_answers_to_the_session_cookie_from_its_last_line(
    world: World, calls: Calls
) -> None:
    admin = world.console()
    request_id = calls.ids["first call"]
    page = logs_page(admin, "stdout line for first call", f"?request_id={request_id}")
    follow = unescape(re.search(r'data-follow="([^"]+)"', page.text).group(1))  # type: ignore[union-attr]
    since = re.search(r'data-since="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    cookie = "; ".join(f"{name}={value}" for name, value in admin.client.cookies.items())
    status, events = world.served.run(first_event(world.served.app, f"{follow}&since={since}", cookie))
    assert status == 200
    line = msgspec.json.decode(events.split(b"data: ", 1)[1].split(b"\n", 1)[0])
    assert line["time"] == since and request_id in line["request_ids"]  # the page skips what it holds


async def first_event(app: ASGIApp, url: str, cookie: str) -> tuple[int, bytes]:
    """What a browser's `EventSource` gets from `url` up to its first event, then goes away."""
    path, _, query = url.partition("?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query.encode(),
        "headers": [
            (b"host", b"testserver"),
            (b"accept", b"text/event-stream"),
            (b"cookie", cookie.encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    gone = asyncio.Event()
    started: list[int] = []
    body = bytearray()
    requested = False

    async def receive() -> Message:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            started.append(message["status"])
        elif message["type"] == "http.response.body":
            body.extend(message.get("body", b""))
            if b"data: " in body or not message.get("more_body"):
                gone.set()

    await asyncio.wait_for(app(scope, receive, send), 10)
    return started[0], bytes(body)


def test_a_bad_replica_filter_is_a_422_page(world: World, calls: Calls) -> None:
    answer = world.console().get("/ui/modules/prints/logs?replica=first")
    assert answer.status_code == 422
    assert "replica" in answer.text


def test_the_requests_tab_lists_the_call_and_its_page_shows_every_field_payload_and_log_line(
    world: World, calls: Calls
) -> None:
    admin = world.console()
    request_id = calls.ids["first call"]
    page = listed(admin, request_id)
    assert f'href="/ui/modules/prints/requests/{request_id}"' in page.text
    assert page.text.index(calls.ids[SCRIPT]) < page.text.index(request_id)  # newest first
    with world.api() as api_client:
        record = api_client.get(f"/api/v1/requests/{request_id}").json()

    def captured() -> httpx.Response | None:
        found = admin.get(f"/ui/modules/prints/requests/{request_id}")
        assert found.status_code == 200, found.text
        return found if 'id="payload-inputs"' in found.text else None

    detail = wait_for(captured, "the payload captured")
    assert f'<code id="request-id">{request_id}</code>' in detail.text
    assert f'<code id="trace-id">{record["trace_id"]}</code>' in detail.text
    assert "stdout line for first call" in detail.text and "stderr line" in detail.text
    inputs = re.search(r'<pre class="log json" id="payload-inputs">(.*?)</pre>', detail.text, re.S)
    assert inputs is not None and '"text": "first call"' in unescape(inputs.group(1))
    assert record["caller"] in detail.text and record["payload_key"] in detail.text


def test_the_requests_tab_pages_with_the_apis_cursor(world: World, calls: Calls) -> None:
    admin = world.console()
    listed(admin, calls.ids["first call"])
    first = admin.get("/ui/modules/prints/requests?limit=1&version=v1")
    assert first.status_code == 200
    shown = re.findall(r'data-request="([0-9a-f]+)"', first.text)
    following = re.search(r'href="(\?[^"]+)" rel="next"', first.text)
    assert len(shown) == 1 and following is not None
    assert "version=v1" in unescape(following.group(1)) and "limit=1" in unescape(following.group(1))
    second = admin.get("/ui/modules/prints/requests" + unescape(following.group(1)))
    assert second.status_code == 200
    assert re.findall(r'data-request="([0-9a-f]+)"', second.text) not in ([], shown)


@pytest.mark.parametrize(
    ("query", "status", "named"),
    [
        ("status=teapot", 422, "status"),
        ("since=yesterday-ish", 422, "since"),
        ("min_latency_ms=slow", 422, "min_latency_ms"),
        ("limit=5000", 422, "limit"),
        ("cursor=forged.cursor", 400, "invalid_cursor"),
    ],
)
def test_a_bad_filter_is_the_apis_error_page(
    world: World, calls: Calls, query: str, status: int, named: str
) -> None:
    answer = world.console().get(f"/ui/modules/prints/requests?{query}")
    assert answer.status_code == status
    assert named in answer.text
    with world.api() as admin:
        assert admin.get(f"/api/v1/requests?module=prints&{query}").status_code == status


def test_a_caller_sees_only_their_own_calls_and_no_logs(world: World, calls: Calls) -> None:
    ann = world.console(calls.tokens["ann"])
    own = calls.ids["ann's call"]
    page = listed(ann, own)
    assert set(re.findall(r'data-request="([0-9a-f]+)"', page.text)) == {own}
    detail = ann.get(f"/ui/modules/prints/requests/{own}")
    assert detail.status_code == 200 and 'id="request-logs"' not in detail.text
    assert ann.get(f"/ui/modules/prints/requests/{calls.ids['first call']}").status_code == 404
    assert ann.get("/ui/modules/prints/logs").status_code == 404
    tabs = ann.get("/ui/modules/prints").text
    assert 'href="/ui/modules/prints/requests">My requests</a>' in tabs  # a caller's tab to its own calls
    assert 'href="/ui/modules/prints/logs"' not in tabs


def test_someone_outside_the_modules_groups_gets_404_on_every_page(world: World, calls: Calls) -> None:
    out = world.console(calls.tokens["out"])
    request_id = calls.ids["first call"]
    for path in ("logs", "requests", f"requests/{request_id}", "requests/0123456789abcdef"):
        answer = out.get(f"/ui/modules/prints/{path}")
        assert answer.status_code == 404, path
        assert "first call" not in answer.text and 'class="log-line' not in answer.text
    admin = world.console()
    assert admin.get("/ui/modules/nothing-here/logs").status_code == 404
    assert admin.get(f"/ui/modules/another/requests/{request_id}").status_code == 404


def test_a_log_line_holding_a_script_is_escaped(world: World, calls: Calls) -> None:
    admin = world.console()
    escaped = "stdout line for &lt;script&gt;alert(&#39;logged&#39;)&lt;/script&gt;"
    page = logs_page(admin, escaped)
    assert SCRIPT not in page.text
    detail = admin.get(f"/ui/modules/prints/requests/{calls.ids[SCRIPT]}")
    assert detail.status_code == 200
    assert escaped in detail.text and SCRIPT not in detail.text


def test_ten_thousand_lines_reach_the_page_as_its_last_200(world: World, calls: Calls) -> None:
    module = world.module("echo", name="chatty", deployed=False)
    lines = [
        LogEntry(f"2026-01-01T00:00:{n // 1000:02d}.{n % 1000:03d}Z", "v1", 0, "stdout", (), f"line {n:05d}")
        for n in range(10_000)
    ]
    path = world.root / "platform" / "logs" / f"{module}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(msgspec.json.encode(entry) + b"\n" for entry in lines))
    page = world.console().get(f"/ui/modules/{module}/logs")
    assert page.status_code == 200
    assert page.text.count('<div class="log-line') == 200
    assert "line 09999" in page.text and "line 09800" in page.text and "line 09799" not in page.text
    assert 'data-since="2026-01-01T00:00:09.999Z" data-at-since="1"' in page.text
    assert len(page.content) < 200_000
