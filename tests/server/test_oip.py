"""The Open Inference Protocol v2 on a real `modelport server`, driven by Triton's own `tritonclient.http`.

One server serves every test: the gallery's `digits` (called with the 8x8 grid of scikit-learn's digits
data set as an FP32 [1, 64] tensor named `pixels`) and `text-classifier` (a BYTES tensor `text`). Their `Api`
manifests let in the group `/team` (`ann`, `rita`), and hold `text-classifier` to 4 calls a minute per
caller; `eve` is in no group.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from drive import deploy, push, wait_built, wait_deployment
from manifests import api
from platform_server import ADMIN_TOKEN, ServerProcess
from sklearn.datasets import load_digits
from tritonclient.utils import InferenceServerException

pytestmark = pytest.mark.slow

GALLERY = Path(__file__).parents[2] / "gallery"
MODULES = ("digits", "text-classifier")
PEOPLE = {"ann": "/team", "rita": "/team", "eve": None}
RATE = 4


@dataclass
class World:
    server: ServerProcess
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return self.server.url.removeprefix("http://")

    def auth(self, who: str) -> dict[str, str]:
        """A new dict each time: `tritonclient` adds its own headers to the one it is given."""
        return {"Authorization": f"Bearer {self.tokens[who]}"}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("oip")
    server = ServerProcess(
        root / "server", token=ADMIN_TOKEN, env={"MODELPORT_REQUEST_LOG_FLUSH_SECONDS": "0.1"}
    )
    server.start()
    try:
        world = World(server, tokens={"admin": ADMIN_TOKEN})
        with server.client() as admin:
            assert admin.post("/api/v1/groups", json={"path": "/team"}).status_code == 201
            for name, group in PEOPLE.items():
                made = admin.post(
                    "/api/v1/users", json={"name": name, "role": "user", "groups": [group] if group else []}
                )
                token = admin.post("/api/v1/tokens", json={"name": "tests", "user": made.json()["id"]})
                world.tokens[name] = token.json()["token"]
            for name in MODULES:
                directory = root / name
                ignored = shutil.ignore_patterns("tests", "models", "__pycache__")
                shutil.copytree(GALLERY / name, directory, ignore=ignored)
                assert push(admin, directory, version="v1").status_code == 201
            for name in MODULES:
                assert wait_built(admin, name, "v1", timeout=300)["build_status"] == "ready"
            generations = {name: deploy(admin, name, "v1")["generation"] for name in MODULES}
            for name, generation in generations.items():
                assert wait_deployment(admin, name, generation, timeout=120)["status"] == "ready"
            documents = [
                api("digits-api", "digits", access={"groups": ["/team"]}),
                api(
                    "text-api",
                    "text-classifier",
                    access={"groups": ["/team"]},
                    rateLimit={"perCaller": f"{RATE}/minute"},
                ),
            ]
            applied = admin.post("/api/v1/apply", json={"documents": documents})
            assert applied.status_code == 200, applied.text
        yield world
    finally:
        server.stop()


@pytest.fixture(scope="module")
def samples() -> tuple[np.ndarray, np.ndarray]:
    data = load_digits()
    return data.images.reshape(len(data.images), 64).astype(np.float32), data.target


def client(world: World) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(url=world.address, network_timeout=60)


def pixels(grid: np.ndarray, *, binary: bool, datatype: str = "FP32") -> triton.InferInput:
    tensor = triton.InferInput("pixels", list(grid.shape), datatype)
    tensor.set_data_from_numpy(grid, binary_data=binary)
    return tensor


def text(values: list[Any], *, binary: bool) -> triton.InferInput:
    tensor = triton.InferInput("text", [len(values)], "BYTES")
    tensor.set_data_from_numpy(np.array(values, dtype=np.object_), binary_data=binary)
    return tensor


def refused(call: Any) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as caught:
        call()
    return caught.value


def test_server_and_model_metadata_and_readiness(world: World) -> None:
    oip = client(world)
    assert oip.is_server_live() and oip.is_server_ready()
    server = oip.get_server_metadata()
    assert server["name"] == "modelport"
    assert "binary_tensor_data" in server["extensions"]
    metadata = oip.get_model_metadata("digits", headers=world.auth("ann"))
    assert metadata["name"] == "digits"
    assert metadata["versions"] == ["v1"]
    assert metadata["platform"] == "modelport"
    assert metadata["inputs"] == [{"name": "pixels", "datatype": "FP32", "shape": [-1, -1]}]  # no image file
    assert [(o["name"], o["datatype"]) for o in metadata["outputs"]] == [
        ("label", "INT64"),
        ("probabilities", "BYTES"),
    ]
    assert oip.get_model_metadata("digits", "v1", headers=world.auth("ann")) == metadata
    assert oip.is_model_ready("digits", headers=world.auth("ann"))
    assert oip.is_model_ready("text-classifier", "v1", headers=world.auth("ann"))
    assert not oip.is_model_ready("text-classifier", "v9", headers=world.auth("ann"))
    missing = refused(lambda: oip.get_model_metadata("nothing", headers=world.auth("admin")))
    assert missing.status() == "404"
    assert "no module named 'nothing'" in missing.message()


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_digits_recognises_a_data_set_sample(
    world: World, samples: tuple[np.ndarray, np.ndarray], binary: bool
) -> None:
    images, labels = samples
    index = 1234 if binary else 42
    requested = [triton.InferRequestedOutput(name, binary_data=binary) for name in ("label", "probabilities")]
    result = client(world).infer(
        "digits",
        [pixels(images[index : index + 1], binary=binary)],
        outputs=requested,
        headers=world.auth("ann"),
    )
    label = result.as_numpy("label")
    assert label is not None and label.dtype == np.int64
    assert label.tolist() == [labels[index]]
    probabilities = result.as_numpy("probabilities")
    assert probabilities is not None and probabilities.shape == (1,)
    response = result.get_response()
    assert response["model_name"] == "digits" and response["model_version"] == "v1"


def test_a_batch_with_the_clients_default_outputs(
    world: World, samples: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = samples
    result = client(world).infer("digits", [pixels(images[:8], binary=True)], headers=world.auth("ann"))
    label = result.as_numpy("label")
    assert label is not None
    assert int(np.sum(label == labels[:8])) >= 7
    assert result.get_output("label")["parameters"]["binary_data_size"] == 64  # binary_data_output


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_text_classifier_takes_bytes(world: World, binary: bool) -> None:
    requested = [triton.InferRequestedOutput("label", binary_data=binary)]
    sentences = ["Heavy rain and strong winds are forecast for tomorrow.", "The striker scored twice."]
    result = client(world).infer(
        "text-classifier",
        [text(sentences, binary=binary)],
        outputs=requested,
        headers=world.auth("ann"),
        parameters={"top_k": 1},
    )
    label = result.as_numpy("label")
    assert label is not None
    assert [v.decode() if isinstance(v, bytes) else v for v in label.tolist()] == ["weather", "sports"]


def test_an_oip_call_is_in_the_request_log(world: World, samples: tuple[np.ndarray, np.ndarray]) -> None:
    images, _ = samples
    result = client(world).infer("digits", [pixels(images[:1], binary=False)], headers=world.auth("ann"))
    request_id = result.get_response()["id"]
    deadline = time.monotonic() + 10
    with httpx.Client(base_url=world.server.url, headers=world.auth("admin")) as admin:
        while time.monotonic() < deadline:
            rows = admin.get("/api/v1/requests", params={"module": "digits"}).json()["requests"]
            found = [row for row in rows if row["id"] == request_id]
            if found:
                break
            time.sleep(0.1)
    assert found, f"call {request_id} is not in the request log"
    assert (found[0]["kind"], found[0]["status"], found[0]["caller"]) == ("sync", 200, "ann")


def test_tensors_that_do_not_fit_are_400_naming_the_tensor(
    world: World, samples: tuple[np.ndarray, np.ndarray]
) -> None:
    images, _ = samples
    oip = client(world)
    grid = images[:1].reshape(1, 8, 8)
    shape = refused(lambda: oip.infer("digits", [pixels(grid, binary=True)], headers=world.auth("ann")))
    assert shape.status() == "400"
    assert "'pixels': expected shape [batch, length], got [1, 8, 8]" in shape.message()
    whole = images[:1].astype(np.int64)
    datatype = refused(
        lambda: oip.infer(
            "digits", [pixels(whole, binary=False, datatype="INT64")], headers=world.auth("ann")
        )
    )
    assert datatype.status() == "400"
    assert "'pixels': datatype INT64 is not accepted" in datatype.message()
    utf8 = refused(
        lambda: oip.infer("text-classifier", [text([b"\xff\xfe"], binary=True)], headers=world.auth("ann"))
    )
    assert utf8.status() == "400"
    assert "'text': a BYTES element is not valid UTF-8" in utf8.message()
    unknown = triton.InferInput("colour", [1], "FP32")
    unknown.set_data_from_numpy(np.zeros(1, dtype=np.float32))
    extra = refused(
        lambda: oip.infer("digits", [pixels(images[:1], binary=True), unknown], headers=world.auth("ann"))
    )
    assert extra.status() == "400" and "unknown input tensor 'colour'" in extra.message()


def test_data_that_disagrees_with_its_shape_is_400(world: World) -> None:
    body = {"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1, 64], "data": [0.0] * 63}]}
    with httpx.Client(base_url=world.server.url, headers=world.auth("ann")) as http:
        answer = http.post("/v2/models/digits/infer", json=body)
        grid = {"name": "pixels", "datatype": "FP32", "shape": [1, 64], "data": [0.0] * 64}
        missing = http.post("/v2/models/text-classifier/infer", json={"inputs": [grid]})
    assert answer.status_code == 400
    assert answer.json() == {"error": "input tensor 'pixels': shape [1, 64] holds 64 elements, the data 63"}
    assert missing.status_code == 400
    assert "input tensor 'text' is missing" in missing.json()["error"]


def test_a_body_that_is_not_an_inference_request_is_400(world: World) -> None:
    nested = b'{"inputs": [{"name": "pixels", "data": ' + b"[" * 80 + b"]" * 80 + b"}]}"
    with httpx.Client(base_url=world.server.url, headers=world.auth("ann")) as http:
        empty = http.post("/v2/models/digits/infer", content=b"")
        broken = http.post("/v2/models/digits/infer", content=b"{not json")
        deep = http.post("/v2/models/digits/infer", content=nested)
    assert (empty.status_code, empty.json()) == (
        400,
        {"error": "the request body is empty; expected an inference request"},
    )
    assert broken.status_code == 400 and "not valid JSON" in broken.json()["error"]
    assert deep.status_code == 400 and "nested deeper than 64 levels" in deep.json()["error"]


def test_access_is_the_predict_routes(world: World, samples: tuple[np.ndarray, np.ndarray]) -> None:
    images, _ = samples
    oip = client(world)
    nobody = refused(lambda: oip.infer("digits", [pixels(images[:1], binary=True)]))
    assert nobody.status() == "401"
    hidden = refused(
        lambda: oip.infer("digits", [pixels(images[:1], binary=True)], headers=world.auth("eve"))
    )
    assert hidden.status() == "404"
    assert refused(lambda: oip.get_model_metadata("digits", headers=world.auth("eve"))).status() == "404"
    assert not oip.is_model_ready("digits")


def test_rate_limits_apply(world: World) -> None:
    oip = client(world)
    for _ in range(RATE):
        oip.infer(
            "text-classifier",
            [text(["Bake the bread for an hour."], binary=False)],
            headers=world.auth("rita"),
        )
    limited = refused(
        lambda: oip.infer(
            "text-classifier", [text(["Bake the bread."], binary=False)], headers=world.auth("rita")
        )
    )
    assert limited.status() == "429"
