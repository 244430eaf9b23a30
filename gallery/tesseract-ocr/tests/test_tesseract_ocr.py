"""Tests of the tesseract-ocr gallery module, calling `inference.py` directly (no server), on text rendered
here: English and Russian lines, a page turned by 3 degrees, small print that must be scaled up, a phone
photo of a receipt on a table, an image turned by its EXIF orientation, and images with nothing to read."""

from __future__ import annotations

import importlib.util
import math
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from modelport.core.manifests import load_module_manifest
from modelport.sdk import File, Kind, parse_docstring

MODULE_DIR = Path(__file__).resolve().parents[1]
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
MONO = "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf"

Box = tuple[float, float, float, float]  # left, top, right, bottom


def _import_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gallery_tesseract_inference", MODULE_DIR / "inference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


ocr = _import_module()


def page(lines: list[str], *, size: int = 28, font: str = FONT) -> tuple[Image.Image, dict[str, Box]]:
    """Dark lines on white paper, and the rectangle where each word was drawn."""
    face = ImageFont.truetype(font, size)
    image = Image.new("L", (40 + size * 22, 40 + int(size * 1.8) * len(lines)), 255)
    pen = ImageDraw.Draw(image)
    drawn: dict[str, Box] = {}
    y = 20
    for line in lines:
        x = 20
        for word in line.split():
            pen.text((x, y), word, font=face, fill=15)
            drawn[word] = pen.textbbox((x, y), word, font=face)
            x = int(drawn[word][2]) + size // 2
        y += int(size * 1.8)
    return image, drawn


def turned(image: Image.Image, drawn: dict[str, Box], degrees: float) -> tuple[Image.Image, dict[str, Box]]:
    """`image` turned counter-clockwise on an expanded white canvas, and where its words went (the box
    around each turned rectangle)."""
    result = image.rotate(degrees, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=255)
    turn = math.radians(degrees)

    def moved(x: float, y: float) -> tuple[float, float]:
        dx, dy = x - image.width / 2, y - image.height / 2
        return (
            result.width / 2 + dx * math.cos(turn) + dy * math.sin(turn),
            result.height / 2 - dx * math.sin(turn) + dy * math.cos(turn),
        )

    boxes = {}
    for word, (left, top, right, bottom) in drawn.items():
        xs, ys = zip(*(moved(x, y) for x in (left, right) for y in (top, bottom)), strict=True)
        boxes[word] = (min(xs), min(ys), max(xs), max(ys))
    return result, boxes


def read(image: Image.Image, tmp_path: Path, *, fmt: str = "PNG", **parameters: Any) -> dict[str, Any]:
    """One call of `inference`, the image sent as the platform sends a file."""
    path = tmp_path / f"upload.{fmt.lower()}"
    image.save(path, format=fmt)
    file = File(path=path, content_type=f"image/{fmt.lower()}", filename=path.name, size=path.stat().st_size)
    results: list[dict[str, Any]] = ocr.inference([parameters], [{"image": file}], [], "default", None)
    [result] = results
    return result


def assert_boxed_where_drawn(result: dict[str, Any], drawn: dict[str, Box]) -> None:
    assert {word["text"] for word in result["words"]} == set(drawn)
    for word in result["words"]:
        left, top, right, bottom = drawn[word["text"]]
        centre_x, centre_y = word["left"] + word["width"] / 2, word["top"] + word["height"] / 2
        assert left <= centre_x <= right and top <= centre_y <= bottom, word


def test_english_lines_are_read_and_each_word_boxed_where_it_was_drawn(tmp_path: Path) -> None:
    image, drawn = page(["CORNER GROCERY", "TOTAL 10.96", "VISA 4821"])
    result = read(image, tmp_path, language="eng")
    assert result["text"] == "CORNER GROCERY\nTOTAL 10.96\nVISA 4821"
    assert_boxed_where_drawn(result, drawn)
    assert [w["line"] for w in result["words"]] == [0, 0, 1, 1, 2, 2]
    for word in result["words"]:
        assert 0 <= word["confidence"] <= 100
        assert word["text"] in result["text"].splitlines()[word["line"]].split()
    mean = sum(w["confidence"] for w in result["words"]) / len(result["words"])
    assert result["confidence"] == pytest.approx(mean, abs=0.01)
    assert result["confidence"] > 80


def test_russian_and_english_are_read_together(tmp_path: Path) -> None:
    image, drawn = page(["КАССОВЫЙ ЧЕК", "ИНН 7707083893", "ИТОГ 179.90", "VISA 4821"])
    result = read(image, tmp_path)  # the default language, eng+rus
    assert result["text"].splitlines() == ["КАССОВЫЙ ЧЕК", "ИНН 7707083893", "ИТОГ 179.90", "VISA 4821"]
    assert_boxed_where_drawn(result, drawn)


def test_russian_alone(tmp_path: Path) -> None:
    image, _ = page(["Спасибо за покупку"])
    assert read(image, tmp_path, language="rus")["text"] == "Спасибо за покупку"


