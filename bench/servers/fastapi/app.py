"""Bare FastAPI baseline: the same three models as plain POST routes, served by uvicorn.

`BENCH_MODEL` picks the model (`echo`, `digits` or `digits-batched`); `BENCH_DIGITS_MODEL` is the shared model
file. Bare FastAPI has no dynamic batching, so `digits-batched` uses a minimal hand-written batcher: what a
user would write themselves, and the floor that a serving framework's batching is compared with.

The model runs inline on the event loop: one call takes about 0.1 ms (0.3 ms for a batch of 32), so this
is the cheapest path there is, the baseline that the frameworks' overhead is measured against. A slow model
would need a thread or a process; handing each batch to a thread (`asyncio.to_thread`) made this batcher
several times slower at 64 connections on a 2-core machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

import joblib
import numpy as np
from fastapi import FastAPI
from pydantic import BaseModel

MODEL_NAME = os.environ.get("BENCH_MODEL", "echo")
MAX_BATCH_SIZE = 32
BATCH_WAIT_S = 0.002


class EchoRequest(BaseModel):
    inputs: dict[str, str]


class DigitsInputs(BaseModel):
    pixels: list[float]


class DigitsRequest(BaseModel):
    inputs: DigitsInputs


class Batcher:
    """Merges up to MAX_BATCH_SIZE concurrent requests (waiting at most BATCH_WAIT_S) into one call."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.queue: asyncio.Queue[tuple[list[float], asyncio.Future[int]]] = asyncio.Queue()

    async def predict(self, pixels: list[float]) -> int:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        await self.queue.put((pixels, future))
        return await future

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            deadline = loop.time() + BATCH_WAIT_S
            while len(batch) < MAX_BATCH_SIZE:
                if not self.queue.empty():
                    batch.append(self.queue.get_nowait())
                elif (timeout := deadline - loop.time()) > 0:
                    try:
                        batch.append(await asyncio.wait_for(self.queue.get(), timeout))
                    except TimeoutError:
                        break
                else:
                    break
            try:
                labels = self.model.predict(np.asarray([pixels for pixels, _ in batch]))
            except Exception as exc:
                for _, future in batch:
                    future.set_exception(exc)
            else:
                for (_, future), label in zip(batch, labels, strict=True):
                    future.set_result(int(label))


def create_app(model_name: str) -> FastAPI:
    if model_name == "echo":
        app = FastAPI()

        @app.post("/predict")
        async def echo(request: EchoRequest) -> dict[str, Any]:
            return {"outputs": {"text": request.inputs["text"]}}

    elif model_name == "digits":
        model = joblib.load(os.environ["BENCH_DIGITS_MODEL"])
        app = FastAPI()

        @app.post("/predict")
        async def digits(request: DigitsRequest) -> dict[str, Any]:
            label = model.predict(np.asarray([request.inputs.pixels]))[0]
            return {"outputs": {"label": int(label)}}

    elif model_name == "digits-batched":
        batcher = Batcher(joblib.load(os.environ["BENCH_DIGITS_MODEL"]))

        @contextlib.asynccontextmanager
        async def lifespan(_: FastAPI) -> AsyncIterator[None]:
            task = asyncio.create_task(batcher.run())
            yield
            task.cancel()

        app = FastAPI(lifespan=lifespan)

        @app.post("/predict")
        async def digits_batched(request: DigitsRequest) -> dict[str, Any]:
            return {"outputs": {"label": await batcher.predict(request.inputs.pixels)}}

    else:
        raise SystemExit(f"unknown BENCH_MODEL {model_name!r}")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


app = create_app(MODEL_NAME)
