"""Measures the time to first token of the gallery's `qwen-chat` streamed through `modelport server` against
the same module in process, and what a stream its client drops costs the worker.

    UV_FIND_LINKS=/opt/wheels .venv/bin/python bench/chat.py --runs 30

Two random Qwen2 networks from the module's `tiny.py`, with its tokenizer and chat template: `tiny` (what the
tests and the demo serve: 400 KB, a first token in about 3 ms) and `small` (26 M parameters: a first token in
about 90 ms on one core, so serving's cost is measured against compute of the order a real model has).

- In process: the module's `load`, then its `inference` on one conversation, timed to its first piece (the
  chat template, tokenising, the prefill and the first step), one thread as the platform gives a replica on
  this machine. The median of `--runs`.
- Through the platform: a fresh `modelport server` (SQLite), the weights uploaded to a `models` bucket, the
  gallery module pushed once per network (`qwen-chat-tiny`, `qwen-chat-small`: the same code, each with its
  own default model key) and deployed with one replica. The same conversation streamed, one request at a
  time over a kept-alive connection with the admin's token, timed from sending it to the first chunk that
  holds text: through OpenAI's `POST /v1/chat/completions` (`stream: true`) and the predict route's
  server-sent events. The median of `--runs`.
- A dropped stream: a reply of up to 512 tokens asked for and its connection closed at the first token; then
  the time to first token of the next request (had the worker gone on generating, it would wait for the rest)
  and, from the request log, how long the dropped call kept the worker.

The issue's bar: through modelport, at most 1.2 x the time to first token in process.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.gallery import import_file
from harness.paths import Paths
from harness.servers import free_port, running

GALLERY = Path(__file__).resolve().parents[1] / "gallery" / "qwen-chat"
CONVERSATION = [{"role": "user", "content": "What is the capital of France, and why is it famous?"}]
DROP_TOKENS = 512


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--ready-timeout", type=float, default=300.0)
    args = parser.parse_args()
    paths = Paths.default()
    root = paths.work / "chat"
    shutil.rmtree(root, ignore_errors=True)
    tiny = import_file("qwen_chat_tiny", GALLERY / "tiny.py")
    inference = import_file("qwen_chat_inference", GALLERY / "inference.py")
    shapes = {"tiny": tiny.TINY, "small": tiny.SMALL}
    for name, shape in shapes.items():
        tiny.write_tiny_qwen(root / "weights" / name, shape=shape)

    os.environ["OMP_NUM_THREADS"] = "1"
    alone: dict[str, float] = {}
    for name in shapes:
        model = inference.load(name, str(root / "weights" / name))
        alone[name] = _median(args.runs, lambda model=model: _first_piece(inference, model))
        print(f"{name}: in process, first token in {alone[name] * 1000:.1f} ms (median of {args.runs})")

    port, token = free_port(), f"mp_{secrets.token_urlsafe(32)}"
    url = f"http://127.0.0.1:{port}"
    argv = [str(paths.tools / "modelport"), "server", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--data-dir", str(root / "data")]
    env = {"MODELPORT_BOOTSTRAP_TOKEN": token}
    log = paths.logs / "chat-server.log"
    with running(argv, paths.work, env, url, "/readyz", log, args.ready_timeout):
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=url, headers=headers, timeout=args.ready_timeout) as client:
            _deploy(client, root, shapes, args.ready_timeout)
            for name in shapes:
                module = f"qwen-chat-{name}"
                openai = _median(args.runs, lambda module=module: _first_chunk(client, *_openai(module)))
                predict = _median(args.runs, lambda module=module: _first_chunk(client, *_predict(module)))
                for route, seconds in (("OpenAI chat route", openai), ("predict route", predict)):
                    print(
                        f"{name}: {route}, first token in {seconds * 1000:.1f} ms "
                        f"({seconds / alone[name]:.2f} x in process)"
                    )
                print(f"{name}: {_where_the_time_went(client, module, 2 * args.runs)}")
            _dropped(client, "qwen-chat-small", args.runs)
    return 0


def _median(runs: int, measure: Callable[[], float]) -> float:
    measure()  # warm
    return statistics.median(measure() for _ in range(runs))


def _first_piece(inference: ModuleType, model: Any) -> float:
    started = time.perf_counter()
    (record,) = inference.inference(
        [{"max_tokens": 16, "temperature": 0}], [{"messages": CONVERSATION}], [], "default", model
    )
    pieces = record["text"]
    next(piece for piece in pieces if piece)
    elapsed = time.perf_counter() - started
    pieces.close()
    return elapsed


def _deploy(client: httpx.Client, root: Path, shapes: dict[str, Any], timeout: float) -> None:
    """The weights into a `models` bucket, and the gallery module deployed once per network."""
    storage = {"apiVersion": "modelport/v1", "kind": "Storage", "metadata": {"name": "models"}}
    _ok(client.post("/api/v1/apply", json={"documents": [storage]}))
    for name in shapes:
        for path in sorted((root / "weights" / name).iterdir()):
            key = f"qwen-chat/{name}/{path.name}"
            _ok(client.put(f"/api/v1/storage/models/objects/{key}", content=path.read_bytes()))
    from modelport.artifacts import pack  # the harness runs in the project's environment

    deadline = time.monotonic() + timeout
    for name in shapes:
        module = root / "modules" / f"qwen-chat-{name}"
        shutil.copytree(GALLERY, module, ignore=shutil.ignore_patterns("__pycache__", "tests"))
        manifest = module / "modelport.yaml"
        text = manifest.read_text().replace("name: qwen-chat", f"name: qwen-chat-{name}")
        manifest.write_text(re.sub(r"key: tiny\b", f"key: {name}", text))
        artifact = pack(module, version="v1", use_git=False)
        _ok(
            client.post(
                f"/api/v1/modules/{artifact.name}/versions",
                params={"version": "v1"},
                content=artifact.data,
                headers={"Content-Type": "application/gzip", "X-Content-Digest": artifact.digest},
            )
        )
    for name in shapes:
        module = f"qwen-chat-{name}"
        while client.get(f"/api/v1/modules/{module}/versions/v1").json()["build_status"] not in (
            "ready",
            "failed",
        ):
            _before(deadline, f"{module} to build")
        _ok(client.post(f"/api/v1/modules/{module}/deploy", json={"version": "v1"}))
        while (deployment := client.get(f"/api/v1/modules/{module}").json()["deployment"])[
            "status"
        ] != "ready":
            if deployment["status"] == "failed":
                raise SystemExit(f"{module} failed to deploy: {deployment['message']}")
            _before(deadline, f"{module} to deploy")


def _before(deadline: float, what: str) -> None:
    if time.monotonic() > deadline:
        raise SystemExit(f"timed out waiting for {what}")
    time.sleep(0.2)


def _ok(response: httpx.Response) -> None:
    if response.status_code >= 300:
        raise SystemExit(
            f"{response.request.method} {response.request.url}: {response.status_code} {response.text}"
        )


def _openai(module: str, max_tokens: int = 16) -> tuple[str, dict[str, Any], Callable[[dict[str, Any]], str]]:
    body = {
        "model": module,
        "messages": CONVERSATION,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
    }

    def text(event: dict[str, Any]) -> str:
        choices = event.get("choices") or [{}]
        return str(choices[0].get("delta", {}).get("content") or "")

    return "/v1/chat/completions", body, text


def _predict(module: str) -> tuple[str, dict[str, Any], Callable[[dict[str, Any]], str]]:
    body = {
        "inputs": {"messages": CONVERSATION},
        "parameters": {"max_tokens": 16, "temperature": 0},
        "stream": True,
    }
    return f"/api/v1/modules/{module}/predict", body, lambda event: str(event.get("delta") or "")


def _first_chunk(
    client: httpx.Client, path: str, body: dict[str, Any], text: Callable[[dict[str, Any]], str]
) -> float:
    """Seconds from sending the request to the first event that holds text (the rest is read to its end)."""
    return _stream_times(client, path, body, text)[0]


def _stream_times(
    client: httpx.Client, path: str, body: dict[str, Any], text: Callable[[dict[str, Any]], str]
) -> tuple[float, float]:
    """Seconds from sending the request to the first event that holds text, and to the stream's end."""
    started, first = time.perf_counter(), 0.0
    with client.stream("POST", path, json=body) as answer:
        if answer.status_code != 200:
            raise SystemExit(f"{path}: {answer.status_code} {answer.read().decode()}")
        for line in answer.iter_lines():
            if not first and line.startswith("data: {") and text(json.loads(line[6:])):
                first = time.perf_counter() - started
    return first, time.perf_counter() - started


