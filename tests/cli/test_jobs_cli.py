"""`modelport jobs ...`, `modelport batch` and `modelport webhooks secret`: first what they refuse before any
request and how a scripted server's answers reach stdout, stderr and the exit code, then jobs and a batch of
the `echo` module end to end against a real `modelport server`."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from email.message import Message
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from drive import push_and_deploy
from platform_server import ADMIN_TOKEN, ServerProcess
from rich.progress import Progress
from standardwebhooks import Webhook
from typer.testing import CliRunner

from modelport.cli.batch import BatchBar
from modelport.cli.main import app
from modelport.client import ApiError, Client
from modelport.core.records import JobInfo

runner = CliRunner()


def run(*args: str) -> Any:
    return runner.invoke(app, list(args), env={"COLUMNS": "200"})


def job(**fields: Any) -> dict[str, Any]:
    """A job as the server describes it."""
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


SUCCEEDED = job(
    status="succeeded",
    served_version="v1.0.0",
    attempts=1,
    started_at="2026-01-02T03:04:06+00:00",
    finished_at="2026-01-02T03:04:07+00:00",
    outputs={"text": "hi!", "length": 2},
    request_id="r1",
)
FAILED = job(
    status="failed",
    attempts=1,
    error={"code": "module_error", "message": "the module raised ValueError", "status": 500},
)


def form(request: httpx.Request) -> list[tuple[str, str | None, bytes]]:
    """(name, file name, content) of each part of a multipart request, in order."""
    head = f"Content-Type: {request.headers['Content-Type']}\r\n\r\n".encode()
    message = BytesParser(policy=HTTP).parsebytes(head + request.content)
    found = []
    for part in message.iter_parts():
        assert isinstance(part, Message)
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        found.append(
            (str(part.get_param("name", header="content-disposition")), part.get_filename(), payload)
        )
    return found


# Refused before any request


@pytest.mark.usefixtures("server_url", "no_server")
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["jobs", "submit", "echo", "-i", "text"], "expected name=value"),
        (["jobs", "submit", "echo", "-i", "image=@missing.png"], "missing.png is not a file"),
        (["jobs", "submit", "echo", "-p", "=3"], "expected name=value"),
        (["batch", "echo", "--input", "d/in.jsonl", "--output", "d/out/", "-p", "x"], "expected name=value"),
    ],
)
def test_values_that_cannot_be_read_exit_2(args: list[str], message: str) -> None:
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert result.stdout == ""


@pytest.mark.usefixtures("server_url", "no_server")
def test_a_parameter_cannot_be_a_file(tmp_path: Path) -> None:
    (tmp_path / "p.txt").write_text("x")
    result = run("jobs", "submit", "echo", "-p", f"suffix=@{tmp_path / 'p.txt'}")
    assert result.exit_code == 2
    assert "parameter suffix cannot be a file" in result.stderr


@pytest.mark.usefixtures("server_url", "no_server")
@pytest.mark.parametrize(
    "args",
    [
        ["jobs", "submit", "echo", "--event", "finished"],
        ["jobs", "list", "--status", "done"],
        ["jobs", "list", "--kind", "nightly"],
        ["batch", "echo", "--input", "d/in.jsonl"],
    ],
)
def test_bad_options_are_usage_errors(args: list[str]) -> None:
    assert run(*args).exit_code == 2


# Against a scripted server


def test_submit_sends_a_predict_form_and_describes_the_job(answer: Any, tmp_path: Path) -> None:
    image = tmp_path / "cat.png"
    image.write_bytes(b"\x89PNG\r\n")
    seen = answer(
        lambda r: httpx.Response(202, json=job(webhook="https://h/", webhook_events_filter=["started"]))
    )
    result = run(
        "jobs",
        "submit",
        "echo",
        "-i",
        "text=hi",
        "-i",
        f"image=@{image}",
        "-p",
        "suffix=!",
        "--output-field",
        "text",
        "--model-key",
        "small",
        "--version",
        "v1.0.0",
        "--webhook",
        "https://h/",
        "--event",
        "started",
        "--event",
        "completed",
        "--idempotency-key",
        "order-7",
    )
    assert result.exit_code == 0, result.output
    (request,) = seen
    assert (request.method, request.url.path) == ("POST", "/api/v1/modules/echo/jobs")
    assert dict(request.url.params) == {"version": "v1.0.0"}
    assert request.headers["Idempotency-Key"] == "order-7"
    assert form(request) == [
        ("inputs.text", None, b"hi"),
        ("parameters.suffix", None, b"!"),
        ("output_fields", None, b"text"),
        ("model_key", None, b"small"),
        ("webhook", None, b"https://h/"),
        ("webhook_events_filter", None, b"started"),
        ("webhook_events_filter", None, b"completed"),
        ("inputs.image", "cat.png", b"\x89PNG\r\n"),
    ]
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["id:", "j1"]
    assert ["status:", "queued"] in [line.split() for line in lines]
    assert "webhook:   https://h/ (started)" in lines
    assert "modelport jobs wait j1" in result.stderr


def test_submit_wait_prints_the_outputs_and_exits_0(answer: Any) -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        return (
            httpx.Response(202, json=job())
            if request.method == "POST"
            else httpx.Response(200, json=SUCCEEDED)
        )

    seen = answer(handle)
    result = run("jobs", "submit", "echo", "-i", "text=hi", "--wait", "-o", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == JobInfo.model_validate(SUCCEEDED).model_dump(mode="json")
    assert [(r.method, r.url.path) for r in seen] == [
        ("POST", "/api/v1/modules/echo/jobs"),
        ("GET", "/api/v1/jobs/j1"),
    ]


def test_the_description_ends_with_the_outputs(answer: Any) -> None:
    answer(lambda r: httpx.Response(200, json=SUCCEEDED))
    result = run("jobs", "get", "j1")
    assert result.exit_code == 0, result.output
    assert result.stdout.endswith('outputs:\n  {\n    "text": "hi!",\n    "length": 2\n  }\n')
    assert "module:    echo v1.0.0\n" in result.stdout
    assert "request:   r1\n" in result.stdout


@pytest.mark.parametrize("command", [["jobs", "wait", "j1"], ["jobs", "submit", "echo", "--wait"]])
def test_a_failed_job_waited_for_exits_1_with_its_error(answer: Any, command: list[str]) -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        return (
            httpx.Response(202, json=job()) if request.method == "POST" else httpx.Response(200, json=FAILED)
        )

    answer(handle)
    result = run(*command)
    assert result.exit_code == 1
    assert "error:     the module raised ValueError (module_error, 500)" in result.stdout
    assert "job j1 failed: the module raised ValueError (module_error)" in result.stderr


def test_a_canceled_job_waited_for_exits_1(answer: Any) -> None:
    answer(lambda r: httpx.Response(200, json=job(status="canceled")))
    result = run("jobs", "wait", "j1", "-o", "yaml")
    assert result.exit_code == 1
    assert yaml.safe_load(result.stdout)["status"] == "canceled"
    assert "job j1 canceled" in result.stderr


def test_waiting_past_the_timeout_exits_1(answer: Any) -> None:
    def hold(request: httpx.Request) -> httpx.Response:
        time.sleep(float(request.url.params.get("wait", 0)))  # as the server holds a long poll
        return httpx.Response(200, json=job(status="running"))

    seen = answer(hold)
    result = run("jobs", "wait", "j1", "--timeout", "0.2")
    assert result.exit_code == 1
    assert "job j1 did not finish within 0.2 s (it is running)" in result.stderr
    assert result.stdout == ""
    assert all(float(r.url.params.get("wait", 0)) <= 0.2 for r in seen)


def test_a_job_that_has_finished_cannot_be_canceled(answer: Any) -> None:
    refusal = {"error": {"code": "job_finished", "message": "job j1 has already finished"}}
    seen = answer(lambda r: httpx.Response(409, json=refusal))
    result = run("jobs", "cancel", "j1")
    assert result.exit_code == 1
    assert result.stderr == "error: job j1 has already finished (job_finished)\n"
    assert (seen[0].method, seen[0].url.path) == ("POST", "/api/v1/jobs/j1/cancel")


def test_a_request_the_server_finds_invalid_exits_2(answer: Any) -> None:
    details = [{"field": "inputs.text", "code": "missing", "message": "required"}]
    refusal = {"error": {"code": "validation_failed", "message": "invalid request", "details": details}}
    answer(lambda r: httpx.Response(422, json=refusal))
    result = run("jobs", "submit", "echo")
    assert result.exit_code == 2
    assert "invalid request (validation_failed)" in result.stderr
    assert "inputs.text: required" in result.stderr


def test_jobs_are_listed_as_a_table_or_as_the_page(answer: Any) -> None:
    batch = job(
        id="b1",
        kind="batch",
        status="running",
        progress={"done": 40, "total": None, "failed": 0, "rate": None, "eta_seconds": None},
    )
    page = {"jobs": [SUCCEEDED, FAILED, batch], "next_cursor": "c2"}
    seen = answer(lambda r: httpx.Response(200, json=page))
    result = run(
        "jobs",
        "list",
        "--module",
        "echo",
        "--status",
        "running",
        "--kind",
        "batch",
        "--since",
        "1h",
        "--limit",
        "3",
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "CREATED\tID\tMODULE\tKIND\tSTATUS\tVERSION\tATTEMPTS\tPROGRESS\tERROR",
        "2026-01-02 03:04:05\tj1\techo\tjob\tsucceeded\tv1.0.0\t1\t-\t-",
        "2026-01-02 03:04:05\tj1\techo\tjob\tfailed\t-\t1\t-\tmodule_error",
        "2026-01-02 03:04:05\tb1\techo\tbatch\trunning\t-\t0\t40/?\t-",
    ]
    assert "more: --cursor c2" in result.stderr
    query = {"module": "echo", "status": "running", "kind": "batch", "since": "1h", "limit": "3"}
    assert dict(seen[0].url.params) == query
    listed = run("get", "jobs", "-o", "json")
    assert listed.exit_code == 0, listed.output
    assert [j["id"] for j in json.loads(listed.stdout)["jobs"]] == ["j1", "j1", "b1"]


def test_deliveries_are_a_table_and_pending_events_follow(answer: Any) -> None:
    attempt = {
        "message_id": "msg_1",
        "event": "job.completed",
        "attempt": 1,
        "at": "2026-01-02T03:04:08+00:00",
        "url": "https://h/",
        "status": None,
        "error": "connection refused",
        "duration_ms": 3.2,
        "delivered": False,
    }
    pending = {
        "message_id": "msg_1",
        "event": "job.completed",
        "next_at": "2026-01-02T03:04:13+00:00",
        "attempts": 1,
    }
    answer(lambda r: httpx.Response(200, json={"attempts": [attempt], "pending": [pending]}))
    result = run("jobs", "deliveries", "j1")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "AT\tEVENT\tATTEMPT\tURL\tSTATUS\tMS\tDELIVERED\tERROR",
        "2026-01-02 03:04:08\tjob.completed\t1\thttps://h/\t-\t3\tno\tconnection refused",
        "pending: job.completed, next attempt at 2026-01-02 03:04:13",
    ]


def test_the_webhook_secret_is_printed_only_when_made(answer: Any) -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        made = "whsec_c2VjcmV0" if request.method == "POST" else None
        return httpx.Response(200, json={"secret": made, "created_at": "2026-01-02T03:04:05+00:00"})

    seen = answer(handle)
    shown = run("webhooks", "secret")
    assert (shown.exit_code, shown.stdout) == (0, "created: 2026-01-02 03:04:05\n")
    rotated = run("webhooks", "secret", "--rotate")
    assert (rotated.exit_code, rotated.stdout) == (0, "whsec_c2VjcmV0\n")
    assert "shown only now" in rotated.stderr
    assert [r.method for r in seen] == ["GET", "POST"]


def test_without_a_webhook_secret_the_command_says_how_to_make_one(answer: Any) -> None:
    message = "you have no webhook signing secret yet; make one with `POST /api/v1/webhooks/secret`"
    answer(
        lambda r: httpx.Response(
            404, json={"error": {"code": "webhook_secret_not_found", "message": message}}
        )
    )
    result = run("webhooks", "secret")
    assert result.exit_code == 1
    assert "modelport webhooks secret --rotate" in result.stderr
    assert result.stdout == ""


def test_a_batch_reads_its_parameters_as_json_or_text(answer: Any) -> None:
    seen = answer(lambda r: httpx.Response(202, json=job(kind="batch", output="d/out/")))
    result = run(
        "batch",
        "echo",
        "--input",
        "d/in.jsonl",
        "--output",
        "d/out/",
        *("-p", "n=3", "-p", "flag=true", "-p", "suffix=!", "-p", 'code="007"'),
        "--output-field",
        "text",
        "--format",
        "json",
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["output"] == "d/out/"
    (request,) = seen
    assert (request.method, request.url.path) == ("POST", "/api/v1/modules/echo/batches")
    assert json.loads(request.content) == {
        "input": "d/in.jsonl",
        "output": "d/out/",
        "parameters": {"n": 3, "flag": True, "suffix": "!", "code": "007"},
        "output_fields": ["text"],
    }


@pytest.mark.parametrize(("final", "code"), [("succeeded", 0), ("failed", 1), ("canceled", 1)])
def test_a_batch_waited_for_ends_with_its_final_state(answer: Any, final: str, code: int) -> None:
    def progress(done: int, total: int | None) -> dict[str, Any]:
        return {"done": done, "total": total, "failed": 0, "rate": 10.0, "eta_seconds": 1.0}

    states = iter(
        [
            job(kind="batch", status="running", progress=progress(0, None)),
            job(kind="batch", status="running", progress=progress(5, 10)),
            job(kind="batch", status=final, progress=progress(10, 10), output="d/out/"),
        ]
    )
    seen = answer(lambda r: httpx.Response(202 if r.method == "POST" else 200, json=next(states)))
    result = run("batch", "echo", "--input", "d/in.jsonl", "--output", "d/out/", "--wait")
    assert result.exit_code == code, result.output
    assert "progress:  10/10 records, 0 failed, 10/s, ETA 1 s\n" in result.stdout
    assert "results:   d/out/\n" in result.stdout
    assert [r.url.params.get("wait") for r in seen[1:]] == ["1", "1"]


def test_a_batch_that_does_not_finish_in_time_says_how_far_it_got(answer: Any) -> None:
    running = job(
        kind="batch",
        status="running",
        progress={"done": 5, "total": 10, "failed": 1, "rate": 2.0, "eta_seconds": 2.5},
    )
    answer(lambda r: httpx.Response(202 if r.method == "POST" else 200, json=running))
    result = run("batch", "echo", "--input", "d/in.jsonl", "--output", "d/out/", "--wait", "--timeout", "0")
    assert result.exit_code == 1
    assert (
        "batch j1 did not finish within 0 s (it is running: 5/10 records, 1 failed, 2/s, ETA 2 s)"
        in result.stderr
    )


def test_the_batch_bar_shows_the_servers_estimates() -> None:
    running = JobInfo.model_validate(job(kind="batch", status="running"))
    with Progress(disable=True) as progress:
        bar = BatchBar(progress, running)
        (task,) = progress.tasks
        assert (task.total, task.fields["counts"]) == (None, "")
        counted = {"done": 250, "total": 1000, "failed": 3, "rate": 41.66, "eta_seconds": 185.2}
        bar.show(
            running.model_copy(update={"progress": JobInfo.model_validate(job(progress=counted)).progress})
        )
        assert (task.completed, task.total) == (250, 1000)
        assert task.fields == {"counts": "250/1000, 3 failed", "rate": "41.7/s", "eta": "ETA 3 min 5 s"}


# End to end: jobs and a batch of `echo` on a real platform server


class Receiver:
    """A webhook receiver on 127.0.0.1 (port 0) that keeps each request's headers and body."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                received.append((dict(self.headers.items()), body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)

    def wait_for(self, count: int, timeout: float = 20) -> list[tuple[dict[str, str], bytes]]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(self.received) >= count, self.received
        return self.received


