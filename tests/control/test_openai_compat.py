"""The OpenAI-compatible routes' rules without a server: reading an embeddings body and a chat completion's,
the module request each becomes, the answers (floats and base64; whole and streamed chat), errors in OpenAI's
shape, and the `spec.openai` block checked against the module's API when a version is read (as a push and a
build read it)."""

from __future__ import annotations

import base64
import shutil
import struct
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from modelport.artifacts import read_module
from modelport.control.openai_compat import (
    ChatStream,
    EmbeddingsRequest,
    chat_answer,
    chat_request,
    embeddings_answer,
    encode_vector,
    module_request,
    openai_error,
    parse_chat,
    parse_embeddings,
)
from modelport.core.errors import BadModuleOutput, BadRequest, ValidationFailed
from modelport.core.manifests import ManifestError, OpenAiSpec, check_openai, parse_document
from modelport.sdk import parse_docstring

FIXTURE = Path(__file__).parents[1] / "fixtures" / "modules" / "embedder"
ROLE = OpenAiSpec(embeddings=True, input="text", output="embedding", dimensions="size")
API = parse_docstring(
    """Embeds.

    :param inputs.text: Text
    :type inputs.text: str
    :param inputs.lang: Language
    :type inputs.lang: str, default "en"
    :param parameters.size: Size
    :type parameters.size: int, default 8, max 64
    :param outputs.embedding: Vector
    :type outputs.embedding: list[float]
    """
)


def bad_request(body: Any) -> BadRequest:
    with pytest.raises(BadRequest) as refused:
        parse_embeddings(body)
    return refused.value


def test_an_embeddings_body_is_one_string_or_a_list_of_strings() -> None:
    one = parse_embeddings({"model": "m", "input": "hi there", "user": "someone"})
    assert one == EmbeddingsRequest("m", ("hi there",), "float", None)
    many = parse_embeddings({"model": "m", "input": ["a", "b"], "encoding_format": "base64", "dimensions": 4})
    assert many == EmbeddingsRequest("m", ("a", "b"), "base64", 4)


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ([], "body", "JSON object"),
        ({"input": "x"}, "model", "`model` is required"),
        ({"model": "m"}, "input", "`input` is required"),
        ({"model": "m", "input": [1, 2]}, "input", "token arrays"),
        ({"model": "m", "input": [[1, 2]]}, "input", "token arrays"),
        ({"model": "m", "input": []}, "input", "non-empty list"),
        ({"model": "m", "input": ["a", None]}, "input", "list of strings"),
        ({"model": "m", "input": [""]}, "input", "empty strings"),
        ({"model": "m", "input": ["a"] * 2049}, "input", "at most 2048"),
        ({"model": "m", "input": "a", "encoding_format": "int8"}, "encoding_format", "`float` or `base64`"),
        ({"model": "m", "input": "a", "dimensions": True}, "dimensions", "integer"),
        ({"model": "m", "input": "a", "dimensions": 0}, "dimensions", "at least 1"),
        ({"model": "m", "input": "a", "stream": True}, "stream", "unrecognized request argument"),
    ],
)
def test_a_bad_body_is_400_naming_its_field(body: Any, param: str, words: str) -> None:
    refused = bad_request(body)
    assert words in refused.message
    assert (
        openai_error(refused.status, refused.code, refused.message, refused.details)["error"]["param"]
        == param
    )


def test_each_string_is_one_record_and_dimensions_the_declared_parameter() -> None:
    wanted = EmbeddingsRequest("m", ("a", "b"), dimensions=16)
    parsed = module_request(wanted, ROLE, API)
    assert parsed.records == [{"text": "a", "lang": "en"}, {"text": "b", "lang": "en"}]
    assert parsed.parameters == {"size": 16}
    assert (parsed.output_fields, parsed.batch) == (("embedding",), True)
    # Without `dimensions`, the module's default.
    assert module_request(EmbeddingsRequest("m", ("a",)), ROLE, API).parameters == {"size": 8}


def test_a_list_of_strings_input_gets_each_string_as_a_list_of_one() -> None:
    api = parse_docstring(
        """:param inputs.texts: Texts
        :type inputs.texts: list[str]
        :param outputs.vector: Vector
        :type outputs.vector: list[float]
        """
    )
    role = OpenAiSpec(embeddings=True, input="texts", output="vector")
    parsed = module_request(EmbeddingsRequest("m", ("a", "b")), role, api)
    assert parsed.records == [{"texts": ["a"]}, {"texts": ["b"]}]


def test_dimensions_are_refused_where_the_module_takes_none_and_checked_where_it_does() -> None:
    with pytest.raises(BadRequest) as refused:
        module_request(
            EmbeddingsRequest("m", ("a",), dimensions=4), ROLE.model_copy(update={"dimensions": None}), API
        )
    assert refused.value.details[0]["field"] == "dimensions"
    with pytest.raises(ValidationFailed) as invalid:
        module_request(EmbeddingsRequest("m", ("a",), dimensions=65), ROLE, API)
    assert invalid.value.details[0]["field"] == "dimensions"
    assert "dimensions" in invalid.value.message


