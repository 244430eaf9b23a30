"""Benchmark module: classify an 8x8 handwritten digit with the shared scikit-learn model.

The benchmark harness trains the model once and passes its file in `BENCH_DIGITS_MODEL`, so that every
framework serves the very same weights. Without that variable the module trains its own copy (a second
or two).
"""

import functools
import os
from typing import Any

import numpy as np


def load(model_key: str, path: str) -> Any:
    """Load the shared digits model (`path`, the platform's weights directory, is not used here)."""
    model_file = os.environ.get("BENCH_DIGITS_MODEL")
    if model_file and os.path.exists(model_file):
        import joblib

        return joblib.load(model_file)
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    digits = load_digits()
    return LogisticRegression(max_iter=2000).fit(digits.data, digits.target)


@functools.cache
def _fallback_model() -> Any:
    return load("default", "")


def inference(
    parameters: list[dict[str, Any]],
    inputs: list[dict[str, Any]],
    output_fields: list[dict[str, Any]],
    model_key: str,
    model: Any = None,
) -> list[dict[str, Any]]:
    """Classify an 8x8 image of a handwritten digit.

    :param inputs.pixels: The 64 pixel intensities (0-16), row by row
    :type inputs.pixels: list[float]

    :param outputs.label: The predicted digit
    :type outputs.label: int
    """
    if model is None:  # a server that does not call `load` itself
        model = _fallback_model()
    labels = model.predict(np.asarray([record["pixels"] for record in inputs], dtype=np.float64))
    return [{"label": int(label)} for label in labels]
