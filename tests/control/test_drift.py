"""Drift: the statistics on known distributions, the features each declared type gives, the thresholds, and
the service on both databases: sampling, the first-calls reference snapshot that outlives the samples, the
window after it, and a JSONL reference object with its images in storage."""

from __future__ import annotations

import base64
import io
import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from PIL import Image

from modelport.control.access import AccessPolicies, ModulePolicy
from modelport.control.audit import AuditTrail
from modelport.control.drift import Drift
from modelport.control.storage import Storage
from modelport.core.errors import VersionNotFound
from modelport.core.manifests import DriftMonitoring, ManifestError, parse_document
from modelport.core.settings import Settings
from modelport.db import ApiDefinition, Bucket, Database, DriftReference, DriftSample, Module, Version
from modelport.obs.calls import CallPayload, CallRecord
from modelport.obs.drift import (
    FileSource,
    categorical_psi,
    compare,
    image_features,
    ks_test,
    numeric_psi,
    plan_of,
)
from modelport.sdk.spec import ApiSpec, parse_docstring
from modelport.storage import LocalStore

NUMBERS = parse_docstring(
    """Scores a reading.

    :param inputs.x: A reading
    :type inputs.x: float
    :param outputs.score: The score
    :type outputs.score: float
    :param outputs.label: The class
    :type outputs.label: int
    """
)

IMAGES = parse_docstring(
    """Reads a picture.

    :param inputs.image: A picture
    :type inputs.image: FILE or image/png or image/jpeg
    :param outputs.label: The class
    :type outputs.label: int
    """
)


# The statistics


def test_the_psi_of_a_sample_against_another_of_the_same_distribution_is_small() -> None:
    rng = np.random.default_rng(1)
    reference, recent = rng.normal(0, 1, 10_000), rng.normal(0, 1, 10_000)
    assert numeric_psi(reference, recent) < 0.01


def test_the_psi_of_a_shifted_normal_is_about_the_square_of_the_shift() -> None:
    rng = np.random.default_rng(2)
    reference, shifted = rng.normal(0, 1, 20_000), rng.normal(0.5, 1, 20_000)
    assert 0.2 < numeric_psi(reference, shifted) < 0.27  # the binned PSI of N(0,1) vs N(d,1) tends to d**2


def test_the_psi_counts_each_decile_of_the_reference_and_values_beyond_its_range() -> None:
    reference = list(range(100))
    # Every recent value in the first decile: it holds 100% instead of 10%, and the nine others 0.01%.
    first = 0.9 * math.log(1 / 0.1) + 9 * (0.0001 - 0.1) * math.log(0.0001 / 0.1)
    assert numeric_psi(reference, [3.0] * 50) == pytest.approx(first, rel=1e-6)
    # Values above the reference's largest fall in a bin of their own, which the reference leaves empty.
    assert numeric_psi(reference, [500.0] * 50) > 8
    assert numeric_psi([5.0] * 40, [5.0] * 40) == 0  # a constant reference: the same constant is no drift
    assert numeric_psi([5.0] * 40, [4.0] * 40) > 8  # and a smaller one is


def test_the_categorical_psi_compares_shares_and_counts_unseen_categories() -> None:
    reference = ["a"] * 50 + ["b"] * 50
    expected = 0.4 * math.log(0.9 / 0.5) + (-0.4) * math.log(0.1 / 0.5)
    assert categorical_psi(reference, ["a"] * 90 + ["b"] * 10) == pytest.approx(expected, rel=1e-6)
    assert categorical_psi(reference, ["b", "a"] * 30) == 0
    assert categorical_psi(reference, ["a"] * 50 + ["c"] * 50) > 3  # c: never seen in the reference


def test_the_ks_test_tells_one_distribution_from_another() -> None:
    rng = np.random.default_rng(3)
    sample = rng.normal(0, 1, 500)
    assert ks_test(sample, sample) == (0.0, 1.0)
    statistic, p_value = ks_test(sample, rng.normal(1, 1, 500))
    assert statistic > 0.3 and p_value < 1e-10


def _numbers(values: list[float]) -> list[dict[str, Any]]:
    return [{"inputs.x": value} for value in values]