def test_the_answer_holds_each_vector_by_index_and_counts_words() -> None:
    outputs = [{"embedding": [0.5, -0.25]}, {"embedding": [1.0, 0.0]}]
    answer = embeddings_answer(EmbeddingsRequest("m", ("one two", " three ")), ROLE, outputs)
    assert answer == {
        "object": "list",
        "data": [
            {"object": "embedding", "index": 0, "embedding": [0.5, -0.25]},
            {"object": "embedding", "index": 1, "embedding": [1.0, 0.0]},
        ],
        "model": "m",
        "usage": {"prompt_tokens": 3, "total_tokens": 3},
    }
    encoded = embeddings_answer(EmbeddingsRequest("m", ("x",), "base64"), ROLE, outputs[:1])
    assert encoded["data"][0]["embedding"] == base64.b64encode(struct.pack("<2f", 0.5, -0.25)).decode()
    with pytest.raises(BadModuleOutput, match="answered 2 numbers where 3 were asked for"):
        embeddings_answer(EmbeddingsRequest("m", ("x",), dimensions=3), ROLE, outputs[:1])


def test_base64_is_little_endian_float32() -> None:
    vector = [0.1, -2.5, 3e-8]
    encoded = encode_vector(vector, "base64")
    assert isinstance(encoded, str)
    assert struct.unpack("<3f", base64.b64decode(encoded)) == struct.unpack(
        "<3f", struct.pack("<3f", *vector)
    )
    assert encode_vector([1.0], "base64") == base64.b64encode(b"\x00\x00\x80\x3f").decode()
    assert encode_vector(vector, "float") == vector


@pytest.mark.parametrize(
    ("status", "code", "kind", "openai_code"),
    [
        (401, "invalid_token", "authentication_error", "invalid_api_key"),
        (404, "module_not_found", "invalid_request_error", "model_not_found"),
        (422, "validation_failed", "invalid_request_error", "validation_failed"),
        (429, "rate_limited", "rate_limit_error", "rate_limit_exceeded"),
        (503, "overloaded", "server_error", "overloaded"),
    ],
)
def test_errors_take_openais_shape_and_codes(status: int, code: str, kind: str, openai_code: str) -> None:
    assert openai_error(status, code, "why") == {
        "error": {"message": "why", "type": kind, "param": None, "code": openai_code}
    }


def test_the_role_fits_an_api_with_a_text_input_and_a_float_list_output() -> None:
    assert check_openai(ROLE, API) == []
    with pytest.raises(ValidationError, match="one role"):
        OpenAiSpec(chat=True, embeddings=True, input="t", output="e", messages="m")
    with pytest.raises(ValidationError, match="`messages`"):
        OpenAiSpec(chat=True, output="text")


@pytest.mark.parametrize(
    ("role", "docstring", "field", "words"),
    [
        ({"input": "txt"}, "", "input", "no input 'txt' (it has text)"),
        ({"output": "vector"}, "", "output", "no output 'vector'"),
        ({}, ":param inputs.text: T\n:type inputs.text: int\n", "input", "is int; expected str or list[str]"),
        (
            {},
            ":param outputs.embedding: E\n:type outputs.embedding: list[int]\n",
            "output",
            "expected list[float]",
        ),
        (
            {"dimensions": "size"},
            ':param parameters.size: S\n:type parameters.size: str, default ""\n',
            "dimensions",
            "expected int",
        ),
        (
            {"dimensions": "size"},
            ":param parameters.size: S\n:type parameters.size: int\n",
            "dimensions",
            "callers may leave the size out",
        ),
        ({}, ":param inputs.lang: L\n:type inputs.lang: str\n", "embeddings", "inputs 'lang' is required"),
    ],
)
def test_a_role_that_does_not_fit_the_api_names_the_field(
    role: dict[str, str], docstring: str, field: str, words: str
) -> None:
    base = {
        "inputs.text": ":param inputs.text: T\n:type inputs.text: str\n",
        "outputs.embedding": ":param outputs.embedding: E\n:type outputs.embedding: list[float]\n",
    }
    for name in list(base):
        if f":param {name}:" in docstring:
            del base[name]
    api = parse_docstring("".join(base.values()) + docstring)
    spec = OpenAiSpec.model_validate({"embeddings": True, "input": "text", "output": "embedding", **role})
    problems = check_openai(spec, api)
    assert any(f == field and words in message for f, message in problems), problems


def test_an_embeddings_role_names_its_fields() -> None:
    document = {
        "apiVersion": "modelport/v1",
        "kind": "Module",
        "metadata": {"name": "m"},
        "spec": {"openai": {"embeddings": True, "output": "embedding"}},
    }
    with pytest.raises(ManifestError) as refused:
        parse_document(document, source="m.yaml")
    assert refused.value.problems[0]["field"] == "spec.openai"
    assert "`input`" in refused.value.problems[0]["message"]


