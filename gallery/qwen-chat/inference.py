"""Chat with a Qwen2 language model (Qwen2.5-Instruct) on the CPU through transformers, each reply streamed.

`load` reads the tokenizer and the weights of a model directory. `inference` decodes its whole batch in one
loop (`_Decoder`): the prompts are prefilled together (left-padded), then each step runs the model once for
every reply still being written, with the KV cache, and samples one token per reply with that reply's own
settings. Each record's `text` is a generator over the shared decoder that hands out its reply as the text
settles, so the worker streams every record of the batch at once; a reply whose generator is closed (its
caller went away) leaves the batch. `response_format` constrains a reply to JSON with xgrammar.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import weakref
from collections import OrderedDict
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import torch
import xgrammar
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache

from modelport.sdk import RejectedInput

ROLES = ("system", "developer", "user", "assistant")
MAX_STOPS = 4
GRAMMARS_KEPT = 32
DEFAULTS = {"max_tokens": 128, "temperature": 1.0, "top_p": 1.0}
FORMAT_FIELD = "parameters.response_format"

Reply = Generator[str, None, dict[str, Any]]


@dataclass
class ChatModel:
    """What `load` returns: the tokenizer and the model, with what decoding needs to know about them."""

    tokenizer: Any
    model: Any
    context: int
    """Tokens the model attends to: the prompt and the reply together."""
    vocabulary: int
    """Token ids the tokenizer knows; the model's output rows past them are padding and never sampled."""
    stop_ids: frozenset[int]
    """Tokens that end a turn (`<|im_end|>`, `<|endoftext|>`)."""
    pad_id: int
    cache_argument: str
    """The name under which this transformers takes the KV cache (`cache`, formerly `past_key_values`)."""
    grammars: Grammars


def load(model_key: str, path: str) -> ChatModel:
    """Load the tokenizer and the float32 model in `path` (a Hugging Face model directory) for the CPU."""
    threads = os.environ.get("OMP_NUM_THREADS", "")
    if threads.isdigit() and int(threads) > 0:
        torch.set_num_threads(int(threads))  # the platform sizes it to this replica's share of the cores
    tokenizer = AutoTokenizer.from_pretrained(path)
    model: Any = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    model.eval()
    config = model.config
    stop_ids = _stop_ids(tokenizer, model)
    pad_id = next(i for i in (tokenizer.pad_token_id, config.pad_token_id, min(stop_ids)) if i is not None)
    return ChatModel(
        tokenizer=tokenizer,
        model=model,
        context=int(config.max_position_embeddings),
        vocabulary=min(len(tokenizer), int(config.vocab_size)),
        stop_ids=stop_ids,
        pad_id=int(pad_id),
        cache_argument=_cache_argument(model),
        grammars=Grammars(tokenizer, vocab_size=int(config.vocab_size), stop_ids=stop_ids),
    )


def inference(
    parameters: list[dict[str, Any]],
    inputs: list[dict[str, Any]],
    output_fields: list[dict[str, Any]],
    model_key: str,
    model: ChatModel,
) -> list[dict[str, Any]]:
    """Chat with a Qwen2 language model: the assistant's reply to a conversation, streamed as it is written.

    Send the conversation as `messages` (OpenAI's shape) or one user message as `prompt`, not both. Without a
    system message the model's chat template adds its default one. `response_format` constrains the reply to
    a JSON object, or to JSON that a JSON Schema accepts.

    :param inputs.messages: The conversation, a list of messages `{"role": ..., "content": ...}` whose role is
        "system", "developer", "user" or "assistant" and whose content is a string or a list of text parts
        `{"type": "text", "text": ...}`
    :type inputs.messages: json, optional

    :param inputs.prompt: One user message, for callers that have only text
    :type inputs.prompt: str, optional

    :param parameters.system: A system message put before the conversation
    :type parameters.system: str, optional

    :param parameters.max_tokens: The most tokens the reply may have
    :type parameters.max_tokens: int, default 128, min 1, max 1024

    :param parameters.temperature: Sampling temperature; 0 always takes the likeliest token
    :type parameters.temperature: float, default 1.0, min 0, max 2

    :param parameters.top_p: Sample only from the likeliest tokens whose probabilities add up to `top_p`
    :type parameters.top_p: float, default 1.0, min 0.01, max 1

    :param parameters.stop: Up to 4 strings; the reply ends before the first of them, which it leaves out
    :type parameters.stop: str or list[str], optional

    :param parameters.seed: The sampling's seed: the same seed and request give the same reply
    :type parameters.seed: int, optional

    :param parameters.response_format: OpenAI's `{"type": "text"}`, `{"type": "json_object"}` or
        `{"type": "json_schema", "json_schema": {"name": ..., "schema": {...}}}`
    :type parameters.response_format: json, optional

    :param outputs.text: The reply, streamed as it is generated
    :type outputs.text: str, stream

    :param outputs.finish_reason: "stop" (the end of the turn or a stop string) or "length" (`max_tokens` or
        the model's context ran out)
    :type outputs.finish_reason: str, one of ["stop", "length"]

    :param outputs.prompt_tokens: Tokens of the prompt, the conversation in the chat template
    :type outputs.prompt_tokens: int

    :param outputs.completion_tokens: Tokens generated
    :type outputs.completion_tokens: int
    """
    requests = [_request(model, record, params) for record, params in zip(inputs, parameters, strict=True)]
    if not requests:
        return []
    return [{"text": reply} for reply in _Decoder(model, requests).replies()]


