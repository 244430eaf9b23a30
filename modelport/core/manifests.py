"""Declarative manifests (`modelport.yaml`): Kubernetes-shaped objects, strict about unknown fields.

`load_documents` reads a multi-document YAML stream; `parse_document` turns one document into a `Module`, an
`Api` or a `Storage` manifest. Every problem is reported with the document's position, its kind and name,
and the dotted path of the field (`spec.resources.replicas`), so a client can point at the exact line the
author has to change.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from types import UnionType
from typing import Any, Literal, TypedDict, Union, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from modelport.core.names import BUCKET_NAME
from modelport.sdk import ApiSpec
from modelport.sdk.spec import FieldSpec, Kind

__all__ = [
    "CHAT_OPTIONS",
    "CHAT_OUTPUTS",
    "KINDS",
    "MAX_PIPELINE_STEPS",
    "Access",
    "ApiCache",
    "ApiLogging",
    "ApiManifest",
    "ApiManifestSpec",
    "Cors",
    "DriftMonitoring",
    "Manifest",
    "ManifestError",
    "Metadata",
    "ModelSpec",
    "ModuleManifest",
    "ModuleSpec",
    "Monitoring",
    "OpenAiSpec",
    "PipelineManifest",
    "PipelineSpec",
    "PipelineStep",
    "Problem",
    "RateLimit",
    "Reference",
    "Resources",
    "RestfulApi",
    "SourceSpec",
    "StorageAccess",
    "StorageManifest",
    "StorageSpec",
    "check_group_path",
    "check_openai",
    "check_openai_roles",
    "load_documents",
    "load_module_manifest",
    "parse_document",
    "parse_rate",
    "parse_reference",
    "parse_size",
    "to_document",
    "without_retired_fields",
]

_NAME = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
_RATE = re.compile(r"^(\d+)\s*(?:/|per)\s*(second|minute|hour|day)s?$")
_RATE_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86_400}
_ORIGIN = re.compile(r"^[a-z][a-z0-9+.-]*://(\[[0-9a-f:.]+\]|[^\s/:?#@\[\]\\]+)(:\d{1,5})?$")
_HEADER = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
_REDACT_PATH = re.compile(r"^(inputs|parameters|outputs)(\.[A-Za-z0-9_-]+)+$")
_MAX_NODES = 100_000
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgtp]i?b?|b)?$")
_SIZE_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12, "p": 10**15}


class Problem(TypedDict):
    """One thing wrong with one document: where (its index, `kind`, `name`, dotted `field`) and what."""

    document: int | None
    kind: str | None
    name: str | None
    field: str
    message: str


class ManifestError(ValueError):
    """A manifest is unreadable or does not match its schema; `problems` lists each thing wrong."""

    def __init__(self, message: str, problems: Sequence[Problem] = ()) -> None:
        super().__init__(message)
        self.problems: list[Problem] = list(problems)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Metadata(_Strict):
    name: str = Field(pattern=_NAME)
    labels: dict[str, str] = {}


# Module


class ModelSpec(_Strict):
    """Where the module's weights live and how many models a worker keeps loaded.

    Without `bucket`, the weights of model key `k` are the directory `<path>/<k>/` of the module's own tree.
    With `bucket`, they are the objects under `<path>/<k>/` in that storage bucket, fetched (and checked
    against their recorded checksums) into a local cache before `load` sees them.
    """

    key: str = Field("default", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
    """The model key of requests that name none."""
    bucket: str | None = Field(None, pattern=_NAME)
    path: str = "models"
    cache_size: int = Field(2, ge=1, alias="cacheSize")

    @field_validator("path")
    @classmethod
    def _relative_path(cls, value: str) -> str:
        parts = value.strip("/").split("/")
        if value.startswith("/") or "\\" in value or any(p in ("", ".", "..") for p in parts):
            raise ValueError("expected a relative path such as `models` or `digits/v2`, without `.` or `..`")
        return "/".join(parts)


class Resources(_Strict):
    replicas: int = Field(1, ge=0, le=64)
    max_batch_size: int = Field(8, ge=1, le=4096, alias="maxBatchSize")
    batch_wait_ms: float = Field(0.0, ge=0, le=10_000, alias="batchWaitMs")
    timeout_seconds: float = Field(60.0, gt=0, le=86_400, alias="timeoutSeconds")
    max_queue: int = Field(1024, ge=1, le=100_000, alias="maxQueue")
    """Records waiting for a worker before calls are refused (503); bounded, since each holds its inputs."""
    threads: int | None = Field(None, ge=1, le=256)


class SourceSpec(_Strict):
    """The module's git repository; with `autoDeploy`, each new highest tag is pushed and deployed."""

    git: str = Field(min_length=1)
    path: str = "."
    auto_deploy: bool = Field(False, alias="autoDeploy")
    poll_seconds: float = Field(30.0, ge=1, le=86_400, alias="pollSeconds")

    @field_validator("git")
    @classmethod
    def _not_an_option(cls, value: str) -> str:
        if value.startswith("-") or value.strip() != value or "\n" in value:
            raise ValueError("expected a repository path or URL")
        return value

    @field_validator("path")
    @classmethod
    def _inside_the_repository(cls, value: str) -> str:
        path = PurePosixPath(value)
        if path.is_absolute() or ".." in path.parts or "\\" in value:
            raise ValueError("expected a relative path inside the repository, without `..`")
        return str(path)


