"""The gallery's `qwen-chat` on a real `modelport server`, as an operator runs it: the weights (a tiny
randomly initialised Qwen2, made by the module's `tiny.py`) uploaded with `modelport storage cp -r`, the
module pushed and deployed from the gallery, then called with the official `openai` client (whole and
streamed), through the predict route, and by concurrent callers whose streams share one batch.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import openai
import pytest
from drive import deploy, push, wait_built, wait_deployment
from manifests import bucket
from platform_server import ADMIN_TOKEN, ServerProcess

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]  # the first test waits for the PyTorch build

GALLERY = Path(__file__).resolve().parents[2] / "gallery" / "qwen-chat"
QUESTION = [{"role": "user", "content": "What is two plus two?"}]
CLI = (sys.executable, "-m", "modelport")


def write_tiny(directory: Path) -> None:
    spec = importlib.util.spec_from_file_location("qwen_tiny", GALLERY / "tiny.py")
    assert spec is not None and spec.loader is not None
    tiny = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tiny)
    tiny.write_tiny_qwen(directory)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("qwen")
    server = ServerProcess(
        root / "server", token=ADMIN_TOKEN, env={"MODELPORT_REQUEST_LOG_FLUSH_SECONDS": "0.1"}
    )
    server.start()
    try:
        with server.client(timeout=60) as admin:
            applied = admin.post("/api/v1/apply", json={"documents": [bucket("models", "/operators")]})
            assert applied.status_code == 200, applied.text
            write_tiny(root / "weights")
            uploaded = subprocess.run(
                [*CLI, "storage", "cp", "-r", "--quiet", str(root / "weights"), "models/qwen-chat/tiny/"],
                env={**os.environ, "MODELPORT_URL": server.url, "MODELPORT_TOKEN": ADMIN_TOKEN},
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert uploaded.returncode == 0, uploaded.stderr
            module = root / "qwen-chat"
            shutil.copytree(GALLERY, module, ignore=shutil.ignore_patterns("__pycache__", "tests"))
            manifest = module / "modelport.yaml"  # a batch window wide enough for a busy test machine
            manifest.write_text(re.sub(r"batchWaitMs: \d+", "batchWaitMs: 300", manifest.read_text()))
            assert push(admin, module, version="v1").status_code == 201
            built = wait_built(admin, "qwen-chat", "v1", timeout=300)
            assert built["build_status"] == "ready", built
            deployment = wait_deployment(
                admin, "qwen-chat", deploy(admin, "qwen-chat", "v1")["generation"], 120
            )
            assert deployment["status"] == "ready", deployment
        yield server
    finally:
        server.stop()


@pytest.fixture
def client(server: ServerProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key=ADMIN_TOKEN, max_retries=0, timeout=60) as made:
        yield made


def test_openai_chats_with_the_tiny_qwen(client: openai.OpenAI) -> None:
    assert [model.id for model in client.models.list().data] == ["qwen-chat"]
    first = client.chat.completions.create(model="qwen-chat", messages=QUESTION, max_tokens=8, temperature=0)
    again = client.chat.completions.create(model="qwen-chat", messages=QUESTION, max_tokens=8, temperature=0)
    (choice,) = first.choices
    assert choice.message.content == again.choices[0].message.content  # greedy: the same reply
    assert choice.finish_reason in ("stop", "length")
    assert first.usage is not None and first.usage.prompt_tokens > len("What is two plus two?")
    assert 1 <= first.usage.completion_tokens <= 8

    streamed = client.chat.completions.create(
        model="qwen-chat",
        messages=QUESTION,
        max_tokens=8,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(streamed)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == choice.message.content  # streamed or not, one decoder
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == first.usage.completion_tokens


def test_a_json_schema_constrains_the_reply(client: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {
            "answer": {"type": "integer", "minimum": 0, "maximum": 99},
            "sure": {"type": "boolean"},
        },
        "required": ["answer", "sure"],
        "additionalProperties": False,
    }
    reply = client.chat.completions.create(
        model="qwen-chat",
        messages=QUESTION,
        max_tokens=64,
        temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "sum", "schema": schema}},
    )
    content = reply.choices[0].message.content
    assert content is not None and reply.choices[0].finish_reason == "stop", content
    jsonschema.validate(json.loads(content), schema)


def test_a_prompt_past_the_context_is_a_clear_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(
            model="qwen-chat", messages=[{"role": "user", "content": "word " * 6000}]
        )
    assert refused.value.code == "context_length_exceeded"
    assert "4096" in refused.value.message
    # the worker lives on
    assert client.chat.completions.create(model="qwen-chat", messages=QUESTION, max_tokens=2).choices


def test_concurrent_callers_share_a_batch_and_each_gets_its_stream(server: ServerProcess) -> None:
    """Three streams asked for while the worker decodes another batch wait for it together, then decode as
    one batch, each caller getting its own reply, as when asked alone."""
    topics = ("cats", "rain", "bread")

    def body(topic: str) -> dict[str, Any]:
        messages = [{"role": "user", "content": f"Tell me about {topic}."}]
        return {
            "model": "qwen-chat",
            "messages": messages,
            "max_tokens": 12,
            "temperature": 0,
            "stream": True,
        }

    async def ask(client: httpx.AsyncClient, topic: str) -> tuple[str, str]:
        text = ""
        async with client.stream("POST", "/v1/chat/completions", json=body(topic)) as answer:
            assert answer.status_code == 200
            async for line in answer.aiter_lines():
                if line.startswith("data: {"):
                    choices = json.loads(line[6:])["choices"]
                    text += (choices[0]["delta"].get("content") or "") if choices else ""
        return answer.headers["X-Request-Id"], text

    async def together() -> list[tuple[str, str]]:
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=120) as client:
            await asyncio.gather(*(client.get("/v1/models") for _ in range(4)))  # four open connections
            # A long batch keeps the worker busy meanwhile, so the three wait in the queue together however
            # slowly a loaded machine lets them arrive (8 sampled replies run to hundreds of tokens).
            records = [{"prompt": f"Count to {n}."} for n in range(8)]
            options = {"max_tokens": 1024, "temperature": 1.0, "seed": 1}
            busy = asyncio.ensure_future(
                client.post(
                    "/api/v1/modules/qwen-chat/predict", json={"inputs": records, "parameters": options}
                )
            )
            await asyncio.sleep(0.6)  # past the batch window: the long batch is in the worker
            answers = list(await asyncio.gather(*(ask(client, topic) for topic in topics)))
            assert (await busy).status_code == 200
            return answers

    answers = asyncio.run(together())
    alone = [asyncio.run(_alone(server, body(topic))) for topic in topics]
    assert [text for _, text in answers] == alone
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as admin:
        ids, deadline, sizes = {request_id for request_id, _ in answers}, time.monotonic() + 10, {}
        while time.monotonic() < deadline and len(sizes) < len(ids):
            listed = admin.get("/api/v1/requests", params={"module": "qwen-chat", "limit": 20}).json()
            sizes = {r["id"]: r["batch_size"] for r in listed["requests"] if r["id"] in ids}
            time.sleep(0.2)
    assert list(sizes.values()) == [3, 3, 3], sizes


async def _alone(server: ServerProcess, body: dict[str, Any]) -> str:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=60) as client:
        answer = await client.post("/v1/chat/completions", json={**body, "stream": False})
    content: str = answer.json()["choices"][0]["message"]["content"]
    return content


def test_the_predict_route_takes_a_prompt(server: ServerProcess) -> None:
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=60
    ) as admin:
        answer = admin.post(
            "/api/v1/modules/qwen-chat/predict",
            json={"inputs": {"prompt": "Hello"}, "parameters": {"max_tokens": 3, "temperature": 0}},
        )
    assert answer.status_code == 200, answer.text
    outputs: dict[str, Any] = answer.json()["outputs"]
    assert set(outputs) == {"text", "finish_reason", "prompt_tokens", "completion_tokens"}
    assert outputs["completion_tokens"] <= 3
