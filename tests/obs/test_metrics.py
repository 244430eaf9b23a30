"""The Prometheus metrics: what an answered call counts, what is read at scrape time, which series go away,
and who may scrape `GET /metrics` (the real platform application, in-process)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from inprocess import started_platform
from prometheus_client.parser import text_string_to_metric_families

from modelport.obs.calls import CallRecord
from modelport.obs.metrics import CONTENT_TYPE, MAX_OUTCOMES, Metrics

OK = CallRecord(
    id="r1",
    trace_id="0" * 31 + "1",
    at=0.0,
    kind="sync",
    module="echo",
    version="v1",
    replica=0,
    caller="alice",
    caller_id=1,
    client="127.0.0.1",
    status=200,
    code=None,
    total=0.02,
    queue=0.003,
    compute=0.01,
    batch_size=3,
    records=1,
    request_bytes=10,
    response_bytes=20,
)


def call(**changes: Any) -> CallRecord:
    return dataclasses.replace(OK, **changes)


def samples(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the exposition, by name and labels."""
    text = metrics.exposition().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(found: Mapping[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return found[(name, frozenset(labels.items()))]


def names(found: Mapping[tuple[str, frozenset[tuple[str, str]]], float]) -> set[str]:
    return {name for name, _ in found}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_calls_are_counted_by_code_and_timed() -> None:
    metrics = Metrics()
    for record in [
        OK,
        OK,
        call(status=422, code="validation_failed", queue=0.0, compute=0.0, batch_size=0, replica=None),
        call(status=504, code="queue_timeout", total=30.0, queue=30.0, compute=0.0, batch_size=0),
        call(version="v2", total=0.5, batch_size=4096),
    ]:
        metrics.observe(record, None)
    found = samples(metrics)

    requests = "modelport_requests_total"
    assert value(found, requests, module="echo", version="v1", code="ok", status="2xx") == 2
    assert value(found, requests, module="echo", version="v1", code="validation_failed", status="4xx") == 1
    assert value(found, requests, module="echo", version="v1", code="queue_timeout", status="5xx") == 1
    assert value(found, requests, module="echo", version="v2", code="ok", status="2xx") == 1
    v1 = {"module": "echo", "version": "v1"}
    assert value(found, "modelport_request_duration_seconds_count", **v1) == 4
    assert value(found, "modelport_request_duration_seconds_sum", **v1) == 30.04 + 0.02
    assert value(found, "modelport_request_duration_seconds_bucket", **v1, le="0.025") == 3
    # The call refused before the queue waited nowhere; the one that timed out in the queue ran nowhere.
    assert value(found, "modelport_request_queue_seconds_count", **v1) == 3
    assert value(found, "modelport_request_queue_seconds_bucket", **v1, le="30.0") == 3
    assert value(found, "modelport_request_compute_seconds_count", **v1) == 2
    assert value(found, "modelport_batch_size_bucket", **v1, le="2.0") == 0
    assert value(found, "modelport_batch_size_bucket", **v1, le="4.0") == 2
    v2 = {"module": "echo", "version": "v2"}
    assert value(found, "modelport_batch_size_bucket", **v2, le="2048.0") == 0
    assert value(found, "modelport_batch_size_bucket", **v2, le="4096.0") == 1
    # Counters come without the `_created` series prometheus-client would add.
    assert not any(name.endswith("_created") for name in names(found))


def test_a_value_on_a_bucket_bound_counts_in_that_bucket_and_label_values_are_escaped() -> None:
    metrics = Metrics()
    version = 'v"1\\'  # quotes and backslashes survive the text format
    for total in (0.001, 0.0010001, 60.0, 61.0):
        metrics.observe(call(version=version, total=total), None)
    found = samples(metrics)
    series = {"module": "echo", "version": version}
    assert value(found, "modelport_request_duration_seconds_bucket", **series, le="0.001") == 1
    assert value(found, "modelport_request_duration_seconds_bucket", **series, le="0.0025") == 2
    assert value(found, "modelport_request_duration_seconds_bucket", **series, le="60.0") == 3
    assert value(found, "modelport_request_duration_seconds_bucket", **series, le="+Inf") == 4
    assert value(found, "modelport_request_duration_seconds_count", **series) == 4
    assert value(found, "modelport_requests_total", **series, code="ok", status="2xx") == 4


def test_series_of_a_stopped_version_go_once_it_has_been_gone_for_the_retention() -> None:
    clock = Clock()
    running = [("echo", "v1", 0, 0)]
    metrics = Metrics(running=lambda: running, retain_seconds=60, clock=clock)
    metrics.observe(OK, None)
    running = [("echo", "v2", 0, 0)]  # v1 stopped, v2 took over
    clock.now += 30
    metrics.observe(call(version="v2"), None)
    found = samples(metrics)
    assert (
        "modelport_requests_total",
        frozenset({"module": "echo", "version": "v1", "code": "ok", "status": "2xx"}.items()),
    ) in found  # still within the retention: its last counts can be scraped

    clock.now += 31
    found = samples(metrics)
    versions = {dict(labels).get("version") for _, labels in found}
    assert "v1" not in versions and "v2" in versions
    metrics.observe(OK, None)  # a call pinned to v1 again starts its counts afresh
    assert (
        value(
            samples(metrics), "modelport_requests_total", module="echo", version="v1", code="ok", status="2xx"
        )
        == 1
    )


def test_the_cache_stays_bounded_without_scrapes() -> None:
    clock = Clock()
    version = ["v0"]
    metrics = Metrics(running=lambda: [("echo", version[0], 0, 0)], retain_seconds=10, clock=clock)
    for number in range(50):
        version[0] = f"v{number}"
        metrics.observe(call(version=version[0]), None)
        clock.now += 11
    versions = {dict(labels).get("version") for _, labels in samples(metrics)} - {None}
    assert versions == {"v49"}


def test_the_running_versions_the_request_log_and_drift_are_read_at_scrape_time() -> None:
    running = [("echo", "v1", 2, 0), ("echo", "v2", 0, 3), ("ocr", "v7", 1, 1)]
    dropped = [5]
    drift = {("echo", "text"): 0.125, ("ocr", "image.brightness"): 0.5}
    metrics = Metrics(running=lambda: running, dropped=lambda: dropped[0], drift=lambda: drift)
    found = samples(metrics)
    assert value(found, "modelport_in_flight", module="echo", version="v1") == 2
    assert value(found, "modelport_in_flight", module="ocr", version="v7") == 1
    assert value(found, "modelport_worker_restarts_total", module="echo", version="v2") == 3
    assert value(found, "modelport_request_log_dropped_total") == 5
    assert value(found, "modelport_drift_score", module="ocr", feature="image.brightness") == 0.5

    running, dropped[0] = [("echo", "v2", 4, 3)], 9
    drift.clear()
    found = samples(metrics)
    assert value(found, "modelport_in_flight", module="echo", version="v2") == 4
    assert ("modelport_in_flight", frozenset({"module": "echo", "version": "v1"}.items())) not in found
    assert value(found, "modelport_request_log_dropped_total") == 9
    assert "modelport_drift_score" not in names(found)


def test_a_failing_source_leaves_only_its_own_families_out(caplog: Any) -> None:
    def broken() -> Mapping[tuple[str, str], float]:
        raise RuntimeError("drift store gone")

    metrics = Metrics(running=lambda: [("echo", "v1", 0, 0)], dropped=lambda: 1, drift=broken)
    metrics.observe(OK, None)
    found = samples(metrics)
    assert "modelport_drift_score" not in names(found)
    assert {
        "modelport_in_flight",
        "modelport_request_log_dropped_total",
        "modelport_requests_total",
    } <= names(found)
    assert "reading the drift scores for /metrics failed" in caplog.text


def test_builds_and_deploys_are_timed_by_outcome() -> None:
    metrics = Metrics()
    metrics.module_event("build", "ready", 42.0)
    metrics.module_event("build", "failed", 3.0)
    metrics.module_event("switch", "ready", 2.0)
    metrics.module_event("switch", "ready", 0.2)
    metrics.module_event("switch", None, 1.0)
    metrics.module_event("push", "ready", 1.0)  # not timed
    metrics.module_event("deploy", "ready", 5.0)  # the request of a deploy: its switch is timed
    metrics.module_event("switch", "ready", None)  # no duration
    metrics.module_event("switch", "ready", float("nan"))
    found = samples(metrics)
    assert value(found, "modelport_build_duration_seconds_count", outcome="ready") == 1
    assert value(found, "modelport_build_duration_seconds_bucket", outcome="ready", le="30.0") == 0
    assert value(found, "modelport_build_duration_seconds_bucket", outcome="ready", le="60.0") == 1
    assert value(found, "modelport_build_duration_seconds_count", outcome="failed") == 1
    assert value(found, "modelport_deploy_duration_seconds_count", outcome="ready") == 2
    assert value(found, "modelport_deploy_duration_seconds_sum", outcome="ready") == 2.2
    assert value(found, "modelport_deploy_duration_seconds_count", outcome="unknown") == 1

    for number in range(MAX_OUTCOMES + 5):
        metrics.module_event("switch", f"outcome-{number}", 1.0)
    outcomes = {
        dict(labels)["outcome"] for name, labels in samples(metrics) if "outcome" in dict(labels)
    }  # builds and deploys together
    assert len(outcomes) == MAX_OUTCOMES + 1 and "other" in outcomes


async def test_only_admins_scrape_and_a_call_to_an_unknown_module_makes_no_series(tmp_path: Path) -> None:
    async with started_platform(tmp_path / "platform") as platform:
        async with platform.client() as admin:
            user = await admin.post("/api/v1/users", json={"name": "dev", "role": "developer"})
            assert user.status_code == 201, user.text
            made = await admin.post("/api/v1/tokens", json={"name": "t", "user": user.json()["id"]})
            missing = await admin.post("/api/v1/modules/nope/predict", json={"inputs": {"text": "x"}})
            assert missing.status_code == 404
            scraped = await admin.get("/metrics")
        async with platform.client("") as nobody, platform.client(made.json()["token"]) as developer:
            anonymous = await nobody.get("/metrics")
            refused = await developer.get("/metrics")

    assert scraped.status_code == 200
    assert scraped.headers["content-type"] == CONTENT_TYPE
    families = {family.name for family in text_string_to_metric_families(scraped.text)}
    assert {"modelport_requests", "modelport_in_flight", "modelport_request_log_dropped"} <= families
    assert "nope" not in scraped.text
    assert "modelport_requests_total{" not in scraped.text  # no call reached a module
    assert (anonymous.status_code, anonymous.json()["error"]["code"]) == (401, "unauthorized")
    assert (refused.status_code, refused.json()["error"]["code"]) == (403, "forbidden")


async def test_the_setting_opens_the_metrics_to_anyone(tmp_path: Path) -> None:
    async with (
        started_platform(tmp_path / "platform", metrics_public=True) as platform,
        platform.client("") as nobody,
    ):
        scraped = await nobody.get("/metrics")
        document = (await nobody.get("/openapi.json")).json()
    assert scraped.status_code == 200 and "modelport_request_log_dropped_total 0.0" in scraped.text
    assert document["paths"]["/metrics"]["get"]["x-access"] == "anyone"