_GROUP_PATH = re.compile(r"^(/[A-Za-z0-9][A-Za-z0-9._ -]{0,62})+$")


def check_group_path(group: str) -> str:
    """`group` if it is a full group path such as `/team/users` (Keycloak's form); `ValueError` otherwise."""
    if not group.startswith("/"):
        example = f"/{group}" if group else "/team-a"
        raise ValueError(
            f"{group!r} is not a group path: group names are full paths starting with /, like {example}"
        )
    if not _GROUP_PATH.match(group) or group.endswith(" ") or len(group) > 255:
        raise ValueError(f"{group!r} is not a group path: expected a full path such as `/team/users`")
    return group


_FIELD_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


class OpenAiSpec(_Strict):
    """The module's role behind the OpenAI-compatible routes (`/v1/models`, `/v1/embeddings`,
    `/v1/chat/completions`): one of `embeddings` and `chat`.

    With `embeddings`, each string of a `POST /v1/embeddings` is one record: the string goes to the input
    field `input` (`str`, or `list[str]` as a list of one) and the vector comes from the output field
    `output` (`list[float]`); `dimensions` names an `int` parameter (or input) that takes the size a caller
    asks for (None: callers may not ask).

    With `chat`, a `POST /v1/chat/completions` is one record: the conversation goes to the `json` input
    `messages` (a list of `{"role", "content"}`, content as text) and the reply comes from the `str` output
    `output` (declared `stream` for `stream: true`). OpenAI's options go to the module's parameters of the
    same names where it declares them (`max_tokens`, `temperature`, `top_p`, `stop`, `seed`,
    `response_format`); an option it does not declare is refused. Outputs named `finish_reason`,
    `prompt_tokens` and `completion_tokens`, where declared, fill in the answer's.
    """

    embeddings: bool = False
    chat: bool = False
    input: str | None = Field(None, pattern=_FIELD_NAME)
    output: str | None = Field(None, pattern=_FIELD_NAME)
    dimensions: str | None = Field(None, pattern=_FIELD_NAME)
    messages: str | None = Field(None, pattern=_FIELD_NAME)

    @model_validator(mode="after")
    def _fields_of_the_role(self) -> OpenAiSpec:
        if self.chat and self.embeddings:
            raise ValueError("a module plays one role: `chat` or `embeddings`, not both")
        if self.embeddings and (self.input is None or self.output is None):
            raise ValueError(
                "an embeddings module names the field that takes the text (`input`) and the one that "
                "answers the vector (`output`)"
            )
        if self.chat and (self.messages is None or self.output is None):
            raise ValueError(
                "a chat module names the input that takes the conversation (`messages`) and the output "
                "that answers the reply (`output`)"
            )
        if self.chat and (self.input is not None or self.dimensions is not None):
            raise ValueError("`input` and `dimensions` belong to embeddings; a chat module takes `messages`")
        if self.embeddings and self.messages is not None:
            raise ValueError("`messages` belongs to chat; an embeddings module takes `input`")
        return self


class ModuleSpec(_Strict):
    entrypoint: str = "inference.py:inference"
    load: str | None = None
    requirements: str | None = None
    model: ModelSpec = ModelSpec()
    resources: Resources = Resources()
    env: dict[str, str] = {}
    example: dict[str, Any] | None = None
    source: SourceSpec | None = None
    owner: str | None = None
    """The group (full path) whose developers manage the module; none: only admins."""
    openai: OpenAiSpec | None = None
    """The module's role behind the OpenAI-compatible routes (`OpenAiSpec`); none: it has none."""

    @field_validator("owner")
    @classmethod
    def _owner_group(cls, value: str | None) -> str | None:
        return None if value is None else check_group_path(value)

    @field_validator("entrypoint", "load")
    @classmethod
    def _file_and_function(cls, value: str | None) -> str | None:
        if value is not None and (value.count(":") != 1 or not all(value.split(":"))):
            raise ValueError("expected `file.py:function`")
        return value


class ModuleManifest(_Strict):
    api_version: Literal["modelport/v1"] = Field("modelport/v1", alias="apiVersion")
    kind: Literal["Module"] = "Module"
    metadata: Metadata
    spec: ModuleSpec = ModuleSpec()


# Api


class Cors(_Strict):
    """Cross-origin access from browsers: exact origins (or `*`, never together with credentials)."""

    enabled: bool = False
    allow_origin: list[str] = Field([], alias="allowOrigin")
    allow_credentials: bool = Field(False, alias="allowCredentials")
    allow_headers: list[str] = Field([], alias="allowHeaders")
    max_age_seconds: int = Field(600, ge=0, le=86_400, alias="maxAgeSeconds")

    @field_validator("allow_origin")
    @classmethod
    def _origins(cls, values: list[str]) -> list[str]:
        origins = [v if v == "*" else v.lower() for v in values]
        for origin in origins:
            if origin != "*" and not _ORIGIN.match(origin):
                raise ValueError(
                    f"{origin!r} is not an origin: expected `scheme://host[:port]` (no path) or `*`"
                )
        if "*" in origins and len(origins) > 1:
            raise ValueError("`*` already allows every origin; list it alone")
        return origins

    @field_validator("allow_headers")
    @classmethod
    def _headers(cls, values: list[str]) -> list[str]:
        for header in values:
            if header != "*" and not _HEADER.match(header):
                raise ValueError(f"{header!r} is not a header name")
        return values

    @model_validator(mode="after")
    def _no_wildcard_with_credentials(self) -> Cors:
        if self.allow_credentials and "*" in self.allow_origin:
            raise ValueError(
                "allowOrigin `*` cannot be combined with allowCredentials: true "
                "(browsers refuse it); list the exact origins instead"
            )
        return self


