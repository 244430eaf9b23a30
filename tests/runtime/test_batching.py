"""Dynamic batching: concurrent requests share calls, keep their own parameters and fail alone."""

from __future__ import annotations

import asyncio
from pathlib import Path


async def test_concurrent_requests_are_merged_into_one_call(fixture_module, serve):
    async with serve(fixture_module("batching")) as served:
        responses = await asyncio.gather(
            *(served.predict(inputs={"value": i}, parameters={"tag": f"t{i}"}) for i in range(8))
        )
        outputs = [r.json()["outputs"] for r in responses]
        assert [o["value"] for o in outputs] == list(range(8))
        assert [o["tag"] for o in outputs] == [f"t{i}" for i in range(8)]
        assert max(o["batch"] for o in outputs) > 1
        assert served.module.pool.calls < 8


async def test_batches_never_exceed_max_batch_size(fixture_module, serve):
    async with serve(fixture_module("batching")) as served:
        responses = await asyncio.gather(*(served.predict(inputs={"value": i}) for i in range(20)))
        sizes = [r.json()["outputs"]["batch"] for r in responses]
        assert all(r.status_code == 200 for r in responses)
        assert max(sizes) == 8


async def test_a_list_of_records_is_one_request_and_answers_in_order(fixture_module, serve):
    async with serve(fixture_module("batching")) as served:
        response = await served.predict(inputs=[{"value": i} for i in range(5)], parameters={"tag": "x"})
        outputs = response.json()["outputs"]
        assert [o["value"] for o in outputs] == list(range(5))
        assert {o["tag"] for o in outputs} == {"x"}
        assert outputs[0]["batch"] == 5


async def test_one_bad_record_fails_only_its_own_request(fixture_module, serve):
    async with serve(fixture_module("batching")) as served:
        values = [3, 1, -1, 4, 5]
        responses = await asyncio.gather(*(served.predict(inputs={"value": v}) for v in values))
        statuses = [r.status_code for r in responses]
        assert statuses == [200, 200, 500, 200, 200]
        assert "negative value" in responses[2].json()["error"]["message"]
        assert [r.json()["outputs"]["value"] for r in responses if r.status_code == 200] == [3, 1, 4, 5]


async def test_without_batch_wait_a_lone_request_is_not_held(fixture_module, serve):
    directory = fixture_module("batching")
    manifest = directory / "modelport.yaml"
    manifest.write_text(manifest.read_text().replace("batchWaitMs: 100", "batchWaitMs: 0"))
    async with serve(directory) as served:
        loop = asyncio.get_running_loop()
        started = loop.time()
        response = await served.predict(inputs={"value": 1})
        assert response.json()["outputs"]["batch"] == 1
        assert loop.time() - started < 0.1 + 0.05 + 0.5  # the call's own 50 ms, no 100 ms hold


async def test_models_are_loaded_per_model_key_and_cached(fixture_module, serve):
    directory: Path = fixture_module("models")
    async with serve(directory) as served:
        base = await served.predict(inputs={"text": "a"})
        assert base.json()["outputs"] == {"model": "weights of base", "key": "base"}
        other = await served.predict(inputs={"text": "a"}, model_key="customer-7")
        assert other.json()["outputs"] == {"model": "weights of customer-7", "key": "customer-7"}
        again = await served.predict(inputs={"text": "a"}, model_key="customer-7")
        assert again.json()["outputs"]["key"] == "customer-7"
        # cacheSize 1: switching back to base loads it again; repeating a key does not.
        await served.predict(inputs={"text": "a"})
        loads = (directory / "models" / "loads.log").read_text().split()
        assert loads[1::2] == ["base", "customer-7", "base"]
        bad = await served.predict(inputs={"text": "a"}, model_key="../etc")
        assert bad.status_code == 422
        assert bad.json()["error"]["details"][0]["field"] == "model_key"


async def test_requests_for_different_model_keys_are_never_merged(fixture_module, serve):
    async with serve(fixture_module("models")) as served:
        keys = ["base", "k1", "base", "k2", "k1"]
        responses = await asyncio.gather(*(served.predict(inputs={"text": "x"}, model_key=k) for k in keys))
        assert [r.json()["outputs"]["key"] for r in responses] == keys
