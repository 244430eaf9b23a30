"""`Client`'s jobs, batches and webhook secret against a scripted transport: the requests they send (JSON or a
predict form, the idempotency key, the long poll and its read timeout) and how waiting for a job ends."""

from __future__ import annotations

import json
import time
from email.message import Message
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelport.client import ApiError, WaitTimeout
from modelport.core.records import JobInfo, WebhookSecret


def job(**fields: Any) -> dict[str, Any]:
    base = {
        "id": "j1",
        "kind": "job",
        "module": "echo",
        "version": None,
        "served_version": None,
        "status": "queued",
        "caller": "admin",
        "created_at": "2026-01-02T03:04:05+00:00",
        "started_at": None,
        "finished_at": None,
        "run_at": None,
        "expires_at": None,
        "attempts": 0,
        "max_attempts": 5,
    }
    return base | fields


def parts(request: httpx.Request) -> list[tuple[str, str | None, bytes]]:
    """(name, file name, content) of each part of a multipart request, in order."""
    head = f"Content-Type: {request.headers['Content-Type']}\r\n\r\n".encode()
    message = BytesParser(policy=HTTP).parsebytes(head + request.content)
    assert message.is_multipart()
    found = []
    for part in message.iter_parts():
        assert isinstance(part, Message)
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        found.append(
            (str(part.get_param("name", header="content-disposition")), part.get_filename(), payload)
        )
    return found


def test_a_job_is_sent_as_json_with_its_key_and_version(client_for: Any) -> None:
    client, seen = client_for(lambda r: httpx.Response(202, json=job()))
    queued = client.submit_job(
        "echo",
        {"text": "hi"},
        parameters={"suffix": "!"},
        output_fields=["text"],
        model_key="small",
        version="v1",
        webhook="https://hooks.example/in",
        webhook_events=["started", "completed"],
        idempotency_key="order-7",
    )
    assert queued == JobInfo.model_validate(job())
    (request,) = seen.requests
    assert (request.method, request.url.path) == ("POST", "/base/api/v1/modules/echo/jobs")
    assert dict(request.url.params) == {"version": "v1"}
    assert request.headers["Idempotency-Key"] == "order-7"
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.content) == {
        "inputs": {"text": "hi"},
        "parameters": {"suffix": "!"},
        "output_fields": ["text"],
        "model_key": "small",
        "webhook": "https://hooks.example/in",
        "webhook_events_filter": ["started", "completed"],
    }


def test_a_bare_job_sends_only_its_inputs(client_for: Any) -> None:
    client, seen = client_for(lambda r: httpx.Response(202, json=job()))
    client.submit_job("echo", {"text": "hi"})
    (request,) = seen.requests
    assert "Idempotency-Key" not in request.headers
    assert dict(request.url.params) == {}
    assert json.loads(request.content) == {"inputs": {"text": "hi"}}


def test_files_make_the_job_a_predict_form(client_for: Any, tmp_path: Path) -> None:
    image = tmp_path / "cat.png"
    image.write_bytes(b"\x89PNG not really")
    client, seen = client_for(lambda r: httpx.Response(202, json=job()))
    client.submit_job(
        "echo",
        {"text": "hi", "count": 3, "flag": True},
        parameters={"suffix": "!"},
        files={"image": image},
        output_fields=["text", "length"],
        webhook_events=["completed"],
    )
    (request,) = seen.requests
    assert request.headers["Content-Type"].startswith("multipart/form-data; boundary=")
    assert parts(request) == [
        ("inputs.text", None, b"hi"),
        ("inputs.count", None, b"3"),
        ("inputs.flag", None, b"true"),
        ("parameters.suffix", None, b"!"),
        ("output_fields", None, b"text"),
        ("output_fields", None, b"length"),
        ("webhook_events_filter", None, b"completed"),
        ("inputs.image", "cat.png", b"\x89PNG not really"),
    ]


