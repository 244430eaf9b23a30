"""The console's jobs and pipelines pages: a job listed, filtered and shown with its output; cancel through
the console (not without the form's token); a pipeline drawn as a graph with a box per step and an edge per
reference; a step that cannot run shown so; and the 404 a caller gets for a job or pipeline it may not see.

The world: modules `echo` and `slow` (the `echo` and `jobs` fixtures, deployed) and `idle` (pushed, never
deployed), which `/callers` may call; pipelines `shouty` (three `echo` steps) and `stuck` (a step pinned to
`idle`), which `/callers` may call too. `ann` is a user in `/callers`, `eve` a user in no group.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from console_world import World
from manifests import api

from modelport.console import jobs
from modelport.console.pipelines import layout
from modelport.core.manifests import PipelineManifest

SHOUTY = {
    "apiVersion": "modelport/v1",
    "kind": "Pipeline",
    "metadata": {"name": "shouty"},
    "spec": {
        "steps": [
            {
                "name": "shout",
                "module": "echo",
                "inputs": {"text": "$.inputs.text"},
                "parameters": {"suffix": "$.parameters.suffix"},
            },
            {
                "name": "again",
                "module": "echo",
                "inputs": {"text": "$.steps.shout.outputs.text"},
                "parameters": {"suffix": "?"},
            },
            {"name": "count", "module": "echo", "inputs": {"text": "$.inputs.text"}},
        ],
        "outputs": {
            "shouted": "$.steps.again.outputs.text",
            "length": "$.steps.shout.outputs.length",
            "echoed": "$.steps.count.outputs.text",
        },
    },
}
STUCK = {
    "apiVersion": "modelport/v1",
    "kind": "Pipeline",
    "metadata": {"name": "stuck"},
    "spec": {
        "steps": [{"name": "first", "module": "idle", "version": "v1", "inputs": {"text": "$.inputs.text"}}],
        "outputs": {"text": "$.steps.first.outputs.text"},
    },
}
SHOUTY_EDGES = {
    ("inputs:text", "step:shout"),
    ("parameters:suffix", "step:shout"),
    ("step:shout", "step:again"),
    ("inputs:text", "step:count"),
    ("step:again", "output:shouted"),
    ("step:shout", "output:length"),
    ("step:count", "output:echoed"),
}
SCRIPT = "<script>alert(1)</script>"


@dataclass
class People:
    tokens: dict[str, str]
    echo_job: str

    def api(self, world: World, who: str) -> httpx.Client:
        return world.api(self.tokens[who])


@pytest.fixture(scope="module")
def people(world: World) -> People:
    for fixture, name, deployed in (("echo", "echo", True), ("jobs", "slow", True), ("echo", "idle", False)):
        world.module(fixture, name=name, deployed=deployed)
    tokens: dict[str, str] = {}
    with world.api() as admin:
        assert admin.post("/api/v1/groups", json={"path": "/callers"}).status_code == 201
        for name, groups in (("ann", ["/callers"]), ("eve", [])):
            made = admin.post("/api/v1/users", json={"name": name, "role": "user", "groups": groups})
            assert made.status_code == 201, made.text
            token = admin.post("/api/v1/tokens", json={"name": "tests", "user": made.json()["id"]})
            tokens[name] = token.json()["token"]
        documents: list[dict[str, Any]] = [SHOUTY, STUCK]
        for module in ("echo", "slow", "idle"):
            documents.append(api(f"{module}-api", module, access={"groups": ["/callers"]}))
        for pipeline in ("shouty", "stuck"):
            documents.append(
                {
                    **api(f"{pipeline}-api", pipeline),
                    "spec": {"pipeline": pipeline, "access": {"groups": ["/callers"]}},
                }
            )
        applied = admin.post("/api/v1/apply", json={"documents": documents})
        assert applied.status_code == 200, applied.text
    with world.api(tokens["ann"]) as ann:
        submitted = ann.post("/api/v1/modules/echo/jobs", json={"inputs": {"text": SCRIPT}})
        assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["id"]
        assert ann.get(f"/api/v1/jobs/{job_id}", params={"wait": 30}).json()["status"] == "succeeded"
    return People(tokens, job_id)


def listed_jobs(page: httpx.Response) -> list[str]:
    assert page.status_code == 200, page.text
    return re.findall(r'<tr data-job="([^"]+)">', page.text)


def test_a_submitted_job_is_listed_and_its_page_shows_its_output(world: World, people: People) -> None:
    ann = world.console(people.tokens["ann"])
    assert people.echo_job in listed_jobs(ann.get("/ui/jobs"))
    assert people.echo_job in listed_jobs(ann.get("/ui/jobs?module=echo&state=succeeded"))
    assert people.echo_job not in listed_jobs(ann.get("/ui/jobs?state=failed"))
    assert people.echo_job not in listed_jobs(ann.get("/ui/jobs?pipeline=shouty"))
    assert ann.get("/ui/jobs?state=lost").status_code == 422

    page = ann.get(f"/ui/jobs/{people.echo_job}")
    assert page.status_code == 200, page.text
    assert 'data-state="succeeded"' in page.text
    assert 'id="job-outputs"' in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text  # the output, and the input, escaped
    assert SCRIPT not in page.text
    assert "hx-trigger" not in page.text  # a finished job's page no longer refreshes itself
    assert 'href="/ui/modules/echo"' in page.text
    fragment = ann.get(f"/ui/jobs/{people.echo_job}/state")
    assert fragment.status_code == 200
    assert fragment.text.lstrip().startswith('<div id="job-state"')


def test_a_pipeline_job_is_filtered_by_its_pipeline(world: World, people: People) -> None:
    with people.api(world, "ann") as client:
        submitted = client.post(
            "/api/v1/pipelines/shouty/jobs", json={"inputs": {"text": "hi"}, "parameters": {"suffix": "!"}}
        )
        assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["id"]
        assert client.get(f"/api/v1/jobs/{job_id}", params={"wait": 30}).json()["status"] == "succeeded"
    ann = world.console(people.tokens["ann"])
    assert listed_jobs(ann.get("/ui/jobs?pipeline=shouty")) == [job_id]
    assert job_id not in listed_jobs(ann.get("/ui/jobs?module=echo"))
    page = ann.get(f"/ui/jobs/{job_id}")
    assert '"shouted": "hi!?"' in html.unescape(page.text)
    assert 'href="/ui/pipelines/shouty"' in page.text


def test_the_list_pages_through_older_jobs(
    world: World, people: People, monkeypatch: pytest.MonkeyPatch
) -> None:
    with world.api() as client:
        assert (
            client.post("/api/v1/modules/echo/jobs", json={"inputs": {"text": "one more"}}).status_code == 202
        )
    monkeypatch.setattr(jobs, "PAGE_SIZE", 1)
    admin = world.console()
    seen: list[str] = []
    path = "/ui/jobs?module=echo"
    while path and len(seen) < 10:
        page = admin.get(path)
        seen += listed_jobs(page)
        older = re.search(r'<a href="(/ui/jobs\?[^"]+)" rel="next">', page.text)
        path = html.unescape(older.group(1)) if older else ""
    with world.api() as client:
        expected = [job["id"] for job in client.get("/api/v1/jobs", params={"module": "echo"}).json()["jobs"]]
    assert len(expected) >= 2
    assert seen == expected
    assert admin.get("/ui/jobs?cursor=forged").status_code == 400


def test_cancel_through_the_console(world: World, people: People) -> None:
    with people.api(world, "ann") as client:
        submitted = client.post(
            "/api/v1/modules/slow/jobs", json={"inputs": {"text": "zz"}, "parameters": {"seconds": 30}}
        )
        assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["id"]
        ann = world.console(people.tokens["ann"])
        page = ann.get(f"/ui/jobs/{job_id}")
        assert 'hx-trigger="every 2s"' in page.text
        assert 'id="cancel-job"' in page.text
        polled = ann.get(f"/ui/jobs/{job_id}/state", headers={"HX-Request": "true"})
        assert "job-actions" not in polled.text  # a refresh leaves the button (and a confirmation) alone

        refused = ann.post(f"/ui/jobs/{job_id}/cancel", csrf=False)
        assert refused.status_code == 403
        assert client.get(f"/api/v1/jobs/{job_id}").json()["status"] in ("queued", "running")

        canceled = ann.post(f"/ui/jobs/{job_id}/cancel")
        assert canceled.status_code == 303, canceled.text
        assert canceled.headers["location"] == f"/ui/jobs/{job_id}"
        assert client.get(f"/api/v1/jobs/{job_id}", params={"wait": 30}).json()["status"] == "canceled"
    page = ann.get(f"/ui/jobs/{job_id}")
    assert 'data-state="canceled"' in page.text
    assert "hx-trigger" not in page.text
    assert 'id="cancel-job"' not in page.text
    refreshed = ann.get(f"/ui/jobs/{job_id}/state", headers={"HX-Request": "true"})
    assert '<div id="job-actions" hx-swap-oob="true"></div>' in refreshed.text  # the button goes too
    assert ann.post(f"/ui/jobs/{job_id}/cancel").status_code == 409


def test_a_pipeline_page_draws_its_graph(world: World, people: People) -> None:
    ann = world.console(people.tokens["ann"])
    listing = ann.get("/ui/pipelines")
    assert listing.status_code == 200
    rows = dict(re.findall(r'<tr data-pipeline="([^"]+)">.*?data-ready="(true|false)"', listing.text, re.S))
    assert rows == {"shouty": "true", "stuck": "false"}

    page = ann.get("/ui/pipelines/shouty")
    assert page.status_code == 200, page.text
    svg = page.text[page.text.index("<svg") : page.text.index("</svg>")]
    assert sorted(re.findall(r'data-node="step:([^"]+)"', svg)) == ["again", "count", "shout"]
    assert set(re.findall(r'data-from="([^"]+)" data-to="([^"]+)"', svg)) == SHOUTY_EDGES
    assert "node-problem" not in svg
    assert 'href="/api/v1/pipelines/shouty/try"' in page.text
    assert 'href="/api/v1/pipelines/shouty/openapi.json"' in page.text
    assert 'href="/ui/modules/echo"' in page.text

    stuck = ann.get("/ui/pipelines/stuck")
    assert stuck.status_code == 200
    assert 'class="node node-step node-problem" data-node="step:first"' in stuck.text
    assert "Its inputs and outputs are known once every step can run." in stuck.text


def test_a_caller_who_may_not_see_gets_404(world: World, people: People) -> None:
    eve = world.console(people.tokens["eve"])
    assert people.echo_job not in listed_jobs(eve.get("/ui/jobs"))
    assert eve.get(f"/ui/jobs/{people.echo_job}").status_code == 404
    assert eve.get(f"/ui/jobs/{people.echo_job}/state").status_code == 404
    assert eve.post(f"/ui/jobs/{people.echo_job}/cancel").status_code == 404
    assert eve.get("/ui/pipelines/shouty").status_code == 404
    assert "shouty" not in eve.get("/ui/pipelines").text
    assert world.anonymous().get("/ui/jobs").status_code == 303  # to the sign-in page


def test_the_graph_puts_each_step_right_of_what_it_needs() -> None:
    manifest = PipelineManifest.model_validate(SHOUTY)
    graph = layout(manifest, [], {})
    x = {node.key: node.x for node in graph.nodes}
    assert x["inputs:text"] == x["parameters:suffix"] < x["step:shout"] == x["step:count"] < x["step:again"]
    assert x["step:again"] < x["output:shouted"] == x["output:length"] == x["output:echoed"]
    assert all(
        node.x + node.width <= graph.width and node.y + node.height <= graph.height for node in graph.nodes
    )
