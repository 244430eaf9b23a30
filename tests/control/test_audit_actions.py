"""Audit actions are named one way, `noun.verb` in the present tense, whichever route makes the change."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path
from typing import get_args

import pytest

import modelport.control
from modelport.control.audit import Actor, AuditTrail, manifest_action
from modelport.control.manifests import Manifests
from modelport.core.manifests import KINDS
from modelport.core.records import ApplyAction
from modelport.db import Database

CONTROL = Path(modelport.control.__file__).parent

ACTIONS = [
    "api.create",
    "api.delete",
    "api.update",
    "auth.fail",
    "auth.login",
    "group.create",
    "group.delete",
    "module.create",
    "module.delete",
    "module.deploy",
    "module.rollback",
    "module.scale",
    "module.update",
    "object.delete",
    "object.presign",
    "object.put",
    "pipeline.create",
    "pipeline.delete",
    "pipeline.update",
    "storage.create",
    "storage.delete",
    "storage.update",
    "token.create",
    "token.revoke",
    "user.create",
    "user.delete",
    "user.update",
    "version.push",
    "webhook.rotate",
]


def _audit_record(node: ast.expr) -> bool:
    """Whether `node` is the audit trail's `record` (`audit.record`, `self.audit.record`), not another
    service's (the publication history's `history.record`)."""
    return (
        isinstance(node, ast.Attribute)
        and node.attr == "record"
        and ast.unparse(node.value).endswith("audit")
    )


def _action_argument(call: ast.Call) -> ast.expr | None:
    """The action of `audit.record(actor, action, ...)`, or of a call handed `audit.record` and its
    arguments (`run(audit.record, actor, action, ...)`); None for any other call."""
    if _audit_record(call.func):
        return call.args[1]
    for index, argument in enumerate(call.args):
        if _audit_record(argument):
            return call.args[index + 2]
    return None


def _names(action: ast.expr, where: str) -> Iterator[str]:
    if isinstance(action, ast.Constant) and isinstance(action.value, str):
        yield action.value
    elif isinstance(action, ast.Call) and ast.unparse(action.func) == "manifest_action":
        for kind in KINDS:
            for result in get_args(ApplyAction):
                if result != "unchanged":  # never recorded: nothing changed
                    yield manifest_action(kind, result)
    else:
        pytest.fail(f"{where}: an audit action that is neither a literal nor manifest_action(...)")


def recorded_actions() -> set[str]:
    """Every action the control services record, read from their source."""
    found: set[str] = set()
    for path in sorted(CONTROL.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            action = _action_argument(node) if isinstance(node, ast.Call) else None
            if action is not None:
                found.update(_names(action, f"{path.name}:{node.lineno}"))
    return found


def test_every_action_is_listed_and_named_noun_dot_verb() -> None:
    assert sorted(recorded_actions()) == ACTIONS
    assert all(re.fullmatch(r"[a-z]+\.[a-z]+", action) for action in ACTIONS)


def test_a_module_deleted_by_manifest_is_recorded_as_by_its_route(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'audit.db'}")
    database.migrate()
    try:
        manifests = Manifests(database, audit=AuditTrail(database))
        document = {"apiVersion": "modelport/v1", "kind": "Module", "metadata": {"name": "echo"}}
        manifests.apply([document], actor=Actor("ann"))
        manifests.apply([document | {"spec": {"resources": {"replicas": 2}}}], actor=Actor("ann"))
        manifests.delete([document], actor=Actor("ann"))
        events = reversed(manifests.audit.events())
        assert [(e.action, e.target) for e in events] == [
            ("module.create", "module/echo"),
            ("module.update", "module/echo"),
            ("module.delete", "module/echo"),  # as `DELETE /api/v1/modules/echo` records it
        ]
    finally:
        database.close()
