"""The OpenAPI document of a module: valid OpenAPI 3.1, and its schemas accept what the API accepts."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from openapi_spec_validator.validation import OpenAPIV31SpecValidator

from modelport.sdk.openapi import (
    component_prefix,
    field_schema,
    merge_components,
    module_openapi,
    module_paths,
    predict_path,
)
from modelport.sdk.spec import ApiSpec, SpecError, check_value, parse_docstring

SEED = parse_docstring(
    """Extract payment details from a photographed receipt.

    :param inputs.image: Input image for visual analysis
    :type inputs.image: FILE or image/jpeg or image/png

    :param parameters.language: OCR language
    :type parameters.language: str, optional, default "eng"

    :param outputs.response: Generated response from the model
    :type outputs.response: str
    """
)

RICH = parse_docstring(
    """Compare documents and photos.

    Several paragraphs of description.

    :param inputs.photos: Photos of the pages
    :type inputs.photos: list[image/jpeg or image/png], min 1, max 4, max size 5 MB
    :param inputs.scan: A scan
    :type inputs.scan: application/pdf or image/*, optional, max size 512 KB
    :param inputs.note: A note, or a file holding one
    :type inputs.note: str or text/plain, optional
    :param inputs.tags: Tags
    :type inputs.tags: list[str], default [], max 3
    :param inputs.matrix: A matrix
    :type inputs.matrix: list[list[float]], optional
    :param parameters.threshold: Match threshold
    :type parameters.threshold: float, min 0, max 1, default 0.5
    :param parameters.top_k: How many matches
    :type parameters.top_k: int, min 1, max 100
    :param parameters.mode: Matching mode
    :type parameters.mode: str, one of ["fast", "exact"], default "fast"
    :param parameters.seed: A number or a word
    :type parameters.seed: int or str, optional
    :param parameters.extra: Anything
    :type parameters.extra: json, default null
    :param parameters.strict: Strict matching
    :type parameters.strict: bool, default false
    :param parameters.name: A short name
    :type parameters.name: str, min 2, max 8, optional
    :param outputs.score: Similarity
    :type outputs.score: float
    :param outputs.diff: A picture of the differences
    :type outputs.diff: image/png
    :param outputs.pages: Page numbers
    :type outputs.pages: list[int]
    """
)

NO_INPUTS = parse_docstring(
    """Tell the time.

    :param parameters.zone: Time zone
    :type parameters.zone: str, default "UTC"
    :param outputs.now: The time
    """
)

DOCSTRINGS = {
    "seed": SEED,
    "rich": RICH,
    "no-inputs": NO_INPUTS,
    "empty": ApiSpec(),
    "outputs-only": parse_docstring(":param outputs.a: A\n:type outputs.a: json\n"),
    "optional-inputs": parse_docstring(":param inputs.a: A\n:type inputs.a: int, optional\n"),
    "files-only": parse_docstring(
        ":param inputs.a: A\n:type inputs.a: FILE\n"
        ":param inputs.b: B\n:type inputs.b: audio/wav, max size 1 GB\n"
        ":param outputs.c: C\n:type outputs.c: list[image/png]\n"
    ),
    "odd-bounds": parse_docstring(
        ":param inputs.a: A\n:type inputs.a: str, min 1.5, max 2.5\n"
        ":param inputs.b: B\n:type inputs.b: list[int], min -1, max -1, optional\n"
        ":param inputs.c: C\n:type inputs.c: int or bool or list[int], min 2, one of [2, 3, true, [1, 2]]\n"
    ),
}


def component(doc: dict[str, Any], name: str) -> Draft202012Validator:
    """A validator for one component schema, resolving `$ref`s within the document."""
    root = {"components": doc["components"], "$ref": f"#/components/schemas/{name}"}
    return Draft202012Validator(root)


def seed_doc() -> dict[str, Any]:
    return module_openapi(SEED, module="receipt-ocr", version="v1.2.0")


def rich_doc() -> dict[str, Any]:
    return module_openapi(RICH, module="doc-compare")


# Valid OpenAPI 3.1


@pytest.mark.parametrize("name", list(DOCSTRINGS))
def test_documents_are_valid_openapi_3_1(name: str) -> None:
    doc = module_openapi(
        DOCSTRINGS[name], module=f"mod-{name}", version="1.0.0", server_url="http://localhost:8000"
    )
    validate(doc, cls=OpenAPIV31SpecValidator)
    assert doc["openapi"] == "3.1.0"
    for schema in doc["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)
    json.dumps(doc, allow_nan=False)


def test_info_servers_and_paths() -> None:
    doc = seed_doc()
    assert doc["info"] == {
        "title": "receipt-ocr",
        "version": "v1.2.0",
        "description": "Extract payment details from a photographed receipt.",
    }
    assert "servers" not in doc
    assert set(doc["paths"]) == {
        "/api/v1/modules/receipt-ocr/predict",
        "/api/v1/modules/receipt-ocr/openapi.json",
        "/healthz",
        "/readyz",
    }
    assert set(doc["paths"]["/healthz"]) == {"get"}
    assert "503" in doc["paths"]["/readyz"]["get"]["responses"]
    dev = module_openapi(ApiSpec(), module="m", server_url="http://127.0.0.1:8000")
    assert dev["info"] == {"title": "m", "version": "dev"}
    assert dev["servers"] == [{"url": "http://127.0.0.1:8000"}]


def test_predict_operation_content_and_responses() -> None:
    operation = seed_doc()["paths"]["/api/v1/modules/receipt-ocr/predict"]["post"]
    assert operation["operationId"] == "predictReceiptOcr"
    assert operation["summary"] == "Extract payment details from a photographed receipt."
    content = operation["requestBody"]["content"]
    assert set(content) == {"application/json", "multipart/form-data"}
    assert content["application/json"]["schema"] == {"$ref": "#/components/schemas/ReceiptOcrPredictRequest"}
    responses = operation["responses"]
    assert set(responses) == {"200", "400", "408", "413", "415", "422", "500", "503", "504"}
    assert set(responses["200"]["headers"]) == {"X-Request-Id", "X-Model-Version"}
    assert "Retry-After" in responses["503"]["headers"]
    assert responses["422"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ValidationError"
    }
    for status in ("400", "408", "413", "415", "500", "503", "504"):
        assert responses[status]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/Error"
        }


def test_multipart_form_has_binary_file_parts() -> None:
    doc = rich_doc()
    media = doc["paths"]["/api/v1/modules/doc-compare/predict"]["post"]["requestBody"]["content"][
        "multipart/form-data"
    ]
    form = doc["components"]["schemas"]["DocComparePredictForm"]
    assert media["schema"] == {"$ref": "#/components/schemas/DocComparePredictForm"}
    properties = form["properties"]
    assert set(properties) == {
        *(f"inputs.{f.name}" for f in RICH.inputs),
        *(f"parameters.{f.name}" for f in RICH.parameters),
        "output_fields",
        "model_key",
    }
    assert form["additionalProperties"] is False
    assert form["required"] == ["inputs.photos", "parameters.top_k"]
    binary = {"type": "string", "format": "binary", "contentMediaType": "application/octet-stream"}
    scan = properties["inputs.scan"]
    assert {k: scan[k] for k in binary} == binary
    assert scan["x-max-bytes"] == 512 * 1024
    assert "At most 512 KB" in scan["description"]
    photos = properties["inputs.photos"]
    assert photos["type"] == "array"
    assert photos["items"] == binary
    assert (photos["minItems"], photos["maxItems"]) == (1, 4)
    assert photos["x-max-bytes"] == 5 * 1024 * 1024
    assert properties["inputs.note"]["anyOf"] == [{"type": "string"}, binary]
    assert media["encoding"] == {
        "inputs.photos": {"contentType": "image/jpeg, image/png"},
        "inputs.scan": {"contentType": "application/pdf, image/*"},
        "inputs.note": {"contentType": "text/plain"},
    }
    matrix = properties["inputs.matrix"]
    assert matrix["contentMediaType"] == "application/json"
    assert matrix["contentSchema"] == {
        "type": "array",
        "items": {"type": "array", "items": {"type": "number"}},
    }
    assert properties["parameters.top_k"]["type"] == "integer"


def test_any_file_is_accepted_in_multipart() -> None:
    doc = module_openapi(DOCSTRINGS["files-only"], module="files")
    encoding = doc["paths"]["/api/v1/modules/files/predict"]["post"]["requestBody"]["content"][
        "multipart/form-data"
    ]["encoding"]
    assert encoding == {"inputs.a": {"contentType": "*/*"}, "inputs.b": {"contentType": "audio/wav"}}
    b = doc["components"]["schemas"]["FilesInputs"]["properties"]["b"]
    assert b["x-max-bytes"] == 1024**3
    assert b["description"] == "B Accepted types: audio/wav. At most 1 GB."