def test_no_files_still_make_a_form_of_text_values(client_for: Any) -> None:
    client, seen = client_for(lambda r: httpx.Response(202, json=job()))
    client.submit_job("echo", {"text": "hi"}, parameters={"n": "3"}, files={})
    assert parts(seen.requests[0]) == [("inputs.text", None, b"hi"), ("parameters.n", None, b"3")]


def test_an_empty_form_goes_as_json(client_for: Any) -> None:
    client, seen = client_for(lambda r: httpx.Response(202, json=job()))
    client.submit_job("echo", files={})
    assert json.loads(seen.requests[0].content) == {"inputs": {}}


def test_a_job_put_under_its_own_id_names_its_module(client_for: Any) -> None:
    client, seen = client_for(lambda r: httpx.Response(201, json=job(id="mine/1")))
    assert client.put_job("mine/1", "echo", {"text": "hi"}, version="v2").id == "mine/1"
    (request,) = seen.requests
    assert (request.method, request.url.raw_path) == ("PUT", b"/base/api/v1/jobs/mine%2F1")
    assert json.loads(request.content) == {"inputs": {"text": "hi"}, "module": "echo", "version": "v2"}


def test_a_long_poll_waits_longer_for_its_answer(client_for: Any) -> None:
    client, seen = client_for(lambda r: httpx.Response(200, json=job(status="running")))
    client.job("j1")
    client.job("j1", wait=12.5)
    plain, polled = seen.requests
    assert dict(plain.url.params) == {}
    assert dict(polled.url.params) == {"wait": "12.5"}
    assert plain.extensions["timeout"]["read"] == 30.0
    assert polled.extensions["timeout"]["read"] == 42.5
    assert polled.extensions["timeout"]["connect"] == 30.0


def test_waiting_long_polls_until_the_job_has_finished(client_for: Any) -> None:
    states = iter(["queued", "running", "running", "succeeded"])
    outputs = {"text": "hi", "length": 2}
    client, seen = client_for(
        lambda r: httpx.Response(
            200, json=job(status=(s := next(states)), outputs=outputs if s == "succeeded" else None)
        )
    )
    finished = client.wait_job("j1", timeout=60, poll_wait=7)
    assert (finished.status, finished.outputs) == ("succeeded", outputs)
    waits = [r.url.params.get("wait") for r in seen.requests]
    assert waits == [None, "7", "7", "7"]


@pytest.mark.parametrize("status", ["failed", "canceled"])
def test_a_job_that_failed_or_was_canceled_has_finished_too(client_for: Any, status: str) -> None:
    error = {"code": "module_error", "message": "boom", "status": 500}
    client, seen = client_for(lambda r: httpx.Response(200, json=job(status=status, error=error)))
    finished = client.wait_job("j1", timeout=60)
    assert finished.status == status and finished.error is not None
    assert len(seen.requests) == 1


def test_a_long_poll_never_asks_past_the_deadline(client_for: Any) -> None:
    def hold(request: httpx.Request) -> httpx.Response:
        time.sleep(float(request.url.params.get("wait", 0)))  # as the server holds a long poll
        return httpx.Response(200, json=job(status="running"))

    client, seen = client_for(hold)
    started = time.monotonic()
    with pytest.raises(WaitTimeout, match=r"job j1 did not finish within 0\.2 s \(it is running\)") as caught:
        client.wait_job("j1", timeout=0.2, poll_wait=30)
    assert time.monotonic() - started < 5
    assert isinstance(caught.value.last, JobInfo) and caught.value.last.status == "running"
    waits = [float(r.url.params["wait"]) for r in seen.requests[1:]]
    assert waits[0] == pytest.approx(0.2, abs=0.05)
    assert all(0 <= wait <= 0.2 for wait in waits)


def test_a_zero_timeout_looks_once(client_for: Any) -> None:
    client, seen = client_for(lambda r: httpx.Response(200, json=job(status="queued")))
    with pytest.raises(WaitTimeout):
        client.wait_job("j1", timeout=0)
    assert len(seen.requests) == 1


