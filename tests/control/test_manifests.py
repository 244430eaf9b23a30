"""Applying and deleting manifests against the database, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select

from modelport.control.audit import Actor, AuditTrail
from modelport.control.manifests import ManifestInvalid, Manifests
from modelport.core.errors import NotFound
from modelport.core.records import ApplyResult
from modelport.db import ApiDefinition, Database, Deployment, Module, Version

ALICE = Actor("alice")


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    db = Database(database_url)
    db.migrate()
    try:
        yield db
    finally:
        db.close()


@pytest.fixture
def notified() -> list[list[ApplyResult]]:
    return []


@pytest.fixture
def manifests(database: Database, notified: list[list[ApplyResult]]) -> Manifests:
    return Manifests(database, audit=AuditTrail(database), on_change=notified.append)


def module(name: str = "echo", **spec: Any) -> dict[str, Any]:
    document: dict[str, Any] = {"apiVersion": "modelport/v1", "kind": "Module", "metadata": {"name": name}}
    if spec:
        document["spec"] = spec
    return document


def api(name: str = "echo-api", module: str = "echo", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "modelport/v1",
        "kind": "Api",
        "metadata": {"name": name},
        "spec": {"module": module, **spec},
    }


def actions(changes: list[ApplyResult]) -> list[tuple[str, str, str]]:
    return [(c.kind, c.name, c.action) for c in changes]


def counts(database: Database) -> dict[str, int]:
    with database.session() as session:
        return {
            model.__tablename__: session.scalar(select(func.count()).select_from(model)) or 0
            for model in (Module, Version, Deployment, ApiDefinition)
        }


def invalid(manifests: Manifests, documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    with pytest.raises(ManifestInvalid) as caught:
        manifests.apply(documents, dry_run=False, actor=ALICE)
    assert (caught.value.status, caught.value.code) == (422, "invalid_manifest")
    return list(caught.value.details)


# Apply


def test_create_configure_unchanged(manifests: Manifests, database: Database) -> None:
    created = manifests.apply([module(resources={"replicas": 2}, owner="/ml")], actor=ALICE)
    configured = manifests.apply([module(resources={"replicas": 3})], actor=Actor("bob"))
    unchanged = manifests.apply([module(resources={"replicas": 3, "maxBatchSize": 8})], actor=Actor("bob"))

    assert actions(created + configured + unchanged) == [
        ("Module", "echo", "created"),
        ("Module", "echo", "configured"),
        ("Module", "echo", "unchanged"),
    ]
    assert unchanged[0].diff == ""
    with database.session() as session:
        row = session.get(Module, "echo")
        assert row is not None
        assert row.owner == "/ml"  # kept when a later manifest names no owner
        assert row.manifest == {
            "apiVersion": "modelport/v1",
            "kind": "Module",
            "metadata": {"name": "echo"},
            "spec": {"resources": {"replicas": 3}},
        }


def test_the_diff_is_unified_yaml(manifests: Manifests) -> None:
    created = manifests.apply([module(resources={"replicas": 2})], actor=ALICE)[0]
    configured = manifests.apply([module(resources={"replicas": 3}, env={"MODE": "fast"})], actor=ALICE)[0]

    assert created.diff == (
        "--- Module/echo (stored)\n"
        "+++ Module/echo (applied)\n"
        "@@ -0,0 +1,7 @@\n"
        "+apiVersion: modelport/v1\n"
        "+kind: Module\n"
        "+metadata:\n"
        "+  name: echo\n"
        "+spec:\n"
        "+  resources:\n"
        "+    replicas: 2\n"
    )
    assert configured.diff == (
        "--- Module/echo (stored)\n"
        "+++ Module/echo (applied)\n"
        "@@ -4,4 +4,6 @@\n"
        "   name: echo\n"
        " spec:\n"
        "   resources:\n"
        "-    replicas: 2\n"
        "+    replicas: 3\n"
        "+  env:\n"
        "+    MODE: fast\n"
    )
    assert configured.model_dump() == {
        "kind": "Module",
        "name": "echo",
        "action": "configured",
        "diff": configured.diff,
        "message": "",
    }


def test_dry_run_writes_nothing(
    manifests: Manifests, database: Database, notified: list[list[ApplyResult]]
) -> None:
    planned = manifests.apply([module(), api()], dry_run=True, actor=ALICE)
    assert actions(planned) == [("Module", "echo", "created"), ("Api", "echo-api", "created")]
    assert planned[0].diff.startswith("--- Module/echo (stored)")
    assert counts(database)["modules"] == counts(database)["apis"] == 0

    manifests.apply([module(), api()], actor=ALICE)
    planned = manifests.apply([module(resources={"replicas": 0})], dry_run=True, actor=ALICE)
    assert actions(planned) == [("Module", "echo", "configured")]
    assert manifests.get("Module", "echo") == module()
    assert len(notified) == 1
    assert len(manifests.audit.events()) == 2  # the module and the API, applied once


def test_only_committed_changes_are_heard_and_recorded(
    manifests: Manifests, notified: list[list[ApplyResult]]
) -> None:
    manifests.apply([module("a"), module("b")], actor=ALICE)
    manifests.apply([module("a"), module("b", resources={"replicas": 2})], actor=ALICE)
    manifests.apply([module("a")], actor=ALICE)

    assert [actions(n) for n in notified] == [
        [("Module", "a", "created"), ("Module", "b", "created")],
        [("Module", "b", "configured")],
    ]
    recorded = [(e.actor, e.action, e.target) for e in reversed(manifests.audit.events())]
    assert recorded == [
        ("alice", "module.create", "module/a"),
        ("alice", "module.create", "module/b"),
        ("alice", "module.update", "module/b"),
    ]


def test_a_failing_listener_does_not_undo_the_change(database: Database) -> None:
    def listener(changes: list[ApplyResult]) -> None:
        raise RuntimeError("listener broke")

    Manifests(database, audit=AuditTrail(database), on_change=listener).apply([module()], actor=ALICE)
    assert Manifests(database, audit=AuditTrail(database)).get("Module", "echo") == module()


def test_an_api_may_come_with_its_module_in_the_same_request(
    manifests: Manifests, database: Database
) -> None:
    changes = manifests.apply([api(), module()], actor=ALICE)

    assert actions(changes) == [("Api", "echo-api", "created"), ("Module", "echo", "created")]
    with database.session() as session:
        row = session.get(ApiDefinition, "echo-api")
        assert row is not None
        assert row.module_name == "echo"
        assert row.manifest == api()


def test_an_api_may_name_a_module_already_stored(manifests: Manifests) -> None:
    manifests.apply([module()], actor=ALICE)
    assert actions(manifests.apply([api(syncTimeoutSeconds=30)], actor=ALICE)) == [
        ("Api", "echo-api", "created")
    ]
    assert manifests.get("Api", "echo-api")["spec"] == {"module": "echo", "syncTimeoutSeconds": 30}


def test_an_api_naming_an_unknown_module_is_refused(manifests: Manifests, database: Database) -> None:
    assert invalid(manifests, [module(), api("other", module="ghost")]) == [
        {
            "document": 1,
            "kind": "Api",
            "name": "other",
            "field": "spec.module",
            "message": "unknown module 'ghost'",
        }
    ]
    assert counts(database)["modules"] == 0


def test_an_api_may_move_to_another_module(manifests: Manifests, database: Database) -> None:
    manifests.apply([module("a"), module("b"), api(module="a")], actor=ALICE)
    changes = manifests.apply([api(module="b")], actor=ALICE)

    assert actions(changes) == [("Api", "echo-api", "configured")]
    assert "-  module: a\n+  module: b\n" in changes[0].diff
    with database.session() as session:
        row = session.get(ApiDefinition, "echo-api")
        assert row is not None
        assert row.module_name == "b"


def test_a_module_pushed_without_a_manifest_reads_as_the_default(
    manifests: Manifests, database: Database
) -> None:
    with database.session() as session:
        session.add(Module(name="pushed", owner="carol"))

    assert manifests.get("Module", "pushed") == module("pushed")
    assert actions(manifests.apply([module("pushed")], actor=ALICE)) == [("Module", "pushed", "unchanged")]
    manifests.apply([module("pushed", resources={"replicas": 2})], actor=ALICE)
    with database.session() as session:
        row = session.get(Module, "pushed")
        assert row is not None
        assert row.owner == "carol"


# Refused


def test_an_unknown_field_is_named(manifests: Manifests) -> None:
    [problem] = invalid(manifests, [module(resources={"replica": 2})])

    assert (problem["document"], problem["kind"], problem["name"], problem["field"]) == (
        0,
        "Module",
        "echo",
        "spec.resources.replica",
    )
    assert problem["message"].startswith("unknown field 'replica' (extra fields are not permitted)")


def test_a_bad_value_is_named(manifests: Manifests) -> None:
    [problem] = invalid(manifests, [module(resources={"replicas": "many"})])
    assert problem["field"] == "spec.resources.replicas"
    assert "valid integer" in problem["message"]


def test_an_unknown_kind_is_named(manifests: Manifests) -> None:
    [problem] = invalid(manifests, [{"apiVersion": "modelport/v1", "kind": "Pod", "metadata": {"name": "x"}}])
    assert problem == {
        "document": 0,
        "kind": "Pod",
        "name": "x",
        "field": "kind",
        "message": "unknown kind 'Pod'; known kinds: Api, Module, Pipeline, Storage",
    }


def test_one_invalid_document_among_valid_ones_writes_nothing(
    manifests: Manifests, database: Database
) -> None:
    documents = [module("a"), module("b", resources={"replicas": -1}), api(module="a"), {"kind": "Nope"}]

    problems = invalid(manifests, documents)

    assert [(p["document"], p["field"]) for p in problems] == [(1, "spec.resources.replicas"), (3, "kind")]
    assert counts(database) == {"modules": 0, "versions": 0, "deployments": 0, "apis": 0}


def test_a_document_that_is_not_a_mapping_is_refused(manifests: Manifests) -> None:
    [problem] = invalid(manifests, [module(), ["not", "a", "mapping"]])  # type: ignore[list-item]
    assert (problem["document"], problem["field"]) == (1, "")
    assert problem["message"] == "expected a mapping (apiVersion, kind, metadata, spec), got list"


def test_wildcard_cors_with_credentials_is_refused(manifests: Manifests) -> None:
    cors = {"enabled": True, "allowOrigin": ["*"], "allowCredentials": True}
    [problem] = invalid(manifests, [module(), api(restfulApi={"cors": cors})])

    assert (problem["document"], problem["field"]) == (1, "spec.restfulApi.cors")
    assert "cannot be combined with allowCredentials" in problem["message"]


def test_the_same_object_twice_in_one_request_is_refused(manifests: Manifests) -> None:
    [problem] = invalid(manifests, [module(), module(resources={"replicas": 2})])
    assert (problem["document"], problem["field"]) == (1, "metadata.name")
    assert problem["message"] == "document 0 already declares Module 'echo'"


def test_the_error_message_points_at_the_first_problem(manifests: Manifests) -> None:
    with pytest.raises(ManifestInvalid) as caught:
        manifests.apply([module(resources={"replicas": -1}), {"kind": "Nope"}], actor=ALICE)
    assert caught.value.message == (
        "Module/echo spec.resources.replicas: Input should be greater than or equal to 0 (got -1) "
        "(and 1 more problem)"
    )


# Delete


def test_deleting_a_module_cascades(
    manifests: Manifests, database: Database, notified: list[list[ApplyResult]]
) -> None:
    manifests.apply([module(), api(), api("echo-public")], actor=ALICE)
    with database.session() as session:
        session.add(Version(module_name="echo", name="v1.0.0", digest="sha256:" + "0" * 64, size=1))
        session.add(Deployment(module_name="echo", active_version="v1.0.0"))
    notified.clear()

    changes = manifests.delete([module()], dry_run=False, actor=ALICE)

    assert actions(changes) == [
        ("Module", "echo", "deleted"),
        ("Api", "echo-api", "deleted"),
        ("Api", "echo-public", "deleted"),
    ]
    assert changes[0].diff == (
        "--- Module/echo (stored)\n"
        "+++ Module/echo (deleted)\n"
        "@@ -1,4 +0,0 @@\n"
        "-apiVersion: modelport/v1\n"
        "-kind: Module\n"
        "-metadata:\n"
        "-  name: echo\n"
    )
    assert counts(database) == {"modules": 0, "versions": 0, "deployments": 0, "apis": 0}
    assert [actions(n) for n in notified] == [actions(changes)]


def test_deleting_an_api_keeps_its_module(manifests: Manifests, database: Database) -> None:
    manifests.apply([module(), api()], actor=ALICE)

    assert actions(manifests.delete([api()], actor=ALICE)) == [("Api", "echo-api", "deleted")]
    assert counts(database)["modules"] == 1
    assert manifests.list("Api") == []


def test_delete_reads_only_kind_and_name(manifests: Manifests, database: Database) -> None:
    manifests.apply([module()], actor=ALICE)
    stale = module(resources={"replicas": "no longer valid", "gone": True})

    assert actions(manifests.delete([stale], actor=ALICE)) == [("Module", "echo", "deleted")]


def test_deleting_what_does_not_exist_deletes_nothing(manifests: Manifests, database: Database) -> None:
    manifests.apply([module()], actor=ALICE)

    with pytest.raises(NotFound) as caught:
        manifests.delete([module(), api("ghost"), module("phantom")], actor=ALICE)

    assert (caught.value.status, caught.value.code) == (404, "not_found")
    assert caught.value.details == [
        {"document": 1, "kind": "Api", "name": "ghost"},
        {"document": 2, "kind": "Module", "name": "phantom"},
    ]
    assert "Api/ghost, Module/phantom" in caught.value.message
    assert counts(database)["modules"] == 1


def test_missing_objects_may_be_ignored(manifests: Manifests, database: Database) -> None:
    manifests.apply([module()], actor=ALICE)

    changes = manifests.delete([module(), api("ghost")], actor=ALICE, ignore_missing=True)

    assert actions(changes) == [("Module", "echo", "deleted")]
    assert counts(database)["modules"] == 0


def test_delete_dry_run_deletes_nothing(manifests: Manifests, database: Database) -> None:
    manifests.apply([module(), api()], actor=ALICE)

    changes = manifests.delete([module()], dry_run=True, actor=ALICE)

    assert actions(changes) == [("Module", "echo", "deleted"), ("Api", "echo-api", "deleted")]
    assert counts(database)["modules"] == counts(database)["apis"] == 1


def test_delete_needs_a_known_kind_and_a_name(manifests: Manifests) -> None:
    with pytest.raises(ManifestInvalid) as caught:
        manifests.delete([{"kind": "Pod", "metadata": {"name": "x"}}, {"kind": "Module"}], actor=ALICE)
    assert [(p["document"], p["field"]) for p in caught.value.details] == [(0, "kind"), (1, "metadata.name")]


# Reading


def test_get_and_list(manifests: Manifests) -> None:
    manifests.apply([module("b"), module("a"), api(module="a")], actor=ALICE)

    assert [m["metadata"]["name"] for m in manifests.list("Module")] == ["a", "b"]
    assert manifests.list("Api") == [api(module="a")]
    assert manifests.get("Module", "b") == module("b")
    with pytest.raises(NotFound):
        manifests.get("Api", "nothing")


def deployed(database: Database, name: str = "echo", *, replicas: int = 1) -> None:
    """`name` deployed at generation 1 and carried out, running `replicas` workers."""
    with database.session() as session:
        session.add(Version(module_name=name, name="v1", digest="sha256:" + "0" * 64, size=1))
        session.add(
            Deployment(
                module_name=name,
                active_version="v1",
                replicas=replicas,
                generation=1,
                observed_generation=1,
                status="ready",
            )
        )


def deployment_of(database: Database, name: str = "echo") -> tuple[int, int, int, str]:
    """(replicas, generation, observed generation, status)."""
    with database.session() as session:
        row = session.get(Deployment, name)
        assert row is not None
        return row.replicas, row.generation, row.observed_generation, row.status


def test_a_module_manifest_that_sets_replicas_scales_its_deployment(
    manifests: Manifests, database: Database, notified: list[list[ApplyResult]]
) -> None:
    manifests.apply([module()], actor=ALICE)
    deployed(database)
    notified.clear()
    scaled = module(resources={"replicas": 2})

    [planned] = manifests.apply([scaled], dry_run=True, actor=ALICE)
    assert (planned.action, planned.message) == ("configured", "scaled to 2 replicas")
    assert deployment_of(database) == (1, 1, 1, "ready")

    [change] = manifests.apply([scaled], actor=ALICE)
    assert (change.action, change.message) == ("configured", "scaled to 2 replicas")
    assert "+    replicas: 2\n" in change.diff
    assert deployment_of(database) == (2, 2, 1, "progressing")  # a new generation for the reconciler
    assert notified == [[change]]
    scales = manifests.audit.events(action="module.scale")
    assert [(e.actor, e.target, e.details) for e in scales] == [
        ("alice", "module/echo", {"replicas": 2, "previous": 1})
    ]
    assert [e.action for e in manifests.audit.events(target="module/echo")] == [
        "module.scale",
        "module.update",
        "module.create",
    ]

    [again] = manifests.apply([scaled], actor=ALICE)
    assert (again.action, again.message) == ("unchanged", "")
    assert deployment_of(database) == (2, 2, 1, "progressing")


def test_a_deployment_scaled_by_hand_is_scaled_back_by_its_unchanged_manifest(
    manifests: Manifests, database: Database
) -> None:
    """The manifest's replicas hold whenever it is applied: the change is the deployment's, not the
    manifest's, so only `module.scale` is recorded."""
    manifests.apply([module(resources={"replicas": 2})], actor=ALICE)
    deployed(database, replicas=4)

    [change] = manifests.apply([module(resources={"replicas": 2})], actor=ALICE)

    assert (change.action, change.diff, change.message) == ("configured", "", "scaled to 2 replicas")
    assert deployment_of(database)[:2] == (2, 2)
    assert [e.action for e in manifests.audit.events(target="module/echo")] == [
        "module.scale",
        "module.create",
    ]


def test_a_manifest_without_replicas_or_a_module_not_deployed_scales_nothing(
    manifests: Manifests, database: Database
) -> None:
    manifests.apply([module(), module("idle")], actor=ALICE)
    deployed(database, replicas=3)

    changes = manifests.apply(
        [module(env={"MODE": "fast"}), module("idle", resources={"replicas": 2})], actor=ALICE
    )

    assert [(c.action, c.message) for c in changes] == [("configured", ""), ("configured", "")]
    assert deployment_of(database) == (3, 1, 1, "ready")
    with database.session() as session:
        assert session.get(Deployment, "idle") is None
    assert manifests.audit.events(action="module.scale") == []
