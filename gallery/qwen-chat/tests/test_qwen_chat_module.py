"""Tests of the qwen-chat gallery module, calling `inference.py` directly (no server) on the tiny random Qwen2
that `tiny.py` writes."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from modelport.core.manifests import check_openai, load_module_manifest
from modelport.sdk import Kind, RejectedInput, parse_docstring
from modelport.sdk.spec import check_value

MODULE_DIR = Path(__file__).resolve().parents[1]
PROMPTS = ["Hi", "Tell me about the sea.", "Write a haiku about winter mornings, please."]


def _import(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"gallery_qwen_chat_{name}", MODULE_DIR / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


tiny = _import("tiny")
qwen = _import("inference")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tiny-qwen")
    tiny.write_tiny_qwen(directory)
    return directory


@pytest.fixture(scope="module")
def chat(model_dir: Path) -> Iterator[Any]:
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")  # as the platform sets it; one thread is also the fastest here
        loaded = qwen.load("tiny", str(model_dir))
        assert torch.get_num_threads() == 1
    yield loaded
    torch.set_num_threads(threads)


def _start(
    chat: Any, records: list[dict[str, Any]], parameters: list[dict[str, Any]] | None = None
) -> list[Any]:
    parameters = parameters if parameters is not None else [{"temperature": 0} for _ in records]
    results = qwen.inference(parameters, records, [], "tiny", chat)
    assert len(results) == len(records)
    assert all(set(result) == {"text"} for result in results)
    return [result["text"] for result in results]


def _drain(
    replies: list[Any], *, close: dict[int, int] | None = None
) -> list[tuple[list[str], dict[str, Any]]]:
    """Each reply's pieces and other outputs, a piece from each in turn as the worker takes them; a reply
    named in `close` is closed once it has given that many pieces (and answers the pieces it gave)."""
    close = close or {}
    pieces: list[list[str]] = [[] for _ in replies]
    rest: list[dict[str, Any]] = [{} for _ in replies]
    active = set(range(len(replies)))
    while active:
        for index in sorted(active):
            if close.get(index) == len(pieces[index]):
                replies[index].close()
                active.discard(index)
                continue
            try:
                pieces[index].append(next(replies[index]))
            except StopIteration as stop:
                rest[index] = stop.value
                active.discard(index)
    return list(zip(pieces, rest, strict=True))


def _chat(
    chat: Any, records: list[dict[str, Any]], parameters: list[dict[str, Any]] | None = None
) -> list[Any]:
    """Each record's whole reply and outputs."""
    return [
        {"text": "".join(pieces), **rest, "pieces": pieces}
        for pieces, rest in _drain(_start(chat, records, parameters))
    ]


def _prompt_ids(chat: Any, prompt: str) -> list[int]:
    text = chat.tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
    )
    return list(chat.tokenizer(text, add_special_tokens=False)["input_ids"])


class Scripted(torch.nn.Module):
    """The tiny model, counting the rows of each call, and (given a script) made to write the script's tokens
    then `<|im_end|>` whatever it would have written."""

    def __init__(self, model: Any, script: list[int] | None = None, end: int = 0) -> None:
        super().__init__()
        self.inner, self.script, self.end = model, script, end
        self.config = model.config
        self.rows: list[int] = []

    def forward(self, input_ids: torch.Tensor, **kwargs: Any) -> Any:
        out = self.inner(input_ids=input_ids, **kwargs)
        step = len(self.rows)
        self.rows.append(input_ids.shape[0])
        if self.script is not None:
            token = self.script[step] if step < len(self.script) else self.end
            out.logits[:, -1, :] = -torch.inf
            out.logits[:, -1, token] = 0.0
        return out


def _scripted(chat: Any, script: list[int] | None = None) -> tuple[Any, Scripted]:
    model = Scripted(chat.model, script, end=chat.tokenizer.convert_tokens_to_ids("<|im_end|>"))
    return dataclasses.replace(chat, model=model), model