class RestfulApi(_Strict):
    cors: Cors = Cors()


class Access(_Strict):
    """Who may call: members of `groups` (full paths like `/team/users`), and anyone when `anonymous`."""

    groups: list[str] = []
    anonymous: bool = False

    @field_validator("groups")
    @classmethod
    def _group_paths(cls, values: list[str]) -> list[str]:
        return [check_group_path(group) for group in values]


class RateLimit(_Strict):
    """Requests each caller may make, as `N/second|minute|hour|day` (`60/minute`, `10 per second`)."""

    per_caller: str | None = Field(None, alias="perCaller")

    @field_validator("per_caller")
    @classmethod
    def _rate(cls, value: str | None) -> str | None:
        if value is not None:
            parse_rate(value)
        return value


class ApiLogging(_Strict):
    """What the request log keeps of the module's calls besides their metadata: with `payloads`, a
    `sampleRate` share of calls keep their inputs, parameters and outputs (files by their stored object),
    each `redact` path (`inputs.text`, `parameters.api_key`, `inputs.address.street`) replaced by
    `"[redacted]"` and the whole cut to `maxBytes`."""

    payloads: bool = False
    sample_rate: float = Field(1.0, ge=0, le=1, alias="sampleRate")
    redact: list[str] = []
    max_bytes: int = Field(65_536, ge=1, le=16 * 1024 * 1024, alias="maxBytes")

    @field_validator("redact")
    @classmethod
    def _paths(cls, values: list[str]) -> list[str]:
        for path in values:
            if not _REDACT_PATH.match(path):
                raise ValueError(
                    f"{path!r} is not a field path: expected inputs.NAME, parameters.NAME or outputs.NAME, "
                    "with .NAME for each nested level (inputs.address.street)"
                )
        return values


class DriftMonitoring(_Strict):
    """How drift is watched: the reference the recent calls are compared with (`first-calls`: the version's
    first `referenceCalls` sampled calls; or `bucket/key` of a JSONL object, one `{"inputs": {...},
    "outputs": {...}}` record a line), how many of the latest calls make the window, and the PSI at or above
    which a feature drifts."""

    reference: str = "first-calls"
    reference_calls: int = Field(500, ge=20, le=10_000, alias="referenceCalls")
    window_calls: int = Field(500, ge=20, le=10_000, alias="windowCalls")
    threshold: float = Field(0.2, gt=0, le=10)

    @field_validator("reference")
    @classmethod
    def _reference(cls, value: str) -> str:
        if value == "first-calls":
            return value
        bucket, _, key = value.partition("/")
        parts = key.split("/")
        if not BUCKET_NAME.match(bucket) or not key or any(p in ("", ".", "..") for p in parts):
            raise ValueError(
                "expected `first-calls` or the `bucket/key` of a JSONL object, such as "
                "`references/digits.jsonl`"
            )
        return value

    @property
    def reference_object(self) -> tuple[str, str] | None:
        """(bucket, key) of the reference object; None for `first-calls`."""
        if self.reference == "first-calls":
            return None
        bucket, _, key = self.reference.partition("/")
        return bucket, key


class ApiJobs(_Strict):
    """How the module's asynchronous jobs run: `maxAttempts` runs for retryable failures (a worker died, a
    timeout, the module unavailable; the server's `MODELPORT_JOB_MAX_ATTEMPTS` without it), whether an error
    the module's own code raised is retried too (`retryModuleErrors`; by default it fails the job at once, as
    a request that does not validate always does), and how long one run may take (`timeoutSeconds`; without
    it twice the module's `timeoutSeconds`)."""

    max_attempts: int | None = Field(None, ge=1, le=100, alias="maxAttempts")
    retry_module_errors: bool = Field(False, alias="retryModuleErrors")
    timeout_seconds: float | None = Field(None, gt=0, le=7 * 86_400, alias="timeoutSeconds")


class ApiCache(_Strict):
    """The prediction cache: an answer is kept `ttlSeconds` and given again for the same request (module,
    version, model key, inputs with files by their bytes, parameters, output fields), to the caller who made
    it (`scope: caller`, the default; anonymous calls are then not cached) or to every caller (`shared`).
    `maxEntries` bounds the answers one gateway process keeps in memory per module; in Redis
    (`MODELPORT_REDIS_URL`) entries expire after `ttlSeconds` and Redis evicts by its own policy. Modules with
    file outputs are never cached: their files are published per caller."""

    ttl_seconds: float = Field(gt=0, le=30 * 86_400, alias="ttlSeconds")
    max_entries: int = Field(1024, ge=1, le=1_000_000, alias="maxEntries")
    scope: Literal["caller", "shared"] = "caller"


