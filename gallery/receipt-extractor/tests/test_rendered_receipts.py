"""Photos of receipts through OCR and the extractor: the gallery's tesseract-ocr module reads eight rendered
receipts of `bench/receiptset.py` (one of each layout, Russian and English), the extractor reads its text."""

from __future__ import annotations

import importlib.util
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from modelport.sdk import File

ROOT = Path(__file__).resolve().parents[3]


def _import(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


receiptset = _import("bench_receiptset", ROOT / "bench" / "receiptset.py")
ocr = _import("gallery_tesseract_ocr", ROOT / "gallery" / "tesseract-ocr" / "inference.py")
extractor = _import("gallery_receipt_extractor", ROOT / "gallery" / "receipt-extractor" / "inference.py")


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Any, dict[str, Any]]]:
    """Each of the eight receipts with what the extractor read from the OCR module's text of its photo."""
    scratch = tmp_path_factory.mktemp("receipts")

    def read(receipt: Any) -> tuple[Any, dict[str, Any]]:
        path = scratch / f"{receipt.name}.{'jpg' if receipt.content_type == 'image/jpeg' else 'png'}"
        path.write_bytes(receipt.image_bytes)
        image = File(
            path=path, content_type=receipt.content_type, filename=path.name, size=path.stat().st_size
        )
        [page] = ocr.inference([{}], [{"image": image}], [], "default")
        [details] = extractor.inference([{}], [{"text": page["text"]}], [], "default")
        return receipt, details

    # Tesseract runs as a program of its own: two receipts at a time keep two cores busy.
    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(read, receiptset.receipts(8, seed=7)))


def test_the_set_holds_each_layout_in_both_languages(results: list[tuple[Any, dict[str, Any]]]) -> None:
    names = [receipt.name.split("-", 1)[1] for receipt, _ in results]
    assert names == ["ru-kkt", "en-store", "ru-market", "en-cafe", "ru-cafe", "en-fuel", "ru-fuel", "en-uk"]


@pytest.mark.parametrize("field", ["total", "date"])
def test_totals_and_dates_are_read_from_the_photos(
    results: list[tuple[Any, dict[str, Any]]], field: str
) -> None:
    misses = [
        (receipt.name, receipt.truth[field], details[field])
        for receipt, details in results
        if not receiptset.field_matches(field, receipt.truth[field], details[field])
    ]
    assert len(misses) <= 1, misses


def test_russian_receipts_give_their_inn_and_english_ones_none(
    results: list[tuple[Any, dict[str, Any]]],
) -> None:
    for receipt, details in results:
        if receipt.language == "en":
            assert details["inn"] is None
            assert details["fiscal"] is None
    russian = [
        (receipt.truth["inn"], details["inn"]) for receipt, details in results if receipt.language == "ru"
    ]
    assert sum(expected == got for expected, got in russian) >= 3, russian
