"""Drift end to end: the gallery's digit classifier on a real server, fed scikit-learn's digits as PNGs.

Its `Api` manifest keeps the reference and the window at 300 calls. The first 300 digits become the reference,
300 more of the same data set leave the verdict `ok`, and 300 mirrored ones make it `drift`, with the label
and its probability flagged while the images' size and brightness stay as they were. The digits are drawn
from one seeded permutation, so every run compares the same images. Only the module's managers read its
drift: another group's developer is told the module does not exist, a caller that may only call it is
refused.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from drive import deploy, push, wait_built, wait_deployment
from PIL import Image, ImageOps
from platform_server import ADMIN_TOKEN, ServerProcess
from sklearn.datasets import load_digits
from typer.testing import CliRunner

from modelport.cli.main import app
from modelport.client import Client, DriftReport

pytestmark = pytest.mark.slow

DIGITS = Path(__file__).parents[2] / "gallery" / "digits"
CALLS = 300
BATCH = 50
API = {
    "apiVersion": "modelport/v1",
    "kind": "Api",
    "metadata": {"name": "digits-drift"},
    "spec": {
        "module": "digits",
        "access": {"groups": ["/team-a"]},
        "monitoring": {"drift": {"referenceCalls": CALLS, "windowCalls": CALLS}},
    },
}


@dataclass
class World:
    url: str
    tokens: dict[str, str] = field(default_factory=dict)

    def client(self, who: str = "admin") -> Client:
        return Client(self.url, self.tokens[who])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("drift")
    server = ServerProcess(
        root / "server", token=ADMIN_TOKEN, env={"MODELPORT_DRIFT_MAX_SAMPLES_PER_MINUTE": "100000"}
    )
    server.start()
    try:
        world = World(server.url, tokens={"admin": ADMIN_TOKEN})
        with server.client() as admin:
            make_world(world, admin, root)
        yield world
    finally:
        server.stop()


def make_world(world: World, admin: httpx.Client, root: Path) -> None:
    for path in ("/team-a", "/team-b"):
        assert admin.post("/api/v1/groups", json={"path": path}).status_code == 201
    for name, role, group in (("dev-b", "developer", "/team-b"), ("caller-a", "user", "/team-a")):
        made = admin.post("/api/v1/users", json={"name": name, "role": role, "groups": [group]})
        assert made.status_code == 201, made.text
        token = admin.post("/api/v1/tokens", json={"name": "tests", "user": made.json()["id"]})
        world.tokens[name] = token.json()["token"]
    directory = root / "digits"
    shutil.copytree(DIGITS, directory, ignore=shutil.ignore_patterns("tests", "__pycache__"))
    manifest = directory / "modelport.yaml"
    manifest.write_text(manifest.read_text().replace("spec:\n", "spec:\n  owner: /team-a\n", 1))
    assert push(admin, directory, version="v1").status_code == 201
    assert wait_built(admin, "digits", "v1", timeout=300)["build_status"] == "ready"
    deployment = wait_deployment(admin, "digits", deploy(admin, "digits", "v1")["generation"], timeout=120)
    assert deployment["status"] == "ready", deployment
    applied = admin.post("/api/v1/apply", json={"documents": [API]})
    assert applied.status_code == 200, applied.text


def pictures(indices: np.ndarray, *, mirrored: bool = False) -> list[str]:
    """The data set's digits as the gallery draws them (dark ink on white, 64 x 64), as `data:` URLs."""
    images = load_digits().images
    urls = []
    for index in indices:
        pixels = np.round(255.0 - np.clip(images[index], 0.0, 16.0) * (255.0 / 16.0)).astype(np.uint8)
        picture = Image.fromarray(pixels).resize((64, 64), Image.Resampling.NEAREST)
        if mirrored:
            picture = ImageOps.mirror(picture)
        data = io.BytesIO()
        picture.save(data, "PNG")
        urls.append("data:image/png;base64," + base64.b64encode(data.getvalue()).decode())
    return urls


ORDER = np.random.default_rng(1).permutation(1797)