class Monitoring(_Strict):
    """What the platform watches in a module's calls besides the request log: `drift`."""

    drift: DriftMonitoring | None = None


class ApiManifestSpec(_Strict):
    module: str | None = Field(None, pattern=_NAME)
    """The module this `Api` opens (exactly one of `module` and `pipeline`)."""
    pipeline: str | None = Field(None, pattern=_NAME)
    """The pipeline this `Api` opens."""
    restful_api: RestfulApi = Field(RestfulApi(), alias="restfulApi")
    access: Access = Access()
    rate_limit: RateLimit = Field(RateLimit(), alias="rateLimit")
    sync_timeout_seconds: float | None = Field(None, gt=0, le=86_400, alias="syncTimeoutSeconds")
    """How long a synchronous call may take from its arrival, waiting for a worker included; past it the
    caller gets 504. The smallest of a module's `Api`s applies; without one, twice `timeoutSeconds`."""
    monitoring: Monitoring = Monitoring()
    """Drift watching (`monitoring.drift`); without it, drift is watched with the defaults."""
    logging: ApiLogging | None = None
    """Payload capture for the request log (`ApiLogging`); without it only the calls' metadata is kept."""
    jobs: ApiJobs | None = None
    """How asynchronous jobs of the module are retried and timed (`ApiJobs`)."""

    @model_validator(mode="after")
    def _one_target(self) -> ApiManifestSpec:
        if self.module is None and self.pipeline is None:
            raise ValueError("required: `module` (the module this Api opens) or `pipeline`")
        if self.module is not None and self.pipeline is not None:
            raise ValueError("an Api opens one module (`module`) or one pipeline (`pipeline`), not both")
        if self.pipeline is not None:
            for name, value, where in (
                ("monitoring.drift", self.monitoring.drift, "watched"),
                ("cache", self.cache, "cached"),
                ("logging", self.logging, "logged"),
            ):
                if value is not None:
                    raise ValueError(
                        f"`{name}` is a module's: a pipeline's steps are {where} as their modules' Apis say"
                    )
        return self

    cache: ApiCache | None = None
    """The prediction cache (`ApiCache`); without it every call reaches a worker."""


_RETIRED_API_FIELDS = ("canary",)
"""`Api` spec fields that earlier schemas accepted and that never had an effect: refused when applied,
dropped when a stored manifest is read (`without_retired_fields`)."""

_RETIRED_HINTS: dict[tuple[type[BaseModel] | None, str], str] = {
    (ApiManifestSpec, "canary"): "a canary is part of a deployment: "
    "use `modelport deploy MODULE VERSION --canary PERCENT`",
}


def without_retired_fields(document: dict[str, Any]) -> dict[str, Any]:
    """A stored `Api` document without the fields earlier schemas accepted and this one refuses, so that
    manifests stored before keep granting what they grant.

    That includes a `cache` in the earlier schema's form for "off" (`ttlSeconds: 0`, or no `ttlSeconds`),
    which this schema refuses; an earlier `cache` with a positive `ttlSeconds` is a valid one, and now
    caches as its author asked (per caller, unless it says otherwise)."""
    spec = document.get("spec")
    if not isinstance(spec, dict):
        return document
    retired = {name for name in _RETIRED_API_FIELDS if name in spec}
    cache = spec.get("cache")
    if isinstance(cache, dict) and not cache.get("ttlSeconds"):
        retired.add("cache")
    if not retired:
        return document
    kept = {name: value for name, value in spec.items() if name not in retired}
    return {**document, "spec": kept}


class ApiManifest(_Strict):
    """The public face of a module: CORS, who may call it, rate limits, the deadline of synchronous calls."""

    api_version: Literal["modelport/v1"] = Field("modelport/v1", alias="apiVersion")
    kind: Literal["Api"] = "Api"
    metadata: Metadata
    spec: ApiManifestSpec

    @property
    def target(self) -> tuple[str, str]:
        """(`module` or `pipeline`, its name)."""
        if self.spec.pipeline is not None:
            return "pipeline", self.spec.pipeline
        assert self.spec.module is not None
        return "module", self.spec.module


# Pipeline

_STEP_NAME = r"^[a-z][a-z0-9_-]{0,62}$"
_REF = re.compile(
    r"^\$\.(?:(?P<group>inputs|parameters)\.(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|steps\.(?P<step>[a-z][a-z0-9_-]{0,62})\.outputs\.(?P<output>[A-Za-z_][A-Za-z0-9_]*))$"
)
MAX_PIPELINE_STEPS = 32


class Reference(TypedDict):
    """Where a value comes from: the request's `inputs`/`parameters` field `name`, or the output `name` of
    the earlier `step` (`group` is then `steps`)."""

    group: Literal["inputs", "parameters", "steps"]
    step: str | None
    name: str


def parse_reference(value: Any) -> Reference | None:
    """The reference `value` spells (`$.inputs.image`, `$.parameters.language`, `$.steps.ocr.outputs.text`);
    None when it is a constant (anything that is not a string starting with `$`). A string starting with `$`
    that is not a reference is a `ValueError`."""
    if not isinstance(value, str) or not value.startswith("$"):
        return None
    match = _REF.match(value)
    if match is None:
        raise ValueError(
            f"{value!r} is not a reference: expected $.inputs.NAME, $.parameters.NAME or "
            "$.steps.STEP.outputs.NAME"
        )
    if match.group("step") is not None:
        return {"group": "steps", "step": match.group("step"), "name": match.group("output")}
    if match.group("group") == "inputs":
        return {"group": "inputs", "step": None, "name": match.group("name")}
    return {"group": "parameters", "step": None, "name": match.group("name")}


