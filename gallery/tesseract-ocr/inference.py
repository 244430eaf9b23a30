"""Tesseract OCR for photos and scans of printed text, receipts first, served by modelport.

`prepare` turns a photo into the page Tesseract reads best: upright (its EXIF orientation), grey, the uneven
light divided out and a dark background around the paper whitened, straightened by up to 5 degrees, and
scaled so that capital letters are about 30 pixels tall. `read` runs the distribution's `tesseract` program
on that page through pytesseract and maps each word's box back onto the image as it was sent.

The program and its language data are system packages (`tesseract-ocr`, `tesseract-ocr-eng`,
`tesseract-ocr-rus`), which the operator installs; a missing one is named in the error.
"""

from __future__ import annotations

import functools
import io
import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytesseract  # type: ignore[import-untyped]
from PIL import Image, ImageDraw, ImageFilter, ImageOps, UnidentifiedImageError

LANGUAGES = ("eng", "rus", "eng+rus")
PAGE_MODES = (3, 4, 6, 11, 12)
DEFAULT_LANGUAGE = "eng+rus"
DEFAULT_PAGE_MODE = 6

_PACKAGES = {"eng": "tesseract-ocr-eng", "rus": "tesseract-ocr-rus"}
_MIN_SIDE = 3  # pixels; Tesseract refuses narrower images, and nothing that small is legible
_MIN_CONTRAST = 24  # grey levels between the darkest and the lightest pixel below which a page is blank
_BLOCKS = 100  # the light is estimated in blocks of 1/_BLOCKS of the longer side
_MIN_BLOCK = 8  # pixels: a background around the paper is looked for in blocks no smaller than this,
_MIN_BLOCKS = 12  # and only in images at least this many blocks wide and high
_BACKGROUND = 0.6  # a background is at most this bright relative to the paper,
_MAX_BACKGROUND = 0.8  # and covers at most this share of the image
_ANALYSIS_SIDE = 1200  # pixels: skew and text size are measured on a copy no larger than this
_TARGET_CAP = 30.0  # pixels: the height of capital letters that Tesseract reads best
_KEEP_SCALE = (0.8, 1.25)  # text this close to the target size is read as it is
_MAX_UPSCALE = 4.0
_MAX_PIXELS = 12_000_000  # the page Tesseract reads is kept below this
_MAX_SKEW = 5.0  # degrees
_MIN_SKEW = 0.3  # degrees; a smaller skew is left alone


@dataclass(frozen=True)
class Page:
    """The image Tesseract reads, and how its coordinates map back onto the image that was sent."""

    image: Image.Image
    """Greyscale, dark text on light paper; 0 x 0 when the image that was sent cannot hold any text."""
    original_size: tuple[int, int]
    """Width and height of the image as sent, turned upright by its EXIF orientation."""
    scale: float
    """`image` is the original scaled by this factor,"""
    angle: float
    """then rotated by this many degrees counter-clockwise around its centre, on an expanded canvas."""

    def to_original(self, left: float, top: float, width: float, height: float) -> tuple[int, int, int, int]:
        """A box of `image` as `(left, top, width, height)` in the original: its centre is turned back and
        its size scaled back, which is exact for the small angles `prepare` corrects."""
        centre_x, centre_y = left + width / 2, top + height / 2
        if self.angle:
            turn = math.radians(self.angle)
            dx, dy = centre_x - self.image.width / 2, centre_y - self.image.height / 2
            centre_x = self.original_size[0] * self.scale / 2 + dx * math.cos(turn) - dy * math.sin(turn)
            centre_y = self.original_size[1] * self.scale / 2 + dx * math.sin(turn) + dy * math.cos(turn)
        centre_x, centre_y = centre_x / self.scale, centre_y / self.scale
        width, height = width / self.scale, height / self.scale
        original_width, original_height = self.original_size
        box_left = min(max(round(centre_x - width / 2), 0), original_width - 1)
        box_top = min(max(round(centre_y - height / 2), 0), original_height - 1)
        box_width = max(1, min(round(width), original_width - box_left))
        box_height = max(1, min(round(height), original_height - box_top))
        return box_left, box_top, box_width, box_height


