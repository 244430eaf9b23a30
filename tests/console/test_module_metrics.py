"""A module's Metrics, History and Drift tabs, as its owners and outsiders get them from a platform served in
this process.

The world here, owned by `/mx-owners`: `mx-echo` (the echo fixture: v1 pushed with a tag that is markup,
deployed, replaced by v2 and rolled back to v1, then called a few times), `mx-idle` (pushed, never deployed)
and `mx-blind` (pushed; its inputs and outputs give drift nothing to follow); a developer of the owner group
and a developer of another group.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from console_world import ConsoleSession, World
from drive import deploy, wait_built, wait_deployment
from manifests import module_copy
from sqlalchemy import select

from modelport.artifacts import pack
from modelport.control.stats import HOUR, Stats
from modelport.core.settings import Settings
from modelport.db import Database, StatsRollup
from modelport.obs.calls import CallRecord

TAG = "<script>alert('tag')</script>"
CALLS, FAILED = 3, 1


@dataclass
class Team:
    world: World
    tokens: dict[str, str]

    def console(self, who: str) -> ConsoleSession:
        return self.world.console(self.tokens[who])


@pytest.fixture(scope="module")
def team(world: World) -> Team:
    tokens: dict[str, str] = {}
    with world.api() as admin:
        for group in ("/mx-owners", "/mx-others"):
            assert admin.post("/api/v1/groups", json={"path": group}).status_code == 201
        for name, group in (("mx-dev", "/mx-owners"), ("mx-outsider", "/mx-others")):
            made = admin.post("/api/v1/users", json={"name": name, "role": "developer", "groups": [group]})
            assert made.status_code == 201, made.text
            token = admin.post("/api/v1/tokens", json={"name": "console", "user": made.json()["id"]})
            assert token.status_code == 201, token.text
            tokens[name] = token.json()["token"]
        root = world.root / "metrics"
        for module in ("mx-echo", "mx-idle"):
            pushed = _push(admin, module_copy(root, "echo", module, "/mx-owners"), "v1", tag=TAG)
            assert pushed.status_code == 201, pushed.text
        assert _push(admin, root / "mx-echo", "v2", tag="second").status_code == 201
        assert _push(admin, _blind_module(root / "mx-blind"), "v1", tag="blind").status_code == 201
        for module, version in (("mx-echo", "v1"), ("mx-idle", "v1"), ("mx-echo", "v2"), ("mx-blind", "v1")):
            assert wait_built(admin, module, version)["build_status"] == "ready"
        for version in ("v1", "v2"):  # v1 serves, then v2; a rollback makes it v1 again
            assert _settled(admin, deploy(admin, "mx-echo", version)) == "ready"
        rollback = admin.post("/api/v1/modules/mx-echo/rollback")
        assert rollback.status_code == 202, rollback.text
        assert _settled(admin, rollback.json()) == "ready"
        for text in ("a", "bb", "ccc"):
            answer = admin.post("/api/v1/modules/mx-echo/predict", json={"inputs": {"text": text}})
            assert answer.status_code == 200, answer.text
        refused = admin.post("/api/v1/modules/mx-echo/predict", json={"inputs": {"wrong": 1}})
        assert refused.status_code == 422, refused.text
        _wait_counted(admin, "mx-echo", CALLS + FAILED)
    return Team(world, tokens)


BLIND = '''def inference(parameters, inputs, output_fields, model_key, model=None):
    """Draw a document.

    :param inputs.document: Any JSON
    :type inputs.document: json
    :param outputs.picture: Its picture
    :type outputs.picture: image/png
    """
    return [{"picture": b""} for _ in inputs]
'''


def _blind_module(directory: Path) -> Path:
    """A module of `/mx-owners` whose inputs and outputs give drift nothing to follow."""
    directory.mkdir()
    (directory / "inference.py").write_text(BLIND)
    (directory / "modelport.yaml").write_text(
        "apiVersion: modelport/v1\nkind: Module\nmetadata: {name: mx-blind}\nspec: {owner: '/mx-owners'}\n"
    )
    return directory


def _settled(client: httpx.Client, deployment: dict[str, Any]) -> str:
    return str(wait_deployment(client, deployment["module"], deployment["generation"])["status"])


def _push(client: httpx.Client, directory: Path, version: str, *, tag: str) -> httpx.Response:
    artifact = pack(directory, version=version)
    return client.post(
        f"/api/v1/modules/{artifact.name}/versions",
        params={"version": artifact.version, "tag": tag},
        content=artifact.data,
        headers={"Content-Type": "application/gzip", "X-Content-Digest": artifact.digest},
    )


def _wait_counted(client: httpx.Client, module: str, calls: int, timeout: float = 20) -> None:
    """Until the module's statistics (written about once a second) count `calls`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = client.get(f"/api/v1/modules/{module}/stats", params={"window": "1h"}).json()
        if stats["calls"] >= calls:
            return
        time.sleep(0.1)
    raise AssertionError(f"{module}'s statistics did not count {calls} calls in {timeout} s")


