"""Drift's arithmetic: the features of one call, read from what its module declares, and the comparison of
recent features with a reference.

`plan_of(spec)` decides once per version what each declared field gives:

- `int` and `float` inputs, `float` outputs: the number (numeric), named `inputs.x`, `outputs.y`;
- `int` outputs: the number, categorical when the field declares `one of` or the reference holds at most 20
  distinct values (a class label), numeric otherwise;
- `str` and `bool` outputs, `bool` inputs, inputs that declare `one of`: the value, cut to 100 characters
  (categorical);
- `str` inputs: their length, `inputs.x.length` (numeric);
- `FILE` inputs accepting only images: `inputs.x.width`, `.height` and `.brightness` (the mean grey level,
  0..255); other `FILE` inputs: `inputs.x.size` in bytes (numeric);
- `json` outputs holding numbers (an object or a list of them: class probabilities, scores): the largest,
  the model's confidence, `outputs.y.max` (numeric).

Parameters and lists give no feature, nor do values that do not fit the measure (text where a number is
declared); a missing value (an optional output left null) is left out of its feature.

`compare` sets a recent window against the reference, feature by feature: the population stability index
(PSI) over 10 quantile bins of the reference (plus one below and one above its range), or over its categories;
for numbers also the two-sample Kolmogorov-Smirnov statistic and p-value. A feature drifts when its PSI
reaches the threshold, or when the KS test is both significant (p < 0.01) and large (statistic >= 0.1): a
p-value alone flags differences too small to matter once windows are large.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image, ImageStat

from modelport.core.records import DriftFeature, DriftVerdict, FeatureKind, FeatureSummary
from modelport.sdk.spec import ApiSpec, FieldSpec, Kind

__all__ = [
    "BINS",
    "LABEL_MAX_DISTINCT",
    "MIN_VALUES",
    "FileSource",
    "Measure",
    "Plan",
    "Rule",
    "Value",
    "categorical_psi",
    "compare",
    "image_features",
    "ks_test",
    "numeric_psi",
    "plan_of",
]

log = logging.getLogger("modelport.drift")

BINS = 10
"""Quantile bins of the reference for a numeric PSI."""
EPSILON = 1e-4
"""The share an empty bin counts for, so that the PSI stays finite."""
LABEL_MAX_DISTINCT = 20
"""An `int` output with at most this many distinct values in the reference is a category (a class label)."""
MAX_CATEGORIES = 50
"""Categories compared one by one (the reference's most common); the rest count together as `(other)`."""
MIN_VALUES = 20
"""Values a feature needs on each side before it is compared."""
KS_P_VALUE = 0.01
KS_MIN_STATISTIC = 0.1
MAX_TEXT = 100
"""Characters of a categorical value kept."""
THUMBNAIL = 64
"""The side (in pixels) an image is decoded down to, about, before its brightness is measured."""
OTHER = "(other)"

Value = float | int | str
"""One feature's value in one call: a number, or a category."""


class Measure(StrEnum):
    """What a field gives (see the table above)."""

    NUMBER = "number"
    LABEL = "label"
    CATEGORY = "category"
    LENGTH = "length"
    SIZE = "size"
    IMAGE = "image"
    TOP = "top"


_SUFFIXES: dict[Measure, tuple[str, ...]] = {
    Measure.LENGTH: ("length",),
    Measure.SIZE: ("size",),
    Measure.IMAGE: ("width", "height", "brightness"),
    Measure.TOP: ("max",),
}


class FileSource:
    """Where a call's files are read: `size` and `image` of a file value, or None when they cannot be told.
    This one reads a call's uploads on local disk (`{"path": ..., "size": ...}`); `image` reads the file,
    so only a thread may ask it."""

    def __init__(self, *, max_pixels: int) -> None:
        self.max_pixels = max_pixels

    def size(self, value: Any) -> int | None:
        size = value.get("size") if isinstance(value, dict) else None
        return size if isinstance(size, int) and not isinstance(size, bool) else None

    def image(self, value: Any) -> tuple[float, float, float] | None:
        path = value.get("path") if isinstance(value, dict) else None
        return image_features(Path(path), max_pixels=self.max_pixels) if isinstance(path, str) else None


@dataclass(frozen=True, slots=True)
class Rule:
    """One declared field and what it gives."""

    group: str
    field: str
    measure: Measure

    @property
    def names(self) -> tuple[str, ...]:
        """The features it gives, by name (`inputs.image.width`, `outputs.label`)."""
        base = f"{self.group}.{self.field}"
        suffixes = _SUFFIXES.get(self.measure)
        return (base,) if suffixes is None else tuple(f"{base}.{suffix}" for suffix in suffixes)

    def take(self, value: Any, files: FileSource) -> dict[str, Value]:
        """This field's features in one record (none when the value is missing or not as declared)."""
        if value is None:
            return {}
        if self.measure is Measure.IMAGE:
            measured = files.image(value)
            return dict(zip(self.names, measured, strict=True)) if measured is not None else {}
        taken = files.size(value) if self.measure is Measure.SIZE else _scalar(self.measure, value)
        return {self.names[0]: taken} if taken is not None else {}


def _scalar(measure: Measure, value: Any) -> Value | None:
    if measure is Measure.NUMBER:
        return _number(value)
    if measure is Measure.LABEL:
        return value if isinstance(value, int) and not isinstance(value, bool) else None
    if measure is Measure.CATEGORY:
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)[:MAX_TEXT] if isinstance(value, (str, int, float)) else None
    if measure is Measure.LENGTH:
        return len(value) if isinstance(value, str) else None
    return _top(value)  # Measure.TOP


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _top(value: Any) -> float | None:
    """The largest number of an object or list of numbers; None for anything else."""
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    numbers = [number for item in items if (number := _number(item)) is not None]
    return max(numbers) if numbers and len(numbers) == len(items) else None