def test_a_feature_drifts_by_psi_at_the_threshold_or_by_a_large_and_significant_ks() -> None:
    plan = plan_of(NUMBERS)
    rng = np.random.default_rng(4)
    reference = {"inputs.x": list(rng.normal(0, 1, 5000))}
    small_shift = _numbers(list(rng.normal(0.3, 1, 5000)))
    (feature,) = compare(plan, reference, small_shift, threshold=0.2)
    assert feature.psi is not None and feature.psi < 0.2  # below the threshold, yet:
    assert feature.ks is not None and feature.ks >= 0.1 and feature.p_value is not None
    assert feature.p_value < 0.01 and feature.verdict == "drift"
    (strict,) = compare(plan, reference, small_shift, threshold=feature.psi)
    assert strict.verdict == "drift"
    (few,) = compare(plan, reference, small_shift[:40], threshold=0.5)
    assert few.p_value is not None and few.p_value >= 0.01 and few.verdict == "ok"
    (lenient,) = compare(plan, reference, _numbers(list(rng.normal(0, 1, 5000))), threshold=0.2)
    assert lenient.verdict == "ok"
    (too_few,) = compare(plan, reference, small_shift[:19], threshold=0.2)
    assert too_few.verdict == "insufficient_data" and too_few.psi is None
    assert too_few.recent_summary.count == 19 and too_few.reference_summary.count == 5000


# Features from the declared API


def test_each_declared_type_gives_its_features() -> None:
    spec = parse_docstring(
        """Everything.

        :param inputs.count: A count
        :type inputs.count: int
        :param inputs.text: Some text
        :type inputs.text: str
        :param inputs.mode: A mode
        :type inputs.mode: str, one of ["fast", "slow"]
        :param inputs.flag: A flag
        :type inputs.flag: bool
        :param inputs.photo: A photo
        :type inputs.photo: FILE or image/*
        :param inputs.document: A document
        :type inputs.document: FILE or application/pdf
        :param inputs.items: Items
        :type inputs.items: list[int]
        :param parameters.top_k: How many
        :type parameters.top_k: int, default 3
        :param outputs.label: A label
        :type outputs.label: str
        :param outputs.ok: Whether it is fine
        :type outputs.ok: bool
        :param outputs.scores: Scores
        :type outputs.scores: json
        :param outputs.value: A value
        :type outputs.value: float or int
        :param outputs.picture: A picture
        :type outputs.picture: FILE or image/png
        """
    )
    plan = plan_of(spec)
    assert [name for rule in plan.rules for name in rule.names] == [
        "inputs.count",
        "inputs.text.length",
        "inputs.mode",
        "inputs.flag",
        "inputs.photo.width",
        "inputs.photo.height",
        "inputs.photo.brightness",
        "inputs.document.size",
        "outputs.label",
        "outputs.ok",
        "outputs.scores.max",
        "outputs.value",
    ]
    assert plan.images and plan.categorical == {"inputs.mode", "inputs.flag", "outputs.label", "outputs.ok"}
    inputs = {
        "count": 3,
        "text": "hello",
        "mode": "fast",
        "flag": True,
        "document": {"path": "/x", "size": 9},
    }
    outputs = {"label": "cat" * 50, "ok": False, "scores": {"cat": 0.8, "dog": 0.2}, "value": 2}
    assert plan.take(inputs, outputs, FileSource(max_pixels=100)) == {
        "inputs.count": 3.0,
        "inputs.text.length": 5,
        "inputs.mode": "fast",
        "inputs.flag": "true",
        "inputs.document.size": 9,
        "outputs.label": ("cat" * 50)[:100],
        "outputs.ok": "false",
        "outputs.scores.max": 0.8,
        "outputs.value": 2.0,
    }
    # Missing values, and values that do not fit the measure, give nothing.
    odd = {"count": "three", "text": None, "flag": [True]}
    assert plan.take(odd, {"scores": ["high"], "value": math.inf}, FileSource(max_pixels=100)) == {}