def _json_script(html: str, element: str) -> Any:
    found = re.search(rf'<script type="application/json" id="{element}">(.*?)</script>', html, re.S)
    assert found, f"no #{element} in the page"
    return json.loads(found.group(1))


# Metrics


def test_metrics_page_counts_the_calls_and_embeds_their_series(team: Team) -> None:
    owner = team.console("mx-dev")
    page = owner.get("/ui/modules/mx-echo/metrics")
    assert page.status_code == 200, page.text
    html = page.text
    assert f'data-calls="{CALLS + FAILED}"' in html
    series = _json_script(html, "metrics-series")
    assert len(series["t"]) == 60  # an hour of minutes
    assert sum(series["calls"]) == CALLS + FAILED
    assert all(len(series[key]) == 60 for key in ("calls", "errors", "rps", "p50", "p95", "p99"))
    assert max(p for p in series["p95"] if p is not None) > 0
    assert set(_json_script(html, "metrics-labels")) >= {"rps", "p50", "p95", "p99", "errors"}
    assert html.count('data-chart="') == 3
    assert "/static/uplot.min.js" in html and "/static/charts.js" in html
    assert "<code>ok</code>" in html and "<code>validation_failed</code>" in html
    assert 'id="series"' in html  # the table of the series, for keyboards and no JavaScript
    assert 'hx-trigger="every 10s"' in html and "/ui/modules/mx-echo/metrics/live?window=1h" in html
    assert 'aria-current="page">Metrics<' in html

    fragment = owner.get("/ui/modules/mx-echo/metrics/live?window=1h", headers={"HX-Request": "true"})
    assert fragment.status_code == 200
    assert fragment.text.lstrip().startswith('<div id="metrics"') and "<html" not in fragment.text
    assert sum(_json_script(fragment.text, "metrics-series")["calls"]) == CALLS + FAILED


def test_longer_windows_take_longer_steps_and_do_not_poll(team: Team) -> None:
    owner = team.console("mx-dev")
    for window, points in (("24h", 288), ("7d", 168)):
        page = owner.get(f"/ui/modules/mx-echo/metrics?window={window}")
        assert page.status_code == 200, page.text
        series = _json_script(page.text, "metrics-series")
        assert len(series["t"]) == points and sum(series["calls"]) == CALLS + FAILED
        assert "hx-trigger" not in page.text.split('id="metrics"')[1].split(">")[0]
        assert f'?window={window}" aria-current="page"' in page.text


def test_the_version_filter_narrows_the_calls(team: Team) -> None:
    owner = team.console("mx-dev")
    only = owner.get("/ui/modules/mx-echo/metrics?window=1h&version=v1")
    assert f'data-calls="{CALLS + FAILED}"' in only.text
    assert '<option value="v1" selected>' in only.text
    other = owner.get("/ui/modules/mx-echo/metrics?window=1h&version=v9")
    assert other.status_code == 200 and 'data-calls="0"' in other.text
    assert "No calls in this window." in other.text


def test_a_bad_window_is_a_422_page_naming_the_field(team: Team) -> None:
    owner = team.console("mx-dev")
    for path in ("/ui/modules/mx-echo/metrics?window=bad", "/ui/modules/mx-echo/metrics/live?window=30d"):
        page = owner.get(path)
        assert page.status_code == 422, page.text
        assert "<code>window</code>" in page.text and "validation_failed" in page.text
    long = owner.get("/ui/modules/mx-echo/metrics?version=" + "v" * 65)
    assert long.status_code == 422 and "<code>version</code>" in long.text


def test_markup_in_what_the_pages_echo_comes_back_escaped(team: Team) -> None:
    owner = team.console("mx-dev")
    page = owner.get("/ui/modules/mx-echo/metrics", params={"version": "<script>x()</script>"})
    assert page.status_code == 200
    assert "<script>x()" not in page.text and "&lt;script&gt;x()&lt;/script&gt;" in page.text
    history = owner.get("/ui/modules/mx-echo/history")
    assert TAG not in history.text and "&lt;script&gt;alert(" in history.text


def test_seven_days_read_hour_rollups_fast(team: Team) -> None:
    """A week of traffic (two versions, every hour) renders in well under 150 ms."""
    _seed_week(team.world.root / "platform", "mx-idle", ("v1", "v2"))
    owner = team.console("mx-dev")
    timings = []
    for _ in range(5):  # the best of five: the bound is the page's, not a busy machine's
        started = time.perf_counter()
        page = owner.get("/ui/modules/mx-idle/metrics?window=7d")
        timings.append(time.perf_counter() - started)
        assert page.status_code == 200, page.text
    assert f'data-calls="{WEEK_HOURS * 2}"' in page.text
    assert page.text.count("<time datetime=") == WEEK_HOURS  # every hour with calls is a row of the table
    assert min(timings) < 0.150, timings


WEEK_HOURS = 167
"""The hours of a 7-day window before the current one."""