def inference(
    parameters: list[dict[str, Any]],
    inputs: list[dict[str, Any]],
    output_fields: list[dict[str, Any]],
    model_key: str,
    model: Any = None,
) -> list[dict[str, Any]]:
    """Read the printed text in a photo or scan, such as a receipt, with Tesseract OCR.

    Send a phone photo or a scan of text in English, Russian or both. Before Tesseract reads it, the image
    is turned upright (EXIF orientation), made grey, evened out (uneven light, a dark table around the
    paper), straightened by up to 5 degrees and scaled to the text size Tesseract reads best. Word boxes
    are in the pixels of the image as sent, turned upright.

    :param inputs.image: A photo or scan of printed text
    :type inputs.image: FILE or image/jpeg or image/png, max size 20 MB

    :param parameters.language: The language data to read with: "eng" (English), "rus" (Russian) or
        "eng+rus" (both)
    :type parameters.language: str, optional, default "eng+rus", one of ["eng", "rus", "eng+rus"]

    :param parameters.psm: Tesseract's page segmentation mode: 6 reads one block of lines (a receipt),
        4 one column of lines of varying size, 3 finds the layout itself, 11 and 12 look for scattered words
    :type parameters.psm: int, optional, default 6, one of [3, 4, 6, 11, 12]

    :param outputs.text: The text read, line by line, with a blank line between blocks of text
    :type outputs.text: str

    :param outputs.words: The words read, each {"text", "left", "top", "width", "height", "confidence",
        "line"}: its box in pixels, Tesseract's confidence from 0 to 100, and the number of its line in
        text, counted from 0
    :type outputs.words: json

    :param outputs.confidence: The words' mean confidence (0 to 100); null when no word was read
    :type outputs.confidence: float, optional
    """
    return [
        read(
            open_image(record["image"]),
            language=str(options.get("language", DEFAULT_LANGUAGE)),
            psm=int(options.get("psm", DEFAULT_PAGE_MODE)),
        )
        for options, record in zip(parameters, inputs, strict=True)
    ]


def read(
    image: Image.Image, *, language: str = DEFAULT_LANGUAGE, psm: int = DEFAULT_PAGE_MODE
) -> dict[str, Any]:
    """OCR one image: `{"text", "words", "confidence"}`, boxes in the pixels of `image` turned upright.

    An image too small or too plain to hold text gives no words, without running Tesseract.
    """
    if language not in LANGUAGES:
        raise ValueError(f"language {language!r} is not one of {', '.join(LANGUAGES)}")
    if psm not in PAGE_MODES:
        raise ValueError(f"psm {psm} is not one of {', '.join(map(str, PAGE_MODES))}")
    page = prepare(image)
    if page.image.width == 0:
        return {"text": "", "words": [], "confidence": None}
    _check_installed(language)
    # Tesseract's OpenMP threads would fight over the cores with those of the other workers.
    os.environ.setdefault("OMP_THREAD_LIMIT", "1")
    tsv = pytesseract.image_to_data(page.image, lang=language, config=f"--psm {psm}")
    return _result(page, _tsv_rows(tsv))