class PipelineStep(_Strict):
    """One module call of a pipeline: its `inputs` and `parameters` are references (`$.inputs.image`,
    `$.steps.ocr.outputs.text`) or constants; `version` pins one (else the module's active version)."""

    name: str = Field(pattern=_STEP_NAME)
    module: str = Field(pattern=_NAME)
    version: str | None = Field(None, min_length=1, max_length=64)
    model_key: str | None = Field(None, min_length=1, max_length=128, alias="modelKey")
    inputs: dict[str, Any] = {}
    parameters: dict[str, Any] = {}

    @field_validator("inputs", "parameters")
    @classmethod
    def _references(cls, values: dict[str, Any]) -> dict[str, Any]:
        for field, value in values.items():
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", field):
                raise ValueError(f"{field!r} is not a field name")
            if parse_reference(value) is not None and not isinstance(value, str):
                raise ValueError(f"{field}: a reference is a string")
        return values

    def references(self) -> list[tuple[str, str, Reference]]:
        """(group, field, reference) of every value this step takes from elsewhere."""
        found: list[tuple[str, str, Reference]] = []
        for group, values in (("inputs", self.inputs), ("parameters", self.parameters)):
            for field, value in values.items():
                reference = parse_reference(value)
                if reference is not None:
                    found.append((group, field, reference))
        return found

    @property
    def needs(self) -> frozenset[str]:
        """The steps whose outputs this step takes."""
        return frozenset(r["step"] for _, _, r in self.references() if r["step"] is not None)


class PipelineSpec(_Strict):
    description: str = Field("", max_length=4096)
    owner: str | None = None
    """The group (full path) whose developers manage the pipeline; none: only admins."""
    steps: list[PipelineStep] = Field(min_length=1, max_length=MAX_PIPELINE_STEPS)
    outputs: dict[str, str] = Field(min_length=1)
    """The pipeline's outputs, each a step's output (`$.steps.extract.outputs.total`) or a request input."""

    @field_validator("owner")
    @classmethod
    def _owner_group(cls, value: str | None) -> str | None:
        return None if value is None else check_group_path(value)

    @field_validator("outputs")
    @classmethod
    def _output_references(cls, values: dict[str, str]) -> dict[str, str]:
        for field, value in values.items():
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", field):
                raise ValueError(f"{field!r} is not a field name")
            if parse_reference(value) is None:
                raise ValueError(f"{field}: expected a reference such as $.steps.STEP.outputs.NAME")
        return values

    @model_validator(mode="after")
    def _graph(self) -> PipelineSpec:
        names = [step.name for step in self.steps]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"step names must be unique; repeated: {', '.join(repeated)}")
        known = set(names)
        for step in self.steps:
            for group, field, reference in step.references():
                if reference["step"] is not None and reference["step"] not in known:
                    raise ValueError(
                        f"step {step.name!r} {group}.{field}: there is no step {reference['step']!r}"
                    )
        for field, value in self.outputs.items():
            output = parse_reference(value)
            if output is not None and output["step"] is not None and output["step"] not in known:
                raise ValueError(f"output {field!r}: there is no step {output['step']!r}")
        cycle = _cycle({step.name: step.needs for step in self.steps})
        if cycle:
            raise ValueError(f"the steps form a cycle: {' -> '.join(cycle)}")
        return self

    def order(self) -> list[PipelineStep]:
        """The steps in an order where each comes after the steps it needs."""
        done: set[str] = set()
        ordered: list[PipelineStep] = []
        pending = list(self.steps)
        while pending:
            ready = [step for step in pending if step.needs <= done]
            ordered.extend(ready)
            done.update(step.name for step in ready)
            pending = [step for step in pending if step.name not in done]
        return ordered


def _cycle(graph: dict[str, frozenset[str]]) -> list[str]:
    """A cycle in `graph` (step → the steps it needs): the steps along it, the first repeated last; [] if
    none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for need in sorted(graph.get(node, ())):
            if state.get(need) == 1:
                return [*path[path.index(need) :], need]
            if need not in state and (found := visit(need)):
                return found
        path.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return []


class PipelineManifest(_Strict):
    """A DAG of module calls served like a module: steps run as soon as what they need exists."""

    api_version: Literal["modelport/v1"] = Field("modelport/v1", alias="apiVersion")
    kind: Literal["Pipeline"] = "Pipeline"
    metadata: Metadata
    spec: PipelineSpec

    @model_validator(mode="after")
    def _not_itself(self) -> PipelineManifest:
        for step in self.spec.steps:
            if step.module == self.metadata.name:
                raise ValueError(
                    f"step {step.name!r} calls {step.module!r}, the pipeline itself: "
                    "a pipeline's steps are modules"
                )
        return self


# Storage


class StorageAccess(_Strict):
    """Who may use the bucket besides admins: `groups` read and write, `readGroups` only read."""

    groups: list[str] = []
    read_groups: list[str] = Field([], alias="readGroups")

    @field_validator("groups", "read_groups")
    @classmethod
    def _group_paths(cls, values: list[str]) -> list[str]:
        return [check_group_path(group) for group in values]


class StorageSpec(_Strict):
    access: StorageAccess = StorageAccess()
    cors: Cors = Cors()
    """Browser access to the bucket's routes (presigned URLs of the gateway included) from other origins."""
    quota: StrictInt | str | None = None
    """Most bytes the bucket may hold: a number of bytes or a size such as `500MB`, `10GiB`."""
    retention_days: float | None = Field(None, gt=0, le=36_500, alias="retentionDays")
    """Objects older than this are deleted."""

    @field_validator("quota")
    @classmethod
    def _size(cls, value: int | str | None) -> int | str | None:
        if value is not None:
            parse_size(value)
        return value

    @property
    def quota_bytes(self) -> int | None:
        return None if self.quota is None else parse_size(self.quota)


