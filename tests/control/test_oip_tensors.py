"""The Open Inference Protocol's tensors against a module's `ApiSpec`: metadata, requests into records (JSON
and binary data), answers into tensors, and every refusal naming its tensor."""

from __future__ import annotations

import json
import struct
from typing import Any

import pytest

from modelport.control.oip import (
    InferRequest,
    InputTensor,
    RequestedOutput,
    decode_binary,
    encode_binary,
    infer_request,
    model_metadata,
    output_tensors,
    parse_infer,
)
from modelport.core.errors import BadRequest
from modelport.sdk import parse_docstring
from modelport.sdk.validation import InvalidRequest

SPEC = parse_docstring(
    """Every kind of field.

    :param inputs.score: a number
    :type inputs.score: float
    :param inputs.count: a count
    :type inputs.count: int, optional
    :param inputs.flag: a flag
    :type inputs.flag: bool, optional
    :param inputs.text: some text
    :type inputs.text: str, optional
    :param inputs.extra: anything
    :type inputs.extra: json, optional
    :param inputs.vector: numbers
    :type inputs.vector: list[float], optional
    :param inputs.photo: a picture
    :type inputs.photo: FILE, optional
    :param parameters.scale: a factor
    :type parameters.scale: float, default 1
    :param outputs.label: the label
    :type outputs.label: int, optional
    :param outputs.name: its name
    :type outputs.name: str
    :param outputs.ratio: a ratio
    :type outputs.ratio: float
    :param outputs.details: anything
    :type outputs.details: json
    :param outputs.embedding: numbers
    :type outputs.embedding: list[int]
    :param outputs.picture: a file
    :type outputs.picture: FILE
    """
)


def tensor(name: str, datatype: str, shape: list[int], data: list[Any]) -> InputTensor:
    return InputTensor(name, datatype, tuple(shape), data)


def request(*inputs: InputTensor, **options: Any) -> InferRequest:
    return InferRequest(id=None, inputs=inputs, **options)


def test_metadata_lists_every_field_a_tensor_can_hold_and_leaves_files_out() -> None:
    metadata = model_metadata(SPEC, name="kinds", versions=["v1", "v2"])
    assert metadata["name"] == "kinds"
    assert metadata["versions"] == ["v1", "v2"]
    assert metadata["platform"] == "modelport"
    assert metadata["inputs"] == [
        {"name": "score", "datatype": "FP32", "shape": [-1]},
        {"name": "count", "datatype": "INT64", "shape": [-1]},
        {"name": "flag", "datatype": "BOOL", "shape": [-1]},
        {"name": "text", "datatype": "BYTES", "shape": [-1]},
        {"name": "extra", "datatype": "BYTES", "shape": [-1]},
        {"name": "vector", "datatype": "FP32", "shape": [-1, -1]},
    ]
    assert [(o["name"], o["datatype"], o["shape"]) for o in metadata["outputs"]] == [
        ("label", "INT64", [-1]),
        ("name", "BYTES", [-1]),
        ("ratio", "FP32", [-1]),
        ("details", "BYTES", [-1]),
        ("embedding", "INT64", [-1, -1]),
    ]


def test_each_row_of_the_first_dimension_is_one_record() -> None:
    parsed = parse_infer(
        SPEC,
        request(
            tensor("score", "FP64", [2, 1], [0.5, 2]),
            tensor("count", "UINT8", [2], [3, 4]),
            tensor("flag", "BOOL", [2], [True, False]),
            tensor("text", "BYTES", [2], ["héllo", "wörld".encode()]),
            tensor("extra", "BYTES", [2], ['{"a": [1]}', b"null"]),
            tensor("vector", "FP16", [2, 3], [1, 2, 3, 4, 5, 6]),
            parameters={"scale": 2},
        ),
    )
    assert parsed.batch
    assert parsed.records == [
        {
            "score": 0.5,
            "count": 3,
            "flag": True,
            "text": "héllo",
            "extra": {"a": [1]},
            "vector": [1.0, 2.0, 3.0],
        },
        {"score": 2.0, "count": 4, "flag": False, "text": "wörld", "vector": [4.0, 5.0, 6.0]},  # null: absent
    ]
    assert parsed.parameters == {"scale": 2}