def test_json_file_input_is_an_object_reference_or_a_data_url() -> None:
    doc = seed_doc()
    image = doc["components"]["schemas"]["ReceiptOcrInputs"]["properties"]["image"]
    assert image["$ref"] == "#/components/schemas/FileReference"
    assert image["title"] == "image"
    assert image["description"] == "Input image for visual analysis Accepted types: image/jpeg, image/png."
    reference = doc["components"]["schemas"]["FileReference"]["oneOf"]
    assert reference[0]["properties"] == {
        "object": {"type": "string", "description": "`bucket/key` in storage"}
    }
    assert reference[0]["additionalProperties"] is False
    assert reference[1]["pattern"] == "^data:"


def test_field_schemas() -> None:
    by_name = {f.name: f for f in (*RICH.inputs, *RICH.parameters, *RICH.outputs)}
    assert field_schema(by_name["threshold"]) == {
        "title": "threshold",
        "type": "number",
        "minimum": 0,
        "maximum": 1,
        "description": "Match threshold",
        "default": 0.5,
    }
    assert field_schema(by_name["mode"]) == {
        "title": "mode",
        "type": "string",
        "description": "Matching mode",
        "enum": ["fast", "exact"],
        "default": "fast",
    }
    assert field_schema(by_name["name"])["minLength"] == 2
    assert field_schema(by_name["name"])["maxLength"] == 8
    assert field_schema(by_name["tags"]) == {
        "title": "tags",
        "type": "array",
        "items": {"type": "string"},
        "maxItems": 3,
        "description": "Tags",
        "default": [],
    }
    assert field_schema(by_name["seed"])["anyOf"] == [{"type": "integer"}, {"type": "string"}]
    assert field_schema(by_name["extra"]) == {
        "title": "extra",
        "anyOf": [{}, {"type": "null"}],
        "description": "Anything",
        "default": None,
    }
    assert field_schema(by_name["strict"])["type"] == "boolean"
    assert field_schema(by_name["diff"], mode="output")["$ref"] == "#/components/schemas/FileOutput"
    assert field_schema(by_name["pages"], mode="output")["items"] == {"type": "integer"}


