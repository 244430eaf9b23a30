"""The manifest schema: what each kind accepts, and how precisely it says what is wrong."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from modelport.core.manifests import (
    ApiManifest,
    ManifestError,
    ModuleManifest,
    StorageManifest,
    StorageSpec,
    load_documents,
    load_module_manifest,
    parse_document,
    parse_rate,
    to_document,
)

DESIGN_API = """
apiVersion: modelport/v1
kind: Api
metadata: {name: receipt-ocr}
spec:
  module: receipt-ocr
  restfulApi:
    cors:
      enabled: true
      allowOrigin: ["https://example.com"]
  access: {groups: ["/gallery-ocr-users"]}
  rateLimit: {perCaller: "60/minute"}
"""


def api(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "modelport/v1",
        "kind": "Api",
        "metadata": {"name": "ocr"},
        "spec": {"module": "ocr", **spec},
    }


def cors(**fields: Any) -> dict[str, Any]:
    return api(restfulApi={"cors": {"enabled": True, **fields}})


def problems(document: dict[str, Any]) -> list[dict[str, Any]]:
    with pytest.raises(ManifestError) as caught:
        parse_document(document, source="test.yaml", document=3)
    return [dict(p) for p in caught.value.problems]


def only_problem(document: dict[str, Any]) -> dict[str, Any]:
    found = problems(document)
    assert len(found) == 1, found
    return found[0]


# Api


def test_the_design_example_parses() -> None:
    manifest = parse_document(load_documents(DESIGN_API, source="api.yaml")[0], source="api.yaml")

    assert isinstance(manifest, ApiManifest)
    assert manifest.spec.module == "receipt-ocr"
    assert manifest.spec.restful_api.cors.allow_origin == ["https://example.com"]
    assert manifest.spec.access.groups == ["/gallery-ocr-users"]
    assert manifest.spec.rate_limit.per_caller == "60/minute"
    assert manifest.spec.sync_timeout_seconds is None


def test_an_api_needs_its_module() -> None:
    document = api()
    del document["spec"]["module"]

    assert only_problem(document) == {
        "document": 3,
        "kind": "Api",
        "name": "ocr",
        "field": "spec",
        "message": "required: `module` (the module this Api opens) or `pipeline`",
    }


def test_wildcard_origin_with_credentials_is_refused() -> None:
    problem = only_problem(cors(allowOrigin=["*"], allowCredentials=True))

    assert problem["field"] == "spec.restfulApi.cors"
    assert "`*` cannot be combined with allowCredentials" in problem["message"]


def test_wildcard_origin_without_credentials_is_allowed() -> None:
    manifest = parse_document(cors(allowOrigin=["*"]), source="t")
    assert isinstance(manifest, ApiManifest)
    assert manifest.spec.restful_api.cors.allow_origin == ["*"]


@pytest.mark.parametrize(
    "origin", ["https://example.com", "http://localhost:3000", "http://127.0.0.1:8080", "http://[::1]:5173"]
)
def test_origins_are_accepted(origin: str) -> None:
    assert isinstance(parse_document(cors(allowOrigin=[origin]), source="t"), ApiManifest)


def test_origins_are_lowercased_as_browsers_send_them() -> None:
    manifest = parse_document(cors(allowOrigin=["HTTPS://Example.COM"]), source="t")
    assert isinstance(manifest, ApiManifest)
    assert manifest.spec.restful_api.cors.allow_origin == ["https://example.com"]


@pytest.mark.parametrize(
    "origin",
    ["https://example.com/", "https://example.com/app", "example.com", "https://", "https://a b", "*.x"],
)
def test_origins_with_a_path_or_no_scheme_are_refused(origin: str) -> None:
    problem = only_problem(cors(allowOrigin=[origin]))

    assert problem["field"] == "spec.restfulApi.cors.allowOrigin"
    assert repr(origin) in problem["message"]
    assert "scheme://host[:port]" in problem["message"]


def test_wildcard_among_other_origins_is_refused() -> None:
    assert "list it alone" in only_problem(cors(allowOrigin=["*", "https://a.example"]))["message"]


@pytest.mark.parametrize("group", ["team", "", "/", " /team", "/team/", "/a//b", "/team ", "/x/../y"])
def test_groups_must_be_full_paths(group: str) -> None:
    # The rule of groups made through the API: a manifest can only name a group that can exist.
    problem = only_problem(api(access={"groups": ["/ok", group]}))

    assert problem["field"] == "spec.access.groups"
    assert "is not a group path" in problem["message"]


@pytest.mark.parametrize(
    ("rate", "parsed"),
    [
        ("60/minute", (60, 60)),
        ("1/second", (1, 1)),
        ("10 per second", (10, 1)),
        ("5 / hours", (5, 3600)),
        ("100/day", (100, 86_400)),
    ],
)
def test_rates(rate: str, parsed: tuple[int, int]) -> None:
    manifest = parse_document(api(rateLimit={"perCaller": rate}), source="t")
    assert isinstance(manifest, ApiManifest)
    assert manifest.spec.rate_limit.per_caller == rate
    assert parse_rate(rate) == parsed


@pytest.mark.parametrize("rate", ["60/min", "60", "minute", "-1/second", "0/minute", "1.5/second", "60/week"])
def test_bad_rates_are_refused(rate: str) -> None:
    problem = only_problem(api(rateLimit={"perCaller": rate}))

    assert problem["field"] == "spec.rateLimit.perCaller"
    assert repr(rate) in problem["message"]


@pytest.mark.parametrize("seconds", [0, -1, 86_401])
def test_the_sync_timeout_is_bounded(seconds: float) -> None:
    problem = only_problem(api(syncTimeoutSeconds=seconds))

    assert problem["field"] == "spec.syncTimeoutSeconds"
    assert f"(got {seconds})" in problem["message"]


def test_a_canary_is_refused_with_the_command_that_makes_one() -> None:
    problem = only_problem(api(canary={"version": "v2", "percent": 10}))

    assert problem["field"] == "spec.canary"
    assert problem["message"] == (
        "unknown field 'canary': a canary is part of a deployment: "
        "use `modelport deploy MODULE VERSION --canary PERCENT`"
    )


def test_a_prediction_cache_needs_a_ttl_and_defaults_to_the_caller_scope() -> None:
    manifest = parse_document(api(cache={"ttlSeconds": 60}), source="test.yaml")

    assert isinstance(manifest, ApiManifest) and manifest.spec.cache is not None
    assert (manifest.spec.cache.ttl_seconds, manifest.spec.cache.max_entries) == (60, 1024)
    assert manifest.spec.cache.scope == "caller"
    assert to_document(manifest)["spec"]["cache"] == {"ttlSeconds": 60}


@pytest.mark.parametrize(
    ("cache", "field", "message"),
    [
        ({}, "spec.cache.ttlSeconds", "required"),
        ({"ttlSeconds": 0}, "spec.cache.ttlSeconds", "Input should be greater than 0"),
        (
            {"ttlSeconds": 60, "maxEntries": 0},
            "spec.cache.maxEntries",
            "Input should be greater than or equal to 1",
        ),
        ({"ttlSeconds": 60, "scope": "everyone"}, "spec.cache.scope", "Input should be 'caller' or 'shared'"),
        ({"ttlSeconds": 60, "size": 5}, "spec.cache.size", "unknown field 'size'"),
    ],
)
def test_a_prediction_cache_is_validated(cache: dict[str, Any], field: str, message: str) -> None:
    problem = only_problem(api(cache=cache))

    assert problem["field"] == field
    assert problem["message"].startswith(message)


def test_every_problem_of_a_document_is_listed() -> None:
    found = problems(api(rateLimit={"perCaller": "often"}, syncTimeoutSeconds=0, canary={"percent": 5}))

    assert [p["field"] for p in found] == [
        "spec.rateLimit.perCaller",
        "spec.syncTimeoutSeconds",
        "spec.canary",
    ]


# Module


@pytest.mark.parametrize("size", [0, 100_001])
def test_the_queue_of_waiting_records_is_bounded(size: int) -> None:
    problem = only_problem(
        {"kind": "Module", "metadata": {"name": "echo"}, "spec": {"resources": {"maxQueue": size}}}
    )
    assert problem["field"] == "spec.resources.maxQueue"


def test_unknown_fields_are_named_with_the_known_ones() -> None:
    problem = only_problem(
        {"kind": "Module", "metadata": {"name": "echo"}, "spec": {"resources": {"replica": 2}}}
    )

    assert problem["field"] == "spec.resources.replica"
    assert problem["message"].startswith("unknown field 'replica' (extra fields are not permitted)")
    assert "known fields: replicas, maxBatchSize" in problem["message"]


def test_a_bad_value_names_the_field_and_the_value() -> None:
    problem = only_problem(
        {"kind": "Module", "metadata": {"name": "echo"}, "spec": {"resources": {"replicas": -1}}}
    )

    assert problem == {
        "document": 3,
        "kind": "Module",
        "name": "echo",
        "field": "spec.resources.replicas",
        "message": "Input should be greater than or equal to 0 (got -1)",
    }


def test_source_defaults_and_aliases() -> None:
    document = {
        "kind": "Module",
        "metadata": {"name": "echo"},
        "spec": {"source": {"git": "https://x/r.git"}},
    }
    manifest = parse_document(document, source="t")

    assert isinstance(manifest, ModuleManifest)
    assert manifest.spec.source is not None
    assert (
        manifest.spec.source.path,
        manifest.spec.source.auto_deploy,
        manifest.spec.source.poll_seconds,
    ) == (
        ".",
        False,
        30.0,
    )


@pytest.mark.parametrize(
    ("source", "field"),
    [
        ({"git": "-uupload-pack=touch /tmp/x"}, "spec.source.git"),
        ({"git": ""}, "spec.source.git"),
        ({"git": "/r", "path": "../elsewhere"}, "spec.source.path"),
        ({"git": "/r", "path": "/etc"}, "spec.source.path"),
        ({"git": "/r", "pollSeconds": 0.5}, "spec.source.pollSeconds"),
        ({"path": "."}, "spec.source.git"),
    ],
)
def test_bad_sources_are_refused(source: dict[str, Any], field: str) -> None:
    document = {"kind": "Module", "metadata": {"name": "echo"}, "spec": {"source": source}}
    assert only_problem(document)["field"] == field


# Kinds and documents


def test_an_unknown_kind_lists_the_known_ones() -> None:
    assert only_problem({"kind": "Deployment", "metadata": {"name": "x"}}) == {
        "document": 3,
        "kind": "Deployment",
        "name": "x",
        "field": "kind",
        "message": "unknown kind 'Deployment'; known kinds: Api, Module, Pipeline, Storage",
    }


def test_a_missing_kind_is_a_problem_on_kind() -> None:
    problem = only_problem({"metadata": {"name": "x"}})
    assert (problem["field"], problem["message"]) == (
        "kind",
        "required; one of Api, Module, Pipeline, Storage",
    )


def test_a_wrong_api_version_is_refused() -> None:
    problem = only_problem({"apiVersion": "modelport/v2", "kind": "Module", "metadata": {"name": "x"}})
    assert problem["field"] == "apiVersion"


@pytest.mark.parametrize(
    "document",
    [
        {"kind": "Module", "metadata": {"name": "echo"}},
        {
            "kind": "Module",
            "metadata": {"name": "echo"},
            "spec": {"resources": {"replicas": 3}, "env": {"A": "1"}},
        },
        {
            "kind": "Module",
            "metadata": {"name": "echo"},
            "spec": {"source": {"git": "/r", "autoDeploy": True}},
        },
        api(),
        api(
            restfulApi={"cors": {"enabled": True, "allowOrigin": ["https://a.example"]}},
            syncTimeoutSeconds=2.5,
        ),
    ],
)
def test_documents_round_trip_and_compare_reliably(document: dict[str, Any]) -> None:
    manifest = parse_document(document, source="t")
    stored = to_document(manifest)

    assert parse_document(stored, source="t") == manifest
    assert to_document(parse_document(stored, source="t")) == stored
    assert list(stored)[:3] == ["apiVersion", "kind", "metadata"]


def test_spelt_out_defaults_store_as_left_out_ones() -> None:
    terse = {"kind": "Module", "metadata": {"name": "echo"}}
    verbose = {
        "apiVersion": "modelport/v1",
        "kind": "Module",
        "metadata": {"name": "echo", "labels": {}},
        "spec": {"entrypoint": "inference.py:inference", "resources": {"replicas": 1, "maxBatchSize": 8}},
    }

    stored = to_document(parse_document(terse, source="t"))
    assert stored == to_document(parse_document(verbose, source="t"))
    assert stored == {"apiVersion": "modelport/v1", "kind": "Module", "metadata": {"name": "echo"}}


def test_load_documents_skips_empty_documents() -> None:
    text = "---\n---\nkind: Module\nmetadata: {name: a}\n---\n# only a comment\n---\nkind: Api\n"
    assert load_documents(text, source="s") == [
        {"kind": "Module", "metadata": {"name": "a"}},
        {"kind": "Api"},
    ]


def test_broken_yaml_names_the_source_and_line() -> None:
    with pytest.raises(ManifestError) as caught:
        load_documents("kind: Module\n---\nkind: Api\nspec: [1,\n  2\n", source="deploy/api.yaml")

    message = str(caught.value)
    assert message.startswith("deploy/api.yaml: line 6, column 1: not valid YAML")
    assert caught.value.problems[0]["document"] == 1


def test_a_document_that_is_not_a_mapping_is_refused() -> None:
    with pytest.raises(ManifestError, match=r"s: document 2: expected a mapping"):
        load_documents("kind: Module\n---\n- a list\n", source="s")


def test_small_aliases_work_and_exponential_ones_are_refused() -> None:
    assert load_documents("a: &x {b: 1}\nc: *x\n", source="s") == [{"a": {"b": 1}, "c": {"b": 1}}]
    levels = ["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 9)]
    with pytest.raises(ManifestError, match="expands to more than"):
        load_documents("\n".join(levels), source="s")


def test_load_module_manifest_reports_the_file(tmp_path: Path) -> None:
    (tmp_path / "modelport.yaml").write_text("kind: Module\nmetadata: {name: echo}\nspec: {replicas: 2}\n")

    with pytest.raises(ManifestError) as caught:
        load_module_manifest(tmp_path)

    assert str(caught.value).startswith(
        f"{tmp_path / 'modelport.yaml'}: spec.replicas: unknown field 'replicas'"
    )
    assert caught.value.problems[0]["field"] == "spec.replicas"


def test_load_module_manifest_picks_the_module_among_other_kinds(tmp_path: Path) -> None:
    (tmp_path / "modelport.yaml").write_text(
        DESIGN_API + "---\nkind: Module\nmetadata: {name: receipt-ocr}\n"
    )
    assert load_module_manifest(tmp_path).metadata.name == "receipt-ocr"


def test_documents_keep_dates_as_written_and_refuse_what_json_cannot_carry() -> None:
    assert load_documents("kind: Module\nsince: 2024-05-01\n", source="s") == [
        {"kind": "Module", "since": "2024-05-01"}
    ]
    with pytest.raises(ManifestError, match="JSON cannot carry"):
        load_documents("kind: Module\nratio: .nan\n", source="s")


# Storage


def test_a_storage_manifest_reads_sizes_and_group_paths() -> None:
    manifest = parse_document(
        {
            "apiVersion": "modelport/v1",
            "kind": "Storage",
            "metadata": {"name": "receipts"},
            "spec": {
                "access": {"groups": ["/a"], "readGroups": ["/b/c"]},
                "quota": "10GiB",
                "retentionDays": 7,
            },
        },
        source="test",
    )
    assert isinstance(manifest, StorageManifest)
    assert manifest.spec.quota_bytes == 10 * 1024**3
    assert manifest.spec.access.read_groups == ["/b/c"]


@pytest.mark.parametrize(
    ("quota", "expected"),
    [(0, 0), (1000, 1000), ("1000", 1000), ("500MB", 500 * 10**6), ("1.5 GB", 1_500_000_000), ("2KiB", 2048)],
)
def test_quota_sizes(quota: object, expected: int) -> None:
    assert StorageSpec.model_validate({"quota": quota}).quota_bytes == expected


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"quota": "lots"}, "spec.quota"),
        ({"quota": -1}, "spec.quota"),
        ({"quota": True}, "spec.quota"),
        ({"retentionDays": 0}, "spec.retentionDays"),
        ({"access": {"groups": ["team"]}}, "spec.access.groups"),
        ({"access": {"writers": ["/a"]}}, "spec.access.writers"),
        ({"lifecycle": {}}, "spec.lifecycle"),
    ],
)
def test_bad_storage_specs_name_the_field(spec: dict[str, object], field: str) -> None:
    document = {"apiVersion": "modelport/v1", "kind": "Storage", "metadata": {"name": "bucket"}, "spec": spec}
    with pytest.raises(ManifestError) as caught:
        parse_document(document, source="test")
    assert caught.value.problems[0]["field"].startswith(field)


def test_bucket_names_have_three_characters_at_least() -> None:
    document = {"apiVersion": "modelport/v1", "kind": "Storage", "metadata": {"name": "ab"}}
    with pytest.raises(ManifestError, match="3 to 63"):
        parse_document(document, source="test")


@pytest.mark.parametrize("path", ["../x", "/abs", "a/../b", "a//b", "./a", "a\\b", ""])
def test_a_model_path_stays_inside_its_tree_or_bucket(path: str) -> None:
    document = {
        "apiVersion": "modelport/v1",
        "kind": "Module",
        "metadata": {"name": "m"},
        "spec": {"model": {"bucket": "models", "path": path}},
    }
    with pytest.raises(ManifestError) as caught:
        parse_document(document, source="test")
    assert caught.value.problems[0]["field"] == "spec.model.path"


def test_a_model_path_is_kept_without_its_trailing_slash() -> None:
    document = {
        "apiVersion": "modelport/v1",
        "kind": "Module",
        "metadata": {"name": "m"},
        "spec": {"model": {"bucket": "models", "path": "digits/v2/", "key": "a", "cacheSize": 3}},
    }
    manifest = parse_document(document, source="test")
    assert isinstance(manifest, ModuleManifest)
    assert (manifest.spec.model.path, manifest.spec.model.key, manifest.spec.model.bucket) == (
        "digits/v2",
        "a",
        "models",
    )