# The request of one record


@dataclass(frozen=True)
class _Request:
    prompt: list[int]
    max_tokens: int
    temperature: float
    top_p: float
    stops: tuple[str, ...]
    seed: int | None
    grammar: Any
    """xgrammar's compiled grammar the reply must follow; None: free text."""


def _request(chat: ChatModel, record: dict[str, Any], parameters: dict[str, Any]) -> _Request:
    """The record's prompt in token ids and its decoding settings; `RejectedInput` if it cannot be served."""
    source, conversation = _conversation(record, parameters.get("system"))
    stops = _stops(parameters.get("stop"))
    grammar = chat.grammars.for_format(parameters.get("response_format"))
    text = chat.tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
    prompt = list(chat.tokenizer(text, add_special_tokens=False)["input_ids"])
    if len(prompt) >= chat.context:
        raise RejectedInput(
            f"the prompt is {len(prompt)} tokens in the chat template, and the model's context holds "
            f"{chat.context} tokens for the prompt and the reply together",
            field=f"inputs.{source}",
            code="context_length_exceeded",
        )
    seed = parameters.get("seed")
    return _Request(
        prompt=prompt,
        max_tokens=int(_setting(parameters, "max_tokens")),
        temperature=float(_setting(parameters, "temperature")),
        top_p=float(_setting(parameters, "top_p")),
        stops=stops,
        seed=None if seed is None else int(seed),
        grammar=grammar,
    )


def _setting(parameters: dict[str, Any], name: str) -> Any:
    value = parameters.get(name)
    return DEFAULTS[name] if value is None else value


def _conversation(record: dict[str, Any], system: str | None) -> tuple[str, list[dict[str, str]]]:
    """The input the record sent (`messages` or `prompt`), and the conversation for the chat template."""
    messages, prompt = record.get("messages"), record.get("prompt")
    if messages is not None and prompt is not None:
        raise RejectedInput(
            "send the conversation as `messages` or one user message as `prompt`, not both",
            field="inputs.prompt",
        )
    if prompt is not None:
        if not isinstance(prompt, str):
            raise RejectedInput("`prompt` is a string", field="inputs.prompt")
        source, turns = "prompt", [{"role": "user", "content": prompt}]
    elif messages is not None:
        source, turns = "messages", _messages(messages)
    else:
        raise RejectedInput(
            "send the conversation as `messages`, or one user message as `prompt`", field="inputs.messages"
        )
    if system is not None:
        turns.insert(0, {"role": "system", "content": system})
    return source, turns


def _messages(messages: Any) -> list[dict[str, str]]:
    if not isinstance(messages, list) or not messages:
        raise RejectedInput(
            '`messages` is a non-empty list of messages `{"role": ..., "content": ...}`',
            field="inputs.messages",
        )
    return [_message(index, message) for index, message in enumerate(messages)]