# The schemas accept and refuse what the API does


def test_json_request_schema_accepts_valid_requests() -> None:
    seed = component(seed_doc(), "ReceiptOcrPredictRequest")
    for body in (
        {"inputs": {"image": {"object": "uploads/receipt.jpg"}}},
        {"inputs": {"image": "data:image/png;base64,iVBORw0KGgo="}, "parameters": {"language": "rus"}},
        {
            "inputs": [{"image": {"object": "b/1.jpg"}}, {"image": {"object": "b/2.jpg"}}],
            "parameters": {},
            "output_fields": ["response"],
            "model_key": "customer-42.v2",
        },
    ):
        assert seed.is_valid(body), list(seed.iter_errors(body))
    rich = component(rich_doc(), "DocComparePredictRequest")
    body = {
        "inputs": {
            "photos": [{"object": "b/p1.png"}, "data:image/jpeg;base64,/9j/"],
            "note": "hello",
            "tags": ["a", "b"],
            "matrix": [[1, 2.5], []],
        },
        "parameters": {"top_k": 5, "mode": "exact", "seed": "word", "extra": {"x": [1]}, "strict": True},
        "output_fields": ["score", "diff"],
    }
    assert rich.is_valid(body), list(rich.iter_errors(body))


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({}, id="inputs-missing"),
        pytest.param({"inputs": {}}, id="required-input-missing"),
        pytest.param({"inputs": []}, id="empty-batch"),
        pytest.param({"inputs": "image"}, id="inputs-not-an-object"),
        pytest.param({"inputs": {"image": "https://example.org/x.png"}}, id="file-as-plain-url"),
        pytest.param({"inputs": {"image": {"object": "b/k", "extra": 1}}}, id="file-reference-extra-key"),
        pytest.param({"inputs": {"image": {"object": 5}}}, id="file-reference-not-a-string"),
        pytest.param({"inputs": {"image": {"object": "b/k"}, "other": 1}}, id="undeclared-input"),
        pytest.param(
            {"inputs": {"image": {"object": "b/k"}}, "parameters": {"language": 5}}, id="wrong-type"
        ),
        pytest.param(
            {"inputs": {"image": {"object": "b/k"}}, "parameters": {"lang": "x"}}, id="undeclared-param"
        ),
        pytest.param(
            {"inputs": {"image": {"object": "b/k"}}, "output_fields": ["nope"]}, id="unknown-output"
        ),
        pytest.param(
            {"inputs": {"image": {"object": "b/k"}}, "output_fields": "response"}, id="outputs-not-list"
        ),
        pytest.param({"inputs": {"image": {"object": "b/k"}}, "model_key": ""}, id="empty-model-key"),
        pytest.param({"inputs": {"image": {"object": "b/k"}}, "model_key": "../etc"}, id="bad-model-key"),
        pytest.param({"inputs": {"image": {"object": "b/k"}}, "extra": True}, id="undeclared-top-level"),
    ],
)
def test_json_request_schema_refuses_invalid_requests(body: dict[str, Any]) -> None:
    assert not component(seed_doc(), "ReceiptOcrPredictRequest").is_valid(body)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("parameters", "threshold"), 1.5),
        (("parameters", "threshold"), "0.5"),
        (("parameters", "top_k"), 0),
        (("parameters", "top_k"), 2.5),
        (("parameters", "top_k"), True),
        (("parameters", "mode"), "slow"),
        (("parameters", "strict"), 1),
        (("parameters", "name"), "a"),
        (("parameters", "name"), "far-too-long"),
        (("parameters", "seed"), 1.5),
        (("inputs", "photos"), []),
        (("inputs", "photos"), [{"object": "b/k"}] * 5),
        (("inputs", "tags"), ["a", "b", "c", "d"]),
        (("inputs", "tags"), [1]),
        (("inputs", "matrix"), [[1, "x"]]),
        (("inputs", "note"), 5),
    ],
)
def test_json_request_schema_refuses_bad_values(path: tuple[str, str], value: Any) -> None:
    body: dict[str, Any] = {"inputs": {"photos": [{"object": "b/k"}]}, "parameters": {"top_k": 3}}
    validator = component(rich_doc(), "DocComparePredictRequest")
    assert validator.is_valid(body)
    body[path[0]][path[1]] = value
    assert not validator.is_valid(body)