# The API and the manifest


def test_docstring_declares_the_api() -> None:
    spec = parse_docstring(qwen.inference.__doc__)
    assert spec.title.startswith("Chat with a Qwen2 language model")
    assert [(f.name, f.types[0].kind, f.required) for f in spec.inputs] == [
        ("messages", Kind.JSON, False),
        ("prompt", Kind.STR, False),
    ]
    parameters = {f.name: f for f in spec.parameters}
    assert list(parameters) == [
        "system",
        "max_tokens",
        "temperature",
        "top_p",
        "stop",
        "seed",
        "response_format",
    ]
    assert not any(f.required for f in spec.parameters)
    bounds = {name: (f.default, f.minimum, f.maximum) for name, f in parameters.items() if f.has_default}
    assert bounds == {"max_tokens": (128, 1, 1024), "temperature": (1.0, 0, 2), "top_p": (1.0, 0.01, 1)}
    assert {name: qwen.DEFAULTS[name] for name in bounds} == {name: b[0] for name, b in bounds.items()}
    assert [t.render() for t in parameters["stop"].types] == ["str", "list[str]"]
    assert check_value(parameters["stop"], ["a", "b"]) is None
    assert check_value(parameters["top_p"], 0) is not None
    assert spec.stream_output is not None
    assert spec.stream_output.name == "text"
    assert [(f.name, f.types[0].kind) for f in spec.outputs] == [
        ("text", Kind.STR),
        ("finish_reason", Kind.STR),
        ("prompt_tokens", Kind.INT),
        ("completion_tokens", Kind.INT),
    ]


def test_manifest_is_valid_and_its_example_runs(chat: Any) -> None:
    manifest = load_module_manifest(MODULE_DIR)
    spec = manifest.spec
    assert manifest.metadata.name == "qwen-chat"
    assert (spec.entrypoint, spec.load, spec.requirements) == (
        "inference.py:inference",
        "inference.py:load",
        "requirements.txt",
    )
    assert (spec.model.bucket, spec.model.path, spec.model.key, spec.model.cache_size) == (
        "models",
        "qwen-chat",
        "tiny",
        1,
    )
    resources = spec.resources
    assert (resources.replicas, resources.max_batch_size, resources.batch_wait_ms) == (1, 8, 0)
    assert (resources.timeout_seconds, resources.threads) == (120, None)
    api = parse_docstring(qwen.inference.__doc__)
    assert spec.openai is not None
    assert (spec.openai.chat, spec.openai.messages, spec.openai.output) == (True, "messages", "text")
    assert check_openai(spec.openai, api) == []
    example = spec.example
    assert example is not None
    for group in ("inputs", "parameters"):
        for name, value in example[group].items():
            field = api.get(group, name)
            assert field is not None, f"{group}.{name} is not declared"
            assert check_value(field, value) is None
    [reply] = _chat(chat, [example["inputs"]], [example["parameters"]])
    assert reply["finish_reason"] in ("stop", "length")
    assert 1 <= reply["completion_tokens"] <= example["parameters"]["max_tokens"]


def test_requirements_pin_the_cpu_stack() -> None:
    lines = (MODULE_DIR / "requirements.txt").read_text().splitlines()
    requirements = [line for line in lines if line and not line.startswith("#")]
    assert requirements == [
        "torch==2.13.0",
        "transformers>=5,<6",
        "xgrammar>=0.2,<1",
        "jsonschema>=4.20,<5",
        "numpy>=1.26,<3",
    ]


# The tiny model


