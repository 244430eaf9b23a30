"""Handwritten digit classifier: scikit-learn's bundled digits data set, served by modelport.

The model sees 8x8 images with values 0..16, bright ink on a dark background, the digit filling the
height of the frame (the layout of `sklearn.datasets.load_digits`). `to_features` brings any photo or
drawing of a single digit into that layout, so a dark digit drawn on a white canvas works as well as a
bright one on black.
"""

from __future__ import annotations

import io
import os
import pickle
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFilter, ImageOps

MODEL_FILE = "model.pkl"

_GRID = 8  # the model's input is _GRID x _GRID
_WORK = 32  # preprocessing resolution; each model cell averages a 4x4 block, as in the data set
_TARGET_INK = 0.15  # mean ink of a 32x32 canvas below which strokes are thickened
_MAX_SIDE = 1024  # larger images are scaled down first
_MARGIN = 0.04  # margin around the ink's bounding box, as a fraction of its longer side


def load(model_key: str, path: str) -> Any:
    """Return the classifier saved in `path`, training and saving it there on first use.

    A saved model written by another scikit-learn version is retrained rather than trusted.
    """
    import sklearn

    target = Path(path) / MODEL_FILE
    if target.exists():
        with target.open("rb") as fh, warnings.catch_warnings():
            # scikit-learn warns when unpickling across versions; the version check below handles that.
            warnings.simplefilter("ignore")
            saved = pickle.load(fh)
        if isinstance(saved, dict) and saved.get("sklearn_version") == sklearn.__version__:
            return saved["model"]
    from sklearn.datasets import load_digits

    digits = load_digits()
    model = train(digits.images, digits.target)
    _save_atomically({"sklearn_version": sklearn.__version__, "model": model}, target)
    return model


def train(images: np.ndarray, labels: np.ndarray) -> Any:
    """Fit the classifier on 8x8 images in the data set's layout (0..16, ink bright).

    Each image goes through the same path as a request (rendered dark on white, then `to_features`), so
    the model learns exactly what it will be shown.
    """
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.svm import SVC

    features = np.stack([to_features(render(image)) for image in images])
    model = CalibratedClassifierCV(SVC(C=5.0, gamma=0.002), ensemble=False)
    model.fit(features, labels)
    return model


def render(image: np.ndarray, size: int = 64) -> Image.Image:
    """Draw an 8x8 data set image (0..16, ink bright) as a `size` x `size` picture, dark ink on white."""
    pixels = np.round(255.0 - np.clip(image, 0.0, 16.0) * (255.0 / 16.0)).astype(np.uint8)
    return Image.fromarray(pixels).resize((size, size), Image.Resampling.NEAREST)


def inference(
    parameters: list[dict[str, Any]],
    inputs: list[dict[str, Any]],
    output_fields: list[dict[str, Any]],
    model_key: str,
    model: Any = None,
) -> list[dict[str, Any]]:
    """Recognise a handwritten digit (0-9) in an image.

    Send a photo, scan or drawing of one digit, of any size: dark ink on a light background or light ink
    on a dark one. The image is cropped to the digit and scaled down to the 8x8 grid of scikit-learn's
    digits data set before classification. Or send that grid itself as `pixels`: each record has either an
    image or pixels.

    :param inputs.image: An image showing a single digit
    :type inputs.image: FILE or image/png or image/jpeg, optional, max size 10 MB

    :param inputs.pixels: The 8x8 grid of scikit-learn's digits data set, row by row: 64 values from 0
        (background) to 16 (ink)
    :type inputs.pixels: list[float], optional, min 64, max 64

    :param outputs.label: The recognised digit; null when the image shows no ink at all
    :type outputs.label: int, optional

    :param outputs.probabilities: Probability of each digit, as an object with keys "0" to "9";
        null when the label is null
    :type outputs.probabilities: json, optional
    """
    results: list[dict[str, Any]] = [{"label": None, "probabilities": None} for _ in inputs]
    features = [_features(record) for record in inputs]
    drawn = [i for i, row in enumerate(features) if row.any()]
    if not drawn:
        return results
    # One call for the whole batch: the platform may have merged several requests into it.
    probabilities = model.predict_proba(np.stack([features[i] for i in drawn]))
    classes = [int(c) for c in model.classes_]
    for index, row in zip(drawn, probabilities, strict=True):
        results[index] = {
            "label": classes[int(np.argmax(row))],
            "probabilities": {str(c): round(float(p), 6) for c, p in zip(classes, row, strict=True)},
        }
    return results