def test_no_inputs_module_needs_no_inputs() -> None:
    doc = module_openapi(NO_INPUTS, module="clock")
    validator = component(doc, "ClockPredictRequest")
    assert validator.is_valid({})
    assert validator.is_valid({"parameters": {"zone": "Europe/Moscow"}})
    assert not validator.is_valid({"inputs": {"anything": 1}})
    assert "required" not in doc["components"]["schemas"]["ClockPredictRequest"]
    empty = component(module_openapi(ApiSpec(), module="empty"), "EmptyPredictRequest")
    assert empty.is_valid({"output_fields": []})
    assert not empty.is_valid({"output_fields": ["x"]})


def test_form_schema_accepts_and_refuses() -> None:
    form = component(seed_doc(), "ReceiptOcrPredictForm")
    assert form.is_valid(
        {"inputs.image": "<bytes>", "parameters.language": "eng", "output_fields": ["response"]}
    )
    assert form.is_valid({"inputs.image": "<bytes>", "model_key": "default"})
    assert not form.is_valid({"parameters.language": "eng"})
    assert not form.is_valid({"inputs.image": "<bytes>", "inputs.other": "x"})
    assert not form.is_valid({"inputs.image": "<bytes>", "image": "x"})


def test_response_schema() -> None:
    doc = rich_doc()
    response = component(doc, "DocComparePredictResponse")
    file_output = {"url": "/api/v1/storage/outputs/objects/x.png", "content_type": "image/png", "size": 10}
    one = {"outputs": {"score": 0.9, "diff": file_output, "pages": [1, 2]}, "module": "m", "version": "v1"}
    assert response.is_valid({**one, "request_id": "r1"})
    assert response.is_valid({**one, "outputs": [one["outputs"], {"score": 1}], "request_id": "r1"})
    assert not response.is_valid(one)
    assert not response.is_valid({**one, "request_id": "r1", "outputs": {"score": "high"}})
    assert not response.is_valid({**one, "request_id": "r1", "outputs": {"diff": {"url": "x"}}})
    assert not response.is_valid({**one, "request_id": "r1", "outputs": {"diff": "data:image/png;base64,"}})


def test_error_schemas() -> None:
    doc = seed_doc()
    error = component(doc, "Error")
    assert error.is_valid(
        {"error": {"code": "module_timeout", "message": "The module did not answer in time."}}
    )
    assert error.is_valid({"error": {"code": "bad_request", "message": "x", "details": {"any": "thing"}}})
    assert not error.is_valid({"error": {"message": "no code"}})
    assert not error.is_valid({"code": "x", "message": "flat"})
    validation = component(doc, "ValidationError")
    details = [{"field": "inputs.image", "code": "required", "message": "this field is required"}]
    assert validation.is_valid({"error": {"code": "validation_failed", "message": "m", "details": details}})
    assert not validation.is_valid({"error": {"code": "validation_failed", "message": "m"}})
    assert not validation.is_valid({"error": {"code": "validation_failed", "message": "m", "details": [{}]}})