class StorageManifest(_Strict):
    """An object-storage bucket: who may use it, how much it may hold, how long objects are kept."""

    api_version: Literal["modelport/v1"] = Field("modelport/v1", alias="apiVersion")
    kind: Literal["Storage"] = "Storage"
    metadata: Metadata
    spec: StorageSpec = StorageSpec()

    @field_validator("metadata")
    @classmethod
    def _bucket_name(cls, value: Metadata) -> Metadata:
        if len(value.name) < 3:
            raise ValueError("a bucket name has 3 to 63 characters")
        return value


Manifest = ModuleManifest | ApiManifest | StorageManifest | PipelineManifest
KINDS: dict[
    str, type[ModuleManifest] | type[ApiManifest] | type[StorageManifest] | type[PipelineManifest]
] = {
    "Api": ApiManifest,
    "Module": ModuleManifest,
    "Pipeline": PipelineManifest,
    "Storage": StorageManifest,
}
"""The kinds `parse_document` knows, by the name a document's `kind` gives."""


def parse_rate(text: str) -> tuple[int, int]:
    """`"60/minute"` → `(60, 60)`: the number of requests and the window in seconds."""
    match = _RATE.match(text.strip().lower())
    if match is None:
        raise ValueError(f"{text!r} is not a rate: expected `N/second`, `N/minute`, `N/hour` or `N/day`")
    count = int(match.group(1))
    if count < 1:
        raise ValueError(f"{text!r} allows no request at all; the count must be at least 1")
    return count, _RATE_SECONDS[match.group(2)]


