"""The OpenAI-compatible routes on a real `modelport server` (SQLite), called with the official `openai`
client: the models a caller may call, embeddings of one string and of a list (floats, and base64 equal to
them), `dimensions`, chat completions whole and streamed, the errors in OpenAI's shape (401, 404, 400, 422,
429) and the calls in the request log.

One server serves every test. Its modules, owned by `/team`: `embed` (the `embedder` fixture, which takes
`dimensions`), `plain` (the same without `dimensions`), `hidden` (the same, opened to `/others` only),
`upper` (the `echo` fixture, no OpenAI role), `chat` (the `chatter` fixture, a chat role: it answers the
last user message's words, last first, printing each word it makes) and `still` (a chat role whose reply is
not streamed). `ann` is a user in `/callers`; `rob` is
in `/callers` and `/limited`, whose `Api`s allow 3 calls a minute; `eve` is in no group.
"""

from __future__ import annotations

import base64
import math
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from drive import deploy, push, wait_built, wait_deployment
from manifests import api, module_copy
from platform_server import ADMIN_TOKEN, ServerProcess

pytestmark = pytest.mark.slow

PEOPLE = {"ann": ["/callers"], "rob": ["/callers", "/limited"], "eve": []}
EMBEDDINGS = "{embeddings: true, input: text, output: embedding"
MODULES = {
    "embed": ("embedder", EMBEDDINGS + ", dimensions: dimensions}"),
    "plain": ("embedder", EMBEDDINGS + "}"),
    "hidden": ("embedder", EMBEDDINGS + "}"),
    "upper": ("echo", None),
    "chat": ("chatter", "{chat: true, messages: messages, output: text}"),
    "still": ("still_chatter", "{chat: true, messages: messages, output: text}"),
}
APIS = [
    api("embed-api", "embed", access={"groups": ["/callers"]}),
    api("embed-tight", "embed", access={"groups": ["/limited"]}, rateLimit={"perCaller": "3/minute"}),
    api("plain-api", "plain", access={"groups": ["/callers"]}),
    api("hidden-api", "hidden", access={"groups": ["/others"]}),
    api("upper-api", "upper", access={"groups": ["/callers"]}),
    api("chat-api", "chat", access={"groups": ["/callers"]}),
    api("still-api", "still", access={"groups": ["/callers"]}),
    api("chat-tight", "chat", access={"groups": ["/limited"]}, rateLimit={"perCaller": "3/minute"}),
]


@dataclass
class World:
    server: ServerProcess
    tokens: dict[str, str] = field(default_factory=dict)
    clients: list[openai.OpenAI] = field(default_factory=list)

    def openai(self, who: str, *, api_key: str | None = None) -> openai.OpenAI:
        """An OpenAI client with `who`'s token as its key (or `api_key`), which never retries."""
        key = api_key or self.tokens[who]
        client = openai.OpenAI(base_url=f"{self.server.url}/v1", api_key=key, max_retries=0, timeout=30)
        self.clients.append(client)
        return client

    def http(self, who: str) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[who]}"}
        return httpx.Client(base_url=self.server.url, headers=headers, timeout=30)