def _seed_week(data_dir: Path, module: str, versions: tuple[str, ...]) -> None:
    """One call of each version in each of the last `WEEK_HOURS` hours, as rollups: the statistics service
    writes the first hour's rows, copied to the hours before."""
    database = Database(Settings(data_dir=data_dir).database())
    try:
        stats = Stats(database)
        last = time.time() - HOUR
        for version in versions:
            stats.observe(_call(module, version, last), None)
        assert stats.flush()
        with database.session() as session:
            hour_rows = session.scalars(
                select(StatsRollup).where(StatsRollup.module == module, StatsRollup.resolution == HOUR)
            ).all()
            assert len(hour_rows) == len(versions)
            session.add_all(
                StatsRollup(**{**_columns(row), "start": row.start - timedelta(hours=back)})
                for row in hour_rows
                for back in range(1, WEEK_HOURS)
            )
    finally:
        database.close()


def _columns(row: StatsRollup) -> dict[str, Any]:
    return {
        column.key: getattr(row, column.key) for column in StatsRollup.__table__.columns if column.key != "id"
    }


def _call(module: str, version: str, at: float) -> CallRecord:
    return CallRecord(
        id=f"seed-{version}",
        trace_id="0" * 32,
        at=at,
        kind="sync",
        module=module,
        version=version,
        replica=0,
        caller="admin",
        caller_id=1,
        client="127.0.0.1",
        status=200,
        code=None,
        total=0.012,
        queue=0.002,
        compute=0.008,
        batch_size=1,
        records=1,
        request_bytes=20,
        response_bytes=40,
    )


# History


def test_history_shows_the_push_build_deploy_and_switch(team: Team) -> None:
    page = team.console("mx-dev").get("/ui/modules/mx-echo/history")
    assert page.status_code == 200, page.text
    html = page.text
    for kind in ("push", "build", "deploy", "switch"):
        assert f'data-kind="{kind}"' in html, kind
    push = html.split('data-kind="push"')[-1].split("</tr>")[0]  # the oldest: v1, tagged with markup
    assert "<code>v1</code>" in push and "admin" in push and "&lt;script&gt;" in push
    deploy_row = html.split('data-kind="deploy"')[1].split("</tr>")[0]  # the newest: v1 → v2
    assert "<code>v1</code> → <code>v2</code>" in deploy_row
    assert "1 replica" in deploy_row and "serving after" in deploy_row
    rollback = html.split('data-kind="rollback"')[1].split("</tr>")[0]
    assert "<code>v2</code> → <code>v1</code>" in rollback and "admin" in rollback
    assert re.search(r"serving after [\d.]+ s", rollback)
    assert 'aria-current="page">History<' in html

    only = team.console("mx-dev").get("/ui/modules/mx-echo/history?kind=deploy")
    assert 'data-kind="deploy"' in only.text and 'data-kind="push"' not in only.text
    bad = team.console("mx-dev").get("/ui/modules/mx-echo/history?kind=nope")
    assert bad.status_code == 422 and "<code>kind</code>" in bad.text


# Drift


def test_drift_without_a_deployed_version_says_there_is_nothing_to_compare(team: Team) -> None:
    page = team.console("mx-dev").get("/ui/modules/mx-idle/drift")
    assert page.status_code == 200, page.text
    assert 'id="drift-empty"' in page.text and "no version of this module is deployed" in page.text
    assert "With the defaults: no Api manifest of this module sets monitoring.drift." in page.text


def test_drift_of_a_version_without_features_says_there_is_nothing_to_follow(team: Team) -> None:
    page = team.console("mx-dev").get("/ui/modules/mx-blind/drift?version=v1")
    assert page.status_code == 200, page.text
    assert 'id="drift-empty"' in page.text
    assert "Version v1 declares no input or output that drift can follow." in page.text


def test_drift_of_a_deployed_version_waits_for_its_reference(team: Team) -> None:
    owner = team.console("mx-dev")
    page = owner.get("/ui/modules/mx-echo/drift")
    assert page.status_code == 200, page.text
    assert 'data-verdict="insufficient_data"' in page.text
    assert "taking the reference" in page.text and "Not enough calls yet" in page.text
    assert owner.get("/ui/modules/mx-echo/drift?version=v7").status_code == 404


# Who may see them


@pytest.mark.parametrize("tab", ["metrics", "metrics/live", "history", "drift"])
def test_a_developer_outside_the_owner_group_gets_404(team: Team, tab: str) -> None:
    outsider = team.console("mx-outsider")
    page = outsider.get(f"/ui/modules/mx-echo/{tab}?window=bad")  # 404 before the query is even looked at
    assert page.status_code == 404, page.text
    assert "mx-echo" in page.text and 'data-chart="' not in page.text


def test_signed_out_callers_are_sent_to_sign_in(team: Team) -> None:
    answer = team.world.anonymous().get("/ui/modules/mx-echo/metrics?window=7d")
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/ui/sign-in?next=")


def test_the_tabs_render_in_russian(team: Team) -> None:
    owner = team.console("mx-dev")
    owner.client.cookies.set("mp_lang", "ru")
    for path in ("metrics?window=24h", "history", "drift"):
        page = owner.get(f"/ui/modules/mx-echo/{path}")
        assert page.status_code == 200, page.text
        assert '<html lang="ru">' in page.text