def test_an_int_output_is_a_category_when_the_reference_holds_few_values_or_it_declares_them() -> None:
    plan = plan_of(NUMBERS)
    labels = {"outputs.label": [i % 3 for i in range(60)]}
    counts = {"outputs.label": list(range(60))}
    recent = [{"outputs.label": i % 3} for i in range(60)]
    assert [f.kind for f in compare(plan, labels, recent, threshold=0.2)] == ["categorical"]
    assert [f.kind for f in compare(plan, counts, recent, threshold=0.2)] == ["numeric"]
    declared = parse_docstring(
        """Chooses.

        :param outputs.label: The class
        :type outputs.label: int, one of [1, 2, 3]
        """
    )
    many = {"outputs.label": list(range(60))}
    assert [f.kind for f in compare(plan_of(declared), many, recent, threshold=0.2)] == ["categorical"]


def test_image_features_are_read_from_a_thumbnail(tmp_path: Path) -> None:
    png = tmp_path / "grey.png"
    Image.new("L", (640, 480), 100).save(png)
    assert image_features(png, max_pixels=10**6) == (640.0, 480.0, 100.0)
    jpeg = io.BytesIO()
    Image.new("RGB", (1200, 800), (200, 200, 200)).save(jpeg, "JPEG")
    jpeg.seek(0)
    width, height, brightness = image_features(jpeg, max_pixels=10**7) or (0, 0, 0)
    assert (width, height) == (1200, 800) and abs(brightness - 200) < 2
    assert image_features(png, max_pixels=1000) is None  # more pixels than allowed: not decoded
    (tmp_path / "not.png").write_bytes(b"not an image")
    assert image_features(tmp_path / "not.png", max_pixels=10**6) is None


# The manifest


def test_the_api_manifest_declares_drift_watching_and_refuses_a_bad_reference() -> None:
    document = {
        "apiVersion": "modelport/v1",
        "kind": "Api",
        "metadata": {"name": "m-api"},
        "spec": {"module": "m", "monitoring": {"drift": {"reference": "refs/m.jsonl", "windowCalls": 60}}},
    }
    api = parse_document(document, source="test")
    drift = api.spec.monitoring.drift  # type: ignore[union-attr]
    assert drift is not None and drift.reference_object == ("refs", "m.jsonl")
    assert (drift.reference_calls, drift.window_calls, drift.threshold) == (500, 60, 0.2)
    document["spec"]["monitoring"]["drift"] = {"reference": "../m.jsonl", "threshold": 0}  # type: ignore[index]
    with pytest.raises(ManifestError) as caught:
        parse_document(document, source="test")
    fields = {problem["field"] for problem in caught.value.problems}
    assert fields == {"spec.monitoring.drift.reference", "spec.monitoring.drift.threshold"}


def test_a_module_without_a_drift_setting_is_watched_with_the_defaults() -> None:
    assert ModulePolicy("m", None).drift == DriftMonitoring()


# The service, on both databases


@dataclass
class Registry:
    """The versions a test serves: what `Drift` asks the module registry."""

    specs: dict[tuple[str, str], ApiSpec] = field(default_factory=dict)

    def _served(self, module: str, version: str) -> Any:
        return SimpleNamespace(name=module, version=version, spec=self.specs[(module, version)])

    def versions(self, name: str) -> dict[str, Any]:
        return {v: self._served(m, v) for (m, v) in self.specs if m == name}

    def active(self, name: str) -> Any:
        return next(iter(self.versions(name).values()), None)

    def served(self) -> list[Any]:
        return [self._served(m, v) for (m, v) in self.specs]

    running = served