def _features(record: dict[str, Any]) -> np.ndarray:
    """The model's features of one record: from its image, or from its pixels drawn as the model was
    trained (so they go through the same cropping and scaling as an image)."""
    image, pixels = record.get("image"), record.get("pixels")
    if (image is None) == (pixels is None):
        raise ValueError("send either `image` or `pixels` in each record, not both and not neither")
    if image is not None:
        return to_features(_open_image(image))
    grid = np.asarray(pixels, dtype=np.float64)
    if grid.shape != (_GRID * _GRID,) or not np.all((grid >= 0.0) & (grid <= 16.0)):
        raise ValueError("`pixels` must be 64 values from 0 to 16 (the 8x8 grid, row by row)")
    return to_features(render(grid.reshape(_GRID, _GRID)))


def to_features(image: Image.Image) -> np.ndarray:
    """Turn an image of one digit into the 64 features the model expects (8x8, 0..16, ink bright).

    A blank image gives all zeros.
    """
    ink = _ink_map(image)
    strong = ink > 0.35
    if not strong.any():
        return np.zeros(_GRID * _GRID)
    rows = np.flatnonzero(strong.any(axis=1))
    cols = np.flatnonzero(strong.any(axis=0))
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    height, width = bottom - top, right - left
    side = max(height, width)
    margin = round(side * _MARGIN)
    side += 2 * margin
    square = np.zeros((side, side))
    y, x = (side - height) // 2, (side - width) // 2
    square[y : y + height, x : x + width] = ink[top:bottom, left:right]

    canvas = Image.fromarray(np.round(square * 255).astype(np.uint8))
    canvas = canvas.resize((_WORK, _WORK), Image.Resampling.BOX)
    work = np.asarray(canvas, dtype=np.float64) / 255.0
    peak = work.max()
    if peak <= 0:
        return np.zeros(_GRID * _GRID)
    work = work / peak
    # Thin pen strokes on a large canvas shrink to faint lines; thicken them to the data set's stroke width.
    for _ in range(4):
        if work.mean() >= _TARGET_INK:
            break
        thicker = Image.fromarray(np.round(work * 255).astype(np.uint8)).filter(ImageFilter.MaxFilter(3))
        work = np.asarray(thicker, dtype=np.float64) / 255.0

    block = _WORK // _GRID
    cells = work.reshape(_GRID, block, _GRID, block).mean(axis=(1, 3))
    top_value = cells.max()
    if top_value <= 0:
        return np.zeros(_GRID * _GRID)
    return np.clip(cells / top_value * 16.0, 0.0, 16.0).reshape(-1)


def _ink_map(image: Image.Image) -> np.ndarray:
    """Ink intensity in 0..1 per pixel, whatever the background colour."""
    image = ImageOps.exif_transpose(image)
    transparent = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
    image = image.convert("RGBA" if transparent else "L")
    if max(image.size) > _MAX_SIDE:
        image.thumbnail((_MAX_SIDE, _MAX_SIDE), Image.Resampling.BOX)
    if transparent:
        alpha = np.asarray(image.getchannel("A"), dtype=np.float64) / 255.0
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        gray = np.asarray(Image.alpha_composite(white, image).convert("L"), dtype=np.float64) / 255.0
        if alpha.min() < 0.5 and np.ptp(gray) < 0.1:
            # Light strokes on a transparent canvas: the alpha channel is the drawing.
            gray = 1.0 - alpha
    else:
        gray = np.asarray(image, dtype=np.float64) / 255.0
    border = np.concatenate([gray[0, :], gray[-1, :], gray[:, 0], gray[:, -1]])
    background = float(np.median(border))
    ink = np.abs(gray - background)
    spread = ink.max()
    if spread < 0.1:
        return np.zeros_like(gray)
    # Scale to 0..1 and drop faint noise (paper texture, JPEG artefacts, shadows).
    return np.clip((ink / spread - 0.15) / 0.85, 0.0, 1.0)


def _open_image(value: Any) -> Image.Image:
    """Open a file input: a modelport File (or any path), raw bytes, or an already opened image."""
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, bytes | bytearray):
        source: Any = io.BytesIO(value)
    elif isinstance(value, str | os.PathLike):
        source = os.fspath(value)
    else:
        source = io.BytesIO(value.read())
    with Image.open(source) as image:
        image.load()
        return image.copy()


def _save_atomically(payload: Any, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            pickle.dump(payload, fh, protocol=pickle.HIGHEST_PROTOCOL)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
