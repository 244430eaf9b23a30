"""A tiny, randomly initialised Qwen2 chat model, written from scratch for the tests and the demo.

`write_tiny_qwen(directory)` (or `python tiny.py OUT_DIR`) writes what `transformers` loads offline with
`AutoTokenizer.from_pretrained` and `AutoModelForCausalLM.from_pretrained`: the Qwen2 configuration, a
byte-level BPE tokenizer with Qwen2's special tokens and ChatML chat template, and float32 weights in the
safetensors format. The model knows nothing (its replies are random bytes) but it has the real architecture,
so it runs the same code as Qwen2.5-Instruct does. Only the standard library and numpy are used, so the
platform can write the model without torch; the same seed always gives the same bytes.
"""

from __future__ import annotations

import itertools
import json
import re
import struct
import sys
from collections import Counter
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

__all__ = ["CONTEXT", "SMALL", "SPECIAL_TOKENS", "TINY", "Shape", "write_tiny_qwen"]

CONTEXT = 4096
"""The model's context in tokens: small, so that a test can exceed it."""


class Shape(NamedTuple):
    """The sizes of a Qwen2 network (the tokenizer is the same for every shape)."""

    hidden: int = 64
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 128


TINY = Shape()
"""What the tests and the demo use: 400 KB, a reply in milliseconds."""
SMALL = Shape(hidden=512, layers=8, heads=8, kv_heads=2, intermediate=1536)
"""A network whose compute is not negligible beside serving (about 26 M parameters, 100 MB): what the chat
benchmark measures a time to first token against."""
MERGES = 192
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")

# Qwen2's own pre-tokenizer: this split, then bytes as GPT-2's printable characters.
_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)
# The same split for ASCII text in Python's `re` (no \p classes), used only to learn the merges.
_ASCII_SPLIT = re.compile(
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\na-zA-Z0-9]?[a-zA-Z]+|[0-9]| ?[^\sa-zA-Z0-9]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)

# Qwen2-Instruct's chat template (ChatML), with its default system message.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Text the merges are learned from: the chat template's words and some plain English.
_CORPUS = """
system You are a helpful assistant. user assistant
Hello! How are you today? I am fine, thank you. What can I do for you?
Tell me a story about a lighthouse on the coast, and the keeper who lived there with his cat.
The quick brown fox jumps over the lazy dog. The answer is yes, the answer is no.
Please answer in JSON: {"name": "value", "count": 3, "items": ["one", "two", "three"]}.
Write a short poem about the weather in the morning and the evening, the rain and the sun.
What is the capital of France? The capital of France is Paris. Translate this sentence into German.
Summarise the following text in one sentence, then list three questions that it leaves open.
"""


def write_tiny_qwen(directory: Path, *, seed: int = 0, shape: Shape = TINY) -> None:
    """Write the model's configuration, tokenizer and float32 random weights into `directory`: the tiny
    network, or another `shape`."""
    directory.mkdir(parents=True, exist_ok=True)
    vocab, merges = _vocabulary()
    special = {token: len(vocab) + i for i, token in enumerate(SPECIAL_TOKENS)}
    size = len(vocab) + len(special)
    vocab_size = -(-size // 64) * 64
    files: dict[str, Any] = {
        "config.json": _config(vocab_size, special, shape),
        "generation_config.json": _generation_config(special),
        "tokenizer.json": _tokenizer(vocab, merges, special),
        "tokenizer_config.json": _tokenizer_config(special),
    }
    for name, document in files.items():
        text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
        (directory / name).write_text(text, encoding="utf-8")
    (directory / "model.safetensors").write_bytes(_safetensors(_weights(vocab_size, seed, shape)))


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map of each byte to a printable character, so that a byte-level BPE vocabulary is text."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {byte: chr(char) for byte, char in zip(printable, chars, strict=True)}


def _vocabulary() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """One token per byte (ordered as GPT-2's), then a token for each merge learned from `_CORPUS`."""
    alphabet = sorted(bytes_to_unicode().values())
    merges = _learn_merges(_CORPUS, MERGES)
    tokens = [*alphabet, *(left + right for left, right in merges)]
    return {token: index for index, token in enumerate(tokens)}, merges


def _learn_merges(text: str, count: int) -> list[tuple[str, str]]:
    """Byte-pair merges, the most frequent pair first (ties: the smaller), of pairs seen twice or more."""
    encode = bytes_to_unicode()
    words = Counter(
        tuple(encode[b] for b in piece.encode("utf-8")) for piece in _ASCII_SPLIT.findall(text.strip())
    )
    merges: list[tuple[str, str]] = []
    while len(merges) < count:
        pairs: Counter[tuple[str, str]] = Counter()
        for word, seen in words.items():
            for pair in itertools.pairwise(word):
                pairs[pair] += seen
        if not pairs:
            break
        best = min(pairs, key=lambda pair: (-pairs[pair], pair))
        if pairs[best] < 2:
            break
        merges.append(best)
        words = Counter({_merge(word, best): seen for word, seen in words.items()})
    return merges


def _merge(word: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    out: list[str] = []
    index = 0
    while index < len(word):
        if index + 1 < len(word) and (word[index], word[index + 1]) == pair:
            out.append(pair[0] + pair[1])
            index += 2
        else:
            out.append(word[index])
            index += 1
    return tuple(out)


def _tokenizer(
    vocab: dict[str, int], merges: list[tuple[str, str]], special: dict[str, int]
) -> dict[str, Any]:
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {
                "id": index,
                "content": token,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": True,
            }
            for token, index in special.items()
        ],
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": _SPLIT}, "behavior": "Isolated", "invert": False},
                byte_level,
            ],
        },
        "post_processor": byte_level,
        "decoder": byte_level,
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": "",
            "end_of_word_suffix": "",
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": vocab,
            "merges": [list(pair) for pair in merges],
        },
    }


