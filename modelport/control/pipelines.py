"""Pipelines: graphs of module calls, checked when applied and served like a module.

A `Pipeline` manifest names steps, each a module call whose inputs and parameters come from the request
(`$.inputs.image`, `$.parameters.language`), from earlier steps' outputs (`$.steps.ocr.outputs.text`) or are
constants. `compose` checks a manifest against the APIs of the versions its steps would run, naming every
problem by its field (an unknown module or field, a required input left unmapped, a value whose type the
producing field cannot satisfy: a file into text, a list into a scalar), and gives the pipeline's own
`ApiSpec`:
its inputs and parameters are the step fields the request feeds, its outputs the step outputs it answers
with. That spec validates requests and makes the OpenAPI document, as a module version's does.

`Pipelines.run` calls the steps through `control/calls.py`, the one call path, so each step is a call of its
module like any other (routing, file checks, deadlines, the request log and statistics), recorded with the
pipeline call's request id as its `parent`. A step starts as soon as the steps it needs have answered, so
independent steps run at once; only the steps the asked-for outputs need run, and each is asked only for the
outputs used after it. Files pass between steps as the files they are (a stored object is fetched by each
step that reads it; a step's file output is handed to the next step on disk), never uploaded again; the
pipeline's own file outputs are published as the caller's, the others removed. A step that fails fails the
call with its own status and code, naming the step (`StepFailed`); a step whose module cannot run is 503
`step_unavailable`.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from modelport.control.access import AccessPolicies, PipelinePolicy, may_call
from modelport.control.calls import Calls, ModuleCall, Trace, as_error, new_request_id
from modelport.control.identity import Principal
from modelport.control.jobs import JOB_READER, Jobs, RunningJob
from modelport.control.modules import ServedModule
from modelport.core.errors import (
    BadModuleOutput,
    ModelportError,
    ModuleNotFound,
    ModuleUnavailable,
    PipelineNotFound,
    StepFailed,
    StepUnavailable,
    VersionNotFound,
)
from modelport.core.manifests import (
    PipelineManifest,
    PipelineStep,
    Problem,
    Reference,
    parse_reference,
    to_document,
)
from modelport.core.records import PipelineInfo, PipelineList, PipelineStepInfo
from modelport.core.roles import Role
from modelport.core.states import BuildStatus
from modelport.db import Deployment, Version
from modelport.db.models import Job
from modelport.queue import Outcome
from modelport.sdk.spec import ApiSpec, FieldSpec, Kind, TypeSpec, check_value
from modelport.sdk.validation import ObjectFile, ParsedRequest, UploadedFile, parse_json

__all__ = ["Pipelines", "ServedPipeline", "compose", "step_specs"]

_COMPOSED_CACHE = 256


# Checking


class _Problems:
    def __init__(self, document: int | None, name: str) -> None:
        self.document, self.name = document, name
        self.items: list[Problem] = []

    def add(self, field: str, message: str) -> None:
        self.items.append(
            {
                "document": self.document,
                "kind": "Pipeline",
                "name": self.name,
                "field": field,
                "message": message,
            }
        )


def step_specs(
    session: Session, manifest: PipelineManifest, *, document: int | None = None
) -> tuple[dict[str, ApiSpec], list[Problem]]:
    """The API of the version each step runs (the pinned one, else its module's deployed version), by step
    name, read from the database (a version's API is read from its source when it is pushed, so one still
    building has it); and a problem for each step that has none, or whose version failed to build."""
    problems = _Problems(document, manifest.metadata.name)
    specs: dict[str, ApiSpec] = {}
    for index, step in enumerate(manifest.spec.steps):
        where = f"spec.steps[{index}]"
        version = step.version
        if version is None:
            deployment = session.get(Deployment, step.module)
            version = None if deployment is None else deployment.active_version or deployment.target_version
            if version is None:
                exists = session.scalar(select(Version.id).where(Version.module_name == step.module).limit(1))
                problems.add(
                    f"{where}.module",
                    f"module {step.module!r} has no deployed version; deploy one, or pin `version`"
                    if exists is not None
                    else f"unknown module {step.module!r}",
                )
                continue
        row = session.scalar(
            select(Version).where(Version.module_name == step.module, Version.name == version)
        )
        if row is None:
            problems.add(f"{where}.version", f"module {step.module!r} has no version {version!r}")
        elif row.build_status is BuildStatus.FAILED or not row.spec:
            problems.add(f"{where}.version", f"version {version!r} of {step.module!r} failed to build")
        else:
            specs[step.name] = ApiSpec.from_dict(row.spec)
    return specs, problems.items


def compose(
    manifest: PipelineManifest, specs: Mapping[str, ApiSpec], *, document: int | None = None
) -> tuple[ApiSpec, list[Problem]]:
    """The pipeline's API, given the API each step's version has (by step name), and every problem found
    (the spec is only meaningful when there are none)."""
    problems = _Problems(document, manifest.metadata.name)
    request: dict[tuple[str, str], FieldSpec] = {}  # the request's fields, by (group, name)
    for index, step in enumerate(manifest.spec.steps):
        spec = specs.get(step.name)
        if spec is None:
            continue  # step_specs reported why
        where = f"spec.steps[{index}]"
        for group, values in (("inputs", step.inputs), ("parameters", step.parameters)):
            declared = spec.group(group)  # type: ignore[arg-type]
            for field_name, value in values.items():
                target = spec.get(group, field_name)  # type: ignore[arg-type]
                label = f"{where}.{group}.{field_name}"
                if target is None:
                    other = "parameters" if group == "inputs" else "inputs"
                    hint = (
                        f" (it is one of its {other}: map it under `{other}`)"
                        if spec.get(other, field_name) is not None  # type: ignore[arg-type]
                        else ""
                    )
                    names = ", ".join(f.name for f in declared) or "none"
                    problems.add(
                        label,
                        f"module {step.module!r} has no {group[:-1]} {field_name!r}{hint}; "
                        f"its {group}: {names}",
                    )
                    continue
                reference = parse_reference(value)
                if reference is None:
                    problem = _constant_problem(target, value)
                    if problem:
                        problems.add(label, problem)
                elif reference["group"] == "steps":
                    _check_step_reference(manifest, specs, reference, target, label, problems)
                else:
                    _request_field(request, reference, target, label, problems)
            for field_spec in declared:
                if field_spec.required and field_spec.name not in values:
                    problems.add(
                        f"{where}.{group}",
                        f"module {step.module!r} requires {group[:-1]} {field_spec.name!r}; map it",
                    )
    outputs: list[FieldSpec] = []
    for name, value in manifest.spec.outputs.items():
        reference = parse_reference(value)
        assert reference is not None  # the manifest's schema requires references
        label = f"spec.outputs.{name}"
        if reference["group"] == "steps":
            step_name = reference["step"]
            assert step_name is not None
            produced = _produced(manifest, specs, step_name, reference["name"], label, problems)
            if produced is not None:
                outputs.append(replace(produced, group="outputs", name=name))
        else:
            fed = request.get((reference["group"], reference["name"]))
            if fed is None:
                problems.add(
                    label, f"no step takes {value}, so its type is unknown; map it into a step first"
                )
            else:
                outputs.append(replace(fed, group="outputs", name=name, default=_NO_DEFAULT))
    spec = ApiSpec(
        title=manifest.metadata.name,
        description=manifest.spec.description
        or "A pipeline of " + ", ".join(f"{s.name} ({s.module})" for s in manifest.spec.steps),
        inputs=tuple(f for (group, _), f in request.items() if group == "inputs"),
        parameters=tuple(f for (group, _), f in request.items() if group == "parameters"),
        outputs=tuple(outputs),
    )
    return spec, problems.items


_NO_DEFAULT: Any = FieldSpec("outputs", "x", ()).default
"""What a field without a default holds as its default (`dataclasses.replace` with it drops one)."""


def _request_field(
    request: dict[tuple[str, str], FieldSpec],
    reference: Reference,
    target: FieldSpec,
    label: str,
    problems: _Problems,
) -> None:
    """Make (or check) the request field `reference` names, which feeds `target`."""
    group, name = reference["group"], reference["name"]
    if group == "parameters" and target.has_file:
        problems.add(label, f"a file cannot come from $.parameters.{name}: use $.inputs.{name}")
        return
    fed = replace(target, group=group, name=name)  # type: ignore[arg-type]
    known = request.get((group, name))
    if known is None:
        request[(group, name)] = fed
        return
    mismatch = _unsatisfied(known.types, target.types)
    if mismatch:
        problems.add(label, f"$.{group}.{name} is {known.type_text} elsewhere, which {mismatch}")
    elif target.required and not known.required:
        request[(group, name)] = replace(known, optional=False, default=_NO_DEFAULT)


def _check_step_reference(
    manifest: PipelineManifest,
    specs: Mapping[str, ApiSpec],
    reference: Reference,
    target: FieldSpec,
    label: str,
    problems: _Problems,
) -> None:
    step_name = reference["step"]
    assert step_name is not None
    produced = _produced(manifest, specs, step_name, reference["name"], label, problems)
    if produced is None:
        return
    mismatch = _unsatisfied(produced.types, target.types)
    if mismatch:
        problems.add(
            label,
            f"$.steps.{step_name}.outputs.{reference['name']} is {produced.type_text}, which {mismatch}",
        )


def _produced(
    manifest: PipelineManifest,
    specs: Mapping[str, ApiSpec],
    step_name: str,
    output: str,
    label: str,
    problems: _Problems,
) -> FieldSpec | None:
    spec = specs.get(step_name)
    if spec is None:
        return None
    produced = spec.get("outputs", output)
    if produced is None:
        module = next(s.module for s in manifest.spec.steps if s.name == step_name)
        names = ", ".join(spec.output_names) or "none"
        problems.add(
            label, f"step {step_name!r} (module {module!r}) has no output {output!r}; its outputs: {names}"
        )
    return produced


def _unsatisfied(produced: tuple[TypeSpec, ...], wanted: tuple[TypeSpec, ...]) -> str | None:
    """Why a value of type `produced` (any of its alternatives) may not fit a field of type `wanted`; None if
    every alternative fits one of the wanted ones."""
    for kind in produced:
        if not any(_fits(kind, target) for target in wanted):
            return f"cannot satisfy {' or '.join(t.render() for t in wanted)}"
    return None


def _fits(produced: TypeSpec, wanted: TypeSpec) -> bool:
    if produced.kind is Kind.FILE or wanted.kind is Kind.FILE:
        if produced.kind is not wanted.kind:
            return False  # a file into text, or text into a file
        return not produced.mime or not wanted.mime or any(wanted.accepts_mime(m) for m in produced.mime)
    if wanted.kind is Kind.JSON:
        return not produced.has_file
    if produced.kind is Kind.JSON:
        return wanted.kind is not Kind.LIST or not wanted.has_file  # checked again when the step runs
    if produced.kind is Kind.LIST or wanted.kind is Kind.LIST:
        if produced.kind is not wanted.kind:
            return False  # a list into a scalar, or a scalar into a list
        assert produced.item is not None and wanted.item is not None
        return _fits(produced.item, wanted.item)
    return produced.kind is wanted.kind or (produced.kind is Kind.INT and wanted.kind is Kind.FLOAT)


def _constant_problem(target: FieldSpec, value: Any) -> str | None:
    if target.has_file:
        return "a file cannot be a constant: map it from $.inputs or an earlier step"
    return check_value(target, value)


# Serving


@dataclass(frozen=True, eq=False)
class ServedPipeline:
    """A pipeline as it runs now: each step with the module version that runs it, and the pipeline's API."""

    name: str
    manifest: PipelineManifest
    steps: tuple[tuple[PipelineStep, ServedModule], ...]
    spec: ApiSpec
    timeout: float
    """Seconds a call may take from its arrival: the `Api`'s `syncTimeoutSeconds`, else the steps' own
    deadlines added up along the longest chain."""

    @property
    def versions(self) -> dict[str, dict[str, str]]:
        """The module and version each step runs, by step name."""
        return {step.name: {"module": served.name, "version": served.version} for step, served in self.steps}


class Pipelines:
    """The pipelines applied on this platform, served through `calls` by the versions its registry runs;
    their asynchronous calls are `jobs` of kind `pipeline`."""

    def __init__(self, *, calls: Calls, policies: AccessPolicies, jobs: Jobs | None = None) -> None:
        self.calls, self.policies = calls, policies
        self._composed: dict[tuple[int, tuple[int, ...]], tuple[PipelinePolicy, ServedPipeline]] = {}
        if jobs is not None:
            jobs.executors["pipeline"] = self._run_job
            jobs.targets["pipeline"] = self.running

    def running(self) -> list[str]:
        """The pipelines known in memory (jobs of each may be claimed)."""
        return self.policies.known_pipelines()

    def find(self, name: str) -> ServedPipeline:
        """The pipeline `name` as it runs now (for threads and jobs: the caller's access is checked before);
        `PipelineNotFound`, or `StepUnavailable`."""
        policy = self.policies.cached_pipeline(name) or self.policies.pipeline(name)
        if policy is None:
            raise PipelineNotFound(f"no pipeline named {name!r}")
        return self.serve(policy)

    def listing(self, principal: Principal) -> PipelineList:
        """The pipelines `principal` may call, by name."""
        return PipelineList(
            pipelines=[self._info(p) for p in self.policies.pipelines() if may_call(principal, p)]
        )

    def info(self, principal: Principal, name: str) -> PipelineInfo:
        """One pipeline `principal` may call; `PipelineNotFound` (or 401) otherwise."""
        return self._info(self.policies.require_pipeline_call(principal, name))

    def _info(self, policy: PipelinePolicy) -> PipelineInfo:
        manifest = policy.manifest
        assert manifest is not None
        steps: list[PipelineStepInfo] = []
        for step in manifest.spec.steps:
            serving, problem = None, None
            try:
                serving = self.calls.registry.get(step.module, step.version).version
            except (ModuleNotFound, VersionNotFound, ModuleUnavailable) as exc:
                problem = exc.message
            steps.append(
                PipelineStepInfo(
                    name=step.name,
                    module=step.module,
                    version=step.version,
                    serving=serving,
                    needs=sorted(step.needs),
                    problem=problem,
                )
            )
        spec: ApiSpec | None = None
        if all(s.problem is None for s in steps):
            try:
                spec = self.serve(policy).spec
            except StepUnavailable as exc:
                steps = [s.model_copy(update={"problem": exc.message}) for s in steps]
        return PipelineInfo(
            name=policy.module,
            owner=policy.owner,
            ready=spec is not None,
            steps=steps,
            inputs=[f.name for f in spec.inputs] if spec else [],
            parameters=[f.name for f in spec.parameters] if spec else [],
            outputs=[f.name for f in spec.outputs] if spec else [],
            manifest=to_document(manifest),
        )

    async def _run_job(self, job: Job, running: RunningJob) -> Outcome:
        """One run of a pipeline job: its stored request through `run`, as a synchronous call goes."""
        call = ModuleCall(
            request_id=new_request_id(),
            trace=Trace.continuing(job.traceparent),
            principal=Principal(user_id=job.caller_id, name=job.caller, role=Role.USER),
            owner=job.owner,
            client=job.client,
            kind="job",
            reader=JOB_READER,
        )
        running.call = call
        pipeline = await asyncio.to_thread(self.find, job.module)
        policy = self.policies.cached_pipeline(job.module)
        call.timeout = policy.jobs.timeout_seconds if policy is not None else None
        parsed = parse_json(pipeline.spec, job.request)
        outputs = await self.run(call, pipeline, parsed)
        return Outcome(
            job.id,
            running.token,
            "succeeded",
            outputs=outputs if parsed.batch else outputs[0],
            request_id=call.request_id,
        )

    def serve(self, policy: PipelinePolicy) -> ServedPipeline:
        """The pipeline with the versions its steps run now; `StepUnavailable` naming a step that cannot run
        (its module deleted or not deployed, or its version no longer fitting the pipeline)."""
        manifest = policy.manifest
        assert manifest is not None
        steps: list[tuple[PipelineStep, ServedModule]] = []
        for step in manifest.spec.steps:
            try:
                steps.append((step, self.calls.registry.get(step.module, step.version)))
            except (ModuleNotFound, VersionNotFound, ModuleUnavailable) as exc:
                raise StepUnavailable(
                    f"step {step.name!r} cannot run: {exc.message}",
                    details={"step": step.name, "module": step.module},
                ) from None
        key = (id(policy), tuple(id(served) for _, served in steps))
        known = self._composed.get(key)
        if known is not None and known[0] is policy:
            return known[1]
        spec, problems = compose(manifest, {step.name: served.spec for step, served in steps})
        if problems:
            first = problems[0]
            raise StepUnavailable(
                f"the pipeline no longer fits its steps' versions: {first['field']}: {first['message']}",
                details=[{"field": p["field"], "message": p["message"]} for p in problems],
            )
        timeout = policy.sync_timeout or _longest_chain(
            manifest, {s.name: m.pool.sync_timeout for s, m in steps}
        )
        served_pipeline = ServedPipeline(manifest.metadata.name, manifest, tuple(steps), spec, timeout)
        if len(self._composed) >= _COMPOSED_CACHE:
            self._composed.clear()
        self._composed[key] = (policy, served_pipeline)
        return served_pipeline

    async def run(
        self, call: ModuleCall, pipeline: ServedPipeline, parsed: ParsedRequest
    ) -> list[dict[str, Any]]:
        """Run a request validated against `pipeline.spec`: each step once its inputs exist, through the call
        path; returns one output dict per record (file outputs published as the caller's)."""
        wanted = parsed.output_fields or tuple(pipeline.manifest.spec.outputs)
        plan = _plan(pipeline, wanted)
        deadline = call.arrived + (call.timeout if call.timeout is not None else pipeline.timeout)
        tasks: dict[str, asyncio.Task[list[dict[str, Any]]]] = {}
        served_by = dict((step.name, served) for step, served in pipeline.steps)
        for step in pipeline.manifest.spec.order():
            if step.name in plan:
                tasks[step.name] = asyncio.create_task(
                    self._step(
                        call, pipeline, step, served_by[step.name], parsed, plan[step.name], tasks, deadline
                    )
                )
        results: dict[str, list[dict[str, Any]]] = {}
        try:
            if tasks:
                await asyncio.wait(tasks.values(), return_when=asyncio.FIRST_EXCEPTION)
            failed = [task for task in tasks.values() if task.done() and task.exception() is not None]
            if failed:
                raise _first_failure(failed)
            results = {name: task.result() for name, task in tasks.items()}
            outputs = [  # an optional output a step left out is left out here too, as modules do
                {
                    name: value
                    for name in wanted
                    if (value := _value(pipeline.manifest.spec.outputs[name], index, parsed, results))
                    is not None
                }
                for index in range(len(parsed.records))
            ]
            await asyncio.to_thread(self._publish, pipeline, outputs, call.owner)
            return outputs
        finally:
            for task in tasks.values():
                task.cancel()
            await asyncio.gather(*tasks.values(), return_exceptions=True)
            leftovers = [t.result() for t in tasks.values() if not t.cancelled() and t.exception() is None]
            if any(_holds_files(records) for records in leftovers):
                await asyncio.to_thread(_remove_files, pipeline, leftovers)

    async def _step(
        self,
        call: ModuleCall,
        pipeline: ServedPipeline,
        step: PipelineStep,
        served: ServedModule,
        parsed: ParsedRequest,
        output_fields: tuple[str, ...],
        tasks: Mapping[str, asyncio.Task[list[dict[str, Any]]]],
        deadline: float,
    ) -> list[dict[str, Any]]:
        earlier = {need: await tasks[need] for need in sorted(step.needs)}
        step_call = ModuleCall(
            request_id=new_request_id(),
            trace=Trace(call.trace.trace_id, f"{random.getrandbits(64) or 1:016x}", call.trace.flags),
            principal=call.principal,
            owner=call.owner,
            client=call.client,
            kind="pipeline",
            reader=call.reader,
            timeout=max(0.0, deadline - time.monotonic()),
            parent=call.request_id,
            pipeline=pipeline.name,
            step=step.name,
            publish=False,
        )
        step_call.served, step_call.pinned = served, step.version
        served.in_flight += 1
        status, code = 200, None
        try:
            request = _step_request(step, served.spec, parsed, earlier, output_fields)
            return await self.calls.run(step_call, request)
        except asyncio.CancelledError:
            status, code = 499, "canceled"
            raise
        except Exception as exc:
            error = as_error(exc)
            status, code = error.status, error.code
            raise StepFailed.of(step.name, served.name, error) from None
        finally:
            served.in_flight -= 1
            step_call.uploads = []  # the pipeline call's own uploads, not the step's to keep
            self.calls.finish(step_call, status=status, code=code, response_bytes=0)
            if step_call.workdir is not None:
                await asyncio.to_thread(self.calls.settle, step_call)

    def _publish(self, pipeline: ServedPipeline, outputs: list[dict[str, Any]], owner: str) -> None:
        """Store each file output of the pipeline as the caller's own, under its pipeline, by URL (taken only
        from the output directory of the step that wrote it)."""
        served_by = {step.name: served for step, served in pipeline.steps}
        for field_spec in pipeline.spec.outputs:
            if not field_spec.has_file:
                continue
            reference = parse_reference(pipeline.manifest.spec.outputs[field_spec.name])
            producer = served_by.get(reference["step"] or "") if reference is not None else None
            for record in outputs:
                value = record.get(field_spec.name)
                if producer is None or not (isinstance(value, dict) and "path" in value):
                    continue
                name = self.calls.files.publish_output(
                    owner,
                    f"pipelines/{pipeline.name}",
                    field_spec.name,
                    Path(value["path"]),
                    value["content_type"],
                    directory=producer.output_dir or self.calls.settings.data_dir / "outputs",
                )
                record[field_spec.name] = {
                    "url": f"/api/v1/pipelines/{pipeline.name}/outputs/{name}",
                    "content_type": value["content_type"],
                    "size": value["size"],
                }


def _plan(pipeline: ServedPipeline, wanted: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """The steps the outputs `wanted` need, each with the outputs asked of it (those used after it)."""
    by_name = {step.name: step for step, _ in pipeline.steps}
    asked: dict[str, set[str]] = {}
    pending: list[str] = []
    for name in wanted:
        reference = parse_reference(pipeline.manifest.spec.outputs[name])
        if reference is not None and reference["step"] is not None:
            asked.setdefault(reference["step"], set()).add(reference["name"])
            pending.append(reference["step"])
    while pending:
        step = by_name[pending.pop()]
        for _, _, reference in step.references():
            if reference["step"] is not None:
                if reference["step"] not in asked:
                    pending.append(reference["step"])
                asked.setdefault(reference["step"], set()).add(reference["name"])
    return {name: tuple(sorted(fields)) for name, fields in asked.items()}


def _step_request(
    step: PipelineStep,
    spec: ApiSpec,
    parsed: ParsedRequest,
    earlier: Mapping[str, list[dict[str, Any]]],
    output_fields: tuple[str, ...],
) -> ParsedRequest:
    """The step's request: for each record of the pipeline's, its mapped inputs, with the defaults of the
    fields left unmapped; values from earlier steps checked against the fields they feed."""
    problems: list[dict[str, str]] = []

    def fields(group: str, values: Mapping[str, Any], index: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for field_spec in spec.group(group):  # type: ignore[arg-type]
            if field_spec.name in values:
                value = _value(values[field_spec.name], index, parsed, earlier)
                if value is not None and isinstance(values[field_spec.name], str):
                    value = _checked(field_spec, value, values[field_spec.name], problems)
                if value is not None:
                    out[field_spec.name] = value
                    continue
            if field_spec.has_default:
                out[field_spec.name] = field_spec.default
            elif not field_spec.optional:
                problems.append({"field": f"{group}.{field_spec.name}", "message": "no value reached it"})
        return out

    records = [fields("inputs", step.inputs, index) for index in range(len(parsed.records))]
    parameters = fields("parameters", step.parameters, 0)
    if problems:
        raise BadModuleOutput(
            f"step {step.name!r} got values its module does not take: "
            + "; ".join(f"{p['field']}: {p['message']}" for p in problems),
            details=problems,
        )
    return ParsedRequest(records, parameters, output_fields, step.model_key, parsed.batch)


def _value(mapped: Any, index: int, parsed: ParsedRequest, steps: Mapping[str, list[dict[str, Any]]]) -> Any:
    """The value `mapped` (a reference or a constant) has for record `index`."""
    reference = parse_reference(mapped)
    if reference is None:
        return mapped
    if reference["group"] == "inputs":
        return parsed.records[index].get(reference["name"])
    if reference["group"] == "parameters":
        return parsed.parameters.get(reference["name"])
    assert reference["step"] is not None
    return steps[reference["step"]][index].get(reference["name"])


def _checked(field_spec: FieldSpec, value: Any, source: str, problems: list[dict[str, str]]) -> Any:
    """`value` as the field takes it: a file another step wrote is handed over as the file on disk."""
    if isinstance(value, ObjectFile | UploadedFile) or not source.startswith("$.steps."):
        return value
    if field_spec.has_file:
        if isinstance(value, dict) and "path" in value:
            path = Path(value["path"])
            return UploadedFile(str(path), path.name, value["content_type"], int(value["size"]))
        problems.append({"field": field_spec.name, "message": f"{source} is not a file"})
        return None
    problem = check_value(field_spec, value)
    if problem is not None:
        problems.append({"field": field_spec.name, "message": f"{source}: {problem}"})
        return None
    return value


def _first_failure(failed: list[asyncio.Task[list[dict[str, Any]]]]) -> BaseException:
    """The error of the step that failed of its own accord (a step after it fails with the same error)."""
    errors = [task.exception() for task in failed]
    error = next((e for e in errors if isinstance(e, StepFailed)), errors[0])
    assert error is not None
    return error if isinstance(error, ModelportError) else as_error(error)


def _longest_chain(manifest: PipelineManifest, timeouts: Mapping[str, float]) -> float:
    """The steps' deadlines added up along the chain of steps that takes longest."""
    finish: dict[str, float] = {}
    for step in manifest.spec.order():
        finish[step.name] = max((finish[need] for need in step.needs), default=0.0) + timeouts[step.name]
    return max(finish.values(), default=0.0)


def _holds_files(records: list[dict[str, Any]]) -> bool:
    return any(isinstance(v, dict) and "path" in v for record in records for v in record.values())


def _in_output_dir(pipeline: ServedPipeline, directory: Path) -> bool:
    return any(
        served.output_dir is not None and os.path.abspath(served.output_dir) == os.path.abspath(directory)
        for _, served in pipeline.steps
    )


def _remove_files(pipeline: ServedPipeline, results: list[list[dict[str, Any]]]) -> None:
    """Remove the files steps wrote that nobody was answered with (only in the steps' output directories)."""
    for records in results:
        for record in records:
            for value in record.values():
                if isinstance(value, dict) and "path" in value:
                    path = Path(value["path"])
                    if _in_output_dir(pipeline, path.parent) and not path.is_symlink():
                        path.unlink(missing_ok=True)
