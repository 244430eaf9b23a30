"""Every answer names its request (`X-Request-Id`) and carries a W3C `traceparent`: the caller's trace when it
sent a valid one, a new trace otherwise; the module's code sees the same context."""

from __future__ import annotations

import logging
import re

import httpx
import pytest
from inprocess import InProcessApp, platform_server
from platform_server import ADMIN_TOKEN

from modelport.control.calls import Trace

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_CALLER = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _ids(response: httpx.Response) -> tuple[str, str, str]:
    """The request id, and the trace and span ids of the answer's `traceparent` (given only to a caller that
    sent one)."""
    request_id = response.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", request_id)
    assert response.headers.get_list("x-request-id") == [request_id]  # one id, never two
    if "traceparent" not in response.headers:
        return request_id, "", ""
    match = _TRACEPARENT.match(response.headers["traceparent"])
    assert match, response.headers["traceparent"]
    return request_id, match.group(1), match.group(2)


async def test_a_call_continues_the_callers_trace_into_the_module(fixture_module, serve):
    async with serve(fixture_module("traced")) as served:
        response = await served.client.post(
            served.predict_url(), json={"inputs": {"text": "a"}}, headers={"traceparent": _CALLER}
        )
        assert response.status_code == 200
        request_id, trace_id, span_id = _ids(response)
        assert trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
        assert span_id != "00f067aa0ba902b7"  # the gateway's own span, a child of the caller's
        body = response.json()
        assert body["request_id"] == request_id == body["outputs"]["request_id"]
        assert body["outputs"]["traceparent"] == response.headers["traceparent"]


@pytest.mark.parametrize(
    "header",
    [
        "junk",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # an all-zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # an all-zero parent
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # the forbidden version
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",  # version 00 has four fields
    ],
)
def test_an_invalid_traceparent_starts_a_new_trace(header):
    trace = Trace.continuing(header)
    assert trace.trace_id != "4bf92f3577b34da6a3ce929d0e0e4736"
    assert _TRACEPARENT.match(trace.traceparent)


def test_a_later_version_keeps_the_trace():
    trace = Trace.continuing("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more")
    assert trace.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736" and trace.flags == "01"


async def test_errors_of_a_call_name_their_request(fixture_module, serve):
    async with serve(fixture_module("traced")) as served:
        response = await served.client.post(served.predict_url(), json={"inputs": {}})
        assert response.status_code == 422
        _ids(response)
        missing = await served.client.post("/api/v1/modules/nope/predict", json={"inputs": {"text": "a"}})
        assert missing.status_code == 404
        _ids(missing)
        assert "traceparent" not in missing.headers  # the caller sent none
        traced = await served.client.post(
            "/api/v1/modules/nope/predict", json={"inputs": {"text": "a"}}, headers={"traceparent": _CALLER}
        )
        assert _ids(traced)[1] == "4bf92f3577b34da6a3ce929d0e0e4736"


def test_every_platform_route_answers_with_its_request_id(tmp_path):
    server = platform_server(tmp_path / "platform")
    with InProcessApp(server.app, server.running) as served:
        with served.client({"Authorization": f"Bearer {ADMIN_TOKEN}"}) as client:
            answers = [
                client.get("/api/v1/modules"),
                client.get("/api/v1/modules/nope"),  # 404 from the control API
                client.post("/api/v1/users", json={"name": 5}),  # 422 from validation
                client.get("/healthz"),
                client.get("/openapi.json"),
                client.get("/no/such/path"),
            ]
        with served.client() as anonymous:
            answers.append(anonymous.get("/api/v1/modules"))  # 401 before any route runs
    ids = [_ids(answer)[0] for answer in answers]
    assert [answer.status_code for answer in answers] == [200, 404, 422, 200, 200, 404, 401]
    assert len(set(ids)) == len(ids)


def test_a_server_error_in_the_log_names_the_request_its_caller_saw(tmp_path, caplog, monkeypatch):
    server = platform_server(tmp_path / "platform")

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the disk caught fire")

    async def get(app: object) -> httpx.Response:
        # As under uvicorn, the server answers 500 and goes on; the test client must not re-raise.
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)  # type: ignore[arg-type]
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=headers) as client:
            return await client.get("/api/v1/modules")

    monkeypatch.setattr(server.services, "modules", broken)
    caplog.set_level(logging.ERROR, logger="modelport.gateway")
    with InProcessApp(server.app, server.running) as served:
        response = served.run(get(server.app))
    assert response.status_code == 500
    request_id = _ids(response)[0]
    assert any(request_id in record.getMessage() for record in caplog.records), caplog.text