def test_tiny_model_is_deterministic_small_and_written_without_torch(model_dir: Path, tmp_path: Path) -> None:
    # The command line, in a fresh interpreter that lists what it imports.
    command = [sys.executable, "-X", "importtime", str(MODULE_DIR / "tiny.py"), str(tmp_path / "again")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    imported = {line.split("|")[-1].strip().split(".")[0] for line in done.stderr.splitlines()}
    assert "numpy" in imported
    assert not imported & {"torch", "transformers", "tokenizers", "safetensors"}
    names = sorted(p.name for p in model_dir.iterdir())
    assert names == [
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    for name in names:
        assert (tmp_path / "again" / name).read_bytes() == (model_dir / name).read_bytes(), name
    assert sum((model_dir / name).stat().st_size for name in names) < 1_000_000
    tiny.write_tiny_qwen(tmp_path / "other", seed=1)
    assert (tmp_path / "other" / "model.safetensors").read_bytes() != (
        model_dir / "model.safetensors"
    ).read_bytes()
    assert (tmp_path / "other" / "tokenizer.json").read_bytes() == (model_dir / "tokenizer.json").read_bytes()


def test_tiny_model_loads_with_every_weight(model_dir: Path) -> None:
    loaded: Any = AutoModelForCausalLM.from_pretrained(str(model_dir), output_loading_info=True)
    model, info = loaded
    assert {key: list(value) for key, value in info.items() if value} == {}
    config = model.config
    assert (config.model_type, config.hidden_size, config.num_hidden_layers) == ("qwen2", 64, 2)
    assert (config.num_attention_heads, config.num_key_value_heads, config.intermediate_size) == (4, 2, 128)
    assert (config.max_position_embeddings, config.tie_word_embeddings) == (4096, True)
    assert model.dtype == torch.float32
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    assert config.vocab_size % 64 == 0
    assert len(tokenizer) <= config.vocab_size < len(tokenizer) + 64
    assert [tokenizer.convert_tokens_to_ids(t) for t in tiny.SPECIAL_TOKENS] == [
        len(tokenizer) - 3,
        len(tokenizer) - 2,
        len(tokenizer) - 1,
    ]
    assert (tokenizer.eos_token, tokenizer.pad_token) == ("<|im_end|>", "<|endoftext|>")
    assert config.eos_token_id == tokenizer.eos_token_id
    text = "Hello, naïve world: 世界 🎉\n\ttabs and  spaces"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) < len(text.encode())  # the merges join bytes
    assert tokenizer.decode(ids) == text
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    assert rendered == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )


# Decoding


def test_greedy_replies_match_transformers_generate_alone_and_in_a_batch(chat: Any) -> None:
    stop_ids = sorted(chat.stop_ids)
    padding = list(range(chat.vocabulary, chat.model.config.vocab_size))
    expected = []
    for prompt in PROMPTS:
        ids = torch.tensor([_prompt_ids(chat, prompt)])
        with torch.inference_mode():
            generated = chat.model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                do_sample=False,
                max_new_tokens=12,
                eos_token_id=stop_ids,
                pad_token_id=chat.pad_id,
                suppress_tokens=padding,
            )[0, ids.shape[1] :].tolist()
        ended = generated[-1] in stop_ids
        expected.append(
            {
                "text": chat.tokenizer.decode(generated, skip_special_tokens=True),
                "finish_reason": "stop" if ended else "length",
                "prompt_tokens": ids.shape[1],
                "completion_tokens": len(generated),
            }
        )
    assert len({e["text"] for e in expected}) == len(PROMPTS)  # the tiny model's replies depend on the prompt
    parameters = [{"temperature": 0, "max_tokens": 12}]
    alone = [_chat(chat, [{"prompt": prompt}], parameters)[0] for prompt in PROMPTS]
    again = [_chat(chat, [{"prompt": prompt}], parameters)[0] for prompt in PROMPTS]
    batch = _chat(chat, [{"prompt": prompt} for prompt in PROMPTS], parameters * len(PROMPTS))
    assert len({len(_prompt_ids(chat, prompt)) for prompt in PROMPTS}) == len(PROMPTS)  # left padding at work
    for replies in (alone, again, batch):
        assert [{k: v for k, v in reply.items() if k != "pieces"} for reply in replies] == expected


