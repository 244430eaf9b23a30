"""Tests of the text-classifier gallery module, calling `inference.py` directly (no server)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from modelport.core.manifests import load_module_manifest
from modelport.sdk import Kind, parse_docstring
from modelport.sdk.spec import check_value

MODULE_DIR = Path(__file__).resolve().parents[1]
LABELS = {"sports", "technology", "cooking", "weather", "finance"}

# Written for these tests; none of them is in data/corpus.csv.
HELD_OUT = [
    ("The goalkeeper was injured and the team lost the cup final.", "sports"),
    ("The players celebrated their championship win with the fans.", "sports"),
    ("My phone keeps restarting after the latest software update.", "technology"),
    ("The new laptop ships with more memory and a faster chip.", "technology"),
    ("Stir in the garlic and let the sauce simmer gently.", "cooking"),
    ("Bake the bread until the crust is golden.", "cooking"),
    ("Tomorrow will be windy with heavy showers in the west.", "weather"),
    ("Snow and ice are expected on the roads tonight.", "weather"),
    ("The bank cut its savings rate and shares fell.", "finance"),
    ("Investors bought bonds as stock prices dropped.", "finance"),
]


def _import_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "gallery_text_classifier_inference", MODULE_DIR / "inference.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


classifier = _import_module()


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return classifier.load("default", str(tmp_path_factory.mktemp("text-model")))


def _predict(model: Any, texts: list[str], top_ks: list[int] | None = None) -> list[dict[str, Any]]:
    parameters = [{"top_k": k} for k in (top_ks or [3] * len(texts))]
    result: list[dict[str, Any]] = classifier.inference(
        parameters, [{"text": t} for t in texts], [], "default", model
    )
    return result


def test_docstring_declares_the_api() -> None:
    spec = parse_docstring(classifier.inference.__doc__)
    assert spec.title.startswith("Classify a short English text by topic")
    [text] = spec.inputs
    assert (text.name, text.types[0].kind, text.required, text.minimum) == ("text", Kind.STR, True, 1)
    assert check_value(text, "") is not None  # an empty text is refused before the module sees it
    [top_k] = spec.parameters
    assert (top_k.name, top_k.types[0].kind, top_k.default) == ("top_k", Kind.INT, 3)
    assert (top_k.minimum, top_k.maximum) == (1, len(LABELS))
    assert [(f.name, f.types[0].kind) for f in spec.outputs] == [("label", Kind.STR), ("scores", Kind.JSON)]


def test_manifest_is_valid_and_its_example_fits_the_spec() -> None:
    manifest = load_module_manifest(MODULE_DIR)
    assert manifest.metadata.name == "text-classifier"
    assert manifest.spec.load == "inference.py:load"
    example = manifest.spec.example
    assert example is not None
    spec = parse_docstring(classifier.inference.__doc__)
    for group in ("inputs", "parameters"):
        for name, value in example[group].items():
            field = spec.get(group, name)
            assert field is not None, f"{group}.{name} is not declared"
            assert check_value(field, value) is None


def test_models_directory_is_ignored_by_git() -> None:
    assert "models/" in (MODULE_DIR / ".gitignore").read_text().split()


def test_corpus_is_balanced_and_labelled() -> None:
    texts, labels = classifier.read_corpus(classifier.CORPUS.read_text(encoding="utf-8"))
    assert len(texts) >= 120
    assert len(set(texts)) == len(texts)
    assert set(labels) == LABELS
    assert all(texts)
    held_out = {t for t, _ in HELD_OUT}
    assert not held_out & set(texts)


def test_load_trains_once_then_reuses_the_saved_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = classifier.load("default", str(tmp_path))
    saved = tmp_path / classifier.MODEL_FILE
    assert [p.name for p in tmp_path.iterdir()] == [classifier.MODEL_FILE]
    stamp = saved.stat().st_mtime_ns

    def no_training(*args: object) -> None:
        raise AssertionError("load retrained although a saved model exists")

    monkeypatch.setattr(classifier, "train", no_training)
    second = classifier.load("default", str(tmp_path))
    assert saved.stat().st_mtime_ns == stamp
    assert _predict(second, ["Sunny and warm all week."]) == _predict(first, ["Sunny and warm all week."])


def test_load_retrains_when_the_corpus_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    classifier.load("default", str(tmp_path))
    corpus = tmp_path / "corpus.csv"
    corpus.write_text(
        "text,label\nthe cat sat on the mat,cats\na dog chased the ball,dogs\n", encoding="utf-8"
    )
    monkeypatch.setattr(classifier, "CORPUS", corpus)
    model = classifier.load("default", str(tmp_path))
    assert sorted(model.classes_) == ["cats", "dogs"]


def test_training_is_deterministic(model: Any) -> None:
    texts, labels = classifier.read_corpus(classifier.CORPUS.read_text(encoding="utf-8"))
    probe = [t for t, _ in HELD_OUT]
    assert (classifier.train(texts, labels).predict_proba(probe) == model.predict_proba(probe)).all()


@pytest.mark.parametrize(("text", "expected"), HELD_OUT)
def test_held_out_sentences_are_classified(model: Any, text: str, expected: str) -> None:
    [result] = _predict(model, [text])
    assert result["label"] == expected


def test_scores_are_sorted_probabilities(model: Any) -> None:
    [result] = _predict(model, ["Heavy rain and strong winds are forecast for tomorrow."], [5])
    scores = result["scores"]
    assert [set(s) for s in scores] == [{"label", "score"}] * 5
    assert {s["label"] for s in scores} == LABELS
    values = [s["score"] for s in scores]
    assert values == sorted(values, reverse=True)
    assert sum(values) == pytest.approx(1.0, abs=1e-4)
    assert scores[0]["label"] == result["label"] == "weather"


def test_top_k_is_honoured_per_record(model: Any) -> None:
    texts = [t for t, _ in HELD_OUT[:5]]
    top_ks = [1, 5, 2, 3, 4]
    results = _predict(model, texts, top_ks)
    assert [len(r["scores"]) for r in results] == top_ks
    assert [r["label"] for r in results] == [label for _, label in HELD_OUT[:5]]


def test_a_batch_answers_each_record_in_order(model: Any) -> None:
    order = [HELD_OUT[i] for i in (9, 0, 4, 6, 2, 7)]
    results = _predict(model, [t for t, _ in order])
    assert [r["label"] for r in results] == [label for _, label in order]
    assert _predict(model, []) == []


def test_text_without_known_words_still_gets_an_answer(model: Any) -> None:
    [result] = _predict(model, ["   "])
    assert result["label"] in LABELS
    assert len(result["scores"]) == 3
