"""The gallery's text classifier, served as `modelport dev` serves it, on the texts its documentation sends it
and on more sentences whose topic nobody would doubt."""

from __future__ import annotations

import csv
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from modelport.core.manifests import load_module_manifest

ROOT = Path(__file__).resolve().parent.parent
CLASSIFIER = ROOT / "gallery" / "text-classifier"
CLEAR_MARGIN = 0.5  # between the first topic's probability and the second's

# Every text the documentation shows the classifier, with the topic a reader expects: the gallery README's
# calls and prose, the manifest's `example` and the call `modelport server --demo` prints.
SAMPLES = {
    "The striker scored a late goal to win the derby.": "sports",
    "Snow is expected tonight.": "weather",
    "Shares fell after the results.": "finance",
    "Whisk the eggs with the sugar.": "cooking",
    "It's snowing.": "weather",
    "Update the software.": "technology",
    "Heavy rain and strong winds are forecast for tomorrow.": "weather",
    "My laptop battery drains since the update.": "technology",
}

# Short sentences a visitor might type; none of them is in the corpus.
OBVIOUS = {
    "We won the game.": "sports",
    "Who scored the goal?": "sports",
    "He is a great footballer.": "sports",
    "The race starts at noon.": "sports",
    "The World Cup is next summer.": "sports",
    "The tennis match was delayed by rain.": "sports",
    "My laptop is too slow.": "technology",
    "I need a new phone charger.": "technology",
    "The internet is down again.": "technology",
    "My email is not syncing.": "technology",
    "Dinner is pasta with tomato sauce.": "cooking",
    "Add two eggs and some milk.": "cooking",
    "The cake is in the oven.": "cooking",
    "Chop the garlic.": "cooking",
    "the recipe needs butter, flour and an oven at 180 degrees": "cooking",
    "It is sunny today.": "weather",
    "Will it rain tomorrow?": "weather",
    "Strong winds tonight.": "weather",
    "The forecast is for frost.": "weather",
    "The stock market fell.": "finance",
    "I need to pay my taxes.": "finance",
    "Interest rates are rising.": "finance",
    "The bank refused the loan.": "finance",
    "How much money do I owe?": "finance",
    "Pay the invoice by Friday.": "finance",
}


def documented_texts() -> set[str]:
    """The texts the README's calls, the manifest's example and the demo's printed call send."""
    readme = (CLASSIFIER / "README.md").read_text(encoding="utf-8")
    demo_call = (ROOT / "modelport" / "cli" / "main.py").read_text(encoding="utf-8")
    texts = set(re.findall(r'"text": "([^"]+)"', readme + demo_call))
    texts |= set(re.findall(r"inputs\.text='([^']+)'", readme))
    example = load_module_manifest(CLASSIFIER).spec.example
    assert example is not None
    texts.add(example["inputs"]["text"])
    return texts


def test_every_documented_text_has_the_topic_a_reader_expects() -> None:
    documented = documented_texts()
    assert len(documented) >= 6  # the patterns above still find the calls
    assert {text: SAMPLES.get(text) for text in documented if text not in SAMPLES} == {}


def test_the_obvious_sentences_are_not_in_the_corpus() -> None:
    with (CLASSIFIER / "data" / "corpus.csv").open(encoding="utf-8", newline="") as fh:
        corpus = {row["text"].strip().lower() for row in csv.DictReader(fh)}
    assert {text for text in [*SAMPLES, *OBVIOUS] if text.lower() in corpus} == set()


@pytest.fixture
def classifier(tmp_path: Path) -> Path:
    """A copy of the module, so that the model it trains on first start lands in the test's directory."""
    target = tmp_path / "text-classifier"
    shutil.copytree(CLASSIFIER, target, ignore=shutil.ignore_patterns("models", "tests", "__pycache__"))
    return target


async def test_the_served_classifier_labels_samples_clearly_and_obvious_sentences_right(
    serve: Any, classifier: Path
) -> None:
    async with serve(classifier, worker_threads=1) as served:  # a fit this small only waits on more threads
        answers = {}
        for texts in (SAMPLES, OBVIOUS):
            response = await served.predict(inputs=[{"text": t} for t in texts], parameters={"top_k": 2})
            assert response.status_code == 200, response.text
            answers.update(zip(texts, response.json()["outputs"], strict=True))
    labels = {text: answer["label"] for text, answer in answers.items()}
    assert {t: labels[t] for t in SAMPLES if labels[t] != SAMPLES[t]} == {}
    assert {t: labels[t] for t in OBVIOUS if labels[t] != OBVIOUS[t]} == {}
    margins = {t: answers[t]["scores"][0]["score"] - answers[t]["scores"][1]["score"] for t in SAMPLES}
    assert {t: round(m, 3) for t, m in margins.items() if m < CLEAR_MARGIN} == {}
