"""The OpenAI-compatible routes on a real `modelport server` (SQLite), called with the official `openai`
client: the models a caller may call, embeddings of one string and of a list (floats, and base64 equal to
them), `dimensions`, the errors in OpenAI's shape (401, 404, 400, 422, 429) and the calls in the request log.

One server serves every test. Its modules, owned by `/team`: `embed` (the `embedder` fixture, which takes
`dimensions`), `plain` (the same without `dimensions`), `hidden` (the same, opened to `/others` only) and
`upper` (the `echo` fixture, no OpenAI role). `ann` is a user in `/callers`; `rob` is in `/callers` and
`/limited`, whose `Api` allows 3 calls a minute; `eve` is in no group.
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
}
APIS = [
    api("embed-api", "embed", access={"groups": ["/callers"]}),
    api("embed-tight", "embed", access={"groups": ["/limited"]}, rateLimit={"perCaller": "3/minute"}),
    api("plain-api", "plain", access={"groups": ["/callers"]}),
    api("hidden-api", "hidden", access={"groups": ["/others"]}),
    api("upper-api", "upper", access={"groups": ["/callers"]}),
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
    assert [model.id for model in models.data] == ["embed", "plain"]
    assert {(model.object, model.owned_by) for model in models.data} == {("model", "/team")}
    assert abs(models.data[0].created - time.time()) < 600
    assert client.models.retrieve("embed").id == "embed"
    for name in ("hidden", "upper", "nowhere"):
        with pytest.raises(openai.NotFoundError) as refused:
            client.models.retrieve(name)
        assert refused.value.code == "model_not_found"
    assert [model.id for model in world.openai("eve").models.list().data] == []
    assert [model.id for model in world.openai("admin").models.list().data] == ["embed", "hidden", "plain"]


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
        assert error_of(http.post("/v1/chat/completions", json={"model": "embed"}))["code"] == "not_found"
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