@dataclass
class World:
    drift: Drift
    database: Database
    store: LocalStore
    registry: Registry
    calls: int = 0

    def call(self, module: str, inputs: list[dict[str, Any]], outputs: list[dict[str, Any]]) -> None:
        """One answered call, as `Calls` tells its observers: noted on the loop, then its files."""
        self.calls += 1
        record = CallRecord(
            id=f"r{self.calls}",
            trace_id="0" * 32,
            at=time.time() - 3600 + self.calls,
            kind="sync",
            module=module,
            version="v1",
            replica=0,
            caller="ann",
            caller_id=1,
            client=None,
            status=200,
            code=None,
            total=0.01,
            queue=0.0,
            compute=0.01,
            batch_size=len(inputs),
            records=len(inputs),
            request_bytes=10,
            response_bytes=10,
        )
        payload = CallPayload(inputs, {}, outputs, batch=len(inputs) > 1, owner="ann", uploads={})
        self.drift.observe(record, payload)
        self.drift.observe_files(record, payload)

    def add_module(self, name: str, spec: ApiSpec, *, owner: str | None = None, **drift: Any) -> None:
        self.registry.specs[(name, "v1")] = spec
        api = {
            "apiVersion": "modelport/v1",
            "kind": "Api",
            "metadata": {"name": f"{name}-api"},
            "spec": {"module": name, "monitoring": {"drift": drift}},
        }
        with self.database.session() as session:
            session.add(Module(name=name, owner=owner))
            session.flush()
            session.add(Version(module_name=name, name="v1", digest="sha256:0", size=1, spec=spec.to_dict()))
            session.add(ApiDefinition(name=f"{name}-api", module_name=name, manifest=api))
        self.drift.policies.reload()


@pytest.fixture
def world(database_url: str, tmp_path: Path) -> Iterator[World]:
    database = Database(database_url)
    database.migrate()
    store = LocalStore(tmp_path / "objects")
    settings = Settings(data_dir=tmp_path, drift_max_samples_per_minute=1000)
    registry = Registry()
    drift = Drift(
        database,
        registry=registry,  # type: ignore[arg-type]
        policies=AccessPolicies(database),
        storage=Storage(database, store, audit=AuditTrail(database), settings=settings),
        store=store,
        settings=settings,
    )
    try:
        yield World(drift, database, store, registry)
    finally:
        database.close()


def _scores(world: World, module: str, values: list[float], label: int = 0) -> None:
    for value in values:
        world.call(module, [{"x": value}], [{"score": value * 2, "label": label}])


def test_the_first_calls_become_the_reference_and_outlive_the_samples(world: World) -> None:
    world.add_module("m", NUMBERS, referenceCalls=20, windowCalls=20)
    reference = [i / 10 for i in range(20)]
    _scores(world, "m", reference[:15])
    waiting = world.drift.report("m")
    assert waiting.verdict == "insufficient_data" and waiting.features == []
    assert waiting.reference.message == "taking the reference: 15 of the first 20 calls sampled"

    _scores(world, "m", reference[15:] + reference[::2])
    world.drift.tick()  # takes the reference in the background
    with world.database.session() as session:
        stored = session.get(DriftReference, ("m", "v1"))
        assert stored is not None and stored.source == "first-calls" and stored.calls == 20
        assert stored.features["values"]["inputs.x"] == reference
    partial = world.drift.report("m")
    assert partial.reference.calls == 20 and partial.reference.message is None
    assert partial.window.calls == 10 and partial.verdict == "insufficient_data"  # the window is not full

    _scores(world, "m", reference[1::2])  # with the calls before: the reference's values again
    same = world.drift.report("m")
    assert same.window.calls == 20 and same.verdict == "ok"
    assert {f.name: (f.verdict, f.psi) for f in same.features} == {
        "inputs.x": ("ok", 0.0),
        "outputs.label": ("ok", 0.0),
        "outputs.score": ("ok", 0.0),
    }
    _scores(world, "m", [5 + i for i in range(20)], label=7)  # far away, and another label
    shifted = world.drift.report("m")
    assert shifted.verdict == "drift" and all(f.verdict == "drift" for f in shifted.features)
    label = next(f for f in shifted.features if f.name == "outputs.label")
    assert label.kind == "categorical" and label.recent_summary.shares == {"7": 1.0}
    assert world.drift.scores() == {}  # computed in the background once asked for
    world.drift.tick()
    assert world.drift.scores()[("m", "outputs.label")] == label.psi

    # The retention sweep takes every sample; the reference stays, and waits for a new window.
    assert world.drift.sweep(now=datetime.now(UTC) + timedelta(days=31)) == world.calls == 60
    swept = world.drift.report("m")
    assert swept.reference.calls == 20 and swept.window.calls == 0 and swept.verdict == "insufficient_data"