def test_listing_jobs_sends_the_filters_given(client_for: Any) -> None:
    page = {"jobs": [job(), job(id="j2", status="succeeded")], "next_cursor": "c2"}
    client, seen = client_for(lambda r: httpx.Response(200, json=page))
    found = client.jobs(module="echo", status="succeeded", since="1h", limit=2, cursor="c1")
    assert [j.id for j in found.jobs] == ["j1", "j2"] and found.next_cursor == "c2"
    client.jobs()
    query = {"module": "echo", "status": "succeeded", "since": "1h", "limit": "2", "cursor": "c1"}
    assert dict(seen.requests[0].url.params) == query
    assert dict(seen.requests[1].url.params) == {"limit": "100"}
    assert seen.requests[0].url.path == "/base/api/v1/jobs"


def test_canceling_a_finished_job_is_refused(client_for: Any) -> None:
    refusal = {"error": {"code": "job_finished", "message": "job j1 has already finished"}}
    client, seen = client_for(lambda r: httpx.Response(409, json=refusal))
    with pytest.raises(ApiError) as caught:
        client.cancel_job("j1")
    assert (caught.value.status, caught.value.code) == (409, "job_finished")
    assert (seen.requests[0].method, seen.requests[0].url.path) == ("POST", "/base/api/v1/jobs/j1/cancel")


def test_deliveries_are_read(client_for: Any) -> None:
    attempt = {
        "message_id": "msg_1",
        "event": "completed",
        "attempt": 1,
        "at": "2026-01-02T03:04:05+00:00",
        "url": "https://hooks.example/in",
        "status": 500,
        "error": "500 Internal Server Error",
        "duration_ms": 12.5,
        "delivered": False,
    }
    answer = {"attempts": [attempt], "pending": [{"event": "completed", "next_attempt_at": "later"}]}
    client, seen = client_for(lambda r: httpx.Response(200, json=answer))
    found = client.job_deliveries("j1")
    assert found.attempts[0].status == 500 and found.pending == answer["pending"]
    assert seen.requests[0].url.path == "/base/api/v1/jobs/j1/deliveries"


def test_a_batch_names_its_input_and_output(client_for: Any) -> None:
    client, seen = client_for(lambda r: httpx.Response(202, json=job(kind="batch", output="data/out/")))
    queued = client.submit_batch(
        "echo", input="data/in.jsonl", output="data/out/", parameters={"suffix": "!"}, webhook="https://h/"
    )
    assert (queued.kind, queued.output) == ("batch", "data/out/")
    (request,) = seen.requests
    assert (request.method, request.url.path) == ("POST", "/base/api/v1/modules/echo/batches")
    assert json.loads(request.content) == {
        "input": "data/in.jsonl",
        "output": "data/out/",
        "parameters": {"suffix": "!"},
        "webhook": "https://h/",
    }


def test_the_webhook_secret_is_read_or_rotated(client_for: Any) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        made = "whsec_c2VjcmV0" if request.method == "POST" else None
        return httpx.Response(200, json={"secret": made, "created_at": "2026-01-02T03:04:05+00:00"})

    client, seen = client_for(answer)
    assert client.webhook_secret().secret is None
    assert client.rotate_webhook_secret() == WebhookSecret(
        secret="whsec_c2VjcmV0", created_at="2026-01-02T03:04:05+00:00"
    )
    assert [(r.method, r.url.path) for r in seen.requests] == [
        ("GET", "/base/api/v1/webhooks/secret"),
        ("POST", "/base/api/v1/webhooks/secret"),
    ]


def test_job_ids_are_quoted_into_the_path(client_for: Any) -> None:
    client, seen = client_for(lambda r: httpx.Response(200, json=job()))
    client.job("a/../b")
    assert seen.requests[0].url.raw_path == b"/base/api/v1/jobs/a%2F..%2Fb"