def test_max_tokens_ends_the_reply_with_length(chat: Any) -> None:
    for max_tokens in (1, 7):
        [reply] = _chat(chat, [{"prompt": PROMPTS[1]}], [{"temperature": 0, "max_tokens": max_tokens}])
        assert (reply["finish_reason"], reply["completion_tokens"]) == ("length", max_tokens)


def test_the_context_end_ends_the_reply_with_length(chat: Any) -> None:
    assert len(_prompt_ids(chat, LONG)) > chat.context
    # The longest prompt of whole words that leaves room for 3 tokens of reply (found by bisection).
    low, high = 1, LONG.count(" ")
    while low < high:
        middle = (low + high + 1) // 2
        if len(_prompt_ids(chat, "lighthouse " * middle)) <= chat.context - 3:
            low = middle
        else:
            high = middle - 1
    [reply] = _chat(chat, [{"prompt": "lighthouse " * low}], [{"temperature": 0, "max_tokens": 100}])
    assert reply["finish_reason"] == "length"
    assert reply["prompt_tokens"] + reply["completion_tokens"] == chat.context


def test_a_stop_string_ends_the_reply_and_is_left_out(chat: Any) -> None:
    [full] = _chat(chat, [{"prompt": PROMPTS[1]}], [{"temperature": 0, "max_tokens": 24}])
    text = full["text"]
    # A stop string from the middle of the reply, where it first occurs, held back while it might be one.
    start = next(i for i in range(4, len(text) - 2) if "\ufffd" not in text[i : i + 2])
    stop = text[start : start + 2]
    cut = text.index(stop)
    parameters = {"temperature": 0, "max_tokens": 24, "stop": ["never seen", stop]}
    [reply] = _chat(chat, [{"prompt": PROMPTS[1]}], [parameters])
    assert reply["text"] == text[:cut]
    assert stop not in reply["text"]
    assert reply["finish_reason"] == "stop"
    assert reply["completion_tokens"] < full["completion_tokens"]
    [single] = _chat(chat, [{"prompt": PROMPTS[1]}], [{**parameters, "stop": stop}])
    assert single["text"] == text[:cut]


def test_pieces_are_whole_characters_and_stop_strings_are_held_back(chat: Any) -> None:
    text = "héllo 世界 🎉 — ok END and more"
    ids = chat.tokenizer(text, add_special_tokens=False)["input_ids"]
    split = [chat.tokenizer.decode([i]) for i in ids]
    assert any("\ufffd" in piece for piece in split)  # some tokens hold a part of a character
    scripted, _ = _scripted(chat, ids)
    [reply] = _chat(scripted, [{"prompt": "x"}], [{"max_tokens": 64}])
    assert reply["text"] == text
    assert (reply["finish_reason"], reply["completion_tokens"]) == ("stop", len(ids) + 1)
    assert not any("\ufffd" in piece for piece in reply["pieces"])
    assert len(reply["pieces"]) > 5
    scripted, _ = _scripted(chat, ids)
    [cut] = _chat(scripted, [{"prompt": "x"}], [{"max_tokens": 64, "stop": ["ENDING", "END"]}])
    assert cut["text"] == "héllo 世界 🎉 — ok "
    assert cut["finish_reason"] == "stop"
    assert not any("E" in piece for piece in cut["pieces"])


def test_seeds_repeat_sampled_replies(chat: Any) -> None:
    def sample(seed: int, top_p: float = 1.0) -> str:
        parameters = {"temperature": 1.0, "top_p": top_p, "max_tokens": 12, "seed": seed}
        [reply] = _chat(chat, [{"prompt": PROMPTS[0]}], [parameters])
        assert reply["completion_tokens"] >= 1
        return str(reply["text"]) + f"|{reply['completion_tokens']}"

    assert sample(7) == sample(7)
    assert sample(7) != sample(8)
    assert sample(7, top_p=0.5) == sample(7, top_p=0.5)
    assert len({sample(seed) for seed in range(4)}) == 4