def test_a_page_turned_three_degrees_is_straightened_and_its_boxes_fall_on_its_words(tmp_path: Path) -> None:
    image, drawn = turned(*page(["SUBTOTAL 10.15", "TAX 0.81", "TOTAL 10.96"]), degrees=3)
    assert ocr.prepare(image).angle == pytest.approx(-3, abs=0.5)
    result = read(image, tmp_path, language="eng")
    assert result["text"].splitlines() == ["SUBTOTAL 10.15", "TAX 0.81", "TOTAL 10.96"]
    assert_boxed_where_drawn(result, drawn)


def test_small_print_is_scaled_up_before_it_is_read(tmp_path: Path) -> None:
    image, drawn = page(["TOTAL 10.96 VISA"], size=9)
    assert ocr.prepare(image).scale > 2
    result = read(image, tmp_path, language="eng")
    assert result["text"] == "TOTAL 10.96 VISA"
    assert_boxed_where_drawn(result, drawn)  # in the pixels of the image as sent


def test_a_huge_page_is_scaled_down(tmp_path: Path) -> None:
    image, drawn = page(["TOTAL 10.96"], size=200)
    prepared = ocr.prepare(image)
    assert prepared.scale < 0.5
    assert max(prepared.image.size) < max(image.size) / 2
    result = read(image, tmp_path, language="eng")
    assert result["text"] == "TOTAL 10.96"
    assert_boxed_where_drawn(result, drawn)


def test_a_phone_photo_of_a_receipt_on_a_table(tmp_path: Path) -> None:
    """Mono print on a receipt lying askew on a dark table, lit from one side, blurred and saved as JPEG."""
    lines = ["MILK 1L 2.49", "BREAD 3.10", "SUBTOTAL 5.59", "TOTAL 5.59"]
    receipt, _ = page(lines, size=24, font=MONO)
    table = Image.new("L", (receipt.width + 240, receipt.height + 240), 70)
    table.paste(receipt, (120, 120))
    photo = table.rotate(-2, resample=Image.Resampling.BICUBIC, fillcolor=70)
    levels = np.asarray(photo, dtype=np.float64)
    light = np.linspace(1.0, 0.6, photo.width)[np.newaxis, :]  # darker to the right
    noise = np.random.default_rng(7).normal(0, 6, levels.shape)
    photo = Image.fromarray(np.clip(levels * light + noise, 0, 255).astype(np.uint8))
    photo = photo.filter(ImageFilter.GaussianBlur(0.8)).convert("RGB")
    result = read(photo, tmp_path, fmt="JPEG", language="eng")
    assert result["text"].splitlines() == lines


def test_the_exif_orientation_is_applied_and_boxes_are_upright(tmp_path: Path) -> None:
    """A camera's picture stored sideways with EXIF orientation 6 (turn 90 degrees clockwise to view)."""
    upright, drawn = page(["TOTAL 10.96"])
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what the camera wrote
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "photo.jpg"
    stored.convert("RGB").save(path, format="JPEG", exif=exif, quality=95)
    file = File(path=path, content_type="image/jpeg", filename=path.name, size=path.stat().st_size)
    [result] = ocr.inference([{"language": "eng"}], [{"image": file}], [], "default", None)
    assert result["text"] == "TOTAL 10.96"
    assert_boxed_where_drawn(result, drawn)


def test_a_batch_answers_each_record_with_its_own_parameters(tmp_path: Path) -> None:
    english, _ = page(["TOTAL 10.96"])
    russian, _ = page(["ИТОГ 179.90"])
    paths = [tmp_path / "en.png", tmp_path / "ru.png"]
    english.save(paths[0])
    russian.save(paths[1])
    results = ocr.inference(
        [{"language": "eng", "psm": 6}, {"language": "rus", "psm": 4}],
        [{"image": File(path=p, content_type="image/png", filename=p.name, size=1)} for p in paths],
        [],
        "default",
        None,
    )
    assert [r["text"] for r in results] == ["TOTAL 10.96", "ИТОГ 179.90"]


@pytest.mark.parametrize(
    "image",
    [
        Image.new("L", (1, 1), 255),
        Image.new("L", (600, 400), 255),
        Image.new("RGB", (2, 300), (0, 0, 0)),
        Image.new("RGBA", (300, 300), (0, 0, 0, 0)),
        Image.fromarray(np.random.default_rng(3).integers(240, 256, (300, 400), dtype=np.uint8)),
    ],
    ids=["1x1", "blank", "too-narrow", "transparent", "paper-grain"],
)
def test_an_image_with_nothing_to_read_gives_no_text_and_no_words(image: Image.Image, tmp_path: Path) -> None:
    assert read(image, tmp_path) == {"text": "", "words": [], "confidence": None}


def test_an_empty_image_gives_no_text() -> None:
    [result] = ocr.inference([{}], [{"image": Image.new("L", (0, 0))}], [], "default", None)
    assert result == {"text": "", "words": [], "confidence": None}


