"""The publication history: each kind of event recorded with its fields, by the service that does the work,
on both databases; the timeline's filters, pages and refusals."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from drive import deploy, push, wait_built, wait_deployment
from inprocess import served_platform
from platform_server import ADMIN_TOKEN

from modelport.control.history import EVENT_KINDS, History
from modelport.core.errors import ValidationFailed
from modelport.db import Database, Module

FIXTURES = Path(__file__).parents[1] / "fixtures" / "modules"


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    db = Database(database_url)
    db.migrate()
    try:
        yield db
    finally:
        db.close()


# The service itself


def test_each_kind_is_recorded_with_its_fields(database: Database) -> None:
    told: list[tuple[str, str | None, float | None]] = []
    history = History(database, on_event=lambda *event: told.append(event))
    written = [
        history.record("m", kind, version=f"v{i}", from_version=f"v{i - 1}", actor="ann", details={"n": i})
        for i, kind in enumerate(EVENT_KINDS)
    ]
    build = history.record(
        "m", "build", version="v9", outcome="failed", seconds=1.5, details={"error": "no", "empty": None}
    )

    page = history.timeline("m")
    assert page.next_cursor is None
    assert [e.kind for e in page.events] == ["build", *reversed(EVENT_KINDS)]
    assert page.events[0] == build
    assert (build.outcome, build.seconds, build.details) == ("failed", 1.5, {"error": "no"})
    for i, event in enumerate(reversed(page.events[1:])):
        assert event == written[i]
        assert (event.module, event.version, event.from_version, event.actor) == (
            "m",
            f"v{i}",
            f"v{i - 1}",
            "ann",
        )
        assert event.details == {"n": i} and event.outcome is None and event.seconds is None
        assert datetime.fromisoformat(event.at).tzinfo is not None
    assert told == [(kind, None, None) for kind in EVENT_KINDS] + [("build", "failed", 1.5)]
    assert history.timeline("other").events == []
    with pytest.raises(ValueError, match="not an event kind"):
        history.record("m", "promote")


def test_details_keep_no_secrets_and_no_essays(database: Database) -> None:
    history = History(database)
    error = "pip said: Authorization: Bearer abcdefghijklmnop " + "x" * 5000
    event = history.record("m", "build", version="v1", outcome="failed", details={"error": error})
    assert event is not None
    kept = event.details["error"]
    assert "abcdefghijklmnop" not in kept and "[redacted]" in kept
    assert len(kept) <= 2000


def test_recording_never_fails_the_work(tmp_path: Path) -> None:
    unmigrated = Database(f"sqlite:///{tmp_path / 'empty.db'}")  # no tables: every write fails
    try:
        told: list[str] = []
        assert History(unmigrated, on_event=lambda kind, *_: told.append(kind)).record("m", "push") is None
        assert told == []
        assert History(unmigrated).requested_at("m", "v1") is None
    finally:
        unmigrated.close()


def test_a_failing_listener_does_not_fail_the_record(database: Database) -> None:
    def listener(kind: str, outcome: str | None, seconds: float | None) -> None:
        raise RuntimeError("the metrics are down")

    history = History(database, on_event=listener)
    assert history.record("m", "switch", version="v2", outcome="succeeded", seconds=0.5) is not None
    assert [e.kind for e in history.timeline("m").events] == ["switch"]


def test_the_timeline_filters_by_kind_and_time_and_pages_back(database: Database) -> None:
    history = History(database)
    for i in range(7):
        history.record("m", "push" if i % 2 else "build", version=f"v{i}")
    history.record("n", "push", version="elsewhere")
    events = history.timeline("m").events
    assert [e.version for e in events] == [f"v{i}" for i in reversed(range(7))]

    assert [e.version for e in history.timeline("m", kinds=["push"]).events] == ["v5", "v3", "v1"]
    assert len(history.timeline("m", kinds=["push", "build"]).events) == 7
    middle = datetime.fromisoformat(events[3].at)
    assert {e.version for e in history.timeline("m", since=middle).events} >= {"v3", "v4", "v5", "v6"}
    assert {e.version for e in history.timeline("m", since=middle).events} <= {"v2", "v3", "v4", "v5", "v6"}
    before = history.timeline("m", until=middle).events
    assert "v3" not in {e.version for e in before} and "v0" in {e.version for e in before}
    naive = middle.replace(tzinfo=None)  # taken as UTC
    assert history.timeline("m", since=naive).events == history.timeline("m", since=middle).events
    assert history.timeline("m", since=datetime.now(UTC) + timedelta(hours=1)).events == []

    seen, cursor, pages = [], None, 0
    while True:
        page = history.timeline("m", limit=3, cursor=cursor)
        seen += [e.version for e in page.events]
        pages += 1
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == [e.version for e in events] and pages == 3
    assert history.timeline("m", limit=7).next_cursor is None


def test_events_of_an_earlier_module_of_the_same_name_are_not_current(database: Database) -> None:
    history = History(database)
    history.record("m", "push", version="theirs")
    history.record("m", "delete", actor="ann")
    assert history.known("m") and not history.known("never")
    with database.session() as session:
        session.add(Module(name="m", owner="/team-b"))
    history.record("m", "push", version="ours")
    assert [e.version for e in history.timeline("m", current=True).events] == ["ours"]
    assert [e.kind for e in history.timeline("m").events] == ["push", "delete", "push"]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"kinds": ["push", "promote"]}, "kind"),
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"since": datetime(2026, 1, 2, tzinfo=UTC), "until": datetime(2026, 1, 1, tzinfo=UTC)}, "until"),
        ({"since": datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5)))}, "since"),
        ({"cursor": "yesterday"}, "cursor"),
        ({"cursor": "12.0"}, "cursor"),
        ({"cursor": "9" * 30 + ".1"}, "cursor"),
    ],
)
def test_a_query_that_can_never_match_names_its_field(
    database: Database, query: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationFailed) as raised:
        History(database).timeline("m", **query)
    assert [d["field"] for d in raised.value.details] == [field]


# The services that do the work record their events


def _module(tmp_path: Path) -> Path:
    directory = tmp_path / "modules" / "versioned"
    shutil.copytree(FIXTURES / "versioned", directory, ignore=shutil.ignore_patterns("__pycache__"))
    return directory


def _release(
    directory: Path, *, release: str = "one", env: dict[str, str] | None = None, broken: bool = False
) -> None:
    """Make the module directory the release asked for: its RELEASE, its manifest's env, an import error."""
    source = (
        (FIXTURES / "versioned" / "inference.py")
        .read_text()
        .replace('RELEASE = "one"', f'RELEASE = "{release}"')
    )
    (directory / "inference.py").write_text(("import nonexistent_package_xyz\n" if broken else "") + source)
    manifest = (FIXTURES / "versioned" / "modelport.yaml").read_text()
    lines = "".join(f"    {k}: {v!r}\n" for k, v in (env or {}).items())
    (directory / "modelport.yaml").write_text(
        manifest.replace("spec:\n", f"spec:\n  env:\n{lines}", 1) if env else manifest
    )


