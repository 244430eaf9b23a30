"""Batch inference against a real server (SQLite): JSON Lines in a bucket through a module, the results
written as JSON Lines parts in input order, per-line errors, a prefix of several objects, cancelling,
refused inputs and outputs, and a batch resumed after a `kill -9` without rewriting the parts it had written.

One server holds the world, with parts of 500 records: `ann` (a user in `/batchers`) may call the modules
`echo` (the `echo` fixture) and `slow` (the `jobs` fixture: it sleeps `parameters.seconds` a call), write the
bucket `data`, and only read the bucket `archive`; `secret` is not hers. The resume test runs a server of its
own, with parts of 100 records and 3 s leases, since it kills it.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from drive import deploy, push, wait_built, wait_deployment
from manifests import api, bucket, module_copy
from platform_server import ADMIN_TOKEN, ServerProcess

pytestmark = pytest.mark.slow

PART = re.compile(r"part-\d{5}\.jsonl$")

FINISHED = ("succeeded", "failed", "canceled")


@dataclass
class World:
    server: ServerProcess
    token: str
    """`ann`'s."""

    def ann(self) -> httpx.Client:
        return caller(self.server, self.token)


def caller(server: ServerProcess, token: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def make_world(server: ServerProcess, root: Path) -> str:
    """The groups, `ann`, the buckets and the modules; returns `ann`'s token."""
    with server.client() as admin:
        for path in ("/batchers", "/keepers"):
            assert admin.post("/api/v1/groups", json={"path": path}).status_code == 201
        made = admin.post("/api/v1/users", json={"name": "ann", "role": "user", "groups": ["/batchers"]})
        assert made.status_code == 201, made.text
        token = admin.post("/api/v1/tokens", json={"name": "tests", "user": made.json()["id"]}).json()[
            "token"
        ]
        for name, fixture in (("echo", "echo"), ("slow", "jobs")):
            assert push(admin, module_copy(root, fixture, name, None), version="v1").status_code == 201
        for name in ("echo", "slow"):
            assert wait_built(admin, name, "v1")["build_status"] == "ready"
            deployed = wait_deployment(admin, name, deploy(admin, name, "v1")["generation"])
            assert deployed["status"] == "ready", deployed
        archive = bucket("archive", "/keepers")
        archive["spec"]["access"]["readGroups"] = ["/batchers"]
        documents = [
            bucket("data", "/batchers"),
            archive,
            bucket("secret", "/keepers"),
            api("echo-api", "echo", access={"groups": ["/batchers"]}),
            api("slow-api", "slow", access={"groups": ["/batchers"]}),
        ]
        applied = admin.post("/api/v1/apply", json={"documents": documents})
        assert applied.status_code == 200, applied.text
    return str(token)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("batches")
    server = ServerProcess(root / "server", token=ADMIN_TOKEN, env={"MODELPORT_BATCH_PART_RECORDS": "500"})
    server.start()
    try:
        yield World(server, make_world(server, root))
    finally:
        server.stop()


def obj(bucket_name: str, key: str) -> str:
    return f"/api/v1/storage/{bucket_name}/objects/{quote(key, safe='/')}"


def put_lines(client: httpx.Client, reference: str, lines: list[str]) -> None:
    """Store `lines` as the JSON Lines object `reference` (`bucket/key`)."""
    bucket_name, _, key = reference.partition("/")
    data = "".join(line + "\n" for line in lines).encode()
    stored = client.put(obj(bucket_name, key), content=data, headers={"Content-Type": "application/x-ndjson"})
    assert stored.status_code == 201, stored.text


def records(texts: list[str]) -> list[str]:
    return [json.dumps({"text": text}) for text in texts]


def submit(client: httpx.Client, module: str, **body: Any) -> dict[str, Any]:
    answer = client.post(f"/api/v1/modules/{module}/batches", json=body)
    assert answer.status_code == 202, answer.text
    assert answer.headers["location"] == f"/api/v1/jobs/{answer.json()['id']}"
    job: dict[str, Any] = answer.json()
    assert job["kind"] == "batch" and job["status"] in ("queued", "running"), job
    return job


def wait_job(client: httpx.Client, job_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = client.get(f"/api/v1/jobs/{job_id}", params={"wait": 10}).json()
        if job["status"] in FINISHED:
            return job
        assert time.monotonic() < deadline, f"the batch did not finish in {timeout} s: {job}"


def listing(client: httpx.Client, reference: str) -> dict[str, dict[str, Any]]:
    """The objects under `reference` (`bucket/prefix/`), by key, over as many pages as it takes."""
    bucket_name, _, prefix = reference.partition("/")
    found: dict[str, dict[str, Any]] = {}
    cursor = None
    while True:
        params: dict[str, str | int] = {"prefix": prefix, "limit": 1000}
        if cursor:
            params["cursor"] = cursor
        page = client.get(f"/api/v1/storage/{bucket_name}", params=params)
        assert page.status_code == 200, page.text
        found |= {entry["key"]: entry for entry in page.json()["objects"]}
        if not (cursor := page.json()["next_cursor"]):
            return found


def parts_of(client: httpx.Client, reference: str) -> dict[str, dict[str, Any]]:
    """The results parts under `reference` (not the marker naming the batch that writes there)."""
    return {key: entry for key, entry in listing(client, reference).items() if PART.search(key)}


def results(client: httpx.Client, reference: str) -> list[dict[str, Any]]:
    """Every line of every part under `reference`, parts in key order."""
    bucket_name = reference.partition("/")[0]
    lines: list[dict[str, Any]] = []
    for key in sorted(parts_of(client, reference)):
        part = client.get(obj(bucket_name, key))
        assert part.status_code == 200, part.text
        lines += [json.loads(line) for line in part.text.splitlines()]
    return lines


def batch_ids(client: httpx.Client) -> set[str]:
    page = client.get("/api/v1/jobs", params={"kind": "batch", "limit": 1000})
    assert page.status_code == 200, page.text
    return {job["id"] for job in page.json()["jobs"]}


def part_keys(reference: str, count: int) -> list[str]:
    prefix = reference.partition("/")[2]
    return [f"{prefix}part-{n:05d}.jsonl" for n in range(count)]


def test_a_batch_writes_every_record_in_order_with_per_line_errors(world: World) -> None:
    run = uuid.uuid4().hex[:8]
    texts = [f"record {i}" for i in range(2000)]
    lines = records(texts)
    lines[5] = json.dumps({"inputs": {"text": texts[5]}})  # the predict body's form of one record
    lines[700] = '{"text": "cut off'
    lines[1300] = json.dumps({"words": "no text"})
    output = f"data/out-{run}/"
    with world.ann() as ann:
        put_lines(ann, f"data/in-{run}.jsonl", lines)
        queued = submit(ann, "echo", input=f"data/in-{run}.jsonl", output=output, parameters={"suffix": "!"})
        assert queued["output"] == output
        job = wait_job(ann, queued["id"])
        assert job["status"] == "succeeded", job
        assert job["outputs"] == {"output": output, "parts": 4, "records": 2000, "failed": 2}
        progress = job["progress"]
        assert (progress["done"], progress["total"], progress["failed"]) == (2000, 2000, 2)
        assert sorted(listing(ann, output)) == sorted([*part_keys(output, 4), f"out-{run}/_batch.json"])
        marker = ann.get(obj("data", f"out-{run}/_batch.json"))
        assert marker.json() == {"job": queued["id"]}
        written = results(ann, output)
    assert [line["index"] for line in written] == list(range(2000))
    for index, line in enumerate(written):
        if index == 700:
            assert line["error"]["code"] == "bad_request", line
        elif index == 1300:
            assert line["error"]["code"] == "validation_failed", line
            fields = {(detail["field"], detail["code"]) for detail in line["error"]["details"]}
            assert ("inputs[0].text", "required") in fields, line
        else:
            assert line == {
                "index": index,
                "outputs": {"text": texts[index] + "!", "length": len(texts[index])},
            }


def test_a_prefix_of_several_objects_is_read_in_key_order(world: World) -> None:
    run = uuid.uuid4().hex[:8]
    objects = {"b.jsonl": ["b0", "b1"], "c.jsonl": ["c0"], "a.jsonl": ["a0", "a1", "a2"]}
    output = f"data/prefix-out-{run}/"
    with world.ann() as ann:
        for name, texts in objects.items():
            put_lines(ann, f"data/prefix-in-{run}/{name}", records(texts))
        queued = submit(ann, "echo", input=f"data/prefix-in-{run}/", output=output)
        job = wait_job(ann, queued["id"])
        assert job["status"] == "succeeded", job
        written = results(ann, output)
    assert [line["outputs"]["text"] for line in written] == ["a0", "a1", "a2", "b0", "b1", "c0"]
    assert [line["index"] for line in written] == list(range(6))


def test_a_canceled_batch_writes_no_more_parts(world: World) -> None:
    run = uuid.uuid4().hex[:8]
    output = f"data/canceled-{run}/"
    with world.ann() as ann:
        put_lines(ann, f"data/long-{run}.jsonl", records([f"r{i}" for i in range(4000)]))
        queued = submit(
            ann, "slow", input=f"data/long-{run}.jsonl", output=output, parameters={"seconds": 0.02}
        )
        deadline = time.monotonic() + 30
        while not parts_of(ann, output):
            assert time.monotonic() < deadline, "no part was written"
            time.sleep(0.05)
        canceled = ann.post(f"/api/v1/jobs/{queued['id']}/cancel")
        assert canceled.status_code == 200, canceled.text
        job = wait_job(ann, queued["id"])
        assert job["status"] == "canceled", job
        assert job["error"]["code"] == "canceled"
        parts = parts_of(ann, output)
        assert 1 <= len(parts) < 8
        time.sleep(2.0)  # longer than a part takes: a batch still running would have written one
        assert parts_of(ann, output) == parts
        again = ann.post(f"/api/v1/jobs/{queued['id']}/cancel")
        assert again.status_code == 409 and again.json()["error"]["code"] == "job_finished"


def test_bad_inputs_and_outputs_are_refused_and_nothing_is_queued(world: World) -> None:
    run = uuid.uuid4().hex[:8]
    with world.ann() as ann:
        put_lines(ann, f"data/ok-{run}.jsonl", records(["x"]))
        before = batch_ids(ann)
        cases = [
            ({"input": f"data/missing-{run}.jsonl", "output": "data/o/"}, 404, "object_not_found"),
            ({"input": f"data/missing-{run}/", "output": "data/o/"}, 404, "object_not_found"),
            ({"input": "secret/any.jsonl", "output": "data/o/"}, 404, "bucket_not_found"),
            ({"input": f"data/ok-{run}.jsonl", "output": "archive/o/"}, 403, "forbidden"),
            ({"input": f"data/ok-{run}.jsonl", "output": "secret/o/"}, 404, "bucket_not_found"),
            ({"input": f"data/ok-{run}.jsonl", "output": "nowhere"}, 422, "validation_failed"),
        ]
        for body, status, code in cases:
            refused = ann.post("/api/v1/modules/echo/batches", json=body)
            assert (refused.status_code, refused.json()["error"]["code"]) == (status, code), (
                body,
                refused.text,
            )
        for body in (  # a resumed batch would read its own results as records
            {"input": f"data/in-{run}/", "output": f"data/in-{run}/out/"},
            {"input": f"data/out-{run}/part-00001.jsonl", "output": f"data/out-{run}"},
        ):
            overlapping = ann.post("/api/v1/modules/echo/batches", json=body)
            assert overlapping.status_code == 422, overlapping.text
            assert [(d["field"], d["code"]) for d in overlapping.json()["error"]["details"]] == [
                ("output", "overlaps_input")
            ]
        put_lines(ann, f"data/bad-first-{run}.jsonl", [json.dumps({"words": "x"})])
        invalid = ann.post(
            "/api/v1/modules/echo/batches",
            json={"input": f"data/bad-first-{run}.jsonl", "output": f"data/o-{run}/"},
        )
        assert invalid.status_code == 422, invalid.text
        assert batch_ids(ann) == before
        assert listing(ann, f"data/o-{run}/") == {}


def test_a_batch_resumes_after_a_kill_without_rewriting_its_parts(tmp_path: Path) -> None:
    env = {"MODELPORT_BATCH_PART_RECORDS": "100", "MODELPORT_JOB_LEASE_SECONDS": "3"}
    server = ServerProcess(tmp_path / "server", token=ADMIN_TOKEN, env=env)
    server.start()
    try:
        token = make_world(server, tmp_path)
        output = "data/resumed/"
        texts = [f"r{i}" for i in range(1000)]
        with caller(server, token) as ann:
            put_lines(ann, "data/resume.jsonl", records(texts))
            queued = submit(
                ann, "slow", input="data/resume.jsonl", output=output, parameters={"seconds": 0.02}
            )
            deadline = time.monotonic() + 30
            while True:
                progress = ann.get(f"/api/v1/jobs/{queued['id']}").json()["progress"] or {}
                if progress.get("done", 0) >= 300:  # three parts written
                    break
                assert time.monotonic() < deadline, "no part was recorded"
                time.sleep(0.02)
            before = parts_of(ann, output)
        server.kill()
        counted = part_keys(output, progress["done"] // 100)
        assert len(before) < 10, "every part was written before the kill: nothing was left to resume"
        server.start()
        with caller(server, token) as ann:
            job = wait_job(ann, queued["id"])
            assert job["status"] == "succeeded", job
            assert job["attempts"] == 2
            assert job["outputs"]["records"] == 1000 and job["progress"]["done"] == 1000
            after = parts_of(ann, output)
            written = results(ann, output)
        assert sorted(after) == part_keys(output, 10)
        assert set(counted) <= set(before)
        for key in before:  # every part written before the kill is kept as it was, counted or not
            assert (after[key]["etag"], after[key]["modified"]) == (
                before[key]["etag"],
                before[key]["modified"],
            )
        assert [line["index"] for line in written] == list(range(1000))
        assert [line["outputs"]["text"] for line in written] == texts
        print(f"\n{len(before)} of 10 parts were written before the kill")
    finally:
        server.stop()
