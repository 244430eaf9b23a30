"""`modelport server --demo` (what `make run` starts): the gallery pushed, built, deployed and callable (the
language models through OpenAI's client), the receipt pipelines applied and reading a receipt, and its page
served."""

from __future__ import annotations

import time
from pathlib import Path

import openai
import pytest
from PIL import Image
from platform_server import ADMIN_TOKEN, ServerProcess

ROOT = Path(__file__).resolve().parents[2]
DEMO_MODULES = [
    "digits",
    "text-classifier",
    "tesseract-ocr",
    "receipt-extractor",
    "minilm-embeddings",
    "qwen-chat",
]


def _wait_all_ready(client, names, timeout=240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        modules = {m["name"]: m for m in client.get("/api/v1/modules").json()["modules"]}
        deployments = [modules.get(name, {}).get("deployment") or {} for name in names]
        if all(d.get("status") == "ready" and d.get("serving") for d in deployments):
            return modules
        failed = [d for d in deployments if d.get("status") == "failed"]
        assert not failed, failed
        time.sleep(0.5)
    raise AssertionError(f"the demo modules were not ready within {timeout} s")


@pytest.mark.timeout(480)  # the language models' environments (PyTorch) are built on the first start
def test_the_demo_serves_the_gallery_and_restarts_without_pushing_again(tmp_path):
    server = ServerProcess(tmp_path / "demo", token=ADMIN_TOKEN, args=("--demo",))
    server.start()
    try:
        with server.client() as client:
            modules = _wait_all_ready(client, DEMO_MODULES)
            versions = {name: m["deployment"]["version"] for name, m in modules.items()}
            call = client.post(
                "/api/v1/modules/text-classifier/predict",
                json={"inputs": {"text": "the recipe needs butter, flour and an oven at 180 degrees"}},
            )
            assert call.status_code == 200, call.text
            assert call.json()["outputs"]["label"] == "cooking"
            assert call.headers["x-model-version"] == versions["text-classifier"]
            _read_receipts(client, tmp_path)
            _speak_openai(server.url)
            page = client.get("/apps/receipt-webapp/")
            assert page.status_code == 200 and "receipt" in page.text.lower()
        output = "".join(server.output)
        assert "deploying digits" in output and "API docs:" in output
        assert "Pipeline receipt-payments created" in output and "/apps/receipt-webapp/" in output
        assert "Pipeline receipt-payments-llm created" in output
        assert "demo: made the tiny weights of qwen-chat" in output
        server.stop()

        server.start()
        with server.client() as client:
            modules = _wait_all_ready(client, DEMO_MODULES, timeout=120)
            assert {name: m["deployment"]["version"] for name, m in modules.items()} == versions
            assert all(m["versions"] == 1 for m in modules.values())
        assert "deploying" not in "".join(server.output)
    finally:
        server.stop()


def _read_receipts(client, tmp_path):
    """The demo's pipeline reads the gallery's example receipt, and refuses what is no photo of one."""
    url = "/api/v1/pipelines/receipt-payments/predict"
    example = ROOT / "gallery" / "tesseract-ocr" / "examples" / "receipt-en.png"
    with example.open("rb") as photo:
        read = client.post(url, files={"inputs.image": ("receipt.png", photo, "image/png")})
    assert read.status_code == 200, read.text
    outputs = read.json()["outputs"]
    assert outputs["total"] > 0 and outputs["currency"] and outputs["date"], outputs
    assert set(read.json()["steps"]) == {"ocr", "extract"}

    steps = client.get("/api/v1/requests", params={"parent": read.json()["request_id"]})
    deadline = time.monotonic() + 10
    while len(steps.json()["requests"]) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
        steps = client.get("/api/v1/requests", params={"parent": read.json()["request_id"]})
    assert sorted(r["step"] for r in steps.json()["requests"]) == ["extract", "ocr"]

    text = client.post(url, files={"inputs.image": ("receipt.png", b"not a picture at all", "image/png")})
    assert text.status_code == 422, text.text

    error = text.json()["error"]
    assert error["details"]["step"] == "ocr" and error["details"]["details"][0]["code"] == "content_type"

    tiny = tmp_path / "tiny.png"
    Image.new("L", (1, 1), 255).save(tiny)
    with tiny.open("rb") as photo:
        blank = client.post(url, files={"inputs.image": ("tiny.png", photo, "image/png")})
    assert blank.status_code == 200, blank.text
    assert blank.json()["outputs"] == {"text": ""}  # nothing read, nothing invented

    huge = tmp_path / "huge.png"
    Image.new("1", (8000, 6500), 1).save(huge)  # 52 megapixels in a few kilobytes
    with huge.open("rb") as photo:
        refused = client.post(url, files={"inputs.image": ("huge.png", photo, "image/png")})
    assert refused.status_code == 413, refused.text

    # The language model's variant: the tiny random model's reply is set aside, and the rules answer.
    with example.open("rb") as photo:
        llm = client.post(
            "/api/v1/pipelines/receipt-payments-llm/predict",
            files={"inputs.image": ("receipt.png", photo, "image/png")},
            timeout=120,
        )
    assert llm.status_code == 200, llm.text
    assert set(llm.json()["steps"]) == {"ocr", "read", "extract"}
    answered = llm.json()["outputs"]
    assert answered["answer_check"] != "used" and answered["model_reply"]
    assert {key: answered.get(key) for key in outputs} == outputs


def _speak_openai(url):
    """The demo's language models answer OpenAI's client."""
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=ADMIN_TOKEN, max_retries=0, timeout=60)
    with client:
        assert {"minilm-embeddings", "qwen-chat"} <= {model.id for model in client.models.list().data}
        vectors = client.embeddings.create(model="minilm-embeddings", input=["a cat", "a kitten"])
        assert [len(item.embedding) for item in vectors.data] == [384, 384]
        chunks = client.chat.completions.create(
            model="qwen-chat", messages=[{"role": "user", "content": "Hello"}], max_tokens=4, stream=True
        )
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
