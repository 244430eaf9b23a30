"""The publication history of a module against a real server: a developer pushes and deploys, a build and a
rollout fail, a canary comes and goes, an admin rolls back; the timeline tells it all, newest first, to the
module's owners and admins only, through the API, the client and the command line.

One server serves every test here; its story is made once: `/team-a` owns `versioned` (its developer `dev-a`
pushed it), `/team-b` may only call it (`dev-b`), `/team-c` has nothing to do with it (`dev-c`).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from drive import tag_release, wait_built, wait_deployment
from platform_server import ADMIN_TOKEN, ServerProcess
from repos import git
from typer.testing import CliRunner

from modelport.artifacts import pack
from modelport.cli.main import app
from modelport.client import Client

pytestmark = pytest.mark.slow

FIXTURES = Path(__file__).parents[1] / "fixtures" / "modules"
HISTORY = "/api/v1/modules/versioned/history"


@dataclass
class Story:
    url: str
    root: Path
    tokens: dict[str, str] = field(default_factory=dict)
    commits: dict[str, str] = field(default_factory=dict)

    def client(self, who: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.tokens[who]}"}, timeout=30
        )

    def events(self, who: str = "admin", **params: Any) -> list[dict[str, Any]]:
        with self.client(who) as client:
            response = client.get(HISTORY, params={"limit": 1000, **params})
        assert response.status_code == 200, response.text
        events: list[dict[str, Any]] = response.json()["events"]
        return events


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Story]:
    root = tmp_path_factory.mktemp("history")
    server = ServerProcess(root / "server", token=ADMIN_TOKEN)
    server.start()
    try:
        story = Story(server.url, root, tokens={"admin": ADMIN_TOKEN})
        with server.client() as admin:
            make_people(story, admin)
            with story.client("dev-a") as developer:
                tell(story, developer, admin)
        yield story
    finally:
        server.stop()


def make_people(story: Story, admin: httpx.Client) -> None:
    for team in ("a", "b", "c"):
        assert admin.post("/api/v1/groups", json={"path": f"/team-{team}"}).status_code == 201
        user = {"name": f"dev-{team}", "role": "developer", "groups": [f"/team-{team}"]}
        made = admin.post("/api/v1/users", json=user)
        assert made.status_code == 201, made.text
        token = admin.post("/api/v1/tokens", json={"name": "tests", "user": made.json()["id"]})
        story.tokens[f"dev-{team}"] = token.json()["token"]


def tell(story: Story, developer: httpx.Client, admin: httpx.Client) -> None:
    """v1 deployed; v2 fails to build; v3 replaces v1; v4 fails to load; v1 becomes the canary; the admin
    rolls back to v1."""
    repository = story.root / "versioned"
    shutil.copytree(FIXTURES / "versioned", repository, ignore=shutil.ignore_patterns("__pycache__"))
    git(repository, "init", "-q", "-b", "main")
    git(repository, "add", "-A")
    git(repository, "commit", "-q", "-m", "first")
    git(repository, "tag", "v1")
    story.commits["v1"] = git(repository, "rev-parse", "HEAD").strip()
    pushed(developer, repository, "v1")
    rolled_out(developer, developer.post("/api/v1/modules/versioned/deploy", json={"version": "v1"}))

    source = repository / "inference.py"
    working = source.read_text()
    source.write_text("import nonexistent_package_xyz\n" + working)
    tag_release(repository, "v2")
    assert pushed(developer, repository, "v2")["build_status"] == "failed"
    source.write_text(working)

    tag_release(repository, "v3", release="two")
    pushed(developer, repository, "v3")
    rolled_out(developer, developer.post("/api/v1/modules/versioned/deploy", json={"version": "v3"}))

    tag_release(repository, "v4", env={"LOAD_FAILS": "1"})
    pushed(developer, repository, "v4")
    failed = rolled_out(developer, developer.post("/api/v1/modules/versioned/deploy", json={"version": "v4"}))
    assert failed["rollout"]["status"] == "failed", failed

    canary = {"version": "v1", "canary_percent": 25}
    assert (
        rolled_out(developer, developer.post("/api/v1/modules/versioned/deploy", json=canary))[
            "canary_version"
        ]
        == "v1"
    )
    back = rolled_out(admin, admin.post("/api/v1/modules/versioned/rollback"))
    assert (back["version"], back["canary_version"]) == ("v1", None), back

    grant = {
        "apiVersion": "modelport/v1",
        "kind": "Api",
        "metadata": {"name": "versioned-api"},
        "spec": {"module": "versioned", "access": {"groups": ["/team-b"]}},
    }
    assert admin.post("/api/v1/apply", json={"documents": [grant]}).status_code == 200


def pushed(client: httpx.Client, repository: Path, version: str) -> dict[str, Any]:
    """Push the tagged version as `modelport push` does (with its tag and commit); wait for its build."""
    artifact = pack(repository, version=version)
    token = client.headers["Authorization"].removeprefix("Bearer ")
    with Client(str(client.base_url), token) as pusher:
        assert pusher.push(
            artifact.data, module="versioned", version=version, commit=artifact.commit, tag=artifact.tag
        ).created
    return wait_built(client, "versioned", version)


def rolled_out(client: httpx.Client, response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 202, response.text
    return wait_deployment(client, "versioned", response.json()["generation"])


def only(events: list[dict[str, Any]], kind: str, **fields: Any) -> dict[str, Any]:
    found = [e for e in events if e["kind"] == kind and all(e[k] == v for k, v in fields.items())]
    assert len(found) == 1, (kind, fields, events)
    return found[0]


def test_the_timeline_tells_the_story_newest_first(story: Story) -> None:
    events = story.events()
    flow = [(e["kind"], e["from_version"], e["version"]) for e in reversed(events)]
    assert flow == [
        ("push", None, "v1"),
        ("build", None, "v1"),
        ("deploy", None, "v1"),
        ("switch", None, "v1"),
        ("push", None, "v2"),
        ("build", None, "v2"),
        ("push", None, "v3"),
        ("build", None, "v3"),
        ("deploy", "v1", "v3"),
        ("switch", "v1", "v3"),
        ("push", None, "v4"),
        ("build", None, "v4"),
        ("deploy", "v3", "v4"),
        ("failure", "v3", "v4"),
        ("canary", None, "v1"),
        ("rollback", "v3", "v1"),
        ("switch", "v3", "v1"),
    ]
    stamps = [(e["at"], e["id"]) for e in events]
    assert stamps == sorted(stamps, reverse=True)

    first = only(events, "push", version="v1")
    assert first["actor"] == "dev-a"
    assert first["details"]["tag"] == "v1" and first["details"]["commit"] == story.commits["v1"]
    assert first["details"]["digest"].startswith("sha256:")
    for build in (e for e in events if e["kind"] == "build"):
        assert build["seconds"] > 0, build
        assert build["outcome"] == ("failed" if build["version"] == "v2" else "succeeded"), build
    assert "nonexistent_package_xyz" in only(events, "build", version="v2")["details"]["error"]
    for switch in (e for e in events if e["kind"] == "switch"):
        assert switch["outcome"] == "succeeded" and switch["seconds"] > 0, switch
    assert {e["actor"] for e in events if e["kind"] in ("deploy", "canary")} == {"dev-a"}
    assert only(events, "rollback")["actor"] == "admin"
    failure = only(events, "failure")
    assert "corrupt" in failure["details"]["reason"] and failure["details"]["role"] == "target"
    canary = only(events, "canary")
    assert canary["details"]["action"] == "set" and canary["details"]["percent"] == 25


def test_the_switch_takes_as_long_as_the_rollout(story: Story) -> None:
    events = story.events()
    deployed = datetime.fromisoformat(only(events, "deploy", version="v3")["at"])
    switch = only(events, "switch", version="v3")
    took = datetime.fromisoformat(switch["at"]) - deployed
    assert 0 < switch["seconds"] <= took.total_seconds() + 0.5


def test_filters_and_pages(story: Story) -> None:
    assert [e["version"] for e in story.events(kind="build")] == ["v4", "v3", "v2", "v1"]
    assert {e["kind"] for e in story.events(kind="switch,rollback")} == {"switch", "rollback"}
    assert {e["kind"] for e in story.events(kind=["failure", "canary"])} == {"failure", "canary"}
    assert story.events(since=(datetime.now(UTC) + timedelta(minutes=5)).isoformat()) == []
    everything = story.events()
    with Client(story.url, story.tokens["dev-a"]) as client:
        seen, cursor = [], None
        while True:
            page = client.history("versioned", limit=5, cursor=cursor)
            seen += [event.id for event in page.events]
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert seen == [e["id"] for e in everything]
        assert [e.kind for e in client.history("versioned", kinds=["rollback"]).events] == ["rollback"]


def test_owners_and_admins_read_it_others_do_not(story: Story) -> None:
    assert story.events("dev-a") == story.events("admin")
    for who, status, code in (("dev-b", 403, "forbidden"), ("dev-c", 404, "module_not_found")):
        with story.client(who) as client:
            response = client.get(HISTORY, params={"kind": "promote"})  # refused before it is validated
        assert response.status_code == status, response.text
        assert response.json()["error"]["code"] == code
    with story.client("dev-a") as client:
        assert client.get("/api/v1/modules/nothing/history").status_code == 404
    assert httpx.get(story.url + HISTORY).status_code == 401


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"kind": "promote"}, "kind"),
        ({"since": "last tuesday"}, "query.since"),
        ({"limit": 0}, "query.limit"),
        ({"cursor": "page-two"}, "cursor"),
        ({"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "until"),
    ],
)
def test_a_bad_query_is_422_naming_the_field(story: Story, params: dict[str, Any], field: str) -> None:
    with story.client("dev-a") as client:
        response = client.get(HISTORY, params=params)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_failed"
    assert [d["field"] for d in error["details"]] == [field]


def test_the_command_line_shows_the_timeline(story: Story, tmp_path: Path) -> None:
    runner = CliRunner()
    login = ["--url", story.url, "--token", story.tokens["dev-a"]]
    env = {"MODELPORT_CONFIG_DIR": str(tmp_path / "config")}

    table = runner.invoke(app, ["history", "versioned", *login], env=env)
    assert table.exit_code == 0, table.output
    header, *rows = [line.split("\t") for line in table.stdout.splitlines()]
    assert header == ["TIME", "EVENT", "VERSION", "WHO", "TOOK", "OUTCOME", "DETAIL"]
    assert [r[1] for r in rows][:3] == ["switch", "rollback", "canary"]
    assert rows[0][2] == "v3 → v1" and rows[0][3] == "-" and rows[0][5] == "succeeded"
    assert rows[0][4].endswith(("ms", " s")) and rows[1][3] == "admin"
    assert rows[2][6] == "set at 25 % of calls"
    failure = next(r for r in rows if r[1] == "failure")
    assert failure[2] == "v3 → v4" and "corrupt" in failure[6]
    push = next(r for r in rows if r[1] == "push" and r[2] == "v1")
    assert push[3] == "dev-a" and push[6].startswith(f"tag v1, commit {story.commits['v1'][:12]}, sha256:")

    builds = runner.invoke(
        app, ["history", "versioned", "--kind", "build", "--since", "1d", "-o", "json", *login], env=env
    )
    assert builds.exit_code == 0, builds.output
    page = json.loads(builds.stdout)
    assert [e["version"] for e in page["events"]] == ["v4", "v3", "v2", "v1"] and page["next_cursor"] is None

    paged = runner.invoke(app, ["history", "versioned", "--limit", "2", *login], env=env)
    assert paged.exit_code == 0 and "older events: --cursor " in paged.stderr

    bad = runner.invoke(app, ["history", "versioned", "--since", "whenever", *login], env=env)
    assert bad.exit_code == 2 and "--since" in bad.stderr
    hidden = runner.invoke(
        app, ["history", "versioned", "--url", story.url, "--token", story.tokens["dev-c"]], env=env
    )
    assert hidden.exit_code == 1 and "module_not_found" in hidden.stderr
