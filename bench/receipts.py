"""Measures the receipt showcase end to end: rendered receipt photos through OCR and the extractor.

    .venv/bin/python bench/receipts.py [--count 40] [--seed 0] [--json] [--misses]

Renders `--count` receipts of `receiptset.py` (Russian and English, several layouts and fonts, slightly
rotated, blurred and noisy), reads each with the gallery's `tesseract-ocr` module and extracts its payment
details with the gallery's `receipt-extractor` module, calling their `inference` functions as a worker does
(one record a call, the image as a file on disk). It prints, for every field, how many receipts got exactly
the expected value (`receiptset.field_matches`), and the latency of each stage (median and 95th percentile).

The targets are at least 90 % exact matches for `total`, `date` and `inn`; the exit status is 0 when they are
met, 1 otherwise. `--misses` lists every mismatch (receipt, field, expected, got), `--json` prints the whole
report as JSON instead of tables. OCR runs with the module's defaults unless `--language` or `--psm` is given.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.gallery import import_file
from receiptset import FIELDS, Receipt, field_matches, receipts

from modelport.sdk import File

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {"total": 0.9, "date": 0.9, "inn": 0.9}


def load_gallery_module(name: str) -> ModuleType:
    """The `inference.py` of the gallery module `name`, imported from its file as the platform would."""
    return import_file(f"gallery_{name.replace('-', '_')}", ROOT / "gallery" / name / "inference.py")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=40, help="receipts to render (default 40)")
    parser.add_argument("--seed", type=int, default=0, help="the set's seed (default 0)")
    parser.add_argument("--language", help="the OCR module's `language` parameter (default: its own)")
    parser.add_argument("--psm", type=int, help="the OCR module's `psm` parameter (default: its own)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--misses", action="store_true", help="list every field that did not match")
    args = parser.parse_args()
    ocr_parameters = {k: v for k, v in (("language", args.language), ("psm", args.psm)) if v is not None}
    report = run(args.count, args.seed, ocr_parameters)
    print(
        json.dumps(report, ensure_ascii=False, indent=2) if args.json else render(report, misses=args.misses)
    )
    sys.exit(0 if report["targets_met"] else 1)


def run(count: int, seed: int, ocr_parameters: dict[str, Any]) -> dict[str, Any]:
    """Render, read and extract `count` receipts; the report that `main` prints."""
    ocr, extractor = load_gallery_module("tesseract-ocr"), load_gallery_module("receipt-extractor")
    started = time.perf_counter()
    rendered = receipts(count, seed)
    render_seconds = time.perf_counter() - started
    timings: dict[str, list[float]] = {"ocr": [], "extraction": []}
    matched = dict.fromkeys(FIELDS, 0)
    misses: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="modelport-receipts-") as scratch:
        for receipt in rendered:
            got = _read(receipt, Path(scratch), ocr, extractor, ocr_parameters, timings)
            for field in FIELDS:
                if field_matches(field, receipt.truth[field], got[field]):
                    matched[field] += 1
                else:
                    misses.append(
                        {
                            "receipt": receipt.name,
                            "field": field,
                            "expected": receipt.truth[field],
                            "got": got[field],
                        }
                    )
    fields = {
        field: {"matched": matched[field], "count": count, "percent": _percent(matched[field], count)}
        for field in FIELDS
    }
    return {
        "count": count,
        "seed": seed,
        "ocr_parameters": ocr_parameters,
        "fields": fields,
        "latency_ms": {stage: _percentiles(values) for stage, values in timings.items()},
        "render_ms_mean": round(render_seconds / max(count, 1) * 1000, 1),
        "targets": {field: minimum * 100 for field, minimum in TARGETS.items()},
        "targets_met": all(matched[f] >= minimum * count for f, minimum in TARGETS.items()),
        "misses": misses,
    }


def _read(
    receipt: Receipt,
    scratch: Path,
    ocr: ModuleType,
    extractor: ModuleType,
    ocr_parameters: dict[str, Any],
    timings: dict[str, list[float]],
) -> dict[str, Any]:
    """One receipt through both modules, each called as a worker calls it; their times go to `timings`."""
    suffix = ".jpg" if receipt.content_type == "image/jpeg" else ".png"
    path = scratch / f"{receipt.name}{suffix}"
    path.write_bytes(receipt.image_bytes)
    image = File(
        path=path, content_type=receipt.content_type, filename=path.name, size=len(receipt.image_bytes)
    )
    started = time.perf_counter()
    [read] = ocr.inference([ocr_parameters], [{"image": image}], [], "default")
    timings["ocr"].append(time.perf_counter() - started)
    started = time.perf_counter()
    [details] = extractor.inference([{}], [{"text": read["text"]}], [], "default")
    timings["extraction"].append(time.perf_counter() - started)
    result: dict[str, Any] = details
    return result


def _percent(part: int, whole: int) -> float:
    return round(100.0 * part / whole, 1) if whole else 0.0


def _percentiles(seconds: list[float]) -> dict[str, float]:
    if not seconds:
        return {"p50": 0.0, "p95": 0.0}
    if len(seconds) == 1:
        return {"p50": round(seconds[0] * 1000, 2), "p95": round(seconds[0] * 1000, 2)}
    cuts = statistics.quantiles(seconds, n=100, method="inclusive")
    return {"p50": round(statistics.median(seconds) * 1000, 2), "p95": round(cuts[94] * 1000, 2)}


def render(report: dict[str, Any], *, misses: bool = False) -> str:
    """The report as the tables printed on the terminal."""
    parameters = ", ".join(f"{k} {v}" for k, v in report["ocr_parameters"].items()) or "its defaults"
    lines = [
        f"{report['count']} receipts, seed {report['seed']}; OCR with {parameters}",
        "",
        f"{'field':<16} {'exact':>7} {'%':>6}  target",
    ]
    for field, row in report["fields"].items():
        target = report["targets"].get(field)
        lines.append(
            f"{field:<16} {row['matched']:>3}/{row['count']:<3} {row['percent']:>6.1f}"
            + (f"  >= {target:.0f} %" if target is not None else "")
        )
    lines += ["", f"{'stage':<12} {'p50 ms':>9} {'p95 ms':>9}"]
    for stage, row in report["latency_ms"].items():
        lines.append(f"{stage:<12} {row['p50']:>9.2f} {row['p95']:>9.2f}")
    lines += [
        f"(rendering: {report['render_ms_mean']:.1f} ms a receipt)",
        "",
        "targets met" if report["targets_met"] else "TARGETS MISSED",
    ]
    if misses:
        lines += ["", "misses:"]
        lines += [
            f"  {m['receipt']:<16} {m['field']:<15} expected {m['expected']!r}, got {m['got']!r}"
            for m in report["misses"]
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
