"""Tests of the digits gallery module, calling `inference.py` directly (no server)."""

from __future__ import annotations

import importlib.util
import io
import pickle
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageOps

from modelport.core.manifests import load_module_manifest
from modelport.sdk import File, Kind, parse_docstring

MODULE_DIR = Path(__file__).resolve().parents[1]
EXAMPLES = MODULE_DIR / "examples"
NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def _import_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gallery_digits_inference", MODULE_DIR / "inference.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


digits = _import_module()


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return digits.load("default", str(tmp_path_factory.mktemp("digits-model")))


def _file(path: Path, content_type: str = "image/png") -> File:
    return File(path=path, content_type=content_type, filename=path.name, size=path.stat().st_size)


def _predict(model: Any, images: list[Any]) -> list[dict[str, Any]]:
    records = [{"image": image} for image in images]
    result: list[dict[str, Any]] = digits.inference([{} for _ in records], records, [], "default", model)
    return result


def _drawing(digit: int, width: int = 14) -> Image.Image:
    """A digit drawn with a pen: dark strokes on a white 240x320 canvas."""
    image = Image.new("L", (240, 320), 255)
    pen = ImageDraw.Draw(image)
    if digit == 0:
        pen.ellipse((60, 40, 180, 280), outline=0, width=width)
    elif digit == 1:
        pen.line((120, 40, 120, 280), fill=0, width=width)
    elif digit == 4:
        pen.line((150, 40, 60, 200), fill=0, width=width)
        pen.line((60, 200, 190, 200), fill=0, width=width)
        pen.line((150, 100, 150, 280), fill=0, width=width)
    elif digit == 7:
        pen.line((60, 50, 180, 50), fill=0, width=width)
        pen.line((180, 50, 90, 280), fill=0, width=width)
    elif digit == 8:
        pen.ellipse((70, 40, 170, 155), outline=0, width=width)
        pen.ellipse((60, 155, 180, 280), outline=0, width=width)
    elif digit == 9:
        pen.ellipse((60, 40, 180, 160), outline=0, width=width)
        pen.line((178, 100, 160, 280), fill=0, width=width)
    else:
        raise ValueError(digit)
    return image


def test_docstring_declares_the_api() -> None:
    spec = parse_docstring(digits.inference.__doc__)
    assert spec.title == "Recognise a handwritten digit (0-9) in an image."
    assert [f.name for f in spec.inputs] == ["image", "pixels"]
    image, pixels = spec.inputs
    assert image.optional
    assert image.is_file
    assert pixels.optional
    assert pixels.type_text == "list[float]"
    assert (pixels.minimum, pixels.maximum) == (64, 64)
    file_type = image.file_type
    assert file_type is not None
    assert set(file_type.mime) == {"image/png", "image/jpeg"}
    assert image.max_bytes == 10 * 1024 * 1024
    assert spec.parameters == ()
    assert [(f.name, f.types[0].kind) for f in spec.outputs] == [
        ("label", Kind.INT),
        ("probabilities", Kind.JSON),
    ]


def test_manifest_is_valid_and_its_example_exists() -> None:
    manifest = load_module_manifest(MODULE_DIR)
    assert manifest.metadata.name == "digits"
    assert manifest.spec.load == "inference.py:load"
    assert manifest.spec.model.cache_size == 1
    assert manifest.spec.resources.max_batch_size == 16
    assert manifest.spec.example is not None
    example = manifest.spec.example["inputs"]["image"]["path"]
    assert (MODULE_DIR / example).is_file()


def test_models_directory_is_ignored_by_git() -> None:
    assert "models/" in (MODULE_DIR / ".gitignore").read_text().split()


def test_load_trains_once_then_reuses_the_saved_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = digits.load("default", str(tmp_path))
    saved = tmp_path / digits.MODEL_FILE
    assert saved.is_file()
    assert [p.name for p in tmp_path.iterdir()] == [digits.MODEL_FILE]  # no temporary file left behind
    stamp = saved.stat().st_mtime_ns

    def no_training(*args: object) -> None:
        raise AssertionError("load retrained although a saved model exists")

    monkeypatch.setattr(digits, "train", no_training)
    second = digits.load("default", str(tmp_path))
    assert saved.stat().st_mtime_ns == stamp
    assert type(second) is type(first)
    image = _file(EXAMPLES / "seven.png")
    assert _predict(second, [image]) == _predict(first, [image])


def test_load_retrains_a_model_saved_by_another_scikit_learn(tmp_path: Path) -> None:
    saved = tmp_path / digits.MODEL_FILE
    saved.write_bytes(pickle.dumps({"sklearn_version": "0.0", "model": "stale"}))
    model = digits.load("default", str(tmp_path))
    assert model != "stale"
    assert _predict(model, [_file(EXAMPLES / "three.png")])[0]["label"] == 3


@pytest.mark.parametrize("digit", range(10))
def test_committed_examples_are_recognised(model: Any, digit: int) -> None:
    [result] = _predict(model, [_file(EXAMPLES / f"{NAMES[digit]}.png")])
    assert result["label"] == digit


