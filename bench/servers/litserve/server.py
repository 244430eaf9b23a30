"""LitServe: the same three models as `LitAPI`s at `POST /predict`, one inference worker, one API server.

Usage: `python server.py MODEL PORT`, MODEL being `echo`, `digits` or `digits-batched`;
`BENCH_DIGITS_MODEL` is the shared model file. `digits-batched` uses LitServe's dynamic batching
(`max_batch_size=32`, `batch_timeout` 2 ms).
"""

import os
import sys
from typing import Any

import litserve as ls
import numpy as np


class EchoAPI(ls.LitAPI):
    def setup(self, device: str) -> None:
        pass

    def decode_request(self, request: dict[str, Any]) -> str:
        return request["inputs"]["text"]

    def predict(self, x: str) -> str:
        return x

    def encode_response(self, output: str) -> dict[str, Any]:
        return {"outputs": {"text": output}}


class DigitsAPI(ls.LitAPI):
    def setup(self, device: str) -> None:
        import joblib

        self.model = joblib.load(os.environ["BENCH_DIGITS_MODEL"])

    def decode_request(self, request: dict[str, Any]) -> list[float]:
        return request["inputs"]["pixels"]

    def batch(self, inputs: list[list[float]]) -> np.ndarray:
        return np.asarray(inputs, dtype=np.float64)

    def predict(self, x: Any) -> Any:
        if self.max_batch_size > 1:  # x is the stacked batch made by `batch`
            return self.model.predict(x)
        return int(self.model.predict(np.asarray([x], dtype=np.float64))[0])

    def unbatch(self, output: np.ndarray) -> list[int]:
        return [int(label) for label in output]

    def encode_response(self, output: int) -> dict[str, Any]:
        return {"outputs": {"label": output}}


def main() -> None:
    model_name, port = sys.argv[1], int(sys.argv[2])
    if model_name == "echo":
        api: ls.LitAPI = EchoAPI()
    elif model_name == "digits":
        api = DigitsAPI()
    elif model_name == "digits-batched":
        api = DigitsAPI(max_batch_size=32, batch_timeout=0.002)
    else:
        raise SystemExit(f"unknown model {model_name!r}")
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1)
    server.run(
        host="127.0.0.1", port=port, num_api_servers=1, log_level="warning", generate_client_file=False
    )


if __name__ == "__main__":
    main()