def prepare(image: Image.Image) -> Page:
    """The page Tesseract should read for `image`: upright, grey, evened out, straightened and scaled."""
    upright = ImageOps.exif_transpose(image)
    original_size = upright.size
    grey = _greyscale(upright)
    if min(grey.size) < _MIN_SIDE or _contrast(grey) < _MIN_CONTRAST:
        return Page(Image.new("L", (0, 0)), original_size, 1.0, 0.0)
    shrink = min(1.0, math.sqrt(_MAX_PIXELS / (grey.width * grey.height)))
    if shrink < 1.0:
        grey = grey.resize(_scaled(grey.size, shrink), Image.Resampling.BOX)
    grey = _even_out(grey)
    analysis_scale = min(1.0, _ANALYSIS_SIDE / max(grey.size))
    if analysis_scale < 1.0:
        ink = _ink(grey.resize(_scaled(grey.size, analysis_scale), Image.Resampling.BOX))
    else:
        ink = _ink(grey)
    angle = skew(ink)
    cap = cap_height(ink.rotate(angle, expand=True) if angle else ink) / analysis_scale
    scale = _scale_for(cap, grey.size)
    if scale != 1.0:
        resample = Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BICUBIC
        grey = grey.resize(_scaled(grey.size, scale), resample)
    if angle:
        grey = grey.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=255)
    return Page(grey, original_size, shrink * scale, angle)


def skew(ink: Image.Image) -> float:
    """The rotation (degrees counter-clockwise, at most 5 either way) that makes the lines of `ink` level.

    `ink` is a mode "L" image, ink white on black. The angle chosen is the one whose rows' amounts of ink
    differ most from row to row: lines of text then fill rows of their own, with empty rows between them.
    """
    sharpness = functools.partial(_profile_sharpness, ink)
    coarse = max(np.arange(-_MAX_SKEW, _MAX_SKEW + 0.01, 1.0), key=sharpness)
    fine = max(np.arange(coarse - 0.75, coarse + 0.76, 0.25), key=sharpness)
    angle = float(np.clip(round(float(fine), 2), -_MAX_SKEW, _MAX_SKEW))
    if abs(angle) < _MIN_SKEW or sharpness(angle) <= sharpness(0.0) * 1.02:
        return 0.0
    return angle


def cap_height(ink: Image.Image) -> float:
    """The height, in pixels, of the capital letters in `ink` (ink white on black); 0 without ink.

    Measured on the vertical runs of ink: most cross a horizontal stroke and measure the pen's width, but
    the stems of letters such as l, d, T or H span a capital's height. Lines much longer than a letter (a
    rule, the paper's edge) are left out.
    """
    pixels = np.asarray(ink) > 127
    longest = max(pixels.shape) // 10
    pixels &= ~_in_long_runs(pixels, longest) & ~_in_long_runs(pixels.T, longest).T
    runs = _runs(pixels.T)[1]
    if len(runs) == 0:
        return 0.0
    stems = runs[runs >= max(2.0, 2 * float(np.median(runs)))]
    return float(np.percentile(stems, 90)) if len(stems) else 0.0


def open_image(value: Any) -> Image.Image:
    """Open a file input (a modelport File or any path, raw bytes, or an open image), fully decoded.

    Raises `ValueError` when the bytes are not an image that Pillow can decode.
    """
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, bytes | bytearray):
        source: Any = io.BytesIO(value)
    elif isinstance(value, str | os.PathLike):
        source = os.fspath(value)
    else:
        source = io.BytesIO(value.read())
    try:
        with Image.open(source) as image:
            image.load()
            return image.copy()
    except FileNotFoundError:
        raise
    except (UnidentifiedImageError, SyntaxError, ValueError, OSError) as exc:
        raise ValueError(f"the image could not be decoded: {exc}") from None


def _scale_for(cap: float, size: tuple[int, int]) -> float:
    """How much to scale an image of `size` whose capitals are `cap` pixels tall."""
    scale = _TARGET_CAP / cap if cap > 0 else 1.0
    if _KEEP_SCALE[0] <= scale <= _KEEP_SCALE[1]:
        scale = 1.0
    return min(scale, _MAX_UPSCALE, math.sqrt(_MAX_PIXELS / (size[0] * size[1])))