def test_closing_a_reply_leaves_the_others_unchanged(chat: Any) -> None:
    records = [{"prompt": prompt} for prompt in PROMPTS]
    parameters: list[dict[str, Any]] = [
        {"temperature": 0, "max_tokens": 10},
        {"temperature": 1.0, "max_tokens": 10, "seed": 3},
        {"temperature": 0.7, "max_tokens": 14, "seed": 4},
    ]
    whole = _drain(_start(chat, records, parameters))
    scripted, model = _scripted(chat)
    closed = _drain(_start(scripted, records, parameters), close={1: 2})
    assert closed[0] == whole[0]
    assert closed[2] == whole[2]
    assert closed[1][0] == whole[1][0][:2]
    assert model.rows[0] == 3
    assert model.rows[-1] == 1  # the closed reply left the batch, then the first one finished
    assert 2 in model.rows

    scripted, model = _scripted(chat)
    replies = _start(scripted, records, parameters)
    replies[0].close()  # before it gave anything: it never enters the batch
    unstarted = _drain(replies[1:])
    assert unstarted == whole[1:]
    assert model.rows[0] == 2


def test_json_schema_replies_follow_the_schema(chat: Any) -> None:
    schema = {
        "type": "object",
        "properties": {
            "answer": {"enum": ["yes", "no", "maybe"]},
            "sure": {"type": "boolean"},
            "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 2},
        },
        "required": ["answer", "sure"],
    }
    response_format = {"type": "json_schema", "json_schema": {"name": "verdict", "schema": schema}}
    parameters = [
        {"temperature": temperature, "seed": seed, "max_tokens": 96, "response_format": response_format}
        for temperature, seed in [(0, None), (1.0, 1), (1.0, 2), (1.5, 3)]
    ]
    compiled = len(chat.grammars)
    replies = _chat(chat, [{"prompt": PROMPTS[i % 3]} for i in range(4)], parameters)
    for reply in replies:
        assert reply["finish_reason"] == "stop", reply
        jsonschema.validate(json.loads(reply["text"]), schema)
    assert len(chat.grammars) == compiled + 1  # compiled once for the batch
    # A free-text record in the same batch stays free.
    free, constrained = _chat(
        chat, [{"prompt": PROMPTS[0]}, {"prompt": PROMPTS[0]}], [{"temperature": 0}, parameters[0]]
    )
    assert free["text"] != constrained["text"]
    assert constrained["text"] == replies[0]["text"]


def test_json_object_replies_are_objects(chat: Any) -> None:
    response_format = {"type": "json_object"}
    finished = 0
    for seed in range(4):
        parameters = {"temperature": 1.0, "seed": seed, "max_tokens": 48, "response_format": response_format}
        [reply] = _chat(chat, [{"prompt": PROMPTS[0]}], [parameters])
        assert reply["text"].startswith("{")
        if reply["finish_reason"] == "stop":
            finished += 1
            assert isinstance(json.loads(reply["text"]), dict)
    assert finished >= 1
    [text] = _chat(chat, [{"prompt": PROMPTS[0]}], [{"temperature": 0, "response_format": {"type": "text"}}])
    assert text["completion_tokens"] >= 1