def embedding_module(root: Path, name: str, fixture: str, role: str | None) -> Path:
    directory = module_copy(root, fixture, name, "/team")
    openai_role = f"  openai: {role}\n" if role is not None else ""
    head = f"apiVersion: modelport/v1\nkind: Module\nmetadata: {{name: {name}}}\n"
    (directory / "modelport.yaml").write_text(f"{head}spec:\n  owner: /team\n{openai_role}")
    return directory


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("openai")
    server = ServerProcess(
        root / "server", token=ADMIN_TOKEN, env={"MODELPORT_REQUEST_LOG_FLUSH_SECONDS": "0.1"}
    )
    server.start()
    try:
        world = World(server, tokens={"admin": ADMIN_TOKEN})
        with server.client() as admin:
            for path in ("/team", "/callers", "/limited", "/others"):
                assert admin.post("/api/v1/groups", json={"path": path}).status_code == 201
            for name, groups in PEOPLE.items():
                made = admin.post("/api/v1/users", json={"name": name, "role": "user", "groups": groups})
                token = admin.post("/api/v1/tokens", json={"name": "tests", "user": made.json()["id"]})
                world.tokens[name] = token.json()["token"]
            for name, (fixture, role) in MODULES.items():
                pushed = push(admin, embedding_module(root, name, fixture, role), version="v1")
                assert pushed.status_code == 201, pushed.text
            for name in MODULES:
                assert wait_built(admin, name, "v1")["build_status"] == "ready"
            generations = {name: deploy(admin, name, "v1")["generation"] for name in MODULES}
            for name, generation in generations.items():
                assert wait_deployment(admin, name, generation)["status"] == "ready"
            applied = admin.post("/api/v1/apply", json={"documents": APIS})
            assert applied.status_code == 200, applied.text
        yield world
        for client in world.clients:
            client.close()
    finally:
        server.stop()


def test_the_models_are_the_modules_with_a_role_the_caller_may_call(world: World) -> None:
    client = world.openai("ann")
    models = client.models.list()
    assert [model.id for model in models.data] == ["chat", "embed", "plain", "still"]
    assert {(model.object, model.owned_by) for model in models.data} == {("model", "/team")}
    assert abs(models.data[0].created - time.time()) < 600
    assert client.models.retrieve("embed").id == "embed"
    for name in ("hidden", "upper", "nowhere"):
        with pytest.raises(openai.NotFoundError) as refused:
            client.models.retrieve(name)
        assert refused.value.code == "model_not_found"
    assert [model.id for model in world.openai("eve").models.list().data] == []
    assert [model.id for model in world.openai("admin").models.list().data] == [
        "chat",
        "embed",
        "hidden",
        "plain",
        "still",
    ]


def test_one_string_and_a_list_each_string_one_unit_vector(world: World) -> None:
    client = world.openai("ann")
    one = client.embeddings.create(model="embed", input="hello world", encoding_format="float")
    assert (one.object, one.model, len(one.data)) == ("list", "embed", 1)
    assert (one.usage.prompt_tokens, one.usage.total_tokens) == (2, 2)
    vector = one.data[0].embedding
    assert len(vector) == 64 and math.isclose(math.fsum(v * v for v in vector), 1.0, rel_tol=1e-9)

    texts = ["a cat sat", "hello world", "another one here"]
    many = client.embeddings.create(model="embed", input=texts, encoding_format="float")
    assert [item.index for item in many.data] == [0, 1, 2]
    assert many.data[1].embedding == vector  # the same text, the same vector, batched or not
    assert many.data[0].embedding != vector
    assert many.usage.prompt_tokens == 8

    small = client.embeddings.create(
        model="embed", input="hello world", encoding_format="float", dimensions=16
    )
    assert len(small.data[0].embedding) == 16


def test_base64_holds_the_float32_of_the_floats(world: World) -> None:
    client = world.openai("ann")
    floats = client.embeddings.create(model="embed", input="base64 please", encoding_format="float").data[0]
    with world.http("ann") as http:
        raw = http.post(
            "/v1/embeddings", json={"model": "embed", "input": ["base64 please"], "encoding_format": "base64"}
        )
    assert raw.status_code == 200, raw.text
    encoded = raw.json()["data"][0]["embedding"]
    decoded = struct.unpack("<64f", base64.b64decode(encoded))
    assert list(decoded) == [struct.unpack("<f", struct.pack("<f", v))[0] for v in floats.embedding]
    # The client asks for base64 when told nothing, and decodes it itself.
    default = client.embeddings.create(model="embed", input="base64 please").data[0].embedding
    assert default == list(decoded)


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    error: dict[str, Any] = body["error"]
    return error