def _greyscale(image: Image.Image) -> Image.Image:
    """Grey, with transparent parts shown on white paper."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("L")
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        levels = np.asarray(image, dtype=np.float64)
        low, high = float(levels.min()), float(levels.max())
        return Image.fromarray(np.round((levels - low) / max(high - low, 1e-9) * 255).astype(np.uint8))
    return image.convert("L")


def _contrast(grey: Image.Image) -> int:
    levels = np.asarray(grey)
    return int(levels.max()) - int(levels.min())


def _even_out(grey: Image.Image) -> Image.Image:
    """Divide out uneven light, whiten a dark background around the paper, then stretch the levels.

    The light falling on each place is estimated from the brightest blocks near it: the paper between
    the lines of text.
    """
    side = max(grey.size)
    blocks = grey.reduce(min(max(1, side // _BLOCKS), *grey.size))
    paper = blocks.filter(ImageFilter.MaxFilter(5)).filter(ImageFilter.BoxBlur(2))
    light = np.asarray(paper.resize(grey.size, Image.Resampling.BILINEAR), dtype=np.float32)
    evened = np.asarray(grey, dtype=np.float32) / np.maximum(light, 1.0) * 255.0
    if min(grey.size) >= _MIN_BLOCK * _MIN_BLOCKS:
        evened[_background(grey, max(_MIN_BLOCK, side // _BLOCKS))] = 255.0
    return ImageOps.autocontrast(Image.fromarray(np.clip(evened, 0, 255).astype(np.uint8)), cutoff=(1, 0))


def _background(grey: Image.Image, side: int) -> np.ndarray:
    """Which pixels of `grey` lie on a dark background around the paper, such as a table under a receipt.

    Dividing by the light would leave such a background as noise, with a dark band along the paper's edge
    that Tesseract reads as characters. It is found in blocks of `side` x `side` pixels: the blocks far
    darker than the rest that are joined to the image's border, and the blocks next to them.
    """
    means = np.asarray(grey.reduce(side))
    dark = means < _otsu(means)
    mask = np.zeros((grey.height, grey.width), dtype=bool)
    if not dark.any() or dark.all() or means[dark].mean() > _BACKGROUND * means[~dark].mean():
        return mask
    marks = Image.fromarray(np.pad(np.where(dark, 0, 255), 1).astype(np.uint8)).copy()  # a writable copy
    ImageDraw.floodfill(marks, (0, 0), 128)
    outside = np.asarray(marks)[1:-1, 1:-1] == 128
    if outside.mean() > _MAX_BACKGROUND:
        return mask  # light text on a dark ground rather than paper on a table
    blocks = _box_sum(outside, 3) > 0
    cells = np.repeat(np.repeat(blocks, side, axis=0), side, axis=1)[: grey.height, : grey.width]
    mask[: cells.shape[0], : cells.shape[1]] = cells
    return mask


def _ink(grey: Image.Image) -> Image.Image:
    """Ink white on black: the pixels darker than Otsu's threshold."""
    levels = np.asarray(grey, dtype=np.uint8)
    return Image.fromarray(np.where(levels < _otsu(levels), 255, 0).astype(np.uint8))


def _otsu(levels: np.ndarray) -> int:
    """The grey level that best splits `levels` (uint8) into a dark and a light class."""
    counts = np.bincount(levels.ravel(), minlength=256).astype(np.float64)
    below = np.cumsum(counts)
    above = below[-1] - below
    sums = np.cumsum(counts * np.arange(256))
    split = (below > 0) & (above > 0)
    between = np.zeros(256)
    between[split] = (sums[-1] * below[split] - sums[split] * below[-1]) ** 2 / (below[split] * above[split])
    return int(np.argmax(between)) + 1


