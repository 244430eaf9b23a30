"""Topic classifier for short English texts: TF-IDF features and logistic regression, served by modelport.

The model is trained from `data/corpus.csv` (one labelled sentence a row) the first time it is needed and
saved in the model directory; it is retrained when the corpus or the scikit-learn version changes.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import pickle
import tempfile
import warnings
from pathlib import Path
from typing import Any

CORPUS = Path(__file__).resolve().parent / "data" / "corpus.csv"
MODEL_FILE = "model.pkl"


def load(model_key: str, path: str) -> Any:
    """Return the classifier saved in `path`, training and saving it there when missing or out of date."""
    import sklearn

    corpus = CORPUS.read_bytes()
    stamp = {"sklearn_version": sklearn.__version__, "corpus_sha256": hashlib.sha256(corpus).hexdigest()}
    target = Path(path) / MODEL_FILE
    if target.exists():
        with target.open("rb") as fh, warnings.catch_warnings():
            # scikit-learn warns when unpickling across versions; the stamp check below handles that.
            warnings.simplefilter("ignore")
            saved = pickle.load(fh)
        if isinstance(saved, dict) and all(saved.get(k) == v for k, v in stamp.items()):
            return saved["model"]
    texts, labels = read_corpus(corpus.decode("utf-8"))
    model = train(texts, labels)
    _save_atomically({**stamp, "model": model}, target)
    return model


def read_corpus(text: str) -> tuple[list[str], list[str]]:
    """Parse a CSV with `text` and `label` columns."""
    rows = list(csv.DictReader(io.StringIO(text)))
    return [r["text"].strip() for r in rows], [r["label"].strip() for r in rows]


def train(texts: list[str], labels: list[str]) -> Any:
    """Fit word and character n-gram TF-IDF features with a logistic regression on top."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline, make_union

    features = make_union(
        TfidfVectorizer(sublinear_tf=True, stop_words="english"),
        # Character n-grams cope with word forms the small corpus never saw ("forecasts", "forecasting").
        TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), sublinear_tf=True),
    )
    model = make_pipeline(features, LogisticRegression(C=20.0, max_iter=2000))
    model.fit(texts, labels)
    return model


def inference(
    parameters: list[dict[str, Any]],
    inputs: list[dict[str, Any]],
    output_fields: list[dict[str, Any]],
    model_key: str,
    model: Any = None,
) -> list[dict[str, Any]]:
    """Classify a short English text by topic: sports, technology, cooking, weather or finance.

    Works best on a sentence or two. The scores are the model's probabilities, best first.

    :param inputs.text: The text to classify
    :type inputs.text: str, min 1, max 10000

    :param parameters.top_k: How many labels to list in `scores`
    :type parameters.top_k: int, default 3, min 1, max 5

    :param outputs.label: The most likely topic
    :type outputs.label: str

    :param outputs.scores: The `top_k` most likely topics with their probabilities, best first,
        as a list of objects like `{"label": "weather", "score": 0.93}`
    :type outputs.scores: json
    """
    if not inputs:
        return []
    probabilities = model.predict_proba([record["text"] for record in inputs])
    classes = [str(c) for c in model.classes_]
    results = []
    for row, params in zip(probabilities, parameters, strict=True):
        top_k = params.get("top_k") or 3
        ranked = sorted(zip(classes, row, strict=True), key=lambda pair: (-pair[1], pair[0]))[:top_k]
        results.append(
            {
                "label": ranked[0][0],
                "scores": [{"label": label, "score": round(float(score), 6)} for label, score in ranked],
            }
        )
    return results


def _save_atomically(payload: Any, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            pickle.dump(payload, fh, protocol=pickle.HIGHEST_PROTOCOL)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