@pytest.fixture
def jobs_platform(tmp_path: Path, database_url: str) -> Iterator[ServerProcess]:
    """A real `modelport server` on each database backend, its webhooks allowed to reach 127.0.0.1."""
    server = ServerProcess(
        tmp_path / "server",
        token=ADMIN_TOKEN,
        database_url=database_url,
        env={"MODELPORT_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.1/32"},
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def ok(*args: str) -> Any:
    result = run(*args)
    assert result.exit_code == 0, f"{args}: {result.output}"
    return result


@pytest.mark.slow
@pytest.mark.usefixtures("server_url")  # no saved login of the machine's user
def test_jobs_and_a_batch_from_the_command_line(
    jobs_platform: ServerProcess,
    git_module: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("MODELPORT_URL", jobs_platform.url)
    monkeypatch.setenv("MODELPORT_TOKEN", jobs_platform.token)
    with jobs_platform.client() as admin:
        push_and_deploy(admin, git_module("echo"), "echo", "v1")
        applied = admin.post("/api/v1/apply", json={"documents": [DATA_BUCKET]})
        assert applied.status_code == 200, applied.text

    assert "modelport webhooks secret --rotate" in run("webhooks", "secret").stderr
    secret = ok("webhooks", "secret", "--rotate").stdout.strip()
    assert secret.startswith("whsec_")
    assert ok("webhooks", "secret").stdout.startswith("created: ")

    with Receiver() as receiver:
        submit = ("jobs", "submit", "echo", "-i", "text=hi", "-p", "suffix=!", "--webhook", receiver.url)
        events = ("--event", "started", "--event", "completed", "--idempotency-key", "k1")
        done = json.loads(ok(*submit, *events, "--wait", "--timeout", "60", "-o", "json").stdout)
        assert (done["status"], done["served_version"]) == ("succeeded", "v1")
        assert done["outputs"] == {"text": "hi!", "length": 2}
        job_id = done["id"]

        again = json.loads(ok(*submit, *events, "-o", "json").stdout)
        assert again["id"] == job_id
        other = run("jobs", "submit", "echo", "-i", "text=bye", "--idempotency-key", "k1")
        assert other.exit_code == 2
        assert "(idempotency_conflict)" in other.stderr

        delivered = receiver.wait_for(2)
        verifier = Webhook(secret)
        payloads = [verifier.verify(body, headers) for headers, body in delivered]
        assert sorted(p["type"] for p in payloads) == ["job.completed", "job.started"]

    assert json.loads(ok("jobs", "get", job_id, "-o", "json").stdout) == done
    listed = json.loads(ok("jobs", "list", "--module", "echo", "--status", "succeeded", "-o", "json").stdout)
    assert [j["id"] for j in listed["jobs"]] == [job_id]
    table = ok("get", "jobs", "--since", "1h").stdout.splitlines()
    assert table[1].split("\t")[1:5] == [job_id, "echo", "job", "succeeded"]
    attempts = json.loads(ok("jobs", "deliveries", job_id, "-o", "json").stdout)["attempts"]
    assert sorted((a["event"], a["status"], a["delivered"]) for a in attempts) == [
        ("job.completed", 204, True),
        ("job.started", 204, True),
    ]

    finished = run("jobs", "cancel", job_id)
    assert finished.exit_code == 1
    assert "(job_finished)" in finished.stderr
    missing = run("jobs", "wait", "no-such-job")
    assert missing.exit_code == 1
    assert "(job_not_found)" in missing.stderr

    with Client(jobs_platform.url, jobs_platform.token) as client:
        put = client.put_job("my-job-1", "echo", {"text": "put"})
        assert client.put_job("my-job-1", "echo", {"text": "put"}).id == put.id == "my-job-1"
        with pytest.raises(ApiError) as refused:
            client.put_job("my-job-1", "echo", {"text": "other"})
        assert refused.value.code == "job_exists"
        assert client.wait_job("my-job-1", timeout=60, poll_wait=5).outputs == {"text": "put", "length": 3}

        records = "".join(json.dumps({"text": t}) + "\n" for t in ("a", "bb", "ccc"))
        upload = tmp_path / "records.jsonl"
        upload.write_text(records)
        client.upload("data", "in/records.jsonl", upload)

        batch = (
            "batch",
            "echo",
            "--input",
            "data/in/records.jsonl",
            "--output",
            "data/out/",
            "-p",
            "suffix=?",
        )
        ended = json.loads(ok(*batch, "--wait", "--timeout", "60", "--format", "json").stdout)
        assert (ended["kind"], ended["status"], ended["output"]) == ("batch", "succeeded", "data/out/")
        assert (ended["progress"]["done"], ended["progress"]["total"], ended["progress"]["failed"]) == (
            3,
            3,
            0,
        )
        written = sorted(o.key for o in client.walk_objects("data", "out/"))
        assert written == ["out/_batch.json", "out/part-00000.jsonl"]  # the marker names the batch
        part = written[1]
        target = tmp_path / "results.jsonl"
        client.download("data", part, target)
    lines = [json.loads(line) for line in target.read_text().splitlines()]
    assert lines == [
        {"index": 0, "outputs": {"text": "a?", "length": 1}},
        {"index": 1, "outputs": {"text": "bb?", "length": 2}},
        {"index": 2, "outputs": {"text": "ccc?", "length": 3}},
    ]


DATA_BUCKET = {"apiVersion": "modelport/v1", "kind": "Storage", "metadata": {"name": "data"}, "spec": {}}
