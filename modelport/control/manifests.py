"""Applying manifests: validate every document, then create, configure or delete objects in one transaction.

Stored manifests are compact documents (`to_document`: apiVersion, kind, metadata and the spec fields that
differ from the defaults), so applying the same object twice, however it is spelt, is `unchanged`, and each
change carries a unified diff of the stored document against the new one.

Deleting an object that does not exist is refused with `NotFound` (404, `not_found`), listing every missing
object, and nothing is deleted, as `kubectl delete` does without `--ignore-not-found`; `ignore_missing=True`
skips them instead. Deleting a module deletes its versions, deployment and APIs with it (the database
cascades), and each of its APIs is reported as deleted too.

A `Module` manifest that sets `spec.resources.replicas` scales the module's deployment to them when it runs
another number (as a new generation, which the reconciler carries out like a deploy with `replicas`): the
result is `configured`, says so in its `message` (`scaled to 2 replicas`), and the audit trail records
`module.scale`. A manifest that leaves replicas out leaves the deployment as it is.

`Storage` manifests declare buckets; only admins apply or delete them. Applying one makes the bucket in the
object store; deleting one is refused (409 `bucket_not_empty`) while the bucket holds objects.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable, Sequence
from typing import Any

import yaml
from pydantic import ValidationError
from sqlalchemy import delete, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from modelport.control.access import ALLOW_ALL, Permit
from modelport.control.audit import Actor, AuditTrail, manifest_action
from modelport.control.deployments import scale
from modelport.control.history import History
from modelport.control.pipelines import compose, step_specs
from modelport.core.errors import BadRequest, BucketNotFound, Conflict, Forbidden, ModelportError, NotFound
from modelport.core.manifests import (
    KINDS,
    ApiManifest,
    Manifest,
    ManifestError,
    Metadata,
    ModuleManifest,
    PipelineManifest,
    Problem,
    StorageManifest,
    parse_document,
    to_document,
)
from modelport.core.records import ApplyResult
from modelport.core.roles import Role
from modelport.db import ApiDefinition, Bucket, Database, Module, PipelineDefinition
from modelport.storage import ObjectStore

__all__ = ["BucketNotEmpty", "ManifestInvalid", "Manifests"]

log = logging.getLogger("modelport.manifests")

_SOURCE = "request"


class ManifestInvalid(ModelportError):
    """The manifests are invalid; `details` lists each problem: document, kind, name, field and message."""

    status, code = 422, "invalid_manifest"

    @classmethod
    def of(cls, problems: Sequence[Problem]) -> ManifestInvalid:
        first = problems[0]
        where = f"{first['kind']}/{first['name']}" if first["kind"] and first["name"] else None
        where = where or f"document {first['document']}"
        field = f" {first['field']}" if first["field"] else ""
        others = len(problems) - 1
        more = f" (and {others} more problem{'s' if others > 1 else ''})" if others else ""
        return cls(f"{where}{field}: {first['message']}{more}", details=list(problems))

    @classmethod
    def from_error(cls, error: ManifestError) -> ManifestInvalid:
        """The HTTP form of a `ManifestError`, such as a YAML stream that does not parse."""
        if error.problems:
            return cls.of(error.problems)
        return cls(str(error), details=[])


class BucketNotEmpty(Conflict):
    """The bucket still holds objects; delete them first."""

    code = "bucket_not_empty"


Row = Module | ApiDefinition | Bucket | PipelineDefinition


class Manifests:
    """Apply, delete and read the `Module`, `Api` and `Storage` manifests stored in the database."""

    def __init__(
        self,
        database: Database,
        *,
        audit: AuditTrail,
        store: ObjectStore | None = None,
        on_change: Callable[[list[ApplyResult]], None] | None = None,
        history: History | None = None,
    ) -> None:
        self.database = database
        self.audit = audit
        self.store = store
        self._on_change = on_change
        self.history = history

    def apply(
        self,
        documents: list[dict[str, Any]],
        *,
        dry_run: bool = False,
        actor: Actor,
        permit: Permit | None = ALLOW_ALL,
    ) -> list[ApplyResult]:
        """Create or configure every object the documents describe, all or nothing.

        Every document is validated before anything is written: any problem raises `ManifestInvalid` listing
        all of them. An `Api` must name a module that exists or that a `Module` document of the same request
        creates. `permit` decides which modules the actor may change and which group owns a new module (its
        `spec.owner`, or the developer's only group). On a dry run the changes are computed, nothing written;
        otherwise each change is recorded in the audit trail as `actor`'s.
        """
        manifests = _validate(documents)
        try:
            with self.database.session() as session:
                _check_targets(session, manifests, permit)
                created = {
                    m.metadata.name for m in manifests if isinstance(m, ModuleManifest | PipelineManifest)
                }
                # Modules and pipelines first, so that the APIs' foreign keys find them; results in document
                # order.
                order = sorted(range(len(manifests)), key=lambda i: manifests[i].kind == "Api")
                changes: dict[int, ApplyResult] = {}
                for index in order:
                    changes[index] = _apply_one(
                        session, manifests[index], write=not dry_run, permit=permit, created=created
                    )
                    session.flush()
                scaled = _scale(session, manifests, write=not dry_run)
                if not dry_run:
                    self._make_buckets([m for m in manifests if isinstance(m, StorageManifest)])
        except IntegrityError:
            raise Conflict("the objects changed while this request applied them; apply again") from None
        result = [_scaled(changes[i], scaled) for i in range(len(manifests))]
        self._committed(result, dry_run=dry_run, actor=actor, scaled=scaled)
        return result

    def _make_buckets(self, buckets: list[StorageManifest]) -> None:
        for manifest in buckets:
            if self.store is None:
                raise BadRequest("this server has no object storage; Storage manifests cannot be applied")
            self.store.create_bucket(manifest.metadata.name)

    def delete(
        self,
        documents: list[dict[str, Any]],
        *,
        dry_run: bool = False,
        actor: Actor,
        permit: Permit | None = ALLOW_ALL,
        ignore_missing: bool = False,
    ) -> list[ApplyResult]:
        """Delete the objects the documents name (only `kind` and `metadata.name` are read), all or nothing.

        A missing object is `NotFound`, listing all of them, unless `ignore_missing`.
        """
        targets = _targets(documents)
        with self.database.session() as session:
            rows: list[tuple[str, str, dict[str, Any]]] = []
            missing: list[dict[str, Any]] = []
            for index, kind, name in targets:
                row = _row(session, kind, name)
                if row is not None and permit is not None:
                    _may_change(permit, row)
                if row is None:
                    missing.append({"document": index, "kind": kind, "name": name})
                else:
                    rows.append((kind, name, row.manifest))
            if missing and not ignore_missing:
                names = ", ".join(f"{m['kind']}/{m['name']}" for m in missing)
                raise NotFound(f"not found, so nothing was deleted: {names}", details=missing)
            self._check_empty([name for kind, name, _ in rows if kind == "Storage"])
            rows += _cascaded_apis(session, rows)
            changes = [
                ApplyResult(
                    kind=kind,
                    name=name,
                    action="deleted",
                    diff=_diff(kind, name, _stored(kind, name, manifest), None, "deleted"),
                )
                for kind, name, manifest in rows
            ]
            if not dry_run:
                _delete(session, rows)
        self._committed(changes, dry_run=dry_run, actor=actor)
        return changes

    def _check_empty(self, buckets: list[str]) -> None:
        for bucket in buckets:
            try:
                empty = self.store is None or not self.store.list(bucket, limit=1).objects
            except BucketNotFound:  # never made in the store: nothing to keep
                empty = True
            if not empty:
                raise BucketNotEmpty(f"bucket {bucket!r} still holds objects; delete them first")

    def get(self, kind: str, name: str) -> dict[str, Any]:
        """The stored manifest of one object; `NotFound` if there is none."""
        _known(kind)
        with self.database.session() as session:
            row = _row(session, kind, name)
            if row is None:
                raise NotFound(f"no {kind} named {name!r}")
            return _stored(kind, name, row.manifest)

    def _committed(
        self,
        changes: list[ApplyResult],
        *,
        dry_run: bool,
        actor: Actor,
        scaled: dict[str, tuple[int, int]] | None = None,
    ) -> None:
        """Record what changed in the audit trail (each manifest, each deployment `scaled`: replicas before
        and after, by module), then tell the listener."""
        changed = [c for c in changes if c.action != "unchanged"]
        if dry_run or not changed:
            return
        for change in changed:
            if change.diff:  # the stored manifest changed, not only the deployment it scales
                kind = change.kind.lower()
                self.audit.record(actor, manifest_action(kind, change.action), f"{kind}/{change.name}")
        for module, (before, replicas) in (scaled or {}).items():
            self.audit.record(actor, "module.scale", f"module/{module}", replicas=replicas, previous=before)
        self._record_history(changed, scaled or {}, actor=actor)
        if self._on_change is not None:
            try:
                self._on_change(changed)
            except Exception:  # the change is committed; a listener's failure must not turn it into an error
                log.exception("a listener failed on manifest changes")

    def _record_history(
        self, changed: list[ApplyResult], scaled: dict[str, tuple[int, int]], *, actor: Actor
    ) -> None:
        """The modules' history: each deployment scaled (replicas before and after), each module deleted."""
        if self.history is None:
            return
        for module, (before, replicas) in scaled.items():
            details = {"replicas": replicas, "previous_replicas": before, "via": "manifest"}
            self.history.record(module, "scale", actor=actor.name, details=details)
        for change in changed:
            if change.kind == "Module" and change.action == "deleted":
                self.history.record(change.name, "delete", actor=actor.name, details={"via": "manifest"})

    def list(self, kind: str) -> list[dict[str, Any]]:
        """The stored manifests of every object of `kind`, by name."""
        _known(kind)
        model = _MODELS[kind]
        with self.database.session() as session:
            rows = session.execute(select(model.name, model.manifest).order_by(model.name)).all()
            return [_stored(kind, name, manifest) for name, manifest in rows]


# Validation


def _validate(documents: list[dict[str, Any]]) -> list[Manifest]:
    manifests: list[Manifest] = []
    problems: list[Problem] = []
    seen: dict[tuple[str, str], int] = {}
    for index, document in enumerate(documents):
        try:
            manifest = parse_document(document, source=_SOURCE, document=index)
        except ManifestError as exc:
            problems += exc.problems
            continue
        key = (manifest.kind, manifest.metadata.name)
        if key in seen:
            message = f"document {seen[key]} already declares {key[0]} {key[1]!r}"
            problems.append(_problem(index, *key, "metadata.name", message))
        seen.setdefault(key, index)
        manifests.append(manifest)
    if problems:
        raise ManifestInvalid.of(problems)
    return manifests


def _check_targets(session: Session, manifests: list[Manifest], permit: Permit | None) -> None:
    """Each `Api` must name a module or pipeline that exists or that this request creates; each `Pipeline`
    must fit the versions its steps run (`control/pipelines.py`), call only modules its author may call, and
    not take a module's name."""
    problems: list[Problem] = []
    created = {
        kind: {m.metadata.name for m in manifests if m.kind == kind} for kind in ("Module", "Pipeline")
    }
    for index, manifest in enumerate(manifests):
        if isinstance(manifest, ApiManifest):
            kind, name = manifest.target
            model = Module if kind == "module" else PipelineDefinition
            if name not in created[kind.title()] and session.get(model, name) is None:
                problems.append(
                    _problem(index, "Api", manifest.metadata.name, f"spec.{kind}", f"unknown {kind} {name!r}")
                )
        elif isinstance(manifest, PipelineManifest):
            name = manifest.metadata.name
            if name in created["Module"] or session.get(Module, name) is not None:
                message = f"a module is named {name!r}; a pipeline takes a name no module has"
                problems.append(_problem(index, "Pipeline", name, "metadata.name", message))
            if permit is not None:
                for step_index, step in enumerate(manifest.spec.steps):
                    try:
                        permit.call(step.module)
                    except ModelportError:
                        message = f"unknown module {step.module!r}"  # as for one that does not exist
                        problems.append(
                            _problem(index, "Pipeline", name, f"spec.steps[{step_index}].module", message)
                        )
            if not problems:
                specs, missing = step_specs(session, manifest, document=index)
                _, mismatched = compose(manifest, specs, document=index)
                problems += missing + mismatched
    if problems:
        raise ManifestInvalid.of(problems)


def _targets(documents: list[dict[str, Any]]) -> list[tuple[int, str, str]]:
    """(document index, kind, name) of each object to delete; the rest of each document is not validated."""
    targets: list[tuple[int, str, str]] = []
    problems: list[Problem] = []
    for index, document in enumerate(documents):
        kind = document.get("kind") if isinstance(document, dict) else None
        metadata = document.get("metadata") if isinstance(document, dict) else None
        name = metadata.get("name") if isinstance(metadata, dict) else None
        kind_name = kind if isinstance(kind, str) else None
        if kind_name not in KINDS:
            message = f"unknown kind {kind!r}; known kinds: {', '.join(sorted(KINDS))}"
            problems.append(
                _problem(index, kind_name, name if isinstance(name, str) else None, "kind", message)
            )
        elif not isinstance(name, str) or not name:
            problems.append(_problem(index, kind_name, None, "metadata.name", "required"))
        else:
            targets.append((index, kind_name, name))
    if problems:
        raise ManifestInvalid.of(problems)
    unique: dict[tuple[str, str], tuple[int, str, str]] = {}
    for target in targets:
        unique.setdefault(target[1:], target)
    return list(unique.values())


def _problem(document: int, kind: str | None, name: str | None, field: str, message: str) -> Problem:
    return {"document": document, "kind": kind, "name": name, "field": field, "message": message}


def _known(kind: str) -> None:
    if kind not in KINDS:
        raise BadRequest(f"unknown kind {kind!r}; known kinds: {', '.join(sorted(KINDS))}")


# Writing


def _apply_one(
    session: Session, manifest: Manifest, *, write: bool, permit: Permit | None, created: set[str]
) -> ApplyResult:
    kind, name = manifest.kind, manifest.metadata.name
    new = to_document(manifest)
    row = _row(session, kind, name)
    owner = _owner(row, manifest, permit, created)
    old = None if row is None else _stored(kind, name, row.manifest)
    if old == new:
        return ApplyResult(kind=kind, name=name, action="unchanged", diff="")
    change = ApplyResult(
        kind=kind,
        name=name,
        action="created" if row is None else "configured",
        diff=_diff(kind, name, old, new, "applied"),
    )
    if not write:
        return change
    if row is None and isinstance(manifest, ModuleManifest):
        session.add(Module(name=name, owner=owner, manifest=new))
    elif row is None and isinstance(manifest, ApiManifest):
        session.add(
            ApiDefinition(
                name=name,
                module_name=manifest.spec.module,
                pipeline_name=manifest.spec.pipeline,
                manifest=new,
            )
        )
    elif row is None and isinstance(manifest, PipelineManifest):
        session.add(PipelineDefinition(name=name, owner=owner, manifest=new))
    elif row is None and isinstance(manifest, StorageManifest):
        session.add(Bucket(name=name, manifest=new, quota_bytes=manifest.spec.quota_bytes, used_bytes=0))
    elif row is not None:
        row.manifest = new
        if isinstance(row, Bucket) and isinstance(manifest, StorageManifest):
            row.quota_bytes = manifest.spec.quota_bytes
        if isinstance(row, ApiDefinition) and isinstance(manifest, ApiManifest):
            row.module_name, row.pipeline_name = manifest.spec.module, manifest.spec.pipeline
        if isinstance(row, Module | PipelineDefinition) and manifest.spec.owner:  # type: ignore[union-attr]
            row.owner = owner
    return change


def _scale(session: Session, manifests: list[Manifest], *, write: bool) -> dict[str, tuple[int, int]]:
    """Scale the deployment of each module whose manifest sets replicas it does not run; returns, by module,
    the replicas it had and those it gets."""
    scaled: dict[str, tuple[int, int]] = {}
    for manifest in manifests:
        if isinstance(manifest, ModuleManifest) and "replicas" in manifest.spec.resources.model_fields_set:
            replicas = max(1, manifest.spec.resources.replicas)
            before = scale(session, manifest.metadata.name, replicas, write=write)
            if before is not None:
                scaled[manifest.metadata.name] = (before, replicas)
    return scaled


def _scaled(change: ApplyResult, scaled: dict[str, tuple[int, int]]) -> ApplyResult:
    """The result of applying a manifest, saying so when its module's deployment was scaled."""
    if change.kind != "Module" or change.name not in scaled:
        return change
    replicas = scaled[change.name][1]
    message = f"scaled to {replicas} replica" + ("" if replicas == 1 else "s")
    return change.model_copy(update={"action": "configured", "message": message})


def _owner(row: Row | None, manifest: Manifest, permit: Permit | None, created: set[str]) -> str | None:
    """Check that the actor may make this change; for a module, the group that will own it."""
    if isinstance(manifest, StorageManifest):
        if permit is not None:
            _admin_only(permit)
        return None
    if isinstance(manifest, ApiManifest):
        if permit is not None:
            kind, target = manifest.target
            if target not in created:
                permit.manage(target) if kind == "module" else permit.manage_pipeline(target)
            if isinstance(row, ApiDefinition):
                _may_change(permit, row)
        return None
    declared = manifest.spec.owner
    if row is None:
        return declared if permit is None else permit.new_owner(declared)
    assert isinstance(row, Module | PipelineDefinition)
    if permit is not None:
        _may_change(permit, row)
        if declared is not None and declared != row.owner:
            permit.new_owner(declared)
    return declared or row.owner


def _may_change(permit: Permit, row: Row) -> None:
    if isinstance(row, Bucket):
        _admin_only(permit)
    elif isinstance(row, Module):
        permit.manage(row.name)
    elif isinstance(row, PipelineDefinition):
        permit.manage_pipeline(row.name)
    elif row.module_name is not None:
        permit.manage(row.module_name)
    else:
        assert row.pipeline_name is not None
        permit.manage_pipeline(row.pipeline_name)


def _admin_only(permit: Permit) -> None:
    if permit.principal.role != Role.ADMIN:
        raise Forbidden("buckets (Storage manifests) are declared by admins")


_MODELS: dict[str, type[Row]] = {
    "Module": Module,
    "Api": ApiDefinition,
    "Storage": Bucket,
    "Pipeline": PipelineDefinition,
}


def _row(session: Session, kind: str, name: str) -> Row | None:
    row = session.get(_MODELS[kind], name)
    assert row is None or isinstance(row, Module | ApiDefinition | Bucket | PipelineDefinition)
    return row


def _cascaded_apis(
    session: Session, rows: list[tuple[str, str, dict[str, Any]]]
) -> list[tuple[str, str, Any]]:
    """The APIs of the modules and pipelines being deleted that the request does not name itself."""
    modules = {name for kind, name, _ in rows if kind == "Module"}
    pipelines = {name for kind, name, _ in rows if kind == "Pipeline"}
    named = {name for kind, name, _ in rows if kind == "Api"}
    if not modules and not pipelines:
        return []
    found = session.execute(
        select(ApiDefinition.name, ApiDefinition.manifest)
        .where(or_(ApiDefinition.module_name.in_(modules), ApiDefinition.pipeline_name.in_(pipelines)))
        .order_by(ApiDefinition.name)
    )
    return [("Api", name, manifest) for name, manifest in found if name not in named]


def _delete(session: Session, rows: list[tuple[str, str, Any]]) -> None:
    apis = [name for kind, name, _ in rows if kind == "Api"]
    modules = [name for kind, name, _ in rows if kind == "Module"]
    buckets = [name for kind, name, _ in rows if kind == "Storage"]
    if buckets:
        session.execute(delete(Bucket).where(Bucket.name.in_(buckets)))
    if apis:
        session.execute(delete(ApiDefinition).where(ApiDefinition.name.in_(apis)))
    if modules:  # versions, deployments and APIs go with them (ON DELETE CASCADE)
        session.execute(delete(Module).where(Module.name.in_(modules)))
    pipelines = [name for kind, name, _ in rows if kind == "Pipeline"]
    if pipelines:
        session.execute(delete(PipelineDefinition).where(PipelineDefinition.name.in_(pipelines)))


# Stored documents


def _stored(kind: str, name: str, manifest: dict[str, Any]) -> dict[str, Any]:
    """The stored document in its compact form; a module pushed without one reads as the default manifest."""
    if kind == "Module" and not manifest:
        return to_document(ModuleManifest(metadata=Metadata(name=name)))
    try:
        return to_document(KINDS[kind].model_validate(manifest))
    except ValidationError:  # written by an older schema: shown as it is, and any apply replaces it
        return manifest


def _diff(kind: str, name: str, old: dict[str, Any] | None, new: dict[str, Any] | None, what: str) -> str:
    before = _yaml(old).splitlines(keepends=True)
    after = _yaml(new).splitlines(keepends=True)
    label = f"{kind}/{name}"
    return "".join(difflib.unified_diff(before, after, f"{label} (stored)", f"{label} ({what})"))


def _yaml(document: dict[str, Any] | None) -> str:
    if document is None:
        return ""
    return yaml.safe_dump(document, sort_keys=False, default_flow_style=False, allow_unicode=True)
