"""Webhooks from a real `modelport server`: a client that submits a slow job and goes away is told of the
result in a signed message, and a receiver that was down gets every event afterwards, exactly one
`job.completed` per job once deduplicated by `webhook-id`.

The server may reach 127.0.0.0/8 (`MODELPORT_WEBHOOK_ALLOWED_NETWORKS`), and redelivers on a schedule scaled
down from seconds and minutes to milliseconds and seconds (`MODELPORT_WEBHOOK_RETRY_SECONDS=0.05`: 0.05 s,
3 s, 18 s, ...).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from drive import deploy, push, wait_built, wait_deployment
from manifests import module_copy
from platform_server import ADMIN_TOKEN, ServerProcess
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

pytestmark = pytest.mark.slow


class Receiver:
    """An HTTP server on 127.0.0.1 that keeps every POST it is sent, from `start()` to `stop()`, on a port
    chosen once, so that it can be down and come back at the same address."""

    def __init__(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                with receiver.lock:
                    receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def events(self, secret: str) -> dict[str, dict[str, Any]]:
        """Every message received, verified with `secret`, deduplicated by `webhook-id`."""
        with self.lock:
            received = list(self.received)
        verifier = Webhook(secret)
        return {headers["webhook-id"]: verifier.verify(body, headers) for headers, body in received}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("webhook-delivery")
    env = {
        "MODELPORT_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
        "MODELPORT_WEBHOOK_RETRY_SECONDS": "0.05",
    }
    server = ServerProcess(root / "server", token=ADMIN_TOKEN, env=env)
    server.start()
    try:
        with server.client() as admin:
            assert push(admin, module_copy(root, "jobs", "slowpoke", None), version="v1").status_code == 201
            assert wait_built(admin, "slowpoke", "v1")["build_status"] == "ready"
            assert (
                wait_deployment(admin, "slowpoke", deploy(admin, "slowpoke", "v1")["generation"])["status"]
                == "ready"
            )
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def secret(server: ServerProcess) -> str:
    with server.client() as admin:
        made = admin.post("/api/v1/webhooks/secret")
    assert made.status_code == 200, made.text
    return str(made.json()["secret"])


def wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_client_that_went_away_gets_the_result_signed(server: ServerProcess, secret: str) -> None:
    receiver = Receiver()
    receiver.start()
    try:
        body = {
            "inputs": {"text": "read me later"},
            "parameters": {"seconds": 1.5},
            "webhook": receiver.url,
            "webhook_events_filter": ["started", "completed"],
        }
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as client:
            accepted = client.post("/api/v1/modules/slowpoke/jobs", json=body)
        assert accepted.status_code == 202, accepted.text  # and the client is gone: its connection closed
        job = accepted.json()["id"]

        def completed() -> bool:
            return any(e["type"] == "job.completed" for e in receiver.events(secret).values())

        wait_for(completed, 30, "the completed event")
        events = sorted(receiver.events(secret).values(), key=lambda event: event["type"] != "job.started")
        assert [event["type"] for event in events] == ["job.started", "job.completed"]
        done = events[1]["data"]
        assert (done["id"], done["status"], done["outputs"]["text"]) == (job, "succeeded", "read me later")
        # A message signed with another secret does not pass.
        headers, raw = receiver.received[-1]
        with pytest.raises(WebhookVerificationError):
            Webhook("whsec_" + "A" * 43 + "=").verify(raw, headers)
        assert json.loads(raw)["data"]["id"] == job
        with server.client() as admin:
            deliveries = admin.get(f"/api/v1/jobs/{job}/deliveries").json()
        assert {a["event"] for a in deliveries["attempts"] if a["delivered"]} == {
            "job.started",
            "job.completed",
        }
        assert deliveries["pending"] == []
    finally:
        receiver.stop()


def test_a_receiver_that_was_down_gets_every_event_once(server: ServerProcess, secret: str) -> None:
    receiver = Receiver()  # not started: connections to it are refused
    body = {"inputs": {"text": "t"}, "parameters": {"seconds": 0}, "webhook": receiver.url}
    with server.client() as admin:
        jobs = []
        for index in range(20):
            answer = admin.post(
                "/api/v1/modules/slowpoke/jobs", json={**body, "inputs": {"text": f"job {index}"}}
            )
            assert answer.status_code == 202, answer.text
            jobs.append(answer.json()["id"])
        for job in jobs:
            assert admin.get(f"/api/v1/jobs/{job}", params={"wait": 20}).json()["status"] == "succeeded"

        def tried() -> bool:
            return all(admin.get(f"/api/v1/jobs/{job}/deliveries").json()["attempts"] for job in jobs)

        wait_for(tried, 20, "a first (failed) attempt at every job's event")
        failed = admin.get(f"/api/v1/jobs/{jobs[0]}/deliveries").json()
        assert failed["attempts"][0]["delivered"] is False and failed["attempts"][0]["status"] is None
        assert failed["pending"], "a failed event waits for its next attempt"
        receiver.start()
        try:
            wait_for(
                lambda: len(receiver.events(secret)) >= len(jobs),
                40,
                "every event after the receiver came back",
            )
            time.sleep(0.5)  # anything sent twice would have arrived by now
            events = receiver.events(secret)
            completed = [event["data"]["id"] for event in events.values() if event["type"] == "job.completed"]
            assert sorted(completed) == sorted(jobs)  # one per job, once deduplicated by webhook-id
            for job in jobs:
                deliveries = admin.get(f"/api/v1/jobs/{job}/deliveries").json()
                assert deliveries["pending"] == []
                assert deliveries["attempts"][-1]["delivered"] is True
                assert len({a["message_id"] for a in deliveries["attempts"]}) == 1  # one id for every attempt
        finally:
            receiver.stop()


def test_an_idempotency_key_covers_the_webhook(server: ServerProcess, secret: str) -> None:
    receiver = Receiver()
    body = {"inputs": {"text": "once"}, "parameters": {"seconds": 0}, "webhook": receiver.url}
    key = {"Idempotency-Key": "hooked-once"}
    with server.client() as admin:
        first = admin.post("/api/v1/modules/slowpoke/jobs", json=body, headers=key)
        assert first.status_code == 202, first.text
        again = admin.post("/api/v1/modules/slowpoke/jobs", json=body, headers=key)
        assert (again.status_code, again.json()["id"]) == (200, first.json()["id"])
        elsewhere = {**body, "webhook": receiver.url + "/other"}
        refused = admin.post("/api/v1/modules/slowpoke/jobs", json=elsewhere, headers=key)
        assert (refused.status_code, refused.json()["error"]["code"]) == (422, "idempotency_conflict")
        more = {**body, "webhook_events_filter": ["started", "completed"]}
        refused = admin.post("/api/v1/modules/slowpoke/jobs", json=more, headers=key)
        assert (refused.status_code, refused.json()["error"]["code"]) == (422, "idempotency_conflict")