def test_errors_come_in_openais_shape(world: World) -> None:
    with pytest.raises(openai.AuthenticationError) as bad_key:
        world.openai("ann", api_key="mp_not-a-token").embeddings.create(model="embed", input="x")
    assert (bad_key.value.status_code, bad_key.value.code) == (401, "invalid_api_key")
    assert bad_key.value.type == "authentication_error"

    for who, model in (("ann", "nowhere"), ("eve", "embed"), ("ann", "hidden"), ("ann", "upper")):
        with pytest.raises(openai.NotFoundError) as missing:
            world.openai(who).embeddings.create(model=model, input="x")
        assert (missing.value.code, missing.value.type) == ("model_not_found", "invalid_request_error"), who

    client = world.openai("ann")
    with pytest.raises(openai.BadRequestError) as tokens:
        client.embeddings.create(model="embed", input=[[1, 2, 3]])
    assert (tokens.value.code, tokens.value.param) == ("bad_request", "input")
    assert "token arrays" in tokens.value.message
    with pytest.raises(openai.BadRequestError) as no_dimensions:
        client.embeddings.create(model="plain", input="x", dimensions=8)
    assert no_dimensions.value.param == "dimensions"
    with pytest.raises(openai.UnprocessableEntityError) as too_large:
        client.embeddings.create(model="embed", input="x", dimensions=5000)
    assert (too_large.value.code, too_large.value.param) == ("validation_failed", "dimensions")

    with world.http("ann") as http:
        assert error_of(http.post("/v1/embeddings", content=b"{not json"))["code"] == "invalid_json"
        assert error_of(http.post("/v1/embeddings", json={"input": "x"}))["param"] == "model"
        empty = error_of(http.post("/v1/embeddings", json={"model": "embed", "input": []}))
        assert (empty["type"], empty["param"]) == ("invalid_request_error", "input")
        not_chat = error_of(http.post("/v1/chat/completions", json={"model": "embed", "messages": []}))
        assert (not_chat["code"], not_chat["message"]) == (
            "model_not_found",
            "model 'embed' does not serve chat completions",
        )
    anonymous = httpx.post(f"{world.server.url}/v1/embeddings", json={"model": "embed", "input": "x"})
    assert (anonymous.status_code, error_of(anonymous)["code"]) == (401, "invalid_api_key")


def test_calls_over_the_rate_limit_are_429_with_retry_after(world: World) -> None:
    client = world.openai("rob")
    for _ in range(3):
        client.embeddings.create(model="embed", input="within the limit", encoding_format="float")
    with pytest.raises(openai.RateLimitError) as limited:
        client.embeddings.create(model="embed", input="one too many", encoding_format="float")
    assert (limited.value.code, limited.value.type) == ("rate_limit_exceeded", "rate_limit_error")
    assert int(limited.value.response.headers["Retry-After"]) >= 1
    assert limited.value.response.headers["RateLimit-Remaining"] == "0"
    # The limit is the module's, whichever route is called.
    with world.http("rob") as http:
        predicted = http.post("/api/v1/modules/embed/predict", json={"inputs": {"text": "x"}})
    assert predicted.status_code == 429
    # Others are not held back by rob's calls.
    world.openai("ann").embeddings.create(model="embed", input="still fine", encoding_format="float")


def test_the_request_log_holds_the_calls(world: World) -> None:
    raw = world.openai("ann").embeddings.with_raw_response.create(
        model="embed", input=["logged", "twice"], encoding_format="float"
    )
    request_id = raw.headers["X-Request-Id"]
    assert raw.headers["X-Model-Version"] == "v1"
    with world.http("admin") as admin:
        deadline = time.monotonic() + 10
        found: list[dict[str, Any]] = []
        while time.monotonic() < deadline and not found:
            calls = admin.get("/api/v1/requests", params={"module": "embed", "caller": "ann"}).json()[
                "requests"
            ]
            found = [call for call in calls if call["id"] == request_id]
            time.sleep(0.1)
        assert found, calls
        assert (found[0]["status"], found[0]["records"], found[0]["version"]) == (200, 2, "v1")
        refused = admin.get("/api/v1/requests", params={"module": "embed", "status": "422"}).json()[
            "requests"
        ]
        assert any(call["code"] == "validation_failed" for call in refused)


