"""Asynchronous jobs on a real `modelport server` (SQLite): submitting (JSON, a form with a file, `Prefer:
respond-async`, idempotency keys, ids of the caller's choosing), long polls, who sees which job, the requests
refused with nothing queued, cancellation of queued and running jobs, retries, the request log and the
OpenAPI document.

One server serves every test, started with a job concurrency of 1 per module, a 0.1 s retry backoff and a
64 KiB body limit. Its world is made once: `slowpoke` (the `jobs` fixture: sleeps, raises on "boom", dies on
"die"; its `Api` allows 2 attempts), `retrier` (the same code, whose `Api` retries module errors, 3 attempts)
and `files` (the `files` fixture), all owned by `/team`; `echo` (the `echo` fixture) owned by nobody.
`/callers` may call all four. `dev` is a developer in `/team`, `ann` and `bob` users in `/callers`, `eve` a
user in no group.
"""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from drive import deploy, push, wait_built, wait_deployment
from manifests import api, module_copy
from PIL import Image
from platform_server import ADMIN_TOKEN, ServerProcess, alive

from modelport.core.records import JobInfo, JobList

pytestmark = pytest.mark.slow

FINISHED = ("succeeded", "failed", "canceled")
MAX_BODY = 65536
MiB = 1024 * 1024
MODULES = {  # name: (fixture, owner group, the `jobs` of its `Api`)
    "slowpoke": ("jobs", "/team", {"maxAttempts": 2}),
    "retrier": ("jobs", "/team", {"maxAttempts": 3, "retryModuleErrors": True, "timeoutSeconds": 1}),
    "files": ("files", "/team", None),
    "echo": ("echo", None, None),
}
PEOPLE = {"dev": ("developer", "/team"), "ann": ("user", "/callers"), "bob": ("user", "/callers")}


@dataclass
class World:
    server: ServerProcess
    tokens: dict[str, str] = field(default_factory=dict)

    def client(self, who: str) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[who]}"}
        return httpx.Client(base_url=self.server.url, headers=headers, timeout=30)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("jobs")
    env = {
        "MODELPORT_JOB_CONCURRENCY": "1",
        "MODELPORT_JOB_RETRY_SECONDS": "0.1",
        "MODELPORT_MAX_BODY_BYTES": str(MAX_BODY),
    }
    server = ServerProcess(root / "server", token=ADMIN_TOKEN, env=env)
    server.start()
    try:
        world = World(server, tokens={"admin": ADMIN_TOKEN})
        with server.client() as admin:
            make_world(world, admin, root)
        yield world
    finally:
        server.stop()


def make_world(world: World, admin: httpx.Client, root: Path) -> None:
    for path in ("/team", "/callers"):
        assert admin.post("/api/v1/groups", json={"path": path}).status_code == 201
    for name, (role, group) in {**PEOPLE, "eve": ("user", None)}.items():
        made = admin.post(
            "/api/v1/users", json={"name": name, "role": role, "groups": [group] if group else []}
        )
        assert made.status_code == 201, made.text
        token = admin.post("/api/v1/tokens", json={"name": "tests", "user": made.json()["id"]})
        world.tokens[name] = token.json()["token"]
    for name, (fixture, owner, _) in MODULES.items():
        directory = module_copy(root, fixture, name, owner)
        if fixture == "files":
            (directory / "requirements.txt").write_text("pillow\n")
        assert push(admin, directory, version="v1").status_code == 201
    for name in MODULES:
        built = wait_built(admin, name, "v1")
        assert built["build_status"] == "ready", built["build_error"]
    generations = {name: deploy(admin, name, "v1")["generation"] for name in MODULES}
    for name, generation in generations.items():
        assert wait_deployment(admin, name, generation)["status"] == "ready"
    documents = []
    for name, (_, _, jobs) in MODULES.items():
        spec: dict[str, Any] = {"access": {"groups": ["/callers"]}}
        if jobs is not None:
            spec["jobs"] = jobs
        documents.append(api(f"{name}-api", name, **spec))
    applied = admin.post("/api/v1/apply", json={"documents": documents})
    assert applied.status_code == 200, applied.text


def submit(
    client: httpx.Client,
    module: str,
    inputs: Any,
    *,
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    **body: Any,
) -> httpx.Response:
    return client.post(
        f"/api/v1/modules/{module}/jobs", json={"inputs": inputs, **body}, params=params, headers=headers
    )