LONG = "lighthouse " * 5000
BAD = [
    ({}, {}, "invalid_input", "inputs.messages"),
    ({"prompt": "hi", "messages": [{"role": "user", "content": "hi"}]}, {}, "invalid_input", "inputs.prompt"),
    ({"messages": "hi"}, {}, "invalid_input", "inputs.messages"),
    ({"messages": []}, {}, "invalid_input", "inputs.messages"),
    ({"messages": [{"role": "user", "content": "hi"}, "hi"]}, {}, "invalid_input", "inputs.messages[1]"),
    ({"messages": [{"role": "tool", "content": "hi"}]}, {}, "invalid_input", "inputs.messages[0].role"),
    ({"messages": [{"content": "hi"}]}, {}, "invalid_input", "inputs.messages[0].role"),
    ({"messages": [{"role": "user", "content": 3}]}, {}, "invalid_input", "inputs.messages[0].content"),
    (
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
        {},
        "invalid_input",
        "inputs.messages[0].content",
    ),
    ({"prompt": "hi"}, {"stop": ["a", "b", "c", "d", "e"]}, "invalid_input", "parameters.stop"),
    ({"prompt": "hi"}, {"stop": [""]}, "invalid_input", "parameters.stop"),
    ({"prompt": LONG}, {}, "context_length_exceeded", "inputs.prompt"),
    ({"messages": [{"role": "user", "content": LONG}]}, {}, "context_length_exceeded", "inputs.messages"),
    (
        {"prompt": "hi"},
        {"response_format": {"type": "xml"}},
        "invalid_response_format",
        "parameters.response_format",
    ),
    (
        {"prompt": "hi"},
        {"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
        "invalid_response_format",
        "parameters.response_format.json_schema.schema",
    ),
    (
        {"prompt": "hi"},
        {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"type": "nonsense"}},
            }
        },
        "invalid_response_format",
        "parameters.response_format.json_schema.schema",
    ),
    (
        {"prompt": "hi"},
        {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"$ref": "#/$defs/a"}},
            }
        },
        "invalid_response_format",
        "parameters.response_format.json_schema.schema",
    ),
]


@pytest.mark.parametrize(("record", "parameters", "code", "field"), BAD)
def test_bad_input_is_rejected(
    chat: Any, record: dict[str, Any], parameters: dict[str, Any], code: str, field: str
) -> None:
    with pytest.raises(RejectedInput) as caught:
        qwen.inference([{"temperature": 0, **parameters}], [record], [], "tiny", chat)
    assert (caught.value.code, caught.value.field) == (code, field)
    assert caught.value.message


def test_rejections_say_what_to_change(chat: Any) -> None:
    def message(record: dict[str, Any], parameters: dict[str, Any] | None = None) -> str:
        with pytest.raises(RejectedInput) as caught:
            qwen.inference([parameters or {}], [record], [], "tiny", chat)
        return str(caught.value.message)

    role = message({"messages": [{"role": "tool", "content": "hi"}]})
    assert "'tool'" in role
    assert "system, developer, user, assistant" in role
    size = len(_prompt_ids(chat, LONG))
    assert f"{size} tokens" in message({"prompt": LONG})
    assert f"{chat.context} tokens" in message({"prompt": LONG})
    reference = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"$ref": "#/$defs/a"}}}
    assert "$defs" in message({"prompt": "hi"}, {"response_format": reference})
    assert "[" not in message({"prompt": "hi"}, {"response_format": reference})[:2]
    # One bad record fails the call (the platform then retries its records one by one).
    with pytest.raises(RejectedInput):
        qwen.inference([{}, {}], [{"prompt": "hi"}, {"messages": []}], [], "tiny", chat)


def test_system_and_developer_messages(chat: Any) -> None:
    def prompt_tokens(record: dict[str, Any], parameters: dict[str, Any]) -> int:
        [reply] = _chat(chat, [record], [{"temperature": 0, "max_tokens": 1, **parameters}])
        return int(reply["prompt_tokens"])

    template = chat.tokenizer.apply_chat_template
    conversation = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    expected = len(
        chat.tokenizer(template(conversation, tokenize=False, add_generation_prompt=True))["input_ids"]
    )
    assert prompt_tokens({"prompt": "Hi"}, {"system": "Be brief."}) == expected
    developer = [{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert prompt_tokens({"messages": developer}, {}) == expected
    parts = [{"role": "user", "content": [{"type": "text", "text": "H"}, {"type": "text", "text": "i"}]}]
    assert prompt_tokens({"messages": parts}, {"system": "Be brief."}) == expected + 1  # joined by a newline
    assert qwen.inference([], [], [], "tiny", chat) == []