# Chat completions

HELLO = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "one two three four"}]


def test_a_chat_completion_answers_whole(world: World) -> None:
    raw = world.openai("ann").chat.completions.with_raw_response.create(
        model="chat", messages=HELLO, temperature=0.5, seed=7
    )
    completion = raw.parse()
    assert raw.headers["X-Model-Version"] == "v1"
    assert completion.id == f"chatcmpl-{raw.headers['X-Request-Id']}"
    assert (completion.object, completion.model) == ("chat.completion", "chat")
    (choice,) = completion.choices
    assert (choice.message.role, choice.message.content) == ("assistant", "four three two one seed7")
    assert choice.finish_reason == "stop"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (6, 5)
    assert completion.usage.total_tokens == 11

    short = world.openai("ann").chat.completions.create(model="chat", messages=HELLO, max_tokens=2)
    assert (short.choices[0].message.content, short.choices[0].finish_reason) == ("four three", "length")
    stopped = world.openai("ann").chat.completions.create(model="chat", messages=HELLO, stop=["two"])
    assert stopped.choices[0].message.content == "four three"
    parts = [{"role": "user", "content": [{"type": "text", "text": "a b"}, {"type": "text", "text": " c"}]}]
    assert world.openai("ann").chat.completions.create(model="chat", messages=parts).choices[
        0
    ].message.content == ("c b a")