def _box_sum(values: np.ndarray, size: int) -> np.ndarray:
    """The sum of `values` over the `size` x `size` window centred on each element (zeros outside)."""
    total = np.pad(values.astype(np.int32), size // 2).cumsum(axis=0).cumsum(axis=1)
    total = np.pad(total, ((1, 0), (1, 0)))
    sums: np.ndarray = (
        total[size:, size:] - total[:-size, size:] - total[size:, :-size] + total[:-size, :-size]
    )
    return sums


def _profile_sharpness(ink: Image.Image, angle: float) -> float:
    rotated = ink.rotate(float(angle), resample=Image.Resampling.NEAREST, expand=True) if angle else ink
    rows = np.asarray(rotated, dtype=np.float64).sum(axis=1)
    return float(np.square(np.diff(rows)).sum())


def _runs(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each horizontal run of True in the 2-d `pixels`: its start (a flat index) and its length."""
    padded = np.zeros((pixels.shape[0], pixels.shape[1] + 2), dtype=np.int8)
    padded[:, 1:-1] = pixels
    edges = np.diff(padded, axis=1).ravel()  # rows one longer than those of `pixels`
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return starts - starts // (pixels.shape[1] + 1), ends - starts


def _in_long_runs(pixels: np.ndarray, longer_than: int) -> np.ndarray:
    """Which elements of the 2-d `pixels` lie in a horizontal run of True longer than `longer_than`."""
    starts, lengths = _runs(pixels)
    long = lengths > max(1, longer_than)
    marks = np.zeros(pixels.size + 1, dtype=np.int32)
    np.add.at(marks, starts[long], 1)
    np.add.at(marks, starts[long] + lengths[long], -1)
    return (np.cumsum(marks)[:-1] > 0).reshape(pixels.shape)


def _scaled(size: tuple[int, int], scale: float) -> tuple[int, int]:
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def _tsv_rows(tsv: str) -> list[dict[str, str]]:
    """Tesseract's TSV as one dict per row (a page, block, paragraph, line or word)."""
    header, *lines = tsv.splitlines() or [""]
    names = header.split("\t")
    return [dict(zip(names, line.split("\t", len(names) - 1), strict=False)) for line in lines]


def _result(page: Page, rows: list[dict[str, str]]) -> dict[str, Any]:
    """The outputs from Tesseract's rows: lines of words, a blank line between blocks, boxes mapped back."""
    lines: list[str] = []
    words: list[dict[str, Any]] = []
    current: tuple[str, str, str] | None = None
    for row in rows:
        text = row.get("text", "").strip()
        if row.get("level") != "5" or not text:
            continue
        line = (row["block_num"], row["par_num"], row["line_num"])
        if line == current:
            lines[-1] += " " + text
        else:
            if current is not None and line[0] != current[0]:
                lines.append("")
            lines.append(text)
            current = line
        confidence = float(row["conf"])
        if confidence < 0:
            continue
        left, top, width, height = page.to_original(
            *(float(row[name]) for name in ("left", "top", "width", "height"))
        )
        words.append(
            {
                "text": text,
                "left": left,
                "top": top,
                "width": width,
                "height": height,
                "confidence": round(confidence, 2),
                "line": len(lines) - 1,
            }
        )
    mean = round(sum(word["confidence"] for word in words) / len(words), 2) if words else None
    return {"text": "\n".join(line.rstrip() for line in lines), "words": words, "confidence": mean}


def _check_installed(language: str) -> None:
    """Refuse, naming the package to install, when the program or a language's data is missing."""
    missing = [part for part in language.split("+") if part not in _installed_languages()]
    if missing:
        _installed_languages.cache_clear()  # installed since? look again next time
        packages = " ".join(_PACKAGES[part] for part in missing)
        raise RuntimeError(
            f"Tesseract has no language data for {'+'.join(missing)}: install the package {packages}"
        )


@functools.cache
def _installed_languages() -> frozenset[str]:
    try:
        return frozenset(pytesseract.get_languages(config=""))
    except pytesseract.TesseractNotFoundError:
        raise RuntimeError(
            "the tesseract program is not installed: install the distribution's tesseract-ocr package "
            "(on Debian or Ubuntu: apt-get install tesseract-ocr tesseract-ocr-eng tesseract-ocr-rus)"
        ) from None