def test_reading_a_version_whose_role_does_not_fit_its_api_fails(tmp_path: Path) -> None:
    assert read_module(FIXTURE).manifest.spec.openai == OpenAiSpec(
        embeddings=True, input="text", output="embedding", dimensions="dimensions"
    )
    module = tmp_path / "embedder"
    shutil.copytree(FIXTURE, module, ignore=shutil.ignore_patterns("__pycache__"))
    manifest = module / "modelport.yaml"
    manifest.write_text(manifest.read_text().replace("output: embedding", "output: text"))
    with pytest.raises(ManifestError) as refused:
        read_module(module)
    assert refused.value.problems[0]["field"] == "spec.openai.output"
    assert "the API has no output 'text' (it has embedding)" in str(refused.value)


# Chat completions

CHAT = OpenAiSpec(chat=True, messages="messages", output="text")
CHAT_API = parse_docstring(
    """Chats.

    :param inputs.messages: The conversation
    :type inputs.messages: json
    :param parameters.max_tokens: Most tokens
    :type parameters.max_tokens: int, default 16, min 1, max 64
    :param parameters.temperature: Sampling
    :type parameters.temperature: float, default 1, min 0, max 2
    :param parameters.top_k: The model's own option
    :type parameters.top_k: int, default 0
    :param outputs.text: The reply
    :type outputs.text: str, stream
    :param outputs.finish_reason: Why it ended
    :type outputs.finish_reason: str
    :param outputs.prompt_tokens: Tokens read
    :type outputs.prompt_tokens: int
    """
)
USER = [{"role": "user", "content": "hi"}]


def test_a_chat_body_becomes_one_record_and_the_options_its_parameters() -> None:
    wanted = parse_chat(
        {
            "model": "m",
            "messages": [
                {"role": "system", "content": "s"},
                {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            ],
            "max_completion_tokens": 5,
            "temperature": 0,
            "response_format": {"type": "text"},
            "top_k": 3,
            "user": "someone",
        }
    )
    assert wanted.messages == ({"role": "system", "content": "s"}, {"role": "user", "content": "hi"})
    assert wanted.options == {"max_tokens": 5, "temperature": 0.0}  # `text` is what every model answers
    parsed = chat_request(wanted, CHAT, CHAT_API)
    assert parsed.records == [{"messages": list(wanted.messages)}]
    assert parsed.parameters == {"max_tokens": 5, "temperature": 0.0, "top_k": 3}
    assert parsed.output_fields == ("text", "finish_reason", "prompt_tokens")


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"seed": 1}, "seed", "does not take `seed`"),
        ({"wizardry": 1}, "wizardry", "unrecognized request argument 'wizardry'"),
        ({"tools": []}, "tools", "unrecognized request argument 'tools'"),
    ],
)
def test_options_the_module_does_not_take_are_refused(body: dict[str, Any], param: str, words: str) -> None:
    with pytest.raises(BadRequest) as refused:
        chat_request(parse_chat({"model": "m", "messages": USER, **body}), CHAT, CHAT_API)
    assert refused.value.details[0]["field"] == param and words in refused.value.message


def test_a_value_the_module_refuses_names_openais_field() -> None:
    with pytest.raises(ValidationFailed) as refused:
        chat_request(parse_chat({"model": "m", "messages": USER, "max_tokens": 65}), CHAT, CHAT_API)
    assert refused.value.details[0]["field"] == "max_tokens"


def test_answers_whole_and_streamed_carry_the_reply_and_its_usage() -> None:
    wanted = parse_chat(
        {"model": "m", "messages": USER, "stream": True, "stream_options": {"include_usage": True}}
    )
    output = {"text": "hello there", "finish_reason": "length", "prompt_tokens": 9}
    whole = chat_answer(wanted, CHAT, output, request_id="r1", created=5)
    assert whole["id"] == "chatcmpl-r1" and whole["choices"][0]["message"]["content"] == "hello there"
    assert whole["choices"][0]["finish_reason"] == "length"
    assert whole["usage"] == {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}
    chunks = ChatStream(wanted, CHAT, request_id="r1", created=5)
    assert chunks.start()["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks.piece("hel")["choices"][0]["delta"] == {"content": "hel"}
    last, usage = chunks.end(output)
    assert last["choices"][0]["finish_reason"] == "length" and usage["choices"] == []
    assert usage["usage"] == whole["usage"]


def test_a_chat_role_fits_a_json_input_and_a_str_output() -> None:
    assert check_openai(CHAT, CHAT_API) == []
    wrong = parse_docstring(
        ":param inputs.messages: M\n:type inputs.messages: str\n"
        ':param parameters.seed: S\n:type parameters.seed: str, default ""\n'
        ":param inputs.extra: E\n:type inputs.extra: str\n"
        ":param outputs.text: T\n:type outputs.text: int\n"
    )
    problems = dict(check_openai(CHAT, wrong))
    messages = [message for _, message in check_openai(CHAT, wrong)]
    assert "messages" in problems and "expected json" in problems["messages"]
    assert "expected str" in problems["output"]
    assert any("parameter 'seed' is str" in message for message in messages)
    assert any("inputs 'extra' is required" in message for message in messages)