def test_a_streamed_completion_comes_in_chunks_then_its_usage(world: World) -> None:
    stream = world.openai("ann").chat.completions.create(
        model="chat", messages=HELLO, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == "four three two one"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert len({chunk.id for chunk in chunks}) == 1
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (6, 4)


def test_the_first_chunk_comes_before_the_module_has_finished(world: World) -> None:
    words = " ".join(f"w{i}" for i in range(12))
    started = time.monotonic()
    stream = world.openai("ann").chat.completions.create(
        model="chat",
        messages=[{"role": "user", "content": words}],
        stream=True,
        extra_body={"pause": 0.25},
    )
    with stream:
        pieces = []
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append((time.monotonic() - started, chunk.choices[0].delta.content))
    assert "".join(piece for _, piece in pieces) == " ".join(f"w{i}" for i in reversed(range(12)))
    first, last = pieces[0][0], pieces[-1][0]
    assert last >= 12 * 0.25 - 0.1  # the module took its time over every word
    assert first < 1.5 < last  # and the first reached the client long before the last was made


def test_a_client_that_drops_the_stream_stops_the_generation(world: World) -> None:
    words = " ".join(f"w{i}" for i in range(60))
    with (
        world.http("ann") as http,
        http.stream(
            "POST",
            "/v1/chat/completions",
            json={
                "model": "chat",
                "messages": [{"role": "user", "content": words}],
                "stream": True,
                "max_tokens": 60,
                "pause": 0.05,
            },
        ) as response,
    ):
        assert response.status_code == 200
        request_id = response.headers["X-Request-Id"]
        for line in response.iter_lines():
            if '"content":"w59"' in line:
                break  # the first word: the client goes away here
    made = _settled_log_lines(world, request_id)
    assert 1 <= made < 40, made
    with world.http("admin") as admin:
        call = _logged(admin, request_id)
    assert (call["status"], call["code"]) == (499, "client_closed")


def _settled_log_lines(world: World, request_id: str) -> int:
    """How many words the module made for the call, once its log stops growing (for 0.5 s)."""
    count, since, deadline = -1, time.monotonic(), time.monotonic() + 10
    with world.http("admin") as admin:
        while time.monotonic() < deadline:
            lines = admin.get("/api/v1/modules/chat/logs", params={"request_id": request_id}).json()["lines"]
            now = sum("made word" in line["line"] for line in lines)
            if now != count:
                count, since = now, time.monotonic()
            elif time.monotonic() - since >= 0.5:
                return count
            time.sleep(0.1)
    raise AssertionError(f"the module still made words after 10 s ({count} so far)")


def _logged(admin: httpx.Client, request_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = admin.get(f"/api/v1/requests/{request_id}")
        if found.status_code == 200:
            call: dict[str, Any] = found.json()
            return call
        time.sleep(0.1)
    raise AssertionError(f"request {request_id} is not in the request log")


def test_bad_chat_requests_get_openais_errors(world: World) -> None:
    client = world.openai("ann")
    with pytest.raises(openai.NotFoundError) as missing:
        world.openai("eve").chat.completions.create(model="chat", messages=HELLO)
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.AuthenticationError):
        world.openai("ann", api_key="mp_wrong").chat.completions.create(model="chat", messages=HELLO)
    with pytest.raises(openai.UnprocessableEntityError) as too_many:
        client.chat.completions.create(model="chat", messages=HELLO, max_tokens=500)
    assert (too_many.value.code, too_many.value.param) == ("validation_failed", "max_tokens")
    assert "64" in too_many.value.message
    with pytest.raises(openai.BadRequestError) as long_prompt:
        client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "word " * 300}])
    assert (long_prompt.value.code, long_prompt.value.param) == ("context_length_exceeded", "inputs.messages")
    assert "300 words" in long_prompt.value.message and "holds 200" in long_prompt.value.message
    with pytest.raises(openai.BadRequestError) as unsupported:
        client.chat.completions.create(model="chat", messages=HELLO, response_format={"type": "json_object"})
    assert unsupported.value.param == "response_format"
    cases = [
        ({"messages": "hello"}, "messages"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({"messages": HELLO, "max_tokens": 0}, "max_tokens"),
        ({"messages": HELLO, "temperature": 3}, "temperature"),
        ({"messages": HELLO, "n": 2}, "n"),
        ({"messages": HELLO, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"messages": HELLO, "tools": []}, "tools"),
    ]
    with world.http("ann") as http:
        for body, param in cases:
            response = http.post("/v1/chat/completions", json={"model": "chat", **body})
            assert response.status_code == 400, (body, response.text)
            assert error_of(response)["param"] == param, body
        held = http.post("/v1/chat/completions", json={"model": "chat", "messages": [{"role": "user"}]})
        assert error_of(held)["param"] == "messages[0].content"
        deep = http.post(
            "/v1/chat/completions", content=b'{"model": "chat", "x": ' + b"[" * 80 + b"]" * 80 + b"}"
        )
        assert deep.status_code == 400 and "nested deeper than 64 levels" in error_of(deep)["message"]
    # The worker is none the worse for any of it.
    assert client.chat.completions.create(model="chat", messages=HELLO).choices[0].message.content


def test_a_module_without_a_streamed_reply_answers_whole_and_refuses_a_stream(world: World) -> None:
    client = world.openai("ann")
    whole = client.chat.completions.create(model="still", messages=HELLO)
    assert (whole.choices[0].message.content, whole.choices[0].finish_reason) == (
        "ONE TWO THREE FOUR",
        "stop",
    )
    assert whole.usage is not None and (whole.usage.prompt_tokens, whole.usage.completion_tokens) == (6, 4)
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="still", messages=HELLO, stream=True)
    assert "does not stream its replies" in refused.value.message
    with pytest.raises(openai.BadRequestError) as no_options:
        client.chat.completions.create(model="still", messages=HELLO, temperature=0.2)
    assert no_options.value.param == "temperature"


def test_chat_calls_are_limited_with_the_module(world: World) -> None:
    client = world.openai("rob")
    statuses = []
    for _ in range(4):
        try:
            client.chat.completions.create(model="chat", messages=HELLO)
            statuses.append(200)
        except openai.RateLimitError as limited:
            statuses.append(limited.status_code)
    assert statuses == [200, 200, 200, 429]