def _pushed(client: httpx.Client, directory: Path, version: str) -> dict[str, Any]:
    assert push(client, directory, version=version).status_code == 201
    return wait_built(client, "versioned", version)


def _rolled_out(client: httpx.Client, response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 202, response.text
    return wait_deployment(client, "versioned", response.json()["generation"])


def _timeline(client: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    response = client.get("/api/v1/modules/versioned/history", params={"limit": 1000, **params})
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["events"]
    return events


def _one(events: list[dict[str, Any]], kind: str, **fields: Any) -> dict[str, Any]:
    found = [e for e in events if e["kind"] == kind and all(e[k] == v for k, v in fields.items())]
    assert len(found) == 1, (kind, fields, events)
    return found[0]


def test_the_services_record_each_event_as_they_work(tmp_path: Path, database_url: str) -> None:
    directory = _module(tmp_path)
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with (
        served_platform(tmp_path / "platform", database_url=database_url) as served,
        served.client(headers) as client,
    ):
        _release(directory)
        assert _pushed(client, directory, "v1")["build_status"] == "ready"
        _release(directory, broken=True)
        assert _pushed(client, directory, "v2")["build_status"] == "failed"
        assert (
            _rolled_out(client, client.post("/api/v1/modules/versioned/deploy", json={"version": "v1"}))[
                "version"
            ]
            == "v1"
        )
        _release(directory, env={"LOAD_FAILS": "1"})
        _pushed(client, directory, "v3")
        failed = _rolled_out(client, client.post("/api/v1/modules/versioned/deploy", json={"version": "v3"}))
        assert failed["rollout"]["status"] == "failed"
        _release(directory, release="two")
        _pushed(client, directory, "v4")
        _rolled_out(client, client.post("/api/v1/modules/versioned/deploy", json={"version": "v4"}))
        for percent in (10, 20, 0):
            deploy(client, "versioned", "v1", canary_percent=percent)
        _rolled_out(client, client.post("/api/v1/modules/versioned/rollback"))
        manifest = {
            "apiVersion": "modelport/v1",
            "kind": "Module",
            "metadata": {"name": "versioned"},
            "spec": {"resources": {"replicas": 2}},
        }
        assert client.post("/api/v1/apply", json={"documents": [manifest]}).status_code == 200
        generation = client.get("/api/v1/modules/versioned").json()["deployment"]["generation"]
        assert wait_deployment(client, "versioned", generation)["replicas"] == 2
        events = _timeline(client)
        assert client.delete("/api/v1/modules/versioned").status_code == 204
        deleted = _timeline(client, kind="delete")  # an admin still reads a deleted module's history

    stamps = [(e["at"], e["id"]) for e in events]
    assert stamps == sorted(stamps, reverse=True)
    pushes = {e["version"]: e for e in events if e["kind"] == "push"}
    assert set(pushes) == {"v1", "v2", "v3", "v4"}
    assert pushes["v1"]["actor"] == "admin" and pushes["v1"]["details"]["digest"].startswith("sha256:")
    assert pushes["v1"]["details"]["size"] > 0
    built = _one(events, "build", version="v1")
    assert built["outcome"] == "succeeded" and built["seconds"] > 0 and built["details"] == {}
    broken = _one(events, "build", version="v2")
    assert broken["outcome"] == "failed" and broken["seconds"] > 0
    assert "nonexistent_package_xyz" in broken["details"]["error"]

    first = _one(events, "deploy", version="v1")
    assert (first["from_version"], first["actor"], first["details"]["replicas"]) == (None, "admin", 1)
    switched = _one(events, "switch", version="v1", from_version=None)
    assert switched["outcome"] == "succeeded" and switched["seconds"] > 0
    assert switched["at"] > first["at"]
    failure = _one(events, "failure", version="v3")
    assert failure["from_version"] == "v1" and failure["details"]["role"] == "target"
    assert "corrupt" in failure["details"]["reason"]
    assert not [e for e in events if e["kind"] == "switch" and e["version"] == "v3"]
    _one(events, "deploy", version="v4", from_version="v1")
    assert _one(events, "switch", version="v4", from_version="v1")["seconds"] > 0

    canaries = [e for e in reversed(events) if e["kind"] == "canary"]
    assert [(e["details"]["action"], e["details"]["percent"], e["version"]) for e in canaries] == [
        ("set", 10, "v1"),
        ("changed", 20, "v1"),
        ("removed", 0, "v1"),
    ]
    assert canaries[1]["details"]["previous_percent"] == 10
    rollback = _one(events, "rollback")
    assert (rollback["version"], rollback["from_version"], rollback["actor"]) == ("v1", "v4", "admin")
    back = _one(events, "switch", version="v1", from_version="v4")
    assert back["seconds"] > 0 and back["at"] > rollback["at"]
    scaled = _one(events, "scale")
    assert scaled["details"] == {"replicas": 2, "previous_replicas": 1, "via": "manifest"}
    assert scaled["actor"] == "admin"
    [gone] = deleted
    assert (gone["kind"], gone["actor"], gone["module"]) == ("delete", "admin", "versioned")