def test_requested_outputs_become_the_calls_output_fields() -> None:
    parsed = parse_infer(
        SPEC, request(tensor("score", "FP32", [1], [1.0]), outputs=(RequestedOutput("label"),))
    )
    assert parsed.output_fields == ("label",)


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ([tensor("count", "INT64", [1], [1])], "'score' is missing: it is a required input"),
        ([tensor("score", "FP32", [1], [1.0]), tensor("colour", "FP32", [1], [1.0])], "unknown input tensor"),
        ([tensor("score", "INT64", [1], [1])], "datatype INT64 is not accepted; send FP16, FP32, FP64"),
        ([tensor("score", "FP32", [1], [1.0]), tensor("text", "FP32", [1], [1.0])], "'text': datatype FP32"),
        ([tensor("score", "FP32", [1, 2], [1.0, 2.0])], "expected shape [batch] or [batch, 1]"),
        (
            [tensor("score", "FP32", [1], [1.0]), tensor("vector", "FP32", [3], [1.0, 2.0, 3.0])],
            "[batch, length]",
        ),
        ([tensor("score", "FP32", [2], [1.0, 2.0]), tensor("count", "INT64", [1], [1])], "batch size"),
        ([tensor("score", "FP32", [1], ["1.0"])], "'1.0' is not a FP32 element"),
        ([tensor("score", "FP32", [1], [True])], "is not a FP32 element"),
        (
            [tensor("score", "FP32", [1], [1.0]), tensor("text", "BYTES", [1], [b"\xff\xfe"])],
            "not valid UTF-8",
        ),
        ([tensor("score", "FP32", [1], [1.0]), tensor("extra", "BYTES", [1], ["{"])], "not JSON text"),
        ([tensor("score", "FP32", [0], [])], "holds no records"),
        ([tensor("score", "FP32", [1], [1.0]), tensor("photo", "BYTES", [1], ["x"])], "'photo' is a file"),
    ],
)
def test_tensors_that_do_not_fit_the_api_are_refused_by_name(inputs: list[InputTensor], message: str) -> None:
    with pytest.raises(BadRequest) as refused:
        parse_infer(SPEC, request(*inputs))
    assert refused.value.status == 400
    assert message in str(refused.value)


def test_a_required_file_input_is_named_as_one_no_tensor_can_send() -> None:
    spec = parse_docstring(":param inputs.image: a picture\n:type inputs.image: FILE\n")
    with pytest.raises(BadRequest, match="'image' is missing: it is a file"):
        parse_infer(spec, request())


def test_values_the_api_refuses_fail_its_own_validation() -> None:
    with pytest.raises(InvalidRequest, match=r"parameters\.colour"):
        parse_infer(SPEC, request(tensor("score", "FP32", [1], [1.0]), parameters={"colour": "red"}))


def test_a_json_request_with_nested_data_and_protocol_parameters() -> None:
    header = {
        "id": "42",
        "inputs": [{"name": "vector", "datatype": "FP32", "shape": [2, 2], "data": [[1, 2], [3, 4]]}],
        "outputs": [{"name": "label", "parameters": {"binary_data": True}}, {"name": "name"}],
        "parameters": {"binary_data_output": True, "timeout": 5, "scale": 3},
    }
    infer = infer_request(header)
    assert infer.id == "42"
    assert infer.inputs == (tensor("vector", "FP32", [2, 2], [1, 2, 3, 4]),)
    assert infer.outputs == (RequestedOutput("label", True), RequestedOutput("name", None))
    assert infer.parameters == {"scale": 3}
    assert infer.binary_output


def test_a_request_with_binary_data_reads_each_tensor_from_its_slice() -> None:
    floats = struct.pack("<3f", 1.5, 2.0, 16.0)
    texts = encode_binary("BYTES", ["a", "", "ünï"])
    header = {
        "inputs": [
            {"name": "vector", "datatype": "FP32", "shape": [1, 3], "parameters": {"binary_data_size": 12}},
            {
                "name": "text",
                "datatype": "BYTES",
                "shape": [3],
                "parameters": {"binary_data_size": len(texts)},
            },
            {"name": "count", "datatype": "INT64", "shape": [1], "data": [7]},
        ]
    }
    infer = infer_request(header, floats + texts)
    assert [t.data for t in infer.inputs] == [[1.5, 2.0, 16.0], [b"a", b"", "ünï".encode()], [7]]