def _where_the_time_went(client: httpx.Client, module: str, calls: int) -> str:
    """The medians of the module's newest calls in the request log: whole replies of 16 tokens, so the
    worker's share (`compute`) is the whole generation, and the rest is the platform's."""
    time.sleep(2)  # the request log's flush
    found = client.get("/api/v1/requests", params={"module": module, "limit": calls}).json()["requests"]

    def median(field: str) -> float:
        return statistics.median(call[field] for call in found)

    return (
        f"request log, median of {len(found)} calls: total {median('total_ms'):.1f} ms, waiting for the "
        f"worker {median('queue_ms'):.2f} ms, in the worker {median('compute_ms'):.1f} ms"
    )


def _dropped(client: httpx.Client, module: str, runs: int) -> None:
    """A reply of up to DROP_TOKENS tokens dropped at its first token, then the next request's first token."""
    idle = _median(runs, lambda: _first_chunk(client, *_openai(module)))
    path, body, text = _openai(module, DROP_TOKENS)
    with client.stream("POST", path, json=body) as answer:
        request_id = answer.headers["X-Request-Id"]
        for line in answer.iter_lines():
            if line.startswith("data: {") and text(json.loads(line[6:])):
                break  # the client goes away here
    after = _first_chunk(client, *_openai(module))
    time.sleep(2)  # the request log's flush
    call = client.get(f"/api/v1/requests/{request_id}").json()
    _, whole = _stream_times(client, *_openai(module, DROP_TOKENS))  # the same reply, read to its end
    print(
        f"small: a stream dropped at its first token (of up to {DROP_TOKENS}): the call kept the worker "
        f"{call['compute_ms']:.0f} ms and ended {call['status']} {call['code']}; the next request's first "
        f"token came in {after * 1000:.1f} ms (idle: {idle * 1000:.1f} ms); read to its end, the same "
        f"reply takes {whole * 1000:.0f} ms"
    )


if __name__ == "__main__":
    raise SystemExit(main())