def _message(index: int, message: Any) -> dict[str, str]:
    where = f"inputs.messages[{index}]"
    if not isinstance(message, dict):
        raise RejectedInput(
            f"message {index} is {_kind(message)}; expected an object with `role` and `content`", field=where
        )
    role = message.get("role")
    if not isinstance(role, str) or role not in ROLES:
        found = f"the role {role!r}" if role is not None else "no role"
        raise RejectedInput(
            f"message {index} has {found}; expected one of {', '.join(ROLES)}", field=f"{where}.role"
        )
    return {
        "role": "system" if role == "developer" else role,
        "content": _content(index, message.get("content")),
    }


def _content(index: int, content: Any) -> str:
    """A message's text: the string, or its text parts joined by newlines."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
        for part in content
    ):
        return "\n".join(part["text"] for part in content)
    raise RejectedInput(
        f"the content of message {index} is {_kind(content)}; expected a string or a list of text parts "
        '`{"type": "text", "text": ...}`',
        field=f"inputs.messages[{index}].content",
    )


def _stops(stop: Any) -> tuple[str, ...]:
    stops = [] if stop is None else [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise RejectedInput("`stop` is a non-empty string or a list of them", field="parameters.stop")
    if len(stops) > MAX_STOPS:
        raise RejectedInput(f"{len(stops)} stop strings; at most {MAX_STOPS}", field="parameters.stop")
    return tuple(stops)


def _kind(value: Any) -> str:
    return "null" if value is None else f"a {type(value).__name__}"


# Constrained decoding


class Grammars:
    """The grammars of `response_format`s, compiled by xgrammar once per schema (the latest 32 are kept)."""

    def __init__(self, tokenizer: Any, *, vocab_size: int, stop_ids: frozenset[int]) -> None:
        self._tokenizer, self._vocab_size, self._stop_ids = tokenizer, vocab_size, stop_ids
        self._compiler: xgrammar.GrammarCompiler | None = None
        self._compiled: OrderedDict[str, xgrammar.CompiledGrammar] = OrderedDict()

    def __len__(self) -> int:
        """How many compiled grammars are kept."""
        return len(self._compiled)

    def for_format(self, response_format: Any) -> xgrammar.CompiledGrammar | None:
        """The grammar that OpenAI's `response_format` asks for (None: text); `RejectedInput` if none can."""
        wanted = _schema(response_format)
        if wanted is None:
            return None
        schema, strict = wanted
        key = json.dumps([schema, strict], sort_keys=True)
        if key in self._compiled:
            self._compiled.move_to_end(key)
            return self._compiled[key]
        try:
            compiled = self._compiler_for().compile_json_schema(
                json.dumps(schema), any_whitespace=False, strict_mode=strict
            )
        except (RuntimeError, ValueError, TypeError) as exc:
            raise RejectedInput(
                f"the schema cannot constrain the reply: {_reason(exc)}",
                field=f"{FORMAT_FIELD}.json_schema.schema",
                code="invalid_response_format",
            ) from None
        self._compiled[key] = compiled
        if len(self._compiled) > GRAMMARS_KEPT:
            self._compiled.popitem(last=False)
        return compiled

    def _compiler_for(self) -> xgrammar.GrammarCompiler:
        if self._compiler is None:
            info = xgrammar.TokenizerInfo.from_huggingface(
                self._tokenizer, vocab_size=self._vocab_size, stop_token_ids=sorted(self._stop_ids)
            )
            self._compiler = xgrammar.GrammarCompiler(info, max_threads=1)
        return self._compiler


def _reason(exc: Exception) -> str:
    """xgrammar's message without the time and the C++ source line it starts with."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return re.sub(r"^\[[0-9:]+\] \S+:[0-9]+: ", "", first)


def _schema(response_format: Any) -> tuple[dict[str, Any], bool] | None:
    """The JSON Schema a reply must match and whether objects are closed to undeclared keys; None for text.

    `json_object` is any JSON object. A `json_schema`'s objects take only the keys it declares unless it says
    otherwise (`additionalProperties`), as OpenAI's strict mode does."""
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if response_format is None or kind == "text":
        return None
    if kind == "json_object":
        return {"type": "object"}, False
    if kind != "json_schema":
        raise RejectedInput(
            f"unknown response format {kind!r}; expected text, json_object or json_schema",
            field=FORMAT_FIELD,
            code="invalid_response_format",
        )
    spec = response_format.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    if not isinstance(schema, dict):
        raise RejectedInput(
            "a json_schema response format holds its schema as "
            '`{"json_schema": {"name": ..., "schema": {...}}}`',
            field=f"{FORMAT_FIELD}.json_schema.schema",
            code="invalid_response_format",
        )
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise RejectedInput(
            f"not a JSON Schema: {exc.message}",
            field=f"{FORMAT_FIELD}.json_schema.schema",
            code="invalid_response_format",
        ) from None
    return schema, True


