"""The pipeline schema matrix: a `Pipeline` manifest checked against its steps' APIs (`compose`), with every
problem named by its field, and the API a pipeline gets from its steps."""

from __future__ import annotations

from typing import Any

import pytest

from modelport.control.pipelines import compose
from modelport.core.manifests import ManifestError, PipelineManifest, parse_document
from modelport.sdk import parse_docstring

OCR = parse_docstring(
    """Read text.

    :param inputs.image: A photo
    :type inputs.image: FILE or image/png or image/jpeg
    :param parameters.language: Language
    :type parameters.language: str, one of ["eng", "rus"], default "eng"
    :param outputs.text: The text
    :param outputs.words: The words
    :type outputs.words: list[str]
    :param outputs.confidence: Mean confidence
    :type outputs.confidence: float, optional
    :param outputs.page: A rendered page
    :type outputs.page: FILE or image/png
    """
)
EXTRACT = parse_docstring(
    """Find the total.

    :param inputs.text: Receipt text
    :param inputs.scale: A factor
    :type inputs.scale: float, optional
    :param inputs.count: A count
    :type inputs.count: int, optional
    :param inputs.tags: Tags
    :type inputs.tags: list[str], optional
    :param inputs.scan: A scan
    :type inputs.scan: FILE or image/png, optional
    :param outputs.total: The total
    :type outputs.total: float, optional
    """
)
SPECS = {"ocr": OCR, "extract": EXTRACT}


def manifest(
    steps: list[dict[str, Any]], outputs: dict[str, str], name: str = "receipts"
) -> PipelineManifest:
    document = {
        "apiVersion": "modelport/v1",
        "kind": "Pipeline",
        "metadata": {"name": name},
        "spec": {"steps": steps, "outputs": outputs},
    }
    parsed = parse_document(document, source="test")
    assert isinstance(parsed, PipelineManifest)
    return parsed


def receipts(extract_inputs: dict[str, Any], outputs: dict[str, str] | None = None) -> PipelineManifest:
    return manifest(
        [
            {
                "name": "ocr",
                "module": "tesseract-ocr",
                "inputs": {"image": "$.inputs.image"},
                "parameters": {"language": "$.parameters.language"},
            },
            {"name": "extract", "module": "receipt-extractor", "inputs": extract_inputs},
        ],
        outputs or {"text": "$.steps.ocr.outputs.text", "total": "$.steps.extract.outputs.total"},
    )


def problems_of(pipeline: PipelineManifest) -> list[tuple[str, str]]:
    _, problems = compose(pipeline, SPECS)
    return [(p["field"], p["message"]) for p in problems]


def test_a_pipeline_gets_its_api_from_the_fields_its_steps_take_and_give() -> None:
    spec, problems = compose(receipts({"text": "$.steps.ocr.outputs.text"}), SPECS)
    assert problems == []
    assert [(f.name, f.type_text, f.required) for f in spec.inputs] == [
        ("image", "FILE or image/png or image/jpeg", True)
    ]
    language = spec.parameters[0]
    assert (language.name, language.default, language.choices) == ("language", "eng", ("eng", "rus"))
    assert [(f.name, f.type_text, f.optional) for f in spec.outputs] == [
        ("text", "str", False),
        ("total", "float", True),
    ]
    assert spec.title == "receipts"


@pytest.mark.parametrize(
    ("extract_inputs", "field", "words"),
    [
        (
            {"text": "$.steps.ocr.outputs.page"},
            "spec.steps[1].inputs.text",
            "FILE or image/png, which cannot satisfy str",
        ),
        (
            {"text": "$.steps.ocr.outputs.text", "scan": "$.steps.ocr.outputs.text"},
            "spec.steps[1].inputs.scan",
            "str, which cannot satisfy FILE",
        ),
        (
            {"text": "$.steps.ocr.outputs.words"},
            "spec.steps[1].inputs.text",
            "list[str], which cannot satisfy str",
        ),
        (
            {"text": "$.steps.ocr.outputs.text", "tags": "$.steps.ocr.outputs.text"},
            "spec.steps[1].inputs.tags",
            "cannot satisfy list[str]",
        ),
        (
            {"text": "$.steps.ocr.outputs.text", "count": "$.steps.ocr.outputs.confidence"},
            "spec.steps[1].inputs.count",
            "float, which cannot satisfy int",
        ),
        ({"text": "$.steps.ocr.outputs.nothing"}, "spec.steps[1].inputs.text", "has no output 'nothing'"),
        (
            {"text": "$.steps.ocr.outputs.text", "colour": "red"},
            "spec.steps[1].inputs.colour",
            "has no input 'colour'",
        ),
        ({}, "spec.steps[1].inputs", "requires input 'text'"),
        ({"text": "$.steps.ocr.outputs.text", "count": "many"}, "spec.steps[1].inputs.count", "int"),
        (
            {"text": "$.steps.ocr.outputs.text", "scan": "a.png"},
            "spec.steps[1].inputs.scan",
            "a file cannot be a constant",
        ),
    ],
)
def test_a_value_its_producer_cannot_satisfy_is_named_by_its_field(
    extract_inputs: dict[str, Any], field: str, words: str
) -> None:
    found = problems_of(receipts(extract_inputs))
    assert any(f == field and words in message for f, message in found), found


def test_an_int_fits_a_float_and_a_constant_fits_its_field() -> None:
    pipeline = receipts({"text": "$.steps.ocr.outputs.text", "scale": 2, "count": 3})
    assert problems_of(pipeline) == []