@pytest.mark.parametrize(
    ("header", "binary", "message"),
    [
        ([], b"", "must be a JSON object"),
        ({"inputs": []}, b"", "must list its input tensors"),
        ({"inputs": [{"name": "x", "datatype": "FP8", "shape": [1], "data": [1]}]}, b"", "unknown datatype"),
        ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1], "data": [1]}]}, b"", "non-negative"),
        (
            {"inputs": [{"name": "x", "datatype": "FP32", "shape": [3], "data": [1, 2]}]},
            b"",
            "holds 3 elements",
        ),
        ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1]}]}, b"", "neither `data`"),
        (
            {
                "inputs": [
                    {"name": "x", "datatype": "FP32", "shape": [2], "parameters": {"binary_data_size": 4}}
                ]
            },
            b"\0" * 4,
            "(8 bytes), the data 4 bytes",
        ),
        (
            {
                "inputs": [
                    {"name": "x", "datatype": "FP32", "shape": [1], "parameters": {"binary_data_size": 8}}
                ]
            },
            b"\0" * 4,
            "exceeds the binary data",
        ),
        (
            {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}]},
            b"\0",
            "no input claims",
        ),
        (
            {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}] * 2},
            b"",
            "more than once",
        ),
    ],
)
def test_malformed_requests_are_refused(header: Any, binary: bytes, message: str) -> None:
    with pytest.raises(BadRequest, match=message.replace("(", r"\(").replace(")", r"\)")):
        infer_request(header, binary)


@pytest.mark.parametrize(
    ("datatype", "values"),
    [
        ("FP32", [0.5, -2.0]),
        ("FP64", [1e300]),
        ("FP16", [1.5]),
        ("INT8", [-128, 127]),
        ("UINT64", [2**64 - 1]),
        ("INT64", [-(2**63)]),
        ("BOOL", [True, False]),
    ],
)
def test_binary_elements_round_trip(datatype: str, values: list[Any]) -> None:
    assert decode_binary(datatype, encode_binary(datatype, values), len(values)) == values


def test_bytes_elements_are_length_prefixed() -> None:
    raw = encode_binary("BYTES", ["ab", b"\xff"])
    assert raw == b"\x02\0\0\0ab\x01\0\0\0\xff"
    assert decode_binary("BYTES", raw, 2) == [b"ab", b"\xff"]
    with pytest.raises(BadRequest, match="cut short"):
        decode_binary("BYTES", raw + b"\x01", 3, name="t")
    with pytest.raises(BadRequest, match="longer than its data"):
        decode_binary("BYTES", b"\x09\0\0\0ab", 1, name="t")
    with pytest.raises(BadRequest, match="holds 3 elements, the data 2"):
        decode_binary("BYTES", raw, 3, name="t")


ANSWERS = [
    {"label": 7, "name": "seven", "ratio": 0.25, "details": {"a": 1}, "embedding": [1, 2], "picture": {}},
    {"label": 3, "name": "three", "ratio": 1, "details": [None], "embedding": [3, 4], "picture": {}},
]


def test_answers_become_one_tensor_per_declared_output() -> None:
    tensors = output_tensors(SPEC, ANSWERS)
    assert [t.to_json() for t in tensors] == [
        {"name": "label", "datatype": "INT64", "shape": [2], "data": [7, 3]},
        {"name": "name", "datatype": "BYTES", "shape": [2], "data": ["seven", "three"]},
        {"name": "ratio", "datatype": "FP32", "shape": [2], "data": [0.25, 1]},
        {"name": "details", "datatype": "BYTES", "shape": [2], "data": ['{"a":1}', "[null]"]},
        {"name": "embedding", "datatype": "INT64", "shape": [2, 2], "data": [1, 2, 3, 4]},
    ]


def test_requested_outputs_and_binary_data() -> None:
    requested = (RequestedOutput("embedding"), RequestedOutput("name", False))
    embedding, name = output_tensors(SPEC, ANSWERS, requested=requested, binary=True)
    assert embedding.binary and not name.binary
    assert embedding.to_json()["parameters"] == {"binary_data_size": 32}
    assert decode_binary("INT64", encode_binary("INT64", embedding.data), 4) == [1, 2, 3, 4]
    with pytest.raises(BadRequest, match="unknown output tensor 'picture'"):
        output_tensors(SPEC, ANSWERS, requested=(RequestedOutput("picture"),))


def test_values_a_tensor_cannot_hold_go_as_json_text() -> None:
    answers = [{"label": None, "embedding": [1]}, {"label": 2, "embedding": [1, 2]}]
    requested = (RequestedOutput("label"), RequestedOutput("embedding"))
    label, embedding = output_tensors(SPEC, answers, requested=requested)
    assert (label.datatype, label.shape, label.data) == ("BYTES", [2], ["null", "2"])
    assert (embedding.datatype, embedding.shape) == ("BYTES", [2])
    assert [json.loads(v) for v in embedding.data] == [[1], [1, 2]]