def parse_size(value: int | str) -> int:
    """`"10GiB"` → 10737418240: a number of bytes, or a decimal (kB, MB...) or binary (KiB, MiB...) size."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 500MB or 10GiB")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    match = _SIZE.match(value.strip().lower())
    if match is None:
        raise ValueError(f"{value!r} is not a size: expected bytes or a size such as 500MB or 10GiB")
    number, unit = float(match.group(1)), match.group(2) or ""
    factor = 1024 ** ("kmgtp".index(unit[0]) + 1) if "i" in unit else _SIZE_UNITS[unit[:1]]
    return int(number * factor)


def to_document(manifest: Manifest) -> dict[str, Any]:
    """The manifest as a compact document: apiVersion, kind, metadata and the spec fields unlike the defaults.

    Validating the document gives back an equal manifest, and equal manifests give equal documents, however
    they were written (defaults spelt out or left out), so stored documents compare reliably.
    """
    body = manifest.model_dump(by_alias=True, mode="json", exclude_defaults=True)
    document: dict[str, Any] = {"apiVersion": manifest.api_version, "kind": manifest.kind}
    document["metadata"] = body["metadata"]
    if body.get("spec"):
        document["spec"] = body["spec"]
    return document


# Reading documents


def load_documents(text: str, *, source: str) -> list[dict[str, Any]]:
    """The non-empty documents of a YAML stream; `ManifestError` naming `source` and the line if broken."""
    documents: list[dict[str, Any]] = []
    try:
        for document in yaml.load_all(text, Loader=_Loader):
            if document is None:
                continue
            if not isinstance(document, dict):
                message = (
                    f"expected a mapping (apiVersion, kind, metadata, spec), got {type(document).__name__}"
                )
                problem = _problem(len(documents), None, "", message)
                raise ManifestError(f"{source}: document {len(documents) + 1}: {message}", [problem])
            try:
                json.dumps(document, allow_nan=False)
            except (TypeError, ValueError) as exc:
                message = f"holds a value JSON cannot carry: {exc}"
                problem = _problem(len(documents), None, "", message)
                raise ManifestError(f"{source}: document {len(documents) + 1} {message}", [problem]) from None
            documents.append(document)
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" line {mark.line + 1}, column {mark.column + 1}:"
        reason = getattr(exc, "problem", None) or str(exc)
        message = f"not valid YAML:{where} {reason}"
        raise ManifestError(
            f"{source}:{where} not valid YAML: {reason}", [_problem(len(documents), None, "", message)]
        ) from None
    return documents


def parse_document(doc: dict[str, Any], *, source: str, document: int = 0) -> Manifest:
    """Validate one document as the manifest its `kind` names; `ManifestError` lists every problem.

    `document` is the document's position in its request or stream, reported in each problem.
    """
    if not isinstance(doc, dict):
        message = f"expected a mapping (apiVersion, kind, metadata, spec), got {type(doc).__name__}"
        problem = _problem(document, None, "", message)
        raise ManifestError(_summary(source, [problem]), [problem])
    kind = doc.get("kind")
    name = _name_of(doc)
    model = KINDS.get(kind) if isinstance(kind, str) else None
    if model is None:
        known = ", ".join(sorted(KINDS))
        message = (
            f"unknown kind {kind!r}; known kinds: {known}"
            if kind is not None
            else f"required; one of {known}"
        )
        problem = _problem(document, kind if isinstance(kind, str) else None, "kind", message, name=name)
        raise ManifestError(_summary(source, [problem]), [problem])
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        problems = [
            _problem(document, kind, _field(error["loc"]), _message(model, error), name=name)
            for error in exc.errors(include_url=False)
        ]
        raise ManifestError(_summary(source, problems), problems) from None


def load_module_manifest(directory: Path) -> ModuleManifest:
    """Read the `Module` document of `directory/modelport.yaml`, or default one named after the directory."""
    path = directory / "modelport.yaml"
    if not path.exists():
        return ModuleManifest(metadata=Metadata(name=_slug(directory.resolve().name)))
    documents = load_documents(path.read_text(encoding="utf-8"), source=str(path))
    modules = [(i, d) for i, d in enumerate(documents) if d.get("kind") == "Module"]
    if len(modules) != 1:
        raise ManifestError(f"{path}: expected exactly one document of kind Module, found {len(modules)}")
    index, document = modules[0]
    manifest = parse_document(document, source=str(path), document=index)
    assert isinstance(manifest, ModuleManifest)
    return manifest


def check_openai(openai: OpenAiSpec, api: ApiSpec) -> list[tuple[str, str]]:
    """What is wrong with `openai` for a module whose API is `api`: (field of `spec.openai`, message) pairs.

    An embeddings module takes the text in an input of type `str` (or `list[str]`) and answers the vector
    in an output of type `list[float]`; `dimensions` is an `int` parameter or input; every other input and
    parameter is optional or has a default, since the route sends nothing else.
    """
    if openai.chat:
        return _check_chat(openai, api)
    if not openai.embeddings:
        return []
    problems: list[tuple[str, str]] = []
    text = api.get("inputs", openai.input or "")
    if text is None:
        problems.append(("input", f"the API has no input {openai.input!r}{_declared(api.inputs)}"))
    elif not any(_is_text(t.kind, t.item.kind if t.item else None) for t in text.types):
        problems.append(("input", f"input {text.name!r} is {text.type_text}; expected str or list[str]"))
    vector = api.get("outputs", openai.output or "")
    if vector is None:
        problems.append(("output", f"the API has no output {openai.output!r}{_declared(api.outputs)}"))
    elif not any(t.kind is Kind.LIST and t.item and t.item.kind is Kind.FLOAT for t in vector.types):
        problems.append(("output", f"output {vector.name!r} is {vector.type_text}; expected list[float]"))
    size = None
    if openai.dimensions is not None:
        size = api.get("parameters", openai.dimensions) or api.get("inputs", openai.dimensions)
        if size is None or size is text:
            problems.append(("dimensions", f"the API has no parameter {openai.dimensions!r}"))
        elif not any(t.kind is Kind.INT for t in size.types):
            problems.append(("dimensions", f"{size.name!r} is {size.type_text}; expected int"))
    for field in (*api.inputs, *api.parameters):
        if field.required and field is not text and field is not size:
            problems.append(
                (
                    "embeddings",
                    f"{field.group} {field.name!r} is required, but embeddings send only the text; "
                    "make it optional or give it a default",
                )
            )
    if size is not None and size.required:
        problems.append(("dimensions", f"{size.name!r} is required; callers may leave the size out"))
    return problems


CHAT_OPTIONS: dict[str, tuple[Kind, ...]] = {
    "max_tokens": (Kind.INT,),
    "temperature": (Kind.FLOAT, Kind.INT),
    "top_p": (Kind.FLOAT, Kind.INT),
    "stop": (Kind.STR, Kind.LIST, Kind.JSON),
    "seed": (Kind.INT,),
    "response_format": (Kind.JSON,),
}
"""OpenAI's chat options a module takes as parameters of the same names, and the kinds that can take them."""
CHAT_OUTPUTS: dict[str, Kind] = {
    "finish_reason": Kind.STR,
    "prompt_tokens": Kind.INT,
    "completion_tokens": Kind.INT,
}
"""Outputs that, where a chat module declares them, fill in the answer's `finish_reason` and `usage`."""