def test_a_parameter_mapped_as_an_input_is_pointed_at_its_group() -> None:
    pipeline = manifest(
        [
            {
                "name": "ocr",
                "module": "tesseract-ocr",
                "inputs": {"image": "$.inputs.image", "language": "eng"},
            }
        ],
        {"text": "$.steps.ocr.outputs.text"},
    )
    [(field, message)] = problems_of(pipeline)
    assert field == "spec.steps[0].inputs.language"
    assert "it is one of its parameters: map it under `parameters`" in message


def test_a_request_field_fed_to_two_steps_must_suit_both() -> None:
    pipeline = manifest(
        [
            {"name": "ocr", "module": "tesseract-ocr", "inputs": {"image": "$.inputs.image"}},
            {"name": "extract", "module": "receipt-extractor", "inputs": {"text": "$.inputs.image"}},
        ],
        {"total": "$.steps.extract.outputs.total"},
    )
    [(field, message)] = problems_of(pipeline)
    assert field == "spec.steps[1].inputs.text"
    assert "$.inputs.image is FILE or image/png or image/jpeg elsewhere" in message


def test_an_output_of_a_request_field_no_step_takes_is_refused() -> None:
    pipeline = receipts({"text": "$.steps.ocr.outputs.text"}, {"echo": "$.inputs.other"})
    assert problems_of(pipeline) == [
        (
            "spec.outputs.echo",
            "no step takes $.inputs.other, so its type is unknown; map it into a step first",
        )
    ]


def test_a_file_cannot_come_from_the_parameters() -> None:
    pipeline = manifest(
        [{"name": "ocr", "module": "tesseract-ocr", "inputs": {"image": "$.parameters.image"}}],
        {"text": "$.steps.ocr.outputs.text"},
    )
    [(field, message)] = problems_of(pipeline)
    assert field == "spec.steps[0].inputs.image" and "a file cannot come from $.parameters.image" in message


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        (
            {
                "steps": [
                    {"name": "a", "module": "m", "inputs": {"x": "$.steps.b.outputs.y"}},
                    {"name": "b", "module": "n", "inputs": {"x": "$.steps.a.outputs.y"}},
                ],
                "outputs": {"y": "$.steps.b.outputs.y"},
            },
            "the steps form a cycle: a -> b -> a",
        ),
        (
            {
                "steps": [{"name": "a", "module": "m", "inputs": {"x": "$.steps.a.outputs.y"}}],
                "outputs": {"y": "$.steps.a.outputs.y"},
            },
            "the steps form a cycle: a -> a",
        ),
        (
            {
                "steps": [{"name": "a", "module": "m"}, {"name": "a", "module": "n"}],
                "outputs": {"y": "$.steps.a.outputs.y"},
            },
            "step names must be unique; repeated: a",
        ),
        (
            {
                "steps": [{"name": "a", "module": "m", "inputs": {"x": "$.steps.z.outputs.y"}}],
                "outputs": {"y": "$.steps.a.outputs.y"},
            },
            "there is no step 'z'",
        ),
        (
            {"steps": [{"name": "a", "module": "m"}], "outputs": {"y": "$.steps.b.outputs.y"}},
            "output 'y': there is no step 'b'",
        ),
        (
            {
                "steps": [{"name": "a", "module": "m", "inputs": {"x": "$.input.y"}}],
                "outputs": {"y": "$.steps.a.outputs.y"},
            },
            "'$.input.y' is not a reference",
        ),
        (
            {"steps": [{"name": "a", "module": "receipts"}], "outputs": {"y": "$.steps.a.outputs.y"}},
            "calls 'receipts', the pipeline itself",
        ),
        ({"steps": [], "outputs": {"y": "$.steps.a.outputs.y"}}, "at least 1 item"),
        ({"steps": [{"name": "a", "module": "m"}], "outputs": {"y": "text"}}, "expected a reference"),
    ],
)
def test_a_graph_that_cannot_run_is_refused_by_the_schema(spec: dict[str, Any], words: str) -> None:
    document = {
        "apiVersion": "modelport/v1",
        "kind": "Pipeline",
        "metadata": {"name": "receipts"},
        "spec": spec,
    }
    with pytest.raises(ManifestError) as refused:
        parse_document(document, source="test")
    assert any(words in problem["message"] for problem in refused.value.problems), refused.value.problems


def test_steps_are_ordered_after_what_they_need() -> None:
    pipeline = manifest(
        [
            {
                "name": "last",
                "module": "m",
                "inputs": {"x": "$.steps.first.outputs.y", "z": "$.steps.mid.outputs.y"},
            },
            {"name": "mid", "module": "m", "inputs": {"x": "$.steps.first.outputs.y"}},
            {"name": "first", "module": "m", "inputs": {"x": "$.inputs.x"}},
        ],
        {"y": "$.steps.last.outputs.y"},
    )
    assert [step.name for step in pipeline.spec.order()] == ["first", "mid", "last"]


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ({"pipeline": "receipts", "cache": {"ttlSeconds": 60}}, "`cache` is a module's"),
        ({"pipeline": "receipts", "logging": {"payloads": True}}, "`logging` is a module's"),
        ({"pipeline": "receipts", "module": "ocr"}, "not both"),
        ({"access": {"anonymous": True}}, "required: `module`"),
    ],
)
def test_an_api_opens_one_module_or_one_pipeline_and_a_pipeline_has_no_module_settings(
    spec: dict[str, Any], words: str
) -> None:
    document = {"apiVersion": "modelport/v1", "kind": "Api", "metadata": {"name": "receipts"}, "spec": spec}
    with pytest.raises(ManifestError) as refused:
        parse_document(document, source="test")
    assert any(words in problem["message"] for problem in refused.value.problems), refused.value.problems