@dataclass(frozen=True)
class Plan:
    """Every feature one module version's calls give."""

    rules: tuple[Rule, ...]

    @property
    def images(self) -> bool:
        """Whether a call's features include an uploaded image's (read from disk, off the event loop)."""
        return any(rule.measure is Measure.IMAGE for rule in self.rules)

    @property
    def labels(self) -> frozenset[str]:
        """Features whose kind the reference decides: categorical with few distinct values, else numeric."""
        return frozenset(rule.names[0] for rule in self.rules if rule.measure is Measure.LABEL)

    @property
    def categorical(self) -> frozenset[str]:
        return frozenset(rule.names[0] for rule in self.rules if rule.measure is Measure.CATEGORY)

    def take(
        self, inputs: Mapping[str, Any], outputs: Mapping[str, Any], files: FileSource
    ) -> dict[str, Value]:
        """The features of one record, copied out of what it sent and got."""
        features: dict[str, Value] = {}
        for rule in self.rules:
            record = inputs if rule.group == "inputs" else outputs
            features.update(rule.take(record.get(rule.field), files))
        return features


def plan_of(spec: ApiSpec) -> Plan:
    """What each declared input and output of `spec` gives (fields that give nothing are left out)."""
    rules = [
        Rule(field.group, field.name, measure)
        for field in (*spec.inputs, *spec.outputs)
        if (measure := _measure(field)) is not None
    ]
    return Plan(tuple(rules))


def _measure(field: FieldSpec) -> Measure | None:
    kinds = {t.kind for t in field.types}
    output = field.group == "outputs"
    if kinds == {Kind.FILE}:
        if output:
            return None
        mime = field.types[0].mime
        return Measure.IMAGE if mime and all(m.startswith("image/") for m in mime) else Measure.SIZE
    if field.choices is not None and kinds <= {Kind.STR, Kind.INT, Kind.BOOL}:
        return Measure.CATEGORY
    if kinds == {Kind.INT} and output:
        return Measure.LABEL
    if kinds and kinds <= {Kind.INT, Kind.FLOAT}:
        return Measure.NUMBER
    if kinds == {Kind.BOOL} or (kinds == {Kind.STR} and output):
        return Measure.CATEGORY
    if kinds == {Kind.STR}:
        return Measure.LENGTH
    if kinds == {Kind.JSON} and output:
        return Measure.TOP
    return None


def image_features(source: Path | IO[bytes], *, max_pixels: int) -> tuple[float, float, float] | None:
    """(width, height, mean brightness 0..255) of an image, decoded at about `THUMBNAIL` pixels a side
    (`draft` has JPEG decode at a fraction of its size; `reduce` averages blocks of the rest); None when it
    is not an image Pillow can read, or has more than `max_pixels`."""
    try:
        with Image.open(source) as image:
            width, height = image.size
            if width * height > max_pixels:
                return None
            image.draft("L", (THUMBNAIL, THUMBNAIL))
            grey = image.convert("L")
            factor = min(grey.size) // THUMBNAIL
            if factor > 1:
                grey = grey.reduce(factor)
            brightness = float(ImageStat.Stat(grey).mean[0])
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        log.debug("no image features: %s", exc)
        return None
    return float(width), float(height), round(brightness, 3)


# Comparing


