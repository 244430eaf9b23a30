"""Request validation without a server: JSON bodies and forms, against the `typed` and `files` fixtures."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from modelport.sdk import ApiSpec
from modelport.sdk.source import read_api_spec
from modelport.sdk.validation import (
    DataFile,
    InvalidRequest,
    ObjectFile,
    ParsedRequest,
    UploadedFile,
    parse_form,
    parse_json,
)

MODULES = Path(__file__).parent.parent / "fixtures" / "modules"
TYPED: ApiSpec = read_api_spec(MODULES / "typed", "inference.py:inference")
FILES: ApiSpec = read_api_spec(MODULES / "files", "inference.py:inference")

ALL_OUTPUTS = ("record", "parameters", "call")
DECLARED_INPUTS = "count, flag, level, name, payload, ratio, values"
MODEL_KEY_MESSAGE = "expected 1-128 letters, digits, '.', '_' or '-'"
NOT_A_FILE = 'expected a file: {"object": "bucket/key"} or a data: URL'
UNKNOWN_TOP = "unknown field; expected one of inputs, parameters, output_fields, model_key"
UNKNOWN_PART = "unknown form field; expected inputs.<name> or parameters.<name>"
UNDECLARED_INPUT = f"not declared by the module (declared: {DECLARED_INPUTS})"
PNG_BYTES = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16


def detail(field: str, code: str, message: str) -> dict[str, str]:
    return {"field": field, "code": code, "message": message}


def json_errors(body: Any, spec: ApiSpec = TYPED) -> list[dict[str, str]]:
    with pytest.raises(InvalidRequest) as caught:
        parse_json(spec, body)
    return caught.value.details


def form_errors(form: list[tuple[str, Any]], spec: ApiSpec = TYPED) -> list[dict[str, str]]:
    with pytest.raises(InvalidRequest) as caught:
        parse_form(spec, form)
    return caught.value.details


def one_input(name: str, value: Any) -> dict[str, Any]:
    """A `typed` body whose record carries `name: value` and otherwise only a valid `count`."""
    return {"inputs": {"count": 1, name: value}}


def upload(name: str = "photo.png", content_type: str = "image/png") -> UploadedFile:
    return UploadedFile(path=f"/tmp/{name}", filename=name, content_type=content_type, size=10)


# JSON: shape of the request


def test_a_single_record_is_not_a_batch_and_gets_its_defaults():
    parsed = parse_json(TYPED, {"inputs": {"count": 3}})
    assert parsed == ParsedRequest(
        records=[{"count": 3, "flag": False}],
        parameters={"mode": "fast"},
        output_fields=ALL_OUTPUTS,
        model_key=None,
        batch=False,
    )


def test_a_list_of_records_is_a_batch_in_order_with_shared_parameters():
    parsed = parse_json(
        TYPED,
        {"inputs": [{"count": 3}, {"count": 1, "flag": True}, {"count": 9}], "parameters": {"mode": "slow"}},
    )
    assert parsed.batch is True
    assert parsed.records == [
        {"count": 3, "flag": False},
        {"count": 1, "flag": True},
        {"count": 9, "flag": False},
    ]
    assert parsed.parameters == {"mode": "slow"}


def test_a_one_record_list_is_still_a_batch():
    parsed = parse_json(TYPED, {"inputs": [{"count": 2}]})
    assert parsed.batch is True
    assert parsed.records == [{"count": 2, "flag": False}]


def test_errors_in_a_batch_name_the_record_index():
    assert json_errors({"inputs": [{"count": 1}, {"count": 0}, {}, "x"]}) == [
        detail("inputs[1].count", "range", "value must be at least 1"),
        detail("inputs[2].count", "required", "this field is required"),
        detail("inputs[3]", "type", "expected an object of named inputs"),
    ]


def test_an_empty_list_of_records_is_refused():
    assert json_errors({"inputs": []}) == [detail("inputs", "empty", "expected at least one record")]


@pytest.mark.parametrize("inputs", ["text", 3, True])
def test_inputs_must_be_an_object_or_a_list(inputs):
    assert json_errors({"inputs": inputs}) == [
        detail("inputs", "type", "expected an object (one record) or a list of objects")
    ]


@pytest.mark.parametrize("body", [[], ["inputs"], "inputs", 3, None])
def test_the_body_must_be_an_object(body):
    assert json_errors(body) == [detail("body", "type", "expected a JSON object")]


@pytest.mark.parametrize("body", [{}, {"inputs": None}])
def test_inputs_are_required_when_a_field_is(body):
    assert json_errors(body) == [detail("inputs", "required", "inputs are required")]


@pytest.mark.parametrize("record", [{}, {"count": None}, {"flag": True}])
def test_a_missing_or_null_required_input_is_reported(record):
    assert json_errors({"inputs": record}) == [detail("inputs.count", "required", "this field is required")]


def test_unknown_inputs_parameters_and_top_level_fields_are_errors():
    body = {"inputs": {"count": 1, "colour": "red"}, "parameters": {"speed": 2}, "extra": True}
    assert json_errors(body) == [
        detail("extra", "unknown_field", UNKNOWN_TOP),
        detail("inputs.colour", "unknown_field", UNDECLARED_INPUT),
        detail("parameters.speed", "unknown_field", "not declared by the module (declared: mode, scale)"),
    ]


@pytest.mark.parametrize("parameters", [[], "fast", 1])
def test_parameters_must_be_an_object(parameters):
    assert json_errors({"inputs": {"count": 1}, "parameters": parameters}) == [
        detail("parameters", "type", "expected an object of named parameters")
    ]


def test_null_parameters_mean_none_given():
    assert parse_json(TYPED, {"inputs": {"count": 1}, "parameters": None}).parameters == {"mode": "fast"}


# JSON: optional fields and defaults


def test_optional_fields_are_absent_when_omitted_or_null():
    parsed = parse_json(
        TYPED, {"inputs": {"count": 1, "ratio": None, "payload": None}, "parameters": {"scale": None}}
    )
    assert parsed.records == [{"count": 1, "flag": False}]
    assert parsed.parameters == {"mode": "fast"}


def test_null_for_a_field_with_a_default_gives_the_default():
    parsed = parse_json(TYPED, {"inputs": {"count": 1, "flag": None}, "parameters": {"mode": None}})
    assert parsed.records == [{"count": 1, "flag": False}]
    assert parsed.parameters == {"mode": "fast"}


def test_given_values_replace_defaults():
    parsed = parse_json(
        TYPED, {"inputs": {"count": 1, "flag": True}, "parameters": {"mode": "slow", "scale": 0.5}}
    )
    assert parsed.records == [{"count": 1, "flag": True}]
    assert parsed.parameters == {"mode": "slow", "scale": 0.5}


# JSON: types


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("count", 1),
        ("count", 10),
        ("ratio", 0.25),
        ("ratio", -3),
        ("ratio", 0),
        ("flag", True),
        ("flag", False),
        ("payload", {"nested": [1, "two", None, {"three": 3.5}]}),
        ("payload", "text"),
        ("payload", 0),
        ("payload", False),
        ("payload", []),
        ("values", [1]),
        ("values", [-5, 0, 5]),
        ("name", "ab"),
        ("name", "héllo"),
        ("level", 3),
    ],
)
def test_valid_values_pass_through_unchanged(name, value):
    record = parse_json(TYPED, {"inputs": {"count": 5, name: value}}).records[0]
    assert record[name] == value
    assert type(record[name]) is type(value)


def test_an_integer_is_accepted_as_a_float_and_kept_as_it_was_sent():
    parsed = parse_json(TYPED, {"inputs": {"count": 1, "ratio": 2}, "parameters": {"scale": 1}})
    assert parsed.records[0]["ratio"] == 2
    assert parsed.parameters["scale"] == 1


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("count", "3", "expected an integer"),
        ("count", True, "expected an integer"),
        ("count", False, "expected an integer"),
        ("count", 2.5, "expected an integer"),
        ("count", [1], "expected an integer"),
        ("ratio", "1.5", "expected a number"),
        ("ratio", True, "expected a number"),
        ("ratio", {"value": 1}, "expected a number"),
        ("flag", 1, "expected true or false"),
        ("flag", 0, "expected true or false"),
        ("flag", "true", "expected true or false"),
        ("name", 5, "expected a string"),
        ("name", ["ab"], "expected a string"),
        ("values", "1,2", "expected a list"),
        ("values", {"0": 1}, "expected a list"),
        ("values", [1, "2"], "item 1: expected an integer"),
        ("values", [1, True], "item 1: expected an integer"),
        ("values", [1.5], "item 0: expected an integer"),
        ("values", [None], "item 0: expected an integer"),
        ("level", True, "expected an integer"),
        ("level", "2", "expected an integer"),
    ],
)
def test_wrong_types_are_reported(name, value, message):
    assert json_errors(one_input(name, value)) == [detail(f"inputs.{name}", "type", message)]


@pytest.mark.parametrize("text", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_numbers_are_refused_for_a_float(text):
    body = json.loads(f'{{"inputs": {{"count": 1, "ratio": {text}}}, "parameters": {{"scale": {text}}}}}')
    assert json_errors(body) == [
        detail("inputs.ratio", "type", "expected a finite number"),
        detail("parameters.scale", "type", "expected a finite number"),
    ]


@pytest.mark.parametrize("text", ["NaN", "-Infinity"])
def test_non_finite_numbers_are_refused_inside_a_json_value(text):
    """NaN and Infinity are not JSON; the docstring grammar refuses them in defaults too."""
    body = json.loads(f'{{"inputs": {{"count": 1, "payload": {{"x": [{text}]}}}}}}')
    assert [(d["field"], d["code"]) for d in json_errors(body)] == [("inputs.payload", "type")]


# JSON: choices and bounds


@pytest.mark.parametrize("value", [0, 4, -1])
def test_a_value_outside_one_of_is_a_choice_error(value):
    assert json_errors(one_input("level", value)) == [
        detail("inputs.level", "choice", "must be one of [1, 2, 3]")
    ]


def test_a_string_parameter_outside_one_of_is_a_choice_error():
    body = {"inputs": {"count": 1}, "parameters": {"mode": "Fast"}}
    assert json_errors(body) == [detail("parameters.mode", "choice", 'must be one of ["fast", "slow"]')]


def test_an_equal_number_of_another_type_matches_a_choice_only_if_the_type_fits():
    assert parse_json(TYPED, one_input("level", 2)).records[0]["level"] == 2
    assert json_errors(one_input("level", 2.0)) == [detail("inputs.level", "type", "expected an integer")]


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("count", 0, "value must be at least 1"),
        ("count", -7, "value must be at least 1"),
        ("count", 11, "value must be at most 10"),
        ("name", "a", "length must be at least 2"),
        ("name", "", "length must be at least 2"),
        ("name", "abcdef", "length must be at most 5"),
        ("values", [], "length must be at least 1"),
        ("values", [1, 2, 3, 4], "length must be at most 3"),
    ],
)
def test_values_outside_min_and_max_are_reported(name, value, message):
    assert json_errors(one_input(name, value)) == [detail(f"inputs.{name}", "range", message)]


@pytest.mark.parametrize(
    ("scale", "message"), [(-0.5, "value must be at least 0"), (1.01, "value must be at most 1")]
)
def test_float_parameter_bounds(scale, message):
    body = {"inputs": {"count": 1}, "parameters": {"scale": scale}}
    assert json_errors(body) == [detail("parameters.scale", "range", message)]


@pytest.mark.parametrize("scale", [0, 0.0, 1, 1.0, 0.5])
def test_float_parameter_bounds_are_inclusive(scale):
    assert (
        parse_json(TYPED, {"inputs": {"count": 1}, "parameters": {"scale": scale}}).parameters["scale"]
        == scale
    )


# JSON: output_fields and model_key


@pytest.mark.parametrize(
    ("requested", "expected"),
    [
        (["call", "record"], ("record", "call")),
        (["parameters"], ("parameters",)),
        ("call", ("call",)),
        ([{"name": "call"}, {"name": "record"}], ("record", "call")),
        (["call", "call"], ("call",)),
        (None, ALL_OUTPUTS),
    ],
)
def test_output_fields_follow_the_spec_order(requested, expected):
    body: dict[str, Any] = {"inputs": {"count": 1}}
    if requested is not None:
        body["output_fields"] = requested
    assert parse_json(TYPED, body).output_fields == expected


def test_an_empty_output_fields_list_names_none_and_means_all_outputs():
    """DESIGN 2.1: all declared outputs when the caller names none (as the form path already does)."""
    assert parse_json(TYPED, {"inputs": {"count": 1}, "output_fields": []}).output_fields == ALL_OUTPUTS


def test_unknown_output_fields_are_errors():
    assert json_errors({"inputs": {"count": 1}, "output_fields": ["call", "nope"]}) == [
        detail(
            "output_fields", "unknown_field", "unknown outputs ['nope']; declared: record, parameters, call"
        )
    ]


@pytest.mark.parametrize("requested", [5, {"name": "call"}, ["call", 3], [None]])
def test_output_fields_must_be_a_list_of_names(requested):
    assert json_errors({"inputs": {"count": 1}, "output_fields": requested}) == [
        detail("output_fields", "type", "expected a list of output names")
    ]


@pytest.mark.parametrize("key", ["default", "customer-7.v2", "A_b", "x" * 128, "0"])
def test_valid_model_keys(key):
    assert parse_json(TYPED, {"inputs": {"count": 1}, "model_key": key}).model_key == key


@pytest.mark.parametrize(
    "key", ["", "-leading", ".hidden", "../etc", "a/b", "sp ace", "x" * 129, 5, ["a"], "é"]
)
def test_invalid_model_keys(key):
    assert json_errors({"inputs": {"count": 1}, "model_key": key}) == [
        detail("model_key", "type", MODEL_KEY_MESSAGE)
    ]


def test_every_problem_is_reported_at_once_in_request_order():
    body = {
        "inputs": [{"count": "1", "name": 5}, {"count": 1, "extra": 1}],
        "parameters": {"mode": "other", "scale": 2},
        "output_fields": ["nope"],
        "model_key": "bad key",
        "stream": True,
    }
    assert json_errors(body) == [
        detail("stream", "unknown_field", UNKNOWN_TOP),
        detail("inputs[0].count", "type", "expected an integer"),
        detail("inputs[0].name", "type", "expected a string"),
        detail("inputs[1].extra", "unknown_field", UNDECLARED_INPUT),
        detail("parameters.mode", "choice", 'must be one of ["fast", "slow"]'),
        detail("parameters.scale", "range", "value must be at most 1"),
        detail(
            "output_fields", "unknown_field", "unknown outputs ['nope']; declared: record, parameters, call"
        ),
        detail("model_key", "type", MODEL_KEY_MESSAGE),
    ]


def test_invalid_request_message_joins_the_details():
    with pytest.raises(InvalidRequest) as caught:
        parse_json(TYPED, {"inputs": {"count": 0, "flag": 1}})
    assert str(caught.value) == "inputs.count: value must be at least 1; inputs.flag: expected true or false"


# JSON: files


def test_a_base64_data_url_becomes_a_data_file():
    encoded = base64.b64encode(PNG_BYTES).decode()
    parsed = parse_json(FILES, {"inputs": {"image": f"data:image/png;base64,{encoded}"}})
    assert parsed.records == [{"image": DataFile(PNG_BYTES, "image/png")}]


@pytest.mark.parametrize(
    ("url", "data", "content_type"),
    [
        ("data:text/plain;charset=utf-8,hello%20world%21", b"hello world!", "text/plain"),
        ("data:,a%2Cb", b"a,b", "application/octet-stream"),
        ("data:application/octet-stream,%00%FF", b"\x00\xff", "application/octet-stream"),
        ("data:Text/CSV;base64,YSxiCg==", b"a,b\n", "text/csv"),
        ("data:text/plain;charset=utf-8;base64,aMOp", "hé".encode(), "text/plain"),
        ("data:;base64,", b"", "application/octet-stream"),
    ],
)
def test_data_urls_are_decoded(url, data, content_type):
    record = parse_json(FILES, {"inputs": {"image": "data:image/png;base64,", "document": url}}).records[0]
    assert record["document"] == DataFile(data, content_type)


def test_an_object_reference_becomes_an_object_file():
    parsed = parse_json(FILES, {"inputs": {"image": {"object": "photos/2024/cat.png"}}})
    assert parsed.records == [{"image": ObjectFile("photos/2024/cat.png")}]


def test_files_in_a_batch_are_shaped_per_record():
    encoded = base64.b64encode(PNG_BYTES).decode()
    parsed = parse_json(
        FILES, {"inputs": [{"image": {"object": "b/k"}}, {"image": f"data:image/png;base64,{encoded}"}]}
    )
    assert parsed.records == [{"image": ObjectFile("b/k")}, {"image": DataFile(PNG_BYTES, "image/png")}]


@pytest.mark.parametrize(
    "value",
    [
        "not a file",
        "data:image/png;base64,not*base64",
        "data:image/png;base64,abc",
        "data:image/png",
        "http://example.com/cat.png",
        5,
        True,
        ["data:,x"],
        {"object": 5},
        {"object": "b/k", "version": 2},
        {"path": "/etc/passwd"},
        {},
    ],
)
def test_a_non_file_value_for_a_file_field_is_an_error(value):
    assert json_errors({"inputs": {"image": value}}, FILES) == [detail("inputs.image", "type", NOT_A_FILE)]


def test_a_required_file_must_be_given():
    assert json_errors({"inputs": {"document": "data:,x"}}, FILES) == [
        detail("inputs.image", "required", "this field is required")
    ]


# Forms


def test_form_text_is_coerced_per_type():
    parsed = parse_form(
        TYPED,
        [
            ("inputs.count", "3"),
            ("inputs.ratio", "2.5"),
            ("inputs.flag", "true"),
            ("inputs.payload", '{"a": [1, null]}'),
            ("inputs.values", "[1, 2]"),
            ("inputs.name", "123"),
            ("inputs.level", "2"),
            ("parameters.mode", "slow"),
            ("parameters.scale", "1"),
        ],
    )
    assert parsed == ParsedRequest(
        records=[
            {
                "count": 3,
                "ratio": 2.5,
                "flag": True,
                "payload": {"a": [1, None]},
                "values": [1, 2],
                "name": "123",
                "level": 2,
            }
        ],
        parameters={"mode": "slow", "scale": 1.0},
        output_fields=ALL_OUTPUTS,
        model_key=None,
        batch=False,
    )
    assert type(parsed.records[0]["count"]) is int
    assert type(parsed.parameters["scale"]) is float


def test_form_defaults_apply_and_optional_fields_stay_absent():
    parsed = parse_form(TYPED, [("inputs.count", " 7 ")])
    assert parsed.records == [{"count": 7, "flag": False}]
    assert parsed.parameters == {"mode": "fast"}


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("true", True),
        ("TRUE", True),
        ("on", True),
        ("1", True),
        ("yes", True),
        (" true ", True),
        ("false", False),
        ("False", False),
        ("off", False),
        ("0", False),
        ("no", False),
    ],
)
def test_form_booleans(text, value):
    assert parse_form(TYPED, [("inputs.count", "1"), ("inputs.flag", text)]).records[0]["flag"] is value


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("count", "3.5", "expected int"),
        ("count", "three", "expected int"),
        ("count", "", "expected int"),
        ("count", "0", "value must be at least 1"),
        ("count", "11", "value must be at most 10"),
        ("ratio", "abc", "expected float"),
        ("ratio", "nan", "expected a finite number"),
        ("ratio", "inf", "expected a finite number"),
        ("flag", "maybe", "expected bool"),
        ("flag", "", "expected bool"),
        ("payload", "not json", "expected json"),
        ("values", "[1, 2", "expected list[int]"),
        ("values", "1,2", "expected list[int]"),
        ("values", '{"a": 1}', "expected a list"),
        ("values", '["a"]', "item 0: expected an integer"),
        ("values", "[1, 2, 3, 4]", "length must be at most 3"),
        ("values", "[]", "length must be at least 1"),
        ("name", "a", "length must be at least 2"),
        ("name", "abcdef", "length must be at most 5"),
    ],
)
def test_form_coercion_errors_are_clear(name, text, message):
    form = [("inputs.count", "1")] if name != "count" else []
    code = "range" if " must be at " in message else "type"
    assert form_errors([*form, (f"inputs.{name}", text)]) == [detail(f"inputs.{name}", code, message)]


@pytest.mark.parametrize("text", ["NaN", "[1, -Infinity]"])
def test_form_json_refuses_non_finite_numbers(text):
    """`json.loads` accepts these words; a form value is otherwise held to the same rules as a JSON body."""
    errors = form_errors([("inputs.count", "1"), ("inputs.payload", text)])
    assert [(d["field"], d["code"]) for d in errors] == [("inputs.payload", "type")]


@pytest.mark.parametrize(
    ("field", "text", "message"),
    [
        ("inputs.level", "5", "must be one of [1, 2, 3]"),
        ("parameters.mode", "medium", 'must be one of ["fast", "slow"]'),
    ],
)
def test_form_choice_errors_have_the_same_code_as_in_json(field, text, message):
    form = [("inputs.count", "1"), (field, text)]
    assert form_errors(form) == [detail(field, "choice", message)]


def test_form_parameter_errors():
    assert form_errors([("inputs.count", "1"), ("parameters.scale", "2")]) == [
        detail("parameters.scale", "range", "value must be at most 1")
    ]


def test_form_required_fields():
    assert form_errors([("inputs.flag", "on")]) == [
        detail("inputs.count", "required", "this field is required")
    ]


@pytest.mark.parametrize(
    ("name", "first", "second"), [("inputs.count", "1", "2"), ("parameters.mode", "slow", "slow")]
)
def test_form_duplicate_fields_are_errors(name, first, second):
    form = [("inputs.count", "1")] if name != "inputs.count" else []
    assert form_errors([*form, (name, first), (name, second)]) == [
        detail(name, "duplicate", "sent more than once")
    ]


def test_form_duplicate_model_key_is_an_error_like_any_duplicate_field():
    errors = form_errors([("inputs.count", "1"), ("model_key", "alpha"), ("model_key", "beta")])
    assert [(d["field"], d["code"]) for d in errors] == [("model_key", "duplicate")]


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        ([("output_fields", "call,record")], ("record", "call")),
        ([("output_fields", " call , record ,")], ("record", "call")),
        ([("output_fields", "call"), ("output_fields", "parameters")], ("parameters", "call")),
        ([("output_fields", "")], ALL_OUTPUTS),
        ([], ALL_OUTPUTS),
    ],
)
def test_form_output_fields(parts, expected):
    assert parse_form(TYPED, [("inputs.count", "1"), *parts]).output_fields == expected


def test_form_unknown_output_fields():
    assert form_errors([("inputs.count", "1"), ("output_fields", "call,nope,other")]) == [
        detail(
            "output_fields",
            "unknown_field",
            "unknown outputs ['nope', 'other']; declared: record, parameters, call",
        )
    ]


def test_form_model_key():
    assert parse_form(TYPED, [("inputs.count", "1"), ("model_key", "fr-v2")]).model_key == "fr-v2"
    assert form_errors([("inputs.count", "1"), ("model_key", "fr v2")]) == [
        detail("model_key", "type", MODEL_KEY_MESSAGE)
    ]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("count", "expected int, got a file"),
        ("payload", "expected json, got a file"),
        ("values", "expected list[int], got a file"),
    ],
)
def test_form_file_for_a_non_file_field_is_an_error(name, message):
    form: list[tuple[str, Any]] = [("inputs.count", "1")] if name != "count" else []
    assert form_errors([*form, (f"inputs.{name}", upload("data.json", "application/json"))]) == [
        detail(f"inputs.{name}", "type", message)
    ]


def test_form_file_for_a_parameter_is_an_error():
    assert form_errors([("inputs.count", "1"), ("parameters.mode", upload())]) == [
        detail("parameters.mode", "type", "expected str, got a file")
    ]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("colour", detail("colour", "unknown_field", UNKNOWN_PART)),
        ("inputs", detail("inputs", "unknown_field", UNKNOWN_PART)),
        (
            "outputs.record",
            detail("outputs.record", "unknown_field", UNKNOWN_PART),
        ),
        (
            "inputs.colour",
            detail("inputs.colour", "unknown_field", UNDECLARED_INPUT),
        ),
        (
            "parameters.speed",
            detail("parameters.speed", "unknown_field", "not declared by the module (declared: mode, scale)"),
        ),
    ],
)
def test_form_unknown_part_names(name, expected):
    assert form_errors([("inputs.count", "1"), (name, "x")]) == [expected]


@pytest.mark.parametrize("name", ['{"inputs": {"count": 1}}', ' [{"inputs": {}}]'])
def test_form_that_looks_like_json_hints_at_the_content_type(name):
    assert form_errors([(name, "")]) == [
        detail("body", "content_type", "this looks like JSON; send it with Content-Type: application/json"),
        detail("inputs.count", "required", "this field is required"),
    ]


def test_form_collects_every_problem():
    form = [
        ("inputs.count", "x"),
        ("inputs.flag", "perhaps"),
        ("inputs.other", "1"),
        ("parameters.scale", "-1"),
        ("output_fields", "nope"),
        ("model_key", "/"),
    ]
    assert form_errors(form) == [
        detail("inputs.other", "unknown_field", UNDECLARED_INPUT),
        detail("inputs.count", "type", "expected int"),
        detail("inputs.flag", "type", "expected bool"),
        detail("parameters.scale", "range", "value must be at least 0"),
        detail(
            "output_fields", "unknown_field", "unknown outputs ['nope']; declared: record, parameters, call"
        ),
        detail("model_key", "type", MODEL_KEY_MESSAGE),
    ]


def test_form_file_parts_are_kept_for_file_fields():
    image, document = upload(), upload("notes.bin", "application/octet-stream")
    parsed = parse_form(FILES, [("inputs.image", image), ("inputs.document", document)])
    assert parsed.records == [{"image": image, "document": document}]


def test_form_data_url_text_for_a_file_field_is_decoded():
    encoded = base64.b64encode(PNG_BYTES).decode()
    parsed = parse_form(FILES, [("inputs.image", f"data:image/png;base64,{encoded}")])
    assert parsed.records == [{"image": DataFile(PNG_BYTES, "image/png")}]


@pytest.mark.parametrize("text", ["photo.png", "", "data:image/png;base64,@@"])
def test_form_text_for_a_file_only_field_is_an_error(text):
    assert form_errors([("inputs.image", text)], FILES) == [
        detail("inputs.image", "type", "expected a file part")
    ]


def test_form_duplicate_file_part_for_a_single_file_field():
    assert form_errors([("inputs.image", upload()), ("inputs.image", upload("b.png"))], FILES) == [
        detail("inputs.image", "duplicate", "sent more than once")
    ]