@pytest.mark.parametrize("content", [b"this is not a picture", b"", b"\x89PNG\r\n\x1a\n" + b"\0" * 40])
def test_bytes_that_are_no_image_are_refused_clearly(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "notes.png"
    path.write_bytes(content)
    file = File(path=path, content_type="image/png", filename=path.name, size=len(content))
    with pytest.raises(ValueError, match="the image could not be decoded"):
        ocr.inference([{"language": "eng", "psm": 6}], [{"image": file}], [], "default", None)


def test_tesseract_runs_on_one_core(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OMP_THREAD_LIMIT", "")  # restored afterwards, whatever the module sets
    monkeypatch.delenv("OMP_THREAD_LIMIT")
    seen: list[str | None] = []
    run = ocr.pytesseract.image_to_data

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(os.environ.get("OMP_THREAD_LIMIT"))
        return run(*args, **kwargs)

    monkeypatch.setattr(ocr.pytesseract, "image_to_data", spy)
    image, _ = page(["TOTAL"])
    assert read(image, tmp_path, language="eng")["text"] == "TOTAL"
    assert seen == ["1"]


def test_a_missing_program_names_the_package_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(ocr.pytesseract.pytesseract, "tesseract_cmd", str(tmp_path / "no-tesseract"))
    ocr._installed_languages.cache_clear()
    try:
        image, _ = page(["TOTAL"])
        with pytest.raises(RuntimeError, match="install the distribution's tesseract-ocr package"):
            read(image, tmp_path)
    finally:
        ocr._installed_languages.cache_clear()


def test_missing_language_data_names_its_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(ocr, "_installed_languages", lambda: frozenset({"eng", "osd"}))
    monkeypatch.setattr(ocr._installed_languages, "cache_clear", lambda: None, raising=False)
    image, _ = page(["TOTAL"])
    with pytest.raises(RuntimeError, match="no language data for rus: install the package tesseract-ocr-rus"):
        read(image, tmp_path, language="eng+rus")


def test_the_docstring_declares_the_api() -> None:
    spec = parse_docstring(ocr.inference.__doc__ or "")
    assert spec.title == "Read the printed text in a photo or scan, such as a receipt, with Tesseract OCR."
    [image] = spec.inputs
    assert image.name == "image" and image.required and image.is_file
    assert image.file_type is not None and set(image.file_type.mime) == {"image/jpeg", "image/png"}
    assert image.max_bytes == 20 * 1024 * 1024
    language, psm = spec.parameters
    assert (language.name, language.default, language.choices) == ("language", "eng+rus", ocr.LANGUAGES)
    assert (psm.name, psm.default, psm.choices) == ("psm", ocr.DEFAULT_PAGE_MODE, ocr.PAGE_MODES)
    assert [(f.name, f.types[0].kind, f.optional) for f in spec.outputs] == [
        ("text", Kind.STR, False),
        ("words", Kind.JSON, False),
        ("confidence", Kind.FLOAT, True),
    ]


def test_the_manifest_declares_the_module() -> None:
    manifest = load_module_manifest(MODULE_DIR)
    assert manifest.metadata.name == "tesseract-ocr"
    assert manifest.spec.entrypoint == "inference.py:inference"
    assert manifest.spec.resources.max_batch_size == 1
    assert manifest.spec.resources.timeout_seconds == 60
    example = manifest.spec.example
    assert example is not None and (MODULE_DIR / example["inputs"]["image"]["path"]).is_file()


def test_the_examples_read_as_receipts(tmp_path: Path) -> None:
    for name in ("receipt-en.png", "receipt-ru.png"):
        assert (MODULE_DIR / "examples" / name).stat().st_size < 60_000
    with Image.open(MODULE_DIR / "examples" / "receipt-en.png") as image:
        english = read(image.copy(), tmp_path, language="eng")["text"]
    assert "TOTAL $10.96" in english and "12/05/2026 14:32" in english
    with Image.open(MODULE_DIR / "examples" / "receipt-ru.png") as image:
        russian = read(image.copy(), tmp_path, language="rus")["text"]
    assert "ИНН 7707083893" in russian and "=179.90" in russian


def test_a_word_box_maps_back_through_the_scale_and_the_turn() -> None:
    """`Page.to_original` undoes `prepare`'s scaling and rotation for a box's centre."""
    original = Image.new("L", (400, 300), 255)
    scale, angle = 1.5, 4.0
    scaled = original.resize((600, 450))
    image = scaled.rotate(angle, expand=True, fillcolor=255)
    prepared = ocr.Page(image, original.size, scale, angle)
    _, boxes = turned(scaled, {"dot": (290.0, 110.0, 310.0, 130.0)}, angle)  # centre (300, 120) when scaled
    left, top, right, bottom = boxes["dot"]
    box = prepared.to_original(left, top, right - left, bottom - top)
    assert box[0] + box[2] / 2 == pytest.approx(200, abs=1)
    assert box[1] + box[3] / 2 == pytest.approx(80, abs=1)