def accepted(response: httpx.Response) -> dict[str, Any]:
    """The job of a 202 answer, checked against `JobInfo` and its `Location`."""
    assert response.status_code == 202, response.text
    job = response.json()
    JobInfo.model_validate(job)
    assert response.headers["location"] == f"/api/v1/jobs/{job['id']}"
    # as committed: a claim in the same transaction as the submission may have started it already
    assert (job["status"], job["attempts"]) in (("queued", 0), ("running", 1)), job
    return dict(job)


def finished(client: httpx.Client, job_id: str, timeout: float = 30) -> dict[str, Any]:
    """The job once it has finished, read with long polls."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"job {job_id} did not finish in {timeout} s"
        answer = client.get(f"/api/v1/jobs/{job_id}", params={"wait": round(min(10.0, left), 1)})
        assert answer.status_code == 200, answer.text
        if answer.json()["status"] in FINISHED:
            return dict(answer.json())


def reaches(client: httpx.Client, job_id: str, status: str, timeout: float = 15) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/api/v1/jobs/{job_id}").json()
        if job["status"] == status:
            return dict(job)
        assert job["status"] not in FINISHED, job
        assert time.monotonic() < deadline, f"job {job_id} was not {status} within {timeout} s: {job}"
        time.sleep(0.05)


def listed(client: httpx.Client, **query: Any) -> list[dict[str, Any]]:
    """Every job the query lists, over as many pages as it takes."""
    jobs: list[dict[str, Any]] = []
    cursor = None
    while True:
        params = {"limit": 1000, **query, **({"cursor": cursor} if cursor else {})}
        answer = client.get("/api/v1/jobs", params=params)
        assert answer.status_code == 200, answer.text
        page = JobList.model_validate(answer.json())
        jobs += [job.model_dump(mode="json") for job in page.jobs]
        if not (cursor := page.next_cursor):
            return jobs


def job_count(world: World) -> int:
    with world.server.client() as admin:
        return len(listed(admin))


def stored_keys(world: World, prefix: str = "jobs/") -> list[str]:
    with world.server.client() as admin:
        answer = admin.get("/api/v1/storage/requests", params={"prefix": prefix})
    assert answer.status_code == 200, answer.text
    return [item["key"] for item in answer.json()["objects"]]


def refused(answer: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error["code"] == code, error
    return dict(error)


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 10, 10)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_job_is_accepted_then_awaited_and_predict_can_answer_with_a_job(world: World) -> None:
    with world.client("ann") as ann:
        answer = submit(ann, "echo", {"text": "hi"}, parameters={"suffix": "!"})
        job = accepted(answer)
        assert (job["kind"], job["module"], job["caller"], job["version"]) == ("job", "echo", "ann", None)
        assert job["outputs"] is None and job["max_attempts"] == 5  # the server's default for echo
        done = ann.get(answer.headers["location"], params={"wait": 20})
        assert done.status_code == 200, done.text
        result = done.json()
        assert result["status"] == "succeeded", result
        assert result["outputs"] == {"text": "hi!", "length": 2}
        assert (result["served_version"], result["attempts"]) == ("v1", 1)
        assert result["started_at"] and result["finished_at"] and result["expires_at"]
        assert result["error"] is None and result["request_id"]

        batch = ann.post(
            "/api/v1/modules/echo/predict",
            json={"inputs": [{"text": "a"}, {"text": "bc"}]},
            headers={"Prefer": "respond-async"},
        )
        queued = accepted(batch)
        assert batch.headers["preference-applied"] == "respond-async"
        assert finished(ann, queued["id"])["outputs"] == [
            {"text": "a", "length": 1},
            {"text": "bc", "length": 2},
        ]
        pinned = accepted(
            ann.post("/api/v1/modules/echo/jobs", params={"version": "v1"}, json={"inputs": {"text": "p"}})
        )
        assert pinned["version"] == "v1"
        assert finished(ann, pinned["id"])["outputs"] == {"text": "p", "length": 1}


def test_an_idempotency_key_or_a_chosen_id_makes_one_job(world: World) -> None:
    key = f"order-{uuid.uuid4().hex}"
    body = {"inputs": {"text": "once"}}
    with world.client("ann") as ann, world.client("bob") as bob:
        first = accepted(ann.post("/api/v1/modules/echo/jobs", json=body, headers={"Idempotency-Key": key}))
        before = job_count(world)
        again = ann.post("/api/v1/modules/echo/jobs", json=body, headers={"Idempotency-Key": key})
        assert again.status_code == 200 and again.json()["id"] == first["id"]
        assert again.headers["location"] == f"/api/v1/jobs/{first['id']}"
        other = ann.post(
            "/api/v1/modules/echo/jobs", json={"inputs": {"text": "twice"}}, headers={"Idempotency-Key": key}
        )
        refused(other, 422, "idempotency_conflict")
        elsewhere = ann.post("/api/v1/modules/slowpoke/jobs", json=body, headers={"Idempotency-Key": key})
        refused(elsewhere, 422, "idempotency_conflict")  # a key names one request, whatever the module
        assert job_count(world) == before

        bobs = accepted(bob.post("/api/v1/modules/echo/jobs", json=body, headers={"Idempotency-Key": key}))
        assert bobs["id"] != first["id"]  # keys are each caller's own

        chosen = f"mine-{uuid.uuid4().hex[:12]}"
        put = ann.put(f"/api/v1/jobs/{chosen}", json={"module": "echo", **body})
        assert put.status_code == 201, put.text
        made = put.json()
        assert (made["id"], put.headers["location"]) == (chosen, f"/api/v1/jobs/{chosen}")
        assert made["status"] in ("queued", "running") and made["module"] == "echo"
        repeat = ann.put(f"/api/v1/jobs/{chosen}", json={"module": "echo", **body})
        assert repeat.status_code == 200 and repeat.json()["id"] == chosen
        count = job_count(world)
        refused(
            ann.put(f"/api/v1/jobs/{chosen}", json={"module": "echo", "inputs": {"text": "x"}}),
            409,
            "job_exists",
        )
        taken = refused(bob.put(f"/api/v1/jobs/{chosen}", json={"module": "echo", **body}), 409, "job_exists")
        assert "once" not in str(taken)
        refused(ann.put("/api/v1/jobs/bad%20id", json={"module": "echo", **body}), 422, "validation_failed")
        assert job_count(world) == count
        assert finished(ann, chosen)["outputs"] == {"text": "once", "length": 4}


def test_a_file_input_is_stored_in_the_request_bucket_before_the_job_is_accepted(world: World) -> None:
    image = png(3, 2)
    with world.client("ann") as ann:
        answer = ann.post(
            "/api/v1/modules/files/jobs",
            files={
                "inputs.image": ("dot.png", image, "image/png"),
                "inputs.document": ("notes.txt", b"hello", "text/plain"),
            },
        )
        job = accepted(answer)
        keys = [key for key in stored_keys(world) if f"/{job['id']}/" in key]
        assert sorted(key.split(f"/{job['id']}/")[1] for key in keys) == [
            "document/notes.txt",
            "image/dot.png",
        ]
        (owner,) = {key.split("/")[1] for key in keys}
        done = finished(ann, job["id"])
    assert done["status"] == "succeeded", done
    outputs = done["outputs"]
    assert outputs["width"] == 3
    assert outputs["info"]["image"] == {
        "content_type": "image/png",
        "filename": "dot.png",
        "size": len(image),
        "bytes_match": True,
    }
    assert outputs["info"]["document"] == {"content_type": "text/plain", "filename": "notes.txt", "size": 5}
    mirrored = outputs["mirrored"]
    assert (mirrored["content_type"], mirrored["url"].startswith("/api/v1/modules/files/outputs/")) == (
        "image/png",
        True,
    )
    with world.client("ann") as ann, world.client("bob") as bob:
        fetched = ann.get(mirrored["url"])
        assert fetched.status_code == 200 and len(fetched.content) == mirrored["size"]
        with Image.open(io.BytesIO(fetched.content)) as picture:
            assert picture.size == (3, 2)
        assert bob.get(mirrored["url"]).status_code == 404  # the caller's own
    assert sorted(stored_keys(world, f"jobs/{owner}/{job['id']}/")) == sorted(keys)  # kept with the job

    before, objects = job_count(world), stored_keys(world)
    with world.client("ann") as ann:
        not_an_image = ann.post(
            "/api/v1/modules/files/jobs", files={"inputs.image": ("x.png", b"not a png", "image/png")}
        )
        refused(not_an_image, 422, "validation_failed")
        too_big = ann.post(
            "/api/v1/modules/files/jobs",
            files={"inputs.image": ("big.png", b"\0" * (MiB + 1), "image/png")},
        )
        error = refused(too_big, 413, "payload_too_large")  # over the field's `max size 1 MB`
        assert [detail["code"] for detail in error["details"]] == ["file_too_large"]
    assert (job_count(world), stored_keys(world)) == (before, objects)


def test_a_job_is_seen_by_its_caller_the_modules_owners_and_admins_only(world: World) -> None:
    with world.client("ann") as ann, world.client("bob") as bob:
        anns = accepted(submit(ann, "slowpoke", {"text": "ann"}))
        anns_echo = accepted(submit(ann, "echo", {"text": "ann"}))
        bobs = accepted(submit(bob, "slowpoke", {"text": "bob"}))
        for job in (anns, anns_echo):
            assert finished(ann, job["id"])["status"] == "succeeded"
        assert finished(bob, bobs["id"])["status"] == "succeeded"
    job_id = anns["id"]
    for who in ("ann", "dev", "admin"):
        with world.client(who) as client:
            read = client.get(f"/api/v1/jobs/{job_id}")
            assert read.status_code == 200 and read.json()["caller"] == "ann", (who, read.text)
            deliveries = client.get(f"/api/v1/jobs/{job_id}/deliveries")
            assert deliveries.status_code == 200, (who, deliveries.text)
    for who in ("bob", "eve"):
        with world.client(who) as client:
            refused(client.get(f"/api/v1/jobs/{job_id}"), 404, "job_not_found")
            refused(client.get(f"/api/v1/jobs/{job_id}", params={"wait": 1}), 404, "job_not_found")
            refused(client.post(f"/api/v1/jobs/{job_id}/cancel"), 404, "job_not_found")
            refused(client.get(f"/api/v1/jobs/{job_id}/deliveries"), 404, "job_not_found")
    with world.client("dev") as dev:
        refused(dev.get(f"/api/v1/jobs/{anns_echo['id']}"), 404, "job_not_found")  # echo is not /team's
    with httpx.Client(base_url=world.server.url, timeout=30) as nobody:
        refused(nobody.get(f"/api/v1/jobs/{job_id}"), 404, "job_not_found")
        assert nobody.get("/api/v1/jobs").status_code == 401
    with world.client("ann") as ann:
        refused(ann.get("/api/v1/jobs/no-such-job"), 404, "job_not_found")

    seen: dict[str, list[dict[str, Any]]] = {}
    for who in ("ann", "bob", "eve", "dev", "admin"):
        with world.client(who) as client:
            seen[who] = listed(client)
    ids = {who: {job["id"] for job in jobs} for who, jobs in seen.items()}
    callers = {who: {job["caller"] for job in seen[who]} for who in ("ann", "bob")}
    assert callers == {"ann": {"ann"}, "bob": {"bob"}}
    assert {anns["id"], anns_echo["id"]} <= ids["ann"] and bobs["id"] not in ids["ann"]
    assert bobs["id"] in ids["bob"] and not ids["bob"] & ids["ann"]
    assert ids["eve"] == set()
    assert {anns["id"], bobs["id"]} <= ids["dev"] and anns_echo["id"] not in ids["dev"]
    assert ids["ann"] | ids["bob"] | ids["dev"] <= ids["admin"]
    assert {job["module"] for job in seen["dev"]} <= {"slowpoke", "retrier", "files"}
    with world.client("dev") as dev:
        only = listed(dev, module="slowpoke", status="succeeded", kind="job", since="1h")
        assert {anns["id"], bobs["id"]} <= {job["id"] for job in only}
        assert {(job["module"], job["status"]) for job in only} == {("slowpoke", "succeeded")}
        first = dev.get("/api/v1/jobs", params={"limit": 1})
        assert len(first.json()["jobs"]) == 1 and first.json()["next_cursor"]
        refused(dev.get("/api/v1/jobs", params={"status": "lost"}), 422, "validation_failed")
        refused(dev.get("/api/v1/jobs", params={"kind": "nightly"}), 422, "validation_failed")


def test_bad_submissions_are_refused_precisely_and_queue_nothing(world: World) -> None:
    with world.client("ann") as ann:
        assert ann.post("/api/v1/webhooks/secret").status_code == 200  # a webhook needs one
    text = {"text": "x"}
    big = {"text": "x" * (MAX_BODY + 1)}
    hook = "https://hooks.example/in"
    jobs, slow = "/api/v1/modules/echo/jobs", "/api/v1/modules/slowpoke/jobs"
    posts: list[tuple[dict[str, Any], int, str]] = [  # to `jobs`: (body, status, code)
        ({"inputs": {"txt": "x"}}, 422, "validation_failed"),
        ({"inputs": big}, 413, "payload_too_large"),
        ({"inputs": text, "webhook": "ftp://hooks.example/in"}, 422, "webhook_refused"),
        ({"inputs": text, "webhook": "file:///etc/passwd"}, 422, "webhook_refused"),
        ({"inputs": text, "webhook": "hooks.example/in"}, 422, "webhook_refused"),
        ({"inputs": text, "webhook": hook, "webhook_events_filter": ["ended"]}, 422, "validation_failed"),
    ]
    puts: list[tuple[dict[str, Any], int, str]] = [  # to `/api/v1/jobs/{id}`
        ({"module": "nothing", "inputs": text}, 404, "module_not_found"),
        ({"module": "echo", "version": "v9", "inputs": text}, 404, "version_not_found"),
        ({"module": "echo", "inputs": {}}, 422, "validation_failed"),
        ({"module": "echo", "inputs": big}, 413, "payload_too_large"),
        ({"module": "echo", "inputs": text, "webhook": "ftp://hooks.example/in"}, 422, "webhook_refused"),
    ]
    refusals: list[tuple[str, str, dict[str, Any], dict[str, str], int, str]] = [
        ("POST", "/api/v1/modules/nothing/jobs", {"inputs": text}, {}, 404, "module_not_found"),
        ("POST", f"{jobs}?version=v9", {"inputs": text}, {}, 404, "version_not_found"),
        ("POST", jobs, {"inputs": text}, {"Idempotency-Key": "k" * 256}, 422, "validation_failed"),
        ("POST", slow, {"inputs": text, "parameters": {"seconds": "soon"}}, {}, 422, "validation_failed"),
    ]
    refusals += [("POST", jobs, body, {}, status, code) for body, status, code in posts]
    refusals += [
        ("PUT", f"/api/v1/jobs/no-{i}", body, {}, status, code) for i, (body, status, code) in enumerate(puts)
    ]
    before = job_count(world)
    for method, path, body, headers, status, code in refusals:
        with world.client("ann") as ann:  # each on a connection of its own
            error = refused(ann.request(method, path, json=body, headers=headers), status, code)
        if code == "webhook_refused":
            assert "http" in error["message"], (path, body, error)
        if body.get("inputs") in ({}, {"txt": "x"}):
            assert "inputs.text" in [detail["field"] for detail in error["details"]], (path, error)
    with world.client("eve") as eve:
        refused(submit(eve, "echo", text), 404, "module_not_found")  # eve may not call it
    assert job_count(world) == before

    with world.client("ann") as ann:
        done = finished(ann, accepted(submit(ann, "echo", text))["id"])
        too_long = ann.get(f"/api/v1/jobs/{done['id']}", params={"wait": 61})
        assert [detail["field"] for detail in refused(too_long, 422, "validation_failed")["details"]] == [
            "wait"
        ]
        refused(ann.get(f"/api/v1/jobs/{done['id']}", params={"wait": -1}), 422, "validation_failed")
        refused(ann.post(f"/api/v1/jobs/{done['id']}/cancel"), 409, "job_finished")
        assert ann.get(f"/api/v1/jobs/{done['id']}").json()["status"] == "succeeded"
    assert not [line for line in world.server.output if "Exception in ASGI application" in line]


def test_a_queued_job_is_canceled_at_once_and_a_running_one_stops_its_worker(world: World) -> None:
    with world.client("ann") as ann:
        warm = finished(ann, accepted(submit(ann, "slowpoke", {"text": "warm"}))["id"])
        old_pid = warm["outputs"]["pid"]
        slow = accepted(submit(ann, "slowpoke", {"text": "slow"}, parameters={"seconds": 30}))
        running = reaches(ann, slow["id"], "running")
        assert running["started_at"] and running["attempts"] == 1
        waiting = accepted(submit(ann, "slowpoke", {"text": "never"}))  # the module's one job slot is taken
        assert ann.get(f"/api/v1/jobs/{waiting['id']}").json()["status"] == "queued"

        canceled = ann.post(f"/api/v1/jobs/{waiting['id']}/cancel")
        assert canceled.status_code == 200, canceled.text
        assert canceled.json()["status"] == "canceled"
        assert canceled.json()["error"]["code"] == "canceled"

        asked = time.monotonic()
        stopping = ann.post(f"/api/v1/jobs/{slow['id']}/cancel")
        assert stopping.status_code == 200, stopping.text
        assert stopping.json()["status"] in ("running", "canceled")
        stopped = finished(ann, slow["id"], timeout=10)
        assert time.monotonic() - asked < 3
        assert (stopped["status"], stopped["error"]["code"], stopped["outputs"]) == (
            "canceled",
            "canceled",
            None,
        )
        deadline = time.monotonic() + 10
        while alive(old_pid):
            assert time.monotonic() < deadline, "the canceled job's worker is still running"
            time.sleep(0.05)

        after = finished(ann, accepted(submit(ann, "slowpoke", {"text": "after"}))["id"])
        assert after["status"] == "succeeded", after
        assert after["outputs"]["pid"] != old_pid
        never = ann.get(f"/api/v1/jobs/{waiting['id']}").json()
        assert (never["status"], never["attempts"], never["started_at"]) == ("canceled", 0, None)


def test_the_request_log_shows_a_job_run_with_kind_job(world: World) -> None:
    with world.client("ann") as ann:
        job = finished(ann, accepted(submit(ann, "echo", {"text": "logged"}))["id"])
    assert job["request_id"]
    deadline = time.monotonic() + 15
    with world.server.client() as admin:
        while True:
            records = admin.get("/api/v1/requests", params={"module": "echo", "limit": 1000}).json()[
                "requests"
            ]
            mine = [record for record in records if record["id"] == job["request_id"]]
            if mine:
                break
            assert time.monotonic() < deadline, "the job's run was not logged"
            time.sleep(0.2)
    (record,) = mine
    assert (record["kind"], record["caller"], record["status"], record["version"]) == (
        "job",
        "ann",
        200,
        "v1",
    )


def test_the_openapi_document_lists_the_jobs_routes(world: World) -> None:
    with httpx.Client(base_url=world.server.url, timeout=30) as nobody:
        document = nobody.get("/openapi.json").json()
    paths = document["paths"]
    assert {"post"} <= set(paths["/api/v1/modules/{module}/jobs"])
    assert {"put", "get"} <= set(paths["/api/v1/jobs/{job_id}"])
    assert "get" in paths["/api/v1/jobs"]
    assert "post" in paths["/api/v1/jobs/{job_id}/cancel"]
    assert "get" in paths["/api/v1/jobs/{job_id}/deliveries"]
    assert "post" in paths["/api/v1/modules/{module}/batches"]
    assert "JobInfo" in document["components"]["schemas"]


def test_retryable_failures_run_max_attempts_module_errors_once_unless_the_api_says_so(world: World) -> None:
    with world.client("ann") as ann:
        boom = finished(ann, accepted(submit(ann, "slowpoke", {"text": "boom"}))["id"])
        assert (boom["status"], boom["attempts"], boom["max_attempts"]) == ("failed", 1, 2)
        assert boom["error"]["code"] == "module_error"
        retried = finished(ann, accepted(submit(ann, "retrier", {"text": "boom"}))["id"])
        assert (retried["status"], retried["attempts"], retried["max_attempts"]) == ("failed", 3, 3)
        assert retried["error"]["code"] == "module_error"
        died = finished(ann, accepted(submit(ann, "slowpoke", {"text": "die"}))["id"], timeout=40)
        assert (died["status"], died["attempts"]) == ("failed", 2), died
        assert died["error"]["code"] == "worker_died"
        assert (
            finished(ann, accepted(submit(ann, "slowpoke", {"text": "fine"}))["id"])["status"] == "succeeded"
        )
        # The `Api`'s `timeoutSeconds` bounds each run: a 3 s call times out after 1 s, every attempt.
        slow = accepted(submit(ann, "retrier", {"text": "slow"}, parameters={"seconds": 3}))
        timed_out = finished(ann, slow["id"], timeout=30)
        assert (timed_out["status"], timed_out["attempts"]) == ("failed", 3), timed_out
        assert timed_out["error"]["code"] in ("module_timeout", "queue_timeout")