def send(world: World, urls: list[str]) -> None:
    with httpx.Client(base_url=world.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as http:
        for start in range(0, len(urls), BATCH):
            records = [{"image": url} for url in urls[start : start + BATCH]]
            answer = http.post("/api/v1/modules/digits/predict", json={"inputs": records}, timeout=60)
            assert answer.status_code == 200, answer.text


def wait_for(world: World, done: Callable[[DriftReport], bool], timeout: float = 30) -> DriftReport:
    deadline = time.monotonic() + timeout
    with world.client() as admin:
        while True:
            report = admin.drift("digits")
            if done(report) or time.monotonic() > deadline:
                return report
            time.sleep(0.2)


def verdicts(report: DriftReport) -> dict[str, str]:
    return {feature.name: feature.verdict for feature in report.features}


@pytest.fixture(scope="module")
def reports(world: World) -> dict[str, DriftReport]:
    """The report after each phase: the reference taken, the same data set again, mirrored digits."""
    found = {}
    send(world, pictures(ORDER[:CALLS]))
    found["reference"] = wait_for(world, lambda r: r.reference.calls == CALLS)
    send(world, pictures(ORDER[CALLS : 2 * CALLS]))
    found["same"] = wait_for(world, lambda r: r.window.calls == CALLS)
    mirrored_from = datetime.now(UTC)
    send(world, pictures(ORDER[2 * CALLS : 3 * CALLS], mirrored=True))
    found["mirrored"] = wait_for(
        world,
        lambda r: r.window.since is not None and datetime.fromisoformat(r.window.since) >= mirrored_from,
    )
    return found


def test_the_first_calls_become_the_reference(reports: dict[str, DriftReport]) -> None:
    report = reports["reference"]
    assert (report.module, report.version, report.threshold) == ("digits", "v1", 0.2)
    assert report.reference.source == "first-calls" and report.reference.calls == CALLS
    assert report.window.calls == 0 and report.verdict == "insufficient_data"


def test_more_of_the_same_digits_do_not_drift(reports: dict[str, DriftReport]) -> None:
    report = reports["same"]
    assert report.verdict == "ok", report
    assert verdicts(report) == {
        "inputs.image.brightness": "ok",
        "inputs.image.height": "ok",
        "inputs.image.width": "ok",
        "outputs.label": "ok",
        "outputs.probabilities.max": "ok",
    }
    label = next(f for f in report.features if f.name == "outputs.label")
    assert label.kind == "categorical" and label.ks is None and label.reference_summary.count == CALLS


def test_mirrored_digits_drift_in_their_label_and_its_probability(reports: dict[str, DriftReport]) -> None:
    report = reports["mirrored"]
    assert report.verdict == "drift" and report.window.calls == CALLS
    flagged = {name for name, verdict in verdicts(report).items() if verdict == "drift"}
    assert flagged == {"outputs.label", "outputs.probabilities.max"}
    confidence = next(f for f in report.features if f.name == "outputs.probabilities.max")
    assert confidence.recent_summary.mean is not None and confidence.reference_summary.mean is not None
    assert confidence.recent_summary.mean < confidence.reference_summary.mean


def test_the_command_shows_the_verdict_and_a_row_per_feature(world: World, reports: Any) -> None:
    options = ["--url", world.url, "--token", ADMIN_TOKEN]
    table = CliRunner().invoke(app, ["drift", "digits", *options])
    assert table.exit_code == 0, table.output
    lines = table.output.splitlines()
    assert lines[0] == "digits v1: drift (PSI threshold 0.2)"
    assert lines[1] == f"reference: first-calls, {CALLS} of {CALLS} calls"
    rows = {line.split("\t")[0]: line.split("\t") for line in lines[4:]}
    assert rows["FEATURE"][5] == "VERDICT" and rows["outputs.label"][5] == "drift"
    assert rows["inputs.image.width"][6] == "mean 64 (64..64)"
    answer = CliRunner().invoke(app, ["drift", "digits", "--version", "v1", "-o", "json", *options])
    assert json.loads(answer.output)["verdict"] == "drift"


def test_only_the_modules_managers_read_its_drift(world: World) -> None:
    with httpx.Client(base_url=world.url) as http:
        for who, status, code in (("dev-b", 404, "module_not_found"), ("caller-a", 403, "forbidden")):
            answer = http.get(
                "/api/v1/modules/digits/drift", headers={"Authorization": f"Bearer {world.tokens[who]}"}
            )
            assert answer.status_code == status and answer.json()["error"]["code"] == code
        missing = http.get(
            "/api/v1/modules/digits/drift?version=v9", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "version_not_found"