def numeric_psi(reference: Sequence[float], recent: Sequence[float]) -> float:
    """The PSI of `recent` against `reference` over the reference's deciles, with one more bin below its
    smallest value and one above its largest, so that values outside its range count too."""
    ref, now = np.asarray(reference, dtype=float), np.asarray(recent, dtype=float)
    deciles = np.quantile(ref, np.linspace(0, 1, BINS + 1)[1:])
    edges = np.unique(np.concatenate(([np.nextafter(ref.min(), -np.inf)], deciles)))
    bins = len(edges) + 1
    expected = np.bincount(np.searchsorted(edges, ref, side="left"), minlength=bins) / len(ref)
    actual = np.bincount(np.searchsorted(edges, now, side="left"), minlength=bins) / len(now)
    return _psi(expected, actual)


def categorical_psi(reference: Sequence[str], recent: Sequence[str]) -> float:
    """The PSI of `recent` against `reference` over the reference's categories (its `MAX_CATEGORIES` most
    common; the rest, and categories it never saw, together as `(other)`)."""
    kept = [category for category, _ in Counter(reference).most_common(MAX_CATEGORIES)]
    index = {category: position for position, category in enumerate(kept)}
    other = len(kept)

    def shares(values: Sequence[str]) -> np.ndarray:
        positions = [index.get(value, other) for value in values]
        return np.bincount(positions, minlength=other + 1) / len(values)

    return _psi(shares(reference), shares(recent))


def _psi(expected: np.ndarray, actual: np.ndarray) -> float:
    e, a = np.maximum(expected, EPSILON), np.maximum(actual, EPSILON)
    return float(np.sum((a - e) * np.log(a / e)))


def ks_test(reference: Sequence[float], recent: Sequence[float]) -> tuple[float, float]:
    """(statistic, p-value) of the two-sample Kolmogorov-Smirnov test."""
    from scipy.stats import ks_2samp  # here, not at the top: only the server compares, and scipy is slow

    result = ks_2samp(np.asarray(reference, dtype=float), np.asarray(recent, dtype=float))
    return float(result.statistic), float(result.pvalue)


def compare(
    plan: Plan,
    reference: Mapping[str, Sequence[Value]],
    recent: Sequence[Mapping[str, Value]],
    *,
    threshold: float,
) -> list[DriftFeature]:
    """Each feature of the reference compared with the recent samples, by name."""
    found: list[DriftFeature] = []
    for name in sorted(reference):
        values = [sample[name] for sample in recent if name in sample]
        found.append(_feature(name, _kind(plan, name, reference[name]), reference[name], values, threshold))
    return found


def _kind(plan: Plan, name: str, reference: Sequence[Value]) -> FeatureKind:
    if name in plan.categorical or any(isinstance(value, str) for value in reference):
        return "categorical"
    if name in plan.labels and len(set(reference)) <= LABEL_MAX_DISTINCT:
        return "categorical"
    return "numeric"


def _feature(
    name: str, kind: FeatureKind, reference: Sequence[Value], recent: Sequence[Value], threshold: float
) -> DriftFeature:
    psi = ks = p_value = None
    verdict: DriftVerdict = "insufficient_data"
    if len(reference) >= MIN_VALUES and len(recent) >= MIN_VALUES:
        if kind == "categorical":
            psi = categorical_psi([str(v) for v in reference], [str(v) for v in recent])
            drifts = psi >= threshold
        else:
            numbers = [float(v) for v in reference], [float(v) for v in recent]
            psi = numeric_psi(*numbers)
            ks, p_value = ks_test(*numbers)
            drifts = psi >= threshold or (p_value < KS_P_VALUE and ks >= KS_MIN_STATISTIC)
        verdict = "drift" if drifts else "ok"
    return DriftFeature(
        name=name,
        kind=kind,
        psi=None if psi is None else round(psi, 4),
        ks=None if ks is None else round(ks, 4),
        p_value=p_value,
        verdict=verdict,
        reference_summary=summary(kind, reference),
        recent_summary=summary(kind, recent),
    )


def summary(kind: FeatureKind, values: Sequence[Value]) -> FeatureSummary:
    """What `values` look like: mean, median and range of numbers, or the shares of the top 10 categories."""
    if not values:
        return FeatureSummary(count=0, mean=None, median=None, min=None, max=None, shares=None)
    if kind == "categorical":
        counts = Counter(str(value) for value in values).most_common(10)
        shares = {category: round(count / len(values), 4) for category, count in counts}
        return FeatureSummary(count=len(values), mean=None, median=None, min=None, max=None, shares=shares)
    numbers = np.asarray([float(v) for v in values])
    return FeatureSummary(
        count=len(values),
        mean=_round(numbers.mean()),
        median=_round(np.median(numbers)),
        min=_round(numbers.min()),
        max=_round(numbers.max()),
        shares=None,
    )


def _round(value: Any) -> float:
    number = float(value)
    return float(f"{number:.6g}")
