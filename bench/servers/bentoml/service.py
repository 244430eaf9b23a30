"""BentoML: the same three models as `@bentoml.service` classes, one worker each.

Started as `bentoml serve service:Echo` (or `service:Digits`, `service:DigitsBatched`) from this directory;
`BENCH_DIGITS_MODEL` is the shared model file. A BentoML API takes its JSON body's keys as arguments, so
the request body keeps the shape `{"inputs": {...}}`. The batchable variant takes a batch along its first
dimension, so its body is `{"inputs": [{...}]}` (a list of records) and its response is a list.
"""

from __future__ import annotations

import os
from typing import Any

import bentoml
import numpy as np

# One worker, and no per-request access log line (the other servers log no access lines either).
SERVICE_CONFIG: dict[str, Any] = {"workers": 1, "logging": {"access": {"enabled": False}}}


def _load_model() -> Any:
    import joblib

    return joblib.load(os.environ["BENCH_DIGITS_MODEL"])


@bentoml.service(**SERVICE_CONFIG)
class Echo:
    @bentoml.api
    async def predict(self, inputs: dict[str, str]) -> dict[str, Any]:
        return {"outputs": {"text": inputs["text"]}}


@bentoml.service(**SERVICE_CONFIG)
class Digits:
    def __init__(self) -> None:
        self.model = _load_model()

    @bentoml.api
    def predict(self, inputs: dict[str, list[float]]) -> dict[str, Any]:
        label = self.model.predict(np.asarray([inputs["pixels"]], dtype=np.float64))[0]
        return {"outputs": {"label": int(label)}}


@bentoml.service(**SERVICE_CONFIG)
class DigitsBatched:
    def __init__(self) -> None:
        self.model = _load_model()

    @bentoml.api(batchable=True, max_batch_size=32, max_latency_ms=10_000)
    def predict(self, inputs: list[dict[str, list[float]]]) -> list[dict[str, int]]:
        labels = self.model.predict(np.asarray([record["pixels"] for record in inputs], dtype=np.float64))
        return [{"label": int(label)} for label in labels]