def _check_chat(openai: OpenAiSpec, api: ApiSpec) -> list[tuple[str, str]]:
    """A chat module takes the conversation in a `json` input and answers the reply in a `str` output; the
    parameters named like OpenAI's options and the outputs named like its usage must fit them."""
    problems: list[tuple[str, str]] = []
    messages = api.get("inputs", openai.messages or "")
    if messages is None:
        problems.append(("messages", f"the API has no input {openai.messages!r}{_declared(api.inputs)}"))
    elif not any(t.kind is Kind.JSON for t in messages.types):
        problems.append(("messages", f"input {messages.name!r} is {messages.type_text}; expected json"))
    reply = api.get("outputs", openai.output or "")
    if reply is None:
        problems.append(("output", f"the API has no output {openai.output!r}{_declared(api.outputs)}"))
    elif not any(t.kind is Kind.STR for t in reply.types):
        problems.append(("output", f"output {reply.name!r} is {reply.type_text}; expected str"))
    for name, kinds in CHAT_OPTIONS.items():
        option = api.get("parameters", name)
        if option is not None and not any(t.kind in kinds for t in option.types):
            problems.append(
                ("chat", f"parameter {name!r} is {option.type_text}, which cannot take OpenAI's {name}")
            )
    for name, kind in CHAT_OUTPUTS.items():
        output = api.get("outputs", name)
        if output is not None and not any(t.kind is kind for t in output.types):
            problems.append(("chat", f"output {name!r} is {output.type_text}; expected {kind.value}"))
    for field in (*api.inputs, *api.parameters):
        if field.required and field is not messages:
            problems.append(
                (
                    "chat",
                    f"{field.group} {field.name!r} is required, but a chat completion sends only the "
                    "conversation and OpenAI's options; make it optional or give it a default",
                )
            )
    return problems


def _is_text(kind: Kind, item: Kind | None) -> bool:
    return kind is Kind.STR or (kind is Kind.LIST and item is Kind.STR)


def _declared(fields: tuple[FieldSpec, ...]) -> str:
    return f" (it has {', '.join(f.name for f in fields)})" if fields else ""


def check_openai_roles(manifest: ModuleManifest, api: ApiSpec, *, source: str) -> None:
    """`ManifestError` if the manifest's `spec.openai` does not fit the module's API `api`."""
    openai = manifest.spec.openai
    if openai is None:
        return
    name = manifest.metadata.name
    problems = [
        _problem(0, "Module", f"spec.openai.{field}", message, name=name)
        for field, message in check_openai(openai, api)
    ]
    if problems:
        raise ManifestError(_summary(source, problems), problems)


def _slug(name: str) -> str:
    slug = "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")
    return slug[:63] or "module"


class _Loader(yaml.SafeLoader):
    """A safe loader refusing documents whose aliases expand past `_MAX_NODES` values (billion laughs).

    Dates stay the strings they were written as: manifests travel and are stored as JSON, which has no dates.
    """

    def construct_document(self, node: yaml.Node) -> Any:
        if _expanded_size(node, {}) > _MAX_NODES:
            raise yaml.constructor.ConstructorError(
                None, None, f"the document expands to more than {_MAX_NODES} values", node.start_mark
            )
        return super().construct_document(node)


_Loader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _expanded_size(node: yaml.Node, seen: dict[int, int]) -> int:
    """Nodes in the document once aliases are expanded, computed once per distinct node."""
    if id(node) in seen:
        return seen[id(node)]
    seen[id(node)] = _MAX_NODES + 1  # a node reached again while being measured is a cycle
    size = 1
    if isinstance(node, yaml.SequenceNode):
        size += sum(_expanded_size(child, seen) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size += sum(_expanded_size(k, seen) + _expanded_size(v, seen) for k, v in node.value)
    seen[id(node)] = min(size, _MAX_NODES + 1)
    return seen[id(node)]


def _name_of(doc: Any) -> str | None:
    metadata = doc.get("metadata") if isinstance(doc, dict) else None
    name = metadata.get("name") if isinstance(metadata, dict) else None
    return name if isinstance(name, str) else None


def _problem(
    document: int | None, kind: str | None, field: str, message: str, *, name: str | None = None
) -> Problem:
    return {"document": document, "kind": kind, "name": name, "field": field, "message": message}


def _summary(source: str, problems: list[Problem]) -> str:
    lines = [f"{p['field'] or '(document)'}: {p['message']}" for p in problems]
    return f"{source}: " + "; ".join(lines)


def _field(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for part in loc:
        if isinstance(part, int):
            parts.append(f"[{part}]")
        else:
            parts.append(f".{part}" if parts else part)
    return "".join(parts)


def _message(model: type[BaseModel], error: ErrorDetails) -> str:
    kind, message = error["type"], error["msg"]
    if kind == "extra_forbidden":
        field = str(error["loc"][-1])
        parent = _model_at(model, error["loc"][:-1])
        if (hint := _RETIRED_HINTS.get((parent, field))) is not None:
            return f"unknown field {field!r}: {hint}"
        known = f"; known fields: {', '.join(_aliases(parent))}" if parent is not None else ""
        return f"unknown field {field!r} (extra fields are not permitted){known}"
    if kind == "missing":
        return "required"
    message = message.removeprefix("Value error, ")
    value = error.get("input")
    if kind != "value_error" and isinstance(value, str | int | float | bool):
        message = f"{message} (got {value!r})"
    return message


def _model_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The model class that validates the object at `loc` inside `model`, if `loc` leads to one."""
    current: type[BaseModel] | None = model
    for part in loc:
        if current is None:
            return None
        field = next((f for n, f in current.model_fields.items() if (f.alias or n) == part), None)
        current = _model_in(field.annotation) if field is not None else None
    return current


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (Union, UnionType):
        return next((m for m in map(_model_in, get_args(annotation)) if m is not None), None)
    return None


def _aliases(model: type[BaseModel]) -> list[str]:
    return [field.alias or name for name, field in model.model_fields.items()]