# Decoding


class _Row:
    """One record's reply: its tokens, its text as far as it has settled, and how much of it went out."""

    def __init__(self, request: _Request) -> None:
        self.request = request
        self.tokens: list[int] = []
        self.text = ""
        self.ready = 0
        """`text[:ready]` may go out: no stop string can start in it."""
        self.sent = 0
        self.finish_reason: str | None = None
        self.generator = _generator(request.seed) if request.temperature > 0 else None
        self.matcher = xgrammar.GrammarMatcher(request.grammar) if request.grammar is not None else None

    def take(self) -> str:
        piece, self.sent = self.text[self.sent : self.ready], self.ready
        return piece

    def finish(self, text: str, reason: str) -> None:
        self.text, self.ready, self.finish_reason = text, len(text), reason

    def outputs(self) -> dict[str, Any]:
        return {
            "finish_reason": self.finish_reason,
            "prompt_tokens": len(self.request.prompt),
            "completion_tokens": len(self.tokens),
        }


class _Decoder:
    """One batch's replies, decoded together: each step runs the model once for every row still generating."""

    def __init__(self, chat: ChatModel, requests: list[_Request]) -> None:
        self.chat = chat
        self._rows = [_Row(request) for request in requests]
        self._replies: list[weakref.ref[Reply]] = []
        self._live: list[int] = []
        """The rows in the batch, in the KV cache's order."""
        self._mask: torch.Tensor | None = None
        self._cache: DynamicCache | None = None
        self._started = False

    def replies(self) -> list[Reply]:
        """A generator per row: its text in pieces, then (as its return value) its other outputs."""
        replies = [self._reply(index) for index in range(len(self._rows))]
        self._replies = [weakref.ref(reply) for reply in replies]
        return replies

    def _reply(self, index: int) -> Reply:
        row = self._rows[index]
        while True:
            if piece := row.take():
                yield piece
            elif row.finish_reason is not None:
                return row.outputs()
            else:
                self._step()

    def _step(self) -> None:
        """One token more for every live row (after the prefill, for the first step)."""
        with torch.inference_mode():
            if self._started:
                self._keep([index for index in self._live if not self._abandoned(index)])
                logits = self._decode()
            else:
                logits = self._prefill()
            tokens = self._sample(logits)
            for index, token in zip(self._live, tokens, strict=True):
                self._accept(self._rows[index], token)
            self._keep([index for index in self._live if self._rows[index].finish_reason is None])

    def _prefill(self) -> torch.Tensor:
        self._started = True
        self._live = [index for index in range(len(self._rows)) if not self._abandoned(index)]
        prompts = [self._rows[index].request.prompt for index in self._live]
        width = max(len(prompt) for prompt in prompts)
        ids = torch.full((len(prompts), width), self.chat.pad_id, dtype=torch.long)
        self._mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
            self._mask[row, width - len(prompt) :] = 1
        self._cache = DynamicCache(config=self.chat.model.config)
        return self._forward(ids)

    def _decode(self) -> torch.Tensor:
        assert self._mask is not None
        last = torch.tensor([[self._rows[index].tokens[-1]] for index in self._live], dtype=torch.long)
        self._mask = torch.cat([self._mask, self._mask.new_ones((len(self._live), 1))], dim=1)
        return self._forward(last)

    def _forward(self, ids: torch.Tensor) -> torch.Tensor:
        """The next token's logits for each live row, `ids` appended to what the cache holds."""
        assert self._mask is not None
        positions = (self._mask.cumsum(-1) - 1).masked_fill(self._mask == 0, 1)[:, -ids.shape[1] :]
        out = self.chat.model(
            input_ids=ids,
            attention_mask=self._mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
            **{self.chat.cache_argument: self._cache},
        )
        logits: torch.Tensor = out.logits[:, -1, :].float()
        return logits

    def _sample(self, logits: torch.Tensor) -> list[int]:
        """A token per live row: the likeliest at temperature 0, else one sampled (top-p) by its generator."""
        logits[:, self.chat.vocabulary :] = -torch.inf
        self._constrain(logits)
        tokens = []
        for row, index in enumerate(self._live):
            request, generator = self._rows[index].request, self._rows[index].generator
            if generator is None:
                tokens.append(int(logits[row].argmax()))
                continue
            probs = torch.softmax(logits[row] / request.temperature, dim=-1)
            if request.top_p < 1:
                probs = _nucleus(probs, request.top_p)
            tokens.append(int(torch.multinomial(probs, 1, generator=generator)))
        return tokens

    def _constrain(self, logits: torch.Tensor) -> None:
        """Mask, in the rows that follow a grammar, every token that the grammar does not allow next."""
        matchers = [(row, self._rows[index].matcher) for row, index in enumerate(self._live)]
        constrained = [(row, matcher) for row, matcher in matchers if matcher is not None]
        if not constrained:
            return
        bitmask = xgrammar.allocate_token_bitmask(len(self._live), logits.shape[-1])
        for row, matcher in constrained:
            matcher.fill_next_token_bitmask(bitmask, row)
        xgrammar.apply_token_bitmask_inplace(logits, bitmask, indices=[row for row, _ in constrained])

    def _accept(self, row: _Row, token: int) -> None:
        """Add `token` to the row's reply, settle its text, and finish the row if the reply is over."""
        row.tokens.append(token)
        if row.matcher is not None and not row.matcher.accept_token(token):
            raise RuntimeError(f"the grammar refused token {token}, which its own mask allowed")
        ended = token in self.chat.stop_ids
        full = len(row.tokens) >= row.request.max_tokens
        full = full or len(row.request.prompt) + len(row.tokens) >= self.chat.context
        text = self.chat.tokenizer.decode(row.tokens, skip_special_tokens=True)
        if text.endswith("\ufffd") and not (ended or full):
            return  # the start of a character whose other bytes are still to come
        cut = _first_stop(text, row.request.stops)
        if cut is not None:
            row.finish(text[:cut], "stop")
        elif ended or full:
            row.finish(text, "stop" if ended else "length")
        else:
            row.text, row.ready = text, len(text) - _held(text, row.request.stops)

    def _keep(self, rows: list[int]) -> None:
        """Keep only `rows` in the batch (and their KV cache)."""
        if rows == self._live:
            return
        if rows and self._cache is not None and self._mask is not None:
            kept = torch.tensor([self._live.index(index) for index in rows], dtype=torch.long)
            self._cache.batch_select_indices(kept)
            self._mask = self._mask[kept]
        else:
            self._cache, self._mask = None, None
        self._live = rows

    def _abandoned(self, index: int) -> bool:
        """Whether the row's generator was closed (or dropped) before its reply was over."""
        reply = self._replies[index]()
        return reply is None or inspect.getgeneratorstate(reply) == inspect.GEN_CLOSED


