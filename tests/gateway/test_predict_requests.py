"""The predict route over HTTP: body formats, limits, routing errors and the shape of answers and errors.

The `typed` fixture module appends a line to `calls.jsonl` on every call, so a test can tell that a refused
request never reached a worker.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

URL = "/api/v1/modules/typed/predict"
ERROR_KEYS = {"code", "message"}


def calls(directory: Path) -> int:
    """How many times the module's `inference` ran."""
    log = directory / "calls.jsonl"
    return len(log.read_text().splitlines()) if log.exists() else 0


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}
    return body["error"]


def detail(field: str, code: str, message: str) -> dict[str, str]:
    return {"field": field, "code": code, "message": message}


async def chunks(data: bytes, size: int = 1000) -> AsyncIterator[bytes]:
    """Stream `data` with no Content-Length, as a chunked upload does."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


def nested(depth: int) -> dict[str, Any]:
    """A `typed` body nested exactly `depth` levels deep (the body object is level 1)."""
    payload: object = 1
    for _ in range(depth - 3):  # body and inputs are two levels, the payload list is the third
        payload = [payload]
    return {"inputs": {"count": 1, "payload": [payload]}}


# Formats


async def test_json_request_returns_validated_values_and_headers(fixture_module, serve):
    directory = fixture_module("typed")
    async with serve(directory) as served:
        response = await served.client.post(
            URL, json={"inputs": {"count": 3, "ratio": 2}, "model_key": "alpha"}
        )
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        body = response.json()
        assert set(body) == {"outputs", "module", "version", "request_id"}
        assert body["outputs"] == {
            "record": {"count": 3, "ratio": 2, "flag": False},
            "parameters": {"mode": "fast"},
            "call": {"output_fields": ["record", "parameters", "call"], "model_key": "alpha"},
        }
        assert body["module"] == "typed"
        assert response.headers["X-Request-Id"] == body["request_id"]
        assert len(body["request_id"]) >= 16
        assert response.headers["X-Model-Version"] == body["version"] == served.module.version
        again = await served.predict(inputs={"count": 3})
        assert again.json()["request_id"] != body["request_id"]
        assert again.json()["outputs"]["call"]["model_key"] == "default"
        assert calls(directory) == 2


async def test_json_content_types_with_parameters_and_suffixes_are_accepted(fixture_module, serve):
    async with serve(fixture_module("typed")) as served:
        content = json.dumps({"inputs": {"count": 2, "name": "héllo"}}).encode()
        for content_type in (
            "application/json; charset=utf-8",
            "Application/JSON",
            "application/vnd.api+json",
        ):
            response = await served.client.post(URL, content=content, headers={"content-type": content_type})
            assert response.status_code == 200, content_type
            assert response.json()["outputs"]["record"]["name"] == "héllo"


async def test_a_body_without_content_type_is_read_as_json(fixture_module, serve):
    async with serve(fixture_module("typed")) as served:
        request = served.client.build_request("POST", URL, content=b'{"inputs": {"count": 4}}')
        assert "content-type" not in request.headers
        response = await served.client.send(request)
        assert response.status_code == 200
        assert response.json()["outputs"]["record"]["count"] == 4


async def test_multipart_form_is_coerced_per_type(fixture_module, serve):
    directory = fixture_module("typed")
    async with serve(directory) as served:
        response = await served.client.post(
            URL,
            data={
                "inputs.flag": "on",
                "inputs.values": "[1, 2]",
                "inputs.payload": '{"k": [true, null]}',
                "parameters.mode": "slow",
                "parameters.scale": "0.25",
                "output_fields": "call,record",
                "model_key": "beta",
            },
            files={"inputs.count": (None, "7")},
        )
        assert response.status_code == 200
        assert response.json()["outputs"] == {
            "record": {"count": 7, "flag": True, "values": [1, 2], "payload": {"k": [True, None]}},
            "call": {"output_fields": ["record", "call"], "model_key": "beta"},
        }
        assert calls(directory) == 1


async def test_multipart_form_with_the_parameters_of_the_request(fixture_module, serve):
    async with serve(fixture_module("typed")) as served:
        response = await served.client.post(
            URL, files={"inputs.count": (None, "2"), "parameters.mode": (None, "slow")}
        )
        assert response.status_code == 200
        assert response.json()["outputs"]["parameters"] == {"mode": "slow"}


async def test_urlencoded_form_with_charset(fixture_module, serve):
    async with serve(fixture_module("typed")) as served:
        response = await served.client.post(
            URL,
            content=b"inputs.count=5&inputs.name=%C3%A9t%C3%A9&output_fields=record",
            headers={"content-type": "application/x-www-form-urlencoded; charset=utf-8"},
        )
        assert response.status_code == 200
        assert response.json()["outputs"] == {"record": {"count": 5, "name": "été", "flag": False}}


async def test_form_validation_errors_list_every_field(fixture_module, serve):
    directory = fixture_module("typed")
    async with serve(directory) as served:
        response = await served.client.post(
            URL,
            data={
                "inputs.count": "three",
                "inputs.flag": "perhaps",
                "inputs.colour": "red",
                "model_key": "a b",
            },
        )
        assert response.status_code == 422
        error = error_of(response)
        assert set(error) == {"code", "message", "details"}
        assert error["code"] == "validation_failed"
        assert error["message"] == "the request does not match the module's API"
        assert error["details"] == [
            detail(
                "inputs.colour",
                "unknown_field",
                "not declared by the module (declared: count, flag, level, name, payload, ratio, values)",
            ),
            detail("inputs.count", "type", "expected int"),
            detail("inputs.flag", "type", "expected bool"),
            detail("model_key", "type", "expected 1-128 letters, digits, '.', '_' or '-'"),
        ]
        assert response.headers["X-Request-Id"]
        assert calls(directory) == 0


async def test_json_sent_as_a_form_gets_a_hint_about_the_content_type(fixture_module, serve):
    directory = fixture_module("typed")
    async with serve(directory) as served:
        response = await served.client.post(
            URL,
            content=b'{"inputs": {"count": 1}}',
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert response.status_code == 422
        assert error_of(response)["details"] == [
            detail(
                "body", "content_type", "this looks like JSON; send it with Content-Type: application/json"
            ),
            detail("inputs.count", "required", "this field is required"),
        ]
        assert calls(directory) == 0


async def test_a_duplicate_form_field_is_refused(fixture_module, serve):
    directory = fixture_module("typed")
    async with serve(directory) as served:
        response = await served.client.post(
            URL,
            content=b"inputs.count=1&inputs.count=2",
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert response.status_code == 422
        assert error_of(response)["details"] == [detail("inputs.count", "duplicate", "sent more than once")]
        assert calls(directory) == 0


async def test_a_file_part_for_a_text_field_is_refused(fixture_module, serve):
    directory = fixture_module("typed")
    async with serve(directory) as served:
        response = await served.client.post(URL, files={"inputs.count": ("count.txt", b"3", "text/plain")})
        assert response.status_code == 422
        assert error_of(response)["details"] == [detail("inputs.count", "type", "expected int, got a file")]
        assert calls(directory) == 0


async def test_json_validation_errors_are_422_with_details(fixture_module, serve):
    directory = fixture_module("typed")
    async with serve(directory) as served:
        response = await served.predict(
            inputs={"count": True, "level": 9}, parameters={"mode": "turbo"}, output_fields=["nope"], extra=1
        )
        assert response.status_code == 422
        error = error_of(response)
        assert set(error) == {"code", "message", "details"}
        assert error["code"] == "validation_failed"
        assert error["details"] == [
            detail(
                "extra",
                "unknown_field",
                "unknown field; expected one of inputs, parameters, output_fields, model_key",
            ),
            detail("inputs.count", "type", "expected an integer"),
            detail("inputs.level", "choice", "must be one of [1, 2, 3]"),
            detail("parameters.mode", "choice", 'must be one of ["fast", "slow"]'),
            detail(
                "output_fields",
                "unknown_field",
                "unknown outputs ['nope']; declared: record, parameters, call",
            ),
        ]
        assert calls(directory) == 0


async def test_an_empty_output_fields_list_gets_every_output(fixture_module, serve):
    """DESIGN 2.1: all declared outputs when the caller names none."""
    async with serve(fixture_module("typed")) as served:
        response = await served.predict(inputs={"count": 1}, output_fields=[])
        assert response.status_code == 200
        assert set(response.json()["outputs"]) == {"record", "parameters", "call"}


async def test_a_list_of_records_returns_a_list_in_order(fixture_module, serve):
    directory = fixture_module("typed")
    async with serve(directory) as served:
        records = [{"count": 3}, {"count": 1, "name": "ab"}, {"count": 10, "flag": True}, {"count": 5}]
        response = await served.predict(inputs=records, parameters={"mode": "slow"}, output_fields=["record"])
        assert response.status_code == 200
        outputs = response.json()["outputs"]
        assert outputs == [
            {"record": {"count": 3, "flag": False}},
            {"record": {"count": 1, "name": "ab", "flag": False}},
            {"record": {"count": 10, "flag": True}},
            {"record": {"count": 5, "flag": False}},
        ]
        single = await served.predict(inputs=[{"count": 2}], output_fields=["parameters"])
        assert single.json()["outputs"] == [{"parameters": {"mode": "fast"}}]


async def test_a_bad_record_in_a_list_refuses_the_whole_request(fixture_module, serve):
    directory = fixture_module("typed")
    async with serve(directory) as served:
        response = await served.predict(inputs=[{"count": 1}, {"count": 11}, {"count": 2, "ratio": "x"}])
        assert response.status_code == 422
        assert error_of(response)["details"] == [
            detail("inputs[1].count", "range", "value must be at most 10"),
            detail("inputs[2].ratio", "type", "expected a number"),
        ]
        assert calls(directory) == 0


# Refused bodies


async def test_an_unsupported_content_type_is_415(fixture_module, serve):
    directory = fixture_module("typed")
    async with serve(directory) as served:
        for content_type in ("text/plain", "application/xml", "image/png"):
            response = await served.client.post(
                URL, content=b'{"inputs": {"count": 1}}', headers={"content-type": content_type}
            )
            assert response.status_code == 415
            assert error_of(response) == {
                "code": "unsupported_media_type",
                "message": f"content type {content_type!r} is not accepted; "
                "send application/json or multipart/form-data",
            }
        assert calls(directory) == 0


async def test_an_empty_body_is_invalid_json(fixture_module, serve):
    async with serve(fixture_module("typed")) as served:
        response = await served.client.post(URL, content=b"", headers={"content-type": "application/json"})
        assert response.status_code == 400
        assert error_of(response) == {
            "code": "invalid_json",
            "message": "the request body is empty; expected a JSON object",
        }


async def test_malformed_json_is_invalid_json(fixture_module, serve):
    directory = fixture_module("typed")
    async with serve(directory) as served:
        for content in (
            b"{",
            b'{"inputs": {"count": 1}',
            b"{'inputs': {}}",
            b'{"inputs": NaN}',
            b"\xff\xfe",
            b"1 2",
        ):
            response = await served.client.post(
                URL, content=content, headers={"content-type": "application/json"}
            )
            assert response.status_code == 400, content
            error = error_of(response)
            assert set(error) == ERROR_KEYS
            assert error["code"] == "invalid_json"
            assert str(error["message"]).startswith("the request body is not valid JSON: ")
        assert calls(directory) == 0


async def test_valid_json_that_is_not_an_object_is_422(fixture_module, serve):
    async with serve(fixture_module("typed")) as served:
        response = await served.client.post(URL, json=[{"count": 1}])
        assert response.status_code == 422
        assert error_of(response)["details"] == [detail("body", "type", "expected a JSON object")]


async def test_json_deeper_than_the_limit_is_refused(fixture_module, serve):
    directory = fixture_module("typed")
    async with serve(directory, max_json_depth=5) as served:
        response = await served.client.post(URL, json=nested(5))
        assert response.status_code == 200
        assert response.json()["outputs"]["record"]["payload"] == [[[1]]]
        response = await served.client.post(URL, json=nested(6))
        assert response.status_code == 400
        assert error_of(response) == {
            "code": "bad_request",
            "message": "the JSON body is nested deeper than 5 levels",
        }
        deep_in_a_string = {"inputs": {"count": 1, "name": "[[[["}, "parameters": {"mode": "fast"}}
        assert (await served.client.post(URL, json=deep_in_a_string)).status_code == 200
        assert calls(directory) == 2


async def test_the_depth_limit_does_not_depend_on_unrelated_fields(fixture_module, serve):
    """Two bodies nested equally deep (five levels of objects and lists) get the same answer."""
    async with serve(fixture_module("typed"), max_json_depth=5) as served:
        alone = nested(5)
        with_a_list_elsewhere = nested(5)
        with_a_list_elsewhere["inputs"]["values"] = [1]
        first = await served.client.post(URL, json=alone)
        second = await served.client.post(URL, json=with_a_list_elsewhere)
        assert (first.status_code, second.status_code) == (200, 200), second.text


async def test_json_nested_past_the_decoder_recursion_limit_is_400_not_500(fixture_module, serve):
    directory = fixture_module("typed")
    async with serve(directory) as served:
        depth = 5000
        content = b'{"inputs": {"count": 1, "payload": ' + b"[" * depth + b"]" * depth + b"}}"
        response = await served.client.post(
            URL, content=content, headers={"content-type": "application/json"}
        )
        assert response.status_code == 400
        assert error_of(response)["code"] in {"bad_request", "invalid_json"}
        assert calls(directory) == 0


async def test_a_malformed_multipart_body_is_400(fixture_module, serve):
    directory = fixture_module("typed")
    async with serve(directory) as served:
        response = await served.client.post(
            URL, content=b"inputs.count=1", headers={"content-type": "multipart/form-data"}
        )
        assert response.status_code == 400
        error = error_of(response)
        assert error["code"] == "bad_request"
        assert str(error["message"]).startswith("the form cannot be parsed: ")
        assert calls(directory) == 0


# Body limits


async def test_a_declared_body_over_the_limit_is_413(fixture_module, serve):
    directory = fixture_module("typed")
    async with serve(directory, max_body_bytes=4096) as served:
        body = json.dumps({"inputs": {"count": 1, "payload": "x" * 5000}}).encode()
        response = await served.client.post(URL, content=body, headers={"content-type": "application/json"})
        assert response.status_code == 413
        assert error_of(response) == {
            "code": "payload_too_large",
            "message": f"the request body ({len(body)} bytes or more) exceeds the limit of 4096 bytes",
        }
        at_limit = json.dumps({"inputs": {"count": 1, "payload": "x" * 4000}}).encode()
        at_limit += b" " * (4096 - len(at_limit))
        assert len(at_limit) == 4096
        response = await served.client.post(
            URL, content=at_limit, headers={"content-type": "application/json"}
        )
        assert response.status_code == 200
        assert calls(directory) == 1


async def test_a_streamed_json_body_over_the_limit_is_413(fixture_module, serve):
    directory = fixture_module("typed")
    async with serve(directory, max_body_bytes=4096) as served:
        body = json.dumps({"inputs": {"count": 1, "payload": "x" * 10_000}}).encode()
        response = await served.client.post(
            URL, content=chunks(body), headers={"content-type": "application/json"}
        )
        assert response.status_code == 413
        error = error_of(response)
        assert error["code"] == "payload_too_large"
        assert str(error["message"]).endswith("exceeds the limit of 4096 bytes")
        small = json.dumps({"inputs": {"count": 1, "payload": "x" * 3000}}).encode()
        response = await served.client.post(
            URL, content=chunks(small), headers={"content-type": "application/json"}
        )
        assert response.status_code == 200
        assert calls(directory) == 1


async def test_a_streamed_form_body_over_the_limit_is_413(fixture_module, serve):
    directory = fixture_module("typed")
    async with serve(directory, max_body_bytes=4096) as served:
        for fields in (
            {
                "files": {
                    "inputs.count": (None, "1"),
                    "inputs.payload": ("p.json", b'"' + b"x" * 10_000 + b'"'),
                }
            },
            {"data": {"inputs.count": "1", "inputs.name": "x" * 10_000}},
        ):
            request = served.client.build_request("POST", URL, **fields)
            body, content_type = request.read(), request.headers["content-type"]
            response = await served.client.post(
                URL, content=chunks(body), headers={"content-type": content_type}
            )
            assert response.status_code == 413, content_type
            assert error_of(response)["code"] == "payload_too_large"
        assert calls(directory) == 0


# Routing


async def test_an_unknown_module_is_404(fixture_module, serve):
    async with serve(fixture_module("typed")) as served:
        response = await served.client.post("/api/v1/modules/nope/predict", json={"inputs": {"count": 1}})
        assert response.status_code == 404
        assert error_of(response) == {"code": "module_not_found", "message": "no module named 'nope'"}


async def test_an_unknown_path_is_404(fixture_module, serve):
    async with serve(fixture_module("typed")) as served:
        for path in (
            "/api/v1/nothing",
            "/api/v1/modules/typed/predict/extra",
            "/api/v2/modules/typed/predict",
        ):
            response = await served.client.post(path, json={"inputs": {"count": 1}})
            assert response.status_code == 404, path
            assert error_of(response) == {"code": "not_found", "message": "no such path"}


async def test_other_methods_on_predict_are_405(fixture_module, serve):
    directory = fixture_module("typed")
    async with serve(directory) as served:
        for method in ("GET", "PUT", "DELETE", "PATCH"):
            response = await served.client.request(method, URL)
            assert response.status_code == 405, method
            assert error_of(response) == {
                "code": "method_not_allowed",
                "message": "this method is not allowed on this path",
            }
        assert calls(directory) == 0


# Server errors


async def test_a_module_error_is_500_with_no_traceback_and_no_details(fixture_module, serve):
    directory = fixture_module("typed")
    async with serve(directory) as served:
        response = await served.predict(inputs={"count": 1, "name": "boom"})
        assert response.status_code == 500
        error = error_of(response)
        assert set(error) == ERROR_KEYS
        assert error == {"code": "module_error", "message": "RuntimeError: the name boom is not handled"}
        assert "Traceback" not in response.text
        assert "inference.py" not in response.text
        assert response.headers["X-Request-Id"]
        assert calls(directory) == 1
        ok = await served.predict(inputs={"count": 1, "name": "fine"})
        assert ok.status_code == 200


async def test_errors_on_other_routes_use_the_same_error_body(fixture_module, serve):
    async with serve(fixture_module("echo")) as served:
        missing = await served.client.get("/api/v1/modules/nope/openapi.json")
        assert missing.status_code == 404
        assert missing.json() == {"error": {"code": "module_not_found", "message": "no module named 'nope'"}}
        output = await served.client.get("/api/v1/modules/echo/outputs/..%2Fsecret")
        assert output.status_code == 404
        assert output.json()["error"]["code"] == "not_found"