def test_outputs_have_the_declared_shape(model: Any) -> None:
    [result] = _predict(model, [_file(EXAMPLES / "seven.png")])
    assert set(result) == {"label", "probabilities"}
    assert isinstance(result["label"], int)
    probabilities = result["probabilities"]
    assert sorted(probabilities) == [str(d) for d in range(10)]
    assert all(isinstance(p, float) and 0.0 <= p <= 1.0 for p in probabilities.values())
    assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-4)
    assert max(probabilities, key=probabilities.get) == "7"


def test_a_batch_answers_each_record_in_order(model: Any) -> None:
    order = [7, 2, 2, 9, 0, 5, 1]
    results = _predict(model, [_file(EXAMPLES / f"{NAMES[d]}.png") for d in order])
    assert [r["label"] for r in results] == order
    assert _predict(model, []) == []


def test_accuracy_on_held_out_digits_sent_as_png(tmp_path: Path) -> None:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    train_images, test_images, train_labels, test_labels = train_test_split(
        data.images, data.target, test_size=100, random_state=0, stratify=data.target
    )
    model = digits.train(train_images, train_labels)
    files = []
    for i, image in enumerate(test_images):
        path = tmp_path / f"{i}.png"
        digits.render(image).save(path)
        files.append(_file(path))
    results = _predict(model, files)
    accuracy = float(np.mean([r["label"] == label for r, label in zip(results, test_labels, strict=True)]))
    assert accuracy >= 0.9, f"accuracy {accuracy:.2f} on 100 held-out digits"


@pytest.mark.parametrize("digit", [0, 1, 4, 7, 8, 9])
def test_pen_drawing_on_white_background(model: Any, tmp_path: Path, digit: int) -> None:
    path = tmp_path / "drawing.png"
    _drawing(digit).save(path)
    assert _predict(model, [_file(path)])[0]["label"] == digit


@pytest.mark.parametrize("digit", [0, 4, 7])
def test_drawings_in_other_shapes_and_formats(model: Any, digit: int) -> None:
    drawing = _drawing(digit)
    light_on_dark = ImageOps.invert(drawing)
    transparent = Image.new("RGBA", drawing.size, (0, 0, 0, 0))
    transparent.putalpha(ImageOps.invert(drawing))  # black strokes on a transparent canvas
    small_in_large = Image.new("L", (1600, 1200), 255)
    small_in_large.paste(drawing, (1100, 700))
    jpeg = io.BytesIO()
    drawing.convert("RGB").save(jpeg, "JPEG", quality=60)
    results = _predict(model, [light_on_dark, transparent, small_in_large, jpeg.getvalue()])
    assert [r["label"] for r in results] == [digit] * 4


def test_blank_image_gets_null_outputs(model: Any, tmp_path: Path) -> None:
    blank = tmp_path / "blank.png"
    Image.new("L", (50, 50), 255).save(blank)
    results = _predict(model, [_file(EXAMPLES / "two.png"), _file(blank), _file(EXAMPLES / "six.png")])
    assert results[1] == {"label": None, "probabilities": None}
    assert [results[0]["label"], results[2]["label"]] == [2, 6]
    assert _predict(model, [_file(blank)]) == [{"label": None, "probabilities": None}]


def test_features_match_the_data_set_layout() -> None:
    features = digits.to_features(Image.open(EXAMPLES / "seven.png"))
    assert features.shape == (64,)
    assert features.min() >= 0.0
    assert features.max() == pytest.approx(16.0)
    grid = features.reshape(8, 8)
    assert grid[:, 0].max() < 8
    assert grid[:, -1].max() < 8


def test_pixels_of_held_out_digits_are_recognised() -> None:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    train_images, test_images, train_labels, test_labels = train_test_split(
        data.images, data.target, test_size=100, random_state=0, stratify=data.target
    )
    model = digits.train(train_images, train_labels)
    records = [{"pixels": [float(v) for v in image.reshape(-1)]} for image in test_images]
    results = digits.inference([{} for _ in records], records, [], "default", model)
    accuracy = float(np.mean([r["label"] == label for r, label in zip(results, test_labels, strict=True)]))
    assert accuracy >= 0.9, f"accuracy {accuracy:.2f} on 100 held-out digits sent as pixels"


def test_pixels_and_images_mix_in_one_batch(model: Any) -> None:
    from sklearn.datasets import load_digits

    data = load_digits()
    sevens = [i for i, label in enumerate(data.target) if label == 7]
    pixels = [float(v) for v in data.images[sevens[0]].reshape(-1)]
    records = [{"pixels": pixels}, {"image": _file(EXAMPLES / "three.png")}]
    results = digits.inference([{}, {}], records, [], "default", model)
    assert [r["label"] for r in results] == [7, 3]
    blank = digits.inference([{}], [{"pixels": [0.0] * 64}], [], "default", model)
    assert blank == [{"label": None, "probabilities": None}]


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({}, "either `image` or `pixels`"),
        ({"image": EXAMPLES / "seven.png", "pixels": [0.0] * 64}, "either `image` or `pixels`"),
        ({"pixels": [0.0] * 63}, "64 values from 0 to 16"),
        ({"pixels": [17.0] * 64}, "64 values from 0 to 16"),
        ({"pixels": [-1.0] + [0.0] * 63}, "64 values from 0 to 16"),
    ],
)
def test_a_record_needs_exactly_one_of_image_and_pixels_in_range(
    model: Any, record: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        digits.inference([{}], [record], [], "default", model)