def test_sampling_keeps_at_most_the_setting_per_minute_and_a_version_must_exist(
    world: World, tmp_path: Path
) -> None:
    world.add_module("m", NUMBERS)
    world.drift.settings = Settings(data_dir=tmp_path, drift_max_samples_per_minute=12)
    batch = [{"x": float(i)} for i in range(30)]
    world.call("m", batch, [{"score": 1.0, "label": 1} for _ in batch])
    world.call("m", batch[:5], [{"score": 1.0, "label": 1} for _ in range(5)])
    assert world.drift.flush() == 12
    with world.database.session() as session:
        rows = session.query(DriftSample).order_by(DriftSample.id).all()
    assert [row.features["inputs.x"] for row in rows] == [float(i) for i in range(12)]
    with pytest.raises(VersionNotFound):
        world.drift.report("m", "v9")


def _png(brightness: int) -> bytes:
    data = io.BytesIO()
    Image.new("L", (32, 24), brightness).save(data, "PNG")
    return data.getvalue()


def _bucket(world: World, name: str, **access: list[str]) -> None:
    manifest = {"apiVersion": "modelport/v1", "kind": "Storage", "metadata": {"name": name}}
    manifest["spec"] = {"access": access}  # type: ignore[assignment]
    world.store.create_bucket(name)
    with world.database.session() as session:
        session.add(Bucket(name=name, manifest=manifest))


def test_a_jsonl_object_is_a_reference_with_its_images_read_from_storage(
    world: World, tmp_path: Path
) -> None:
    _bucket(world, "refs", groups=["/team-a"])
    world.store.put("refs", "dark.png", _png(20), content_type="image/png")
    inline = "data:image/png;base64," + base64.b64encode(_png(40)).decode()
    lines = [
        {"inputs": {"image": {"object": "refs/dark.png"} if i % 2 else inline}, "outputs": {"label": i % 2}}
        for i in range(40)
    ]
    body = "\n".join(json.dumps(line) for line in lines) + "\n\n"
    world.store.put("refs", "pictures.jsonl", body.encode(), content_type="application/x-ndjson")
    world.add_module("pics", IMAGES, owner="/team-a", reference="refs/pictures.jsonl", windowCalls=20)

    upload = tmp_path / "bright.png"
    upload.write_bytes(_png(230))
    for _ in range(20):
        world.call("pics", [{"image": {"path": str(upload), "size": 100}}], [{"label": 1}])
    report = world.drift.report("pics")
    assert report.reference.source == "refs/pictures.jsonl" and report.reference.calls == 40
    verdicts = {f.name: f.verdict for f in report.features}
    assert verdicts == {
        "inputs.image.brightness": "drift",
        "inputs.image.height": "ok",
        "inputs.image.width": "ok",
        "outputs.label": "drift",
    }
    brightness = next(f for f in report.features if f.name == "inputs.image.brightness")
    assert (brightness.reference_summary.min, brightness.reference_summary.max) == (20, 40)
    assert brightness.recent_summary.mean == 230 and report.verdict == "drift"


def test_a_reference_object_the_owner_may_not_read_or_cannot_parse_is_told(world: World) -> None:
    _bucket(world, "others", groups=["/team-b"])
    world.store.put("others", "ref.jsonl", b'{"inputs": {"x": 1}}\n', content_type="application/x-ndjson")
    world.add_module("m", NUMBERS, owner="/team-a", reference="others/ref.jsonl")
    hidden = world.drift.report("m")
    assert hidden.verdict == "insufficient_data" and hidden.reference.calls == 0
    assert hidden.reference.message is not None and "no bucket named 'others'" in hidden.reference.message

    _bucket(world, "mine", groups=["/team-a"])
    world.store.put("mine", "ref.jsonl", b'{"inputs": {"x": 1}}\nnot json\n', content_type="text/plain")
    world.add_module("n", NUMBERS, owner="/team-a", reference="mine/ref.jsonl")
    broken = world.drift.report("n")
    assert broken.reference.message is not None and "line 2 is not JSON" in broken.reference.message
