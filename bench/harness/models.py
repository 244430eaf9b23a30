"""The benchmarked models: what a request carries and what a correct answer contains.

The digits classifier is trained once with the harness's own scikit-learn and saved to
`bench/.work/digits.joblib`; every server loads that file, and every framework environment gets the same
scikit-learn version so that the file loads unchanged everywhere.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MODELS = ("echo", "digits", "digits-batched")


@dataclass(frozen=True)
class Workload:
    """One request record (the model's named inputs) and the output field and value a correct answer holds."""

    record: dict[str, Any]
    output_field: str
    expected: Any


def sklearn_version() -> str:
    try:
        import sklearn
    except ImportError:
        raise SystemExit(
            "scikit-learn is missing from the interpreter running the harness; "
            'install the project with `uv pip install -e ".[dev,gallery]"` (or run `make bench`).'
        ) from None
    return str(sklearn.__version__)


def prepare_digits(work: Path) -> tuple[Path, Workload]:
    """Train (once) and save the digits model; return its path and the workload of one sample image."""
    model_path, sample_path = work / "digits.joblib", work / "digits-sample.json"
    if not (model_path.exists() and sample_path.exists()):
        import joblib
        from sklearn.datasets import load_digits
        from sklearn.linear_model import LogisticRegression

        digits = load_digits()
        model = LogisticRegression(max_iter=2000).fit(digits.data, digits.target)
        pixels = [float(v) for v in digits.data[0]]
        label = int(model.predict(digits.data[:1])[0])
        work.mkdir(parents=True, exist_ok=True)
        joblib.dump(model, model_path)
        sample_path.write_text(json.dumps({"pixels": pixels, "label": label}), encoding="utf-8")
    sample = json.loads(sample_path.read_text(encoding="utf-8"))
    return model_path, Workload({"pixels": sample["pixels"]}, "label", sample["label"])


def workloads(digits: Workload) -> dict[str, Workload]:
    return {
        "echo": Workload({"text": "hello"}, "text", "hello"),
        "digits": digits,
        "digits-batched": digits,
    }


def find_field(value: Any, name: str) -> Any:
    """The first value under key `name` anywhere in a decoded JSON document (None when absent)."""
    if isinstance(value, dict):
        if name in value:
            return value[name]
        children: list[Any] = list(value.values())
    elif isinstance(value, list):
        children = value
    else:
        return None
    for child in children:
        found = find_field(child, name)
        if found is not None:
            return found
    return None