def _first_stop(text: str, stops: tuple[str, ...]) -> int | None:
    found = [at for at in (text.find(stop) for stop in stops) if at >= 0]
    return min(found) if found else None


def _held(text: str, stops: tuple[str, ...]) -> int:
    """How many characters at the end of `text` could be the start of a stop string."""
    return max(
        (size for stop in stops for size in range(len(stop) - 1, 0, -1) if text.endswith(stop[:size])),
        default=0,
    )


def _nucleus(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """`probs` with only the likeliest tokens whose probabilities add up to `top_p` (at least one) left."""
    ordered, order = probs.sort(descending=True)
    ordered[ordered.cumsum(0) - ordered >= top_p] = 0
    return torch.zeros_like(probs).scatter(0, order, ordered)


def _generator(seed: int | None) -> torch.Generator:
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed % 2**64)
    return generator


def _cache_argument(model: Any) -> str:
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _stop_ids(tokenizer: Any, model: Any) -> frozenset[int]:
    """The tokens that end the assistant's turn: the chat template's and the model's end tokens."""
    vocab = tokenizer.get_vocab()
    ids = {vocab[token] for token in ("<|im_end|>", "<|endoftext|>") if token in vocab}
    for value in (tokenizer.eos_token_id, model.generation_config.eos_token_id, model.config.eos_token_id):
        ids.update(value if isinstance(value, list) else [] if value is None else [value])
    return frozenset(int(i) for i in ids)