# Several modules in one document


def test_several_modules_share_one_document() -> None:
    paths: dict[str, Any] = {}
    parts = []
    for spec, module in ((SEED, "receipt-ocr"), (RICH, "doc-compare"), (SEED, "receipt_ocr2")):
        module_path, components = module_paths(spec, module=module)
        paths.update(module_path)
        parts.append(components)
    doc = {
        "openapi": "3.1.0",
        "info": {"title": "modelport", "version": "0.1.0"},
        "paths": paths,
        "components": merge_components(*parts),
    }
    validate(doc, cls=OpenAPIV31SpecValidator)
    schemas = doc["components"]["schemas"]
    assert {"ReceiptOcrPredictRequest", "DocComparePredictRequest", "ReceiptOcr2PredictRequest"} <= set(
        schemas
    )
    assert {"Error", "ValidationError", "FieldError", "FileReference", "FileOutput"} <= set(schemas)
    operation_ids = [op["post"]["operationId"] for op in paths.values()]
    assert len(set(operation_ids)) == 3


def test_merge_refuses_a_name_meaning_two_things() -> None:
    _, first = module_paths(SEED, module="receipt-ocr")
    _, second = module_paths(RICH, module="receipt_ocr")
    with pytest.raises(ValueError, match="ReceiptOcr"):
        merge_components(first, second)


@pytest.mark.parametrize(
    ("module", "prefix"),
    [
        ("receipt-ocr", "ReceiptOcr"),
        ("text2vec", "Text2vec"),
        ("3d-scan", "M3dScan"),
        ("my.module_v2", "MyModuleV2"),
        ("ocr", "Ocr"),
        ("модуль", "Module"),
    ],
)
def test_component_prefix(module: str, prefix: str) -> None:
    assert component_prefix(module) == prefix


def test_predict_path_escapes_the_module_name() -> None:
    assert predict_path("receipt-ocr") == "/api/v1/modules/receipt-ocr/predict"
    assert predict_path("a b/c") == "/api/v1/modules/a%20b%2Fc/predict"


# The JSON Schema of a field agrees with the checks the server runs


TYPE_TEXTS = [
    "str",
    "int",
    "float",
    "bool",
    "json",
    "list[int]",
    "list[str]",
    "list[list[float]]",
    "int or str",
    "str or json",
    "bool or int",
    "list[int] or int",
    "float or list[bool]",
]
MODIFIERS = [
    "optional",
    "min 0",
    "min 2",
    "min -3.5",
    "max 3",
    "max 10.5",
    "max -1",
    'one of [1, 2, "ab", true, 2.5, [1, 2]]',
    'one of ["ab", [1], 3, false]',
    "default 2",
    'default "ab"',
    "default [1, 2]",
]
fractions = st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: not x.is_integer())
json_values = st.recursive(
    st.booleans() | st.integers(-5, 12) | fractions | st.text(max_size=4) | st.sampled_from(["ab", 2.5]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=2), inner, max_size=2),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(
    st.sampled_from(TYPE_TEXTS),
    st.lists(st.sampled_from(MODIFIERS), unique=True, max_size=3),
    st.lists(json_values, min_size=1, max_size=5),
)
def test_field_schema_agrees_with_check_value(
    type_text: str, modifiers: list[str], values: list[Any]
) -> None:
    try:
        spec = parse_docstring(
            f":param parameters.p: P\n:type parameters.p: {', '.join([type_text, *modifiers])}"
        )
    except SpecError:
        assume(False)
        return
    field = spec.parameters[0]
    validator = Draft202012Validator(field_schema(field))
    for value in values:
        assert (check_value(field, value) is None) == validator.is_valid(value), (field, value)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["inputs", "parameters", "outputs"]),
            st.sampled_from([*TYPE_TEXTS, "FILE", "image/png or image/jpeg", "list[audio/*]", "str or FILE"]),
            st.lists(
                st.sampled_from(["optional", "max size 2 MB", "min 1", 'default "x"']),
                unique=True,
                max_size=2,
            ),
        ),
        max_size=6,
    )
)
def test_generated_documents_validate(fields: list[tuple[str, str, list[str]]]) -> None:
    lines = []
    for i, (group, type_text, modifiers) in enumerate(fields):
        lines += [
            f":param {group}.f{i}: Field {i}",
            f":type {group}.f{i}: {', '.join([type_text, *modifiers])}",
        ]
    try:
        spec = parse_docstring("\n".join(lines))
    except SpecError:
        assume(False)
        return
    validate(module_openapi(spec, module="gen"), cls=OpenAPIV31SpecValidator)
