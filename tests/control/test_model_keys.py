"""One module serving several model keys whose weights live in object storage, with real worker processes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from modelport.artifacts import read_module
from modelport.control.modules import ServedModule, predict, start_module
from modelport.control.weights import ModelWeights
from modelport.core.errors import CorruptObject, ModelNotFound, ModuleError, SetupFailed
from modelport.core.settings import Settings
from modelport.sdk.validation import parse_json
from modelport.storage.local import LocalStore


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    """The `models` bucket with two weight sets, `digits/a/` and `digits/b/`."""
    store = LocalStore(tmp_path / "store")
    store.create_bucket("models")
    for key in "ab":
        store.put(
            "models", f"digits/{key}/weights.txt", f"weights of {key}".encode(), content_type="text/plain"
        )
    return store


@pytest.fixture
def weights(tmp_path: Path, store: LocalStore) -> ModelWeights:
    return ModelWeights(store, cache_dir=tmp_path / "cache", max_bytes=10**6)


@pytest.fixture
def serving(tmp_path: Path, fixture_module: Callable[[str], Path]) -> Callable[..., Any]:
    """Start the `weights` fixture module with one real worker; stop it afterwards."""

    @asynccontextmanager
    async def start(weights: ModelWeights | None) -> AsyncIterator[ServedModule]:
        served = await start_module(
            read_module(fixture_module("weights")),
            version="t",
            settings=Settings(data_dir=tmp_path / "data"),
            replicas=1,
            log=lambda replica, stream, line: None,
            weights=weights,
        )
        try:
            yield served
        finally:
            await served.pool.close(grace=5)

    return start


def flip_stored_byte(root: Path, data: bytes) -> None:
    """Damage the bytes of the stored object holding `data`, behind the store's back."""
    (stored,) = [p for p in root.rglob("*") if p.is_file() and p.read_bytes() == data]
    stored.write_bytes(bytes([data[0] ^ 1]) + data[1:])


async def ask(served: ServedModule, model_key: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"inputs": {"text": "x"}}
    if model_key is not None:
        body["model_key"] = model_key
    (outputs,) = await predict(served, parse_json(served.spec, body))
    return outputs


def loads(served: ServedModule) -> list[str]:
    """The model keys the module's `load` was called with, in order (a failing call included)."""
    log = served.definition.directory / "loads.log"
    return [line.split()[1] for line in log.read_text().splitlines()] if log.exists() else []


async def test_each_request_gets_the_weights_of_its_model_key(serving, weights):
    async with serving(weights) as served:
        assert await ask(served) == {"weights": "weights of a", "key": "a"}
        assert await ask(served, "b") == {"weights": "weights of b", "key": "b"}
        assert await ask(served, "a") == {"weights": "weights of a", "key": "a"}
        assert loads(served) == ["a", "b"]


async def test_concurrent_first_requests_for_a_key_load_it_once(serving, weights):
    async with serving(weights) as served:
        answers = await asyncio.gather(*(ask(served, "b") for _ in range(8)))
        assert answers == [{"weights": "weights of b", "key": "b"}] * 8
        assert loads(served) == ["a", "b"]


async def test_a_failing_load_is_tried_once_for_a_batch_not_once_per_record(store, serving, weights):
    store.put("models", "digits/bad/weights.txt", b"unloadable", content_type="text/plain")
    async with serving(weights) as served:
        answers = await asyncio.gather(*(ask(served, "bad") for _ in range(8)), return_exceptions=True)
        assert all(
            isinstance(a, ModuleError) and "load('bad') raised ValueError" in a.message for a in answers
        )
        assert loads(served) == ["a", "bad"]
        assert await ask(served, "b") == {"weights": "weights of b", "key": "b"}


async def test_corrupt_weights_fail_their_key_only(tmp_path, serving, weights):
    flip_stored_byte(tmp_path / "store", b"weights of b")
    async with serving(weights) as served:
        for _ in range(2):
            with pytest.raises(CorruptObject) as corrupt:
                await ask(served, "b")
            assert (corrupt.value.status, corrupt.value.code) == (500, "corrupt_object")
        with pytest.raises(ModelNotFound):
            await ask(served, "c")
        assert await ask(served) == {"weights": "weights of a", "key": "a"}
        assert loads(served) == ["a"]


async def test_a_version_whose_default_weights_are_corrupt_never_starts(tmp_path, serving, weights):
    flip_stored_byte(tmp_path / "store", b"weights of a")
    with pytest.raises(SetupFailed) as failure:
        async with serving(weights):
            pass
    assert "model key 'a'" in failure.value.message
    assert "'digits/a/weights.txt'" in failure.value.message  # the object to upload again


async def test_weights_in_a_bucket_need_object_storage(serving):
    with pytest.raises(SetupFailed, match="needs object storage"):
        async with serving(None):
            pass