def _tokenizer_config(special: dict[str, int]) -> dict[str, Any]:
    return {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": {
            str(index): {
                "content": token,
                "lstrip": False,
                "normalized": False,
                "rstrip": False,
                "single_word": False,
                "special": True,
            }
            for token, index in special.items()
        },
        "bos_token": None,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": CONTEXT,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }


def _config(vocab_size: int, special: dict[str, int], shape: Shape) -> dict[str, Any]:
    return {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "attention_dropout": 0.0,
        "bos_token_id": special["<|endoftext|>"],
        "eos_token_id": special["<|im_end|>"],
        "pad_token_id": special["<|endoftext|>"],
        "hidden_act": "silu",
        "hidden_size": shape.hidden,
        "initializer_range": 0.02,
        "intermediate_size": shape.intermediate,
        "max_position_embeddings": CONTEXT,
        "max_window_layers": shape.layers,
        "num_attention_heads": shape.heads,
        "num_hidden_layers": shape.layers,
        "num_key_value_heads": shape.kv_heads,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "sliding_window": None,
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": vocab_size,
    }


def _generation_config(special: dict[str, int]) -> dict[str, Any]:
    return {
        "bos_token_id": special["<|endoftext|>"],
        "eos_token_id": [special["<|im_end|>"], special["<|endoftext|>"]],
        "pad_token_id": special["<|endoftext|>"],
    }


def _weights(vocab_size: int, seed: int, shape: Shape) -> dict[str, np.ndarray]:
    """Every parameter of Qwen2ForCausalLM (the output layer is tied to the embeddings), in a fixed order."""
    rng = np.random.default_rng(seed)
    hidden, heads, kv_heads, intermediate = shape.hidden, shape.heads, shape.kv_heads, shape.intermediate
    head = hidden // heads
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (vocab_size, hidden)}
    for layer in range(shape.layers):
        prefix = f"model.layers.{layer}"
        shapes |= {
            f"{prefix}.self_attn.q_proj.weight": (heads * head, hidden),
            f"{prefix}.self_attn.q_proj.bias": (heads * head,),
            f"{prefix}.self_attn.k_proj.weight": (kv_heads * head, hidden),
            f"{prefix}.self_attn.k_proj.bias": (kv_heads * head,),
            f"{prefix}.self_attn.v_proj.weight": (kv_heads * head, hidden),
            f"{prefix}.self_attn.v_proj.bias": (kv_heads * head,),
            f"{prefix}.self_attn.o_proj.weight": (hidden, heads * head),
            f"{prefix}.mlp.gate_proj.weight": (intermediate, hidden),
            f"{prefix}.mlp.up_proj.weight": (intermediate, hidden),
            f"{prefix}.mlp.down_proj.weight": (hidden, intermediate),
            f"{prefix}.input_layernorm.weight": (hidden,),
            f"{prefix}.post_attention_layernorm.weight": (hidden,),
        }
    shapes["model.norm.weight"] = (hidden,)
    return {name: _initial(rng, name, size) for name, size in shapes.items()}


def _initial(rng: np.random.Generator, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """Norms ones; embeddings and biases normal(0, 0.02); projections normal(0, 1/sqrt(fan_in)).

    With 0.02 everywhere, the layers' outputs are small beside the (tied) input embedding, so the likeliest
    next token is always the last one and greedy decoding repeats it for ever, whatever the prompt.
    Projections scaled to their fan-in make the next token depend on the whole context, as a trained
    model's does."""
    if name.endswith("norm.weight"):
        return np.ones(shape, np.float32)
    std = 0.02 if name.endswith("bias") or "embed_tokens" in name else 1 / np.sqrt(shape[-1])
    return rng.normal(0.0, std, shape).astype(np.float32)


def _safetensors(tensors: dict[str, np.ndarray]) -> bytes:
    """The safetensors format: the header's length (8 bytes, little-endian), the JSON header, the data."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    chunks: list[bytes] = []
    offset = 0
    for name in sorted(tensors):
        data = np.ascontiguousarray(tensors[name], dtype="<f4").tobytes()
        header[name] = {
            "dtype": "F32",
            "shape": list(tensors[name].shape),
            "data_offsets": [offset, offset + len(data)],
        }
        chunks.append(data)
        offset += len(data)
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)  # the data starts 8-byte aligned
    return struct.pack("<Q", len(encoded)) + encoded + b"".join(chunks)


def main(argv: list[str]) -> int:
    """`python tiny.py OUT_DIR [SEED]`: write the tiny model into OUT_DIR."""
    if len(argv) not in (1, 2):
        print("usage: python tiny.py OUT_DIR [SEED]", file=sys.stderr)
        return 2
    write_tiny_qwen(Path(argv[0]), seed=int(argv[1]) if len(argv) == 2 else 0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
