"""A module's "Metrics", "History" and "Drift" tabs: its calls over a window, its publication timeline, and
its recent calls compared with their reference.

Metrics are the statistics of `/api/v1/modules/{module}/stats` (totals, latency percentiles, error codes,
batch sizes, kinds of calls) with three charts (throughput, latency, errors). Their series travel in the page
as JSON, drawn by `static/charts.js` with uPlot; a table of the same series serves keyboards and browsers
without JavaScript. The last hour refreshes itself every 10 s (HTMX swaps in `module_metrics_body.html`).
Every window is read from the rollups (hour rows for the week), never from the request log.

Only who manages the module (developers of its owner group, admins) sees these tabs; anyone else gets the 404
page, as for every management tab.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from babel.numbers import get_decimal_symbol, get_group_symbol
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from modelport.console.modules import ModuleAccess, module_access
from modelport.console.web import Console, Page
from modelport.control.history import EVENT_KINDS
from modelport.core.errors import ValidationFailed, VersionNotFound, field_error
from modelport.core.records import DriftReport, ModuleEventRecord, ModuleStats
from modelport.obs.drift import plan_of
from modelport.sdk.spec import ApiSpec

__all__ = ["WINDOWS", "routes"]

WINDOWS = {"1h": "1m", "24h": "5m", "7d": "1h"}
"""The windows the Metrics tab offers, each with the step of its series."""
LIVE_WINDOW = "1h"
"""The window whose numbers refresh themselves while the page is open."""
HISTORY_PAGE = 100
"""Events on one page of the History tab."""
_MAX_VERSION = 64
_MAX_CURSOR = 64


def routes(console: Console) -> list[BaseRoute]:
    services = console.services

    def metrics_page(request: Request) -> Response:
        page = console.page(request)
        access = module_access(console, page, request.path_params["module"], manage=True)
        window, version = _metrics_query(request)
        versions = [v.name for v in services.versions.list(access.name)]
        return console.render(
            page,
            "module_metrics.html",
            tab="metrics",
            versions=versions,
            **_metrics(console, page, access, window, version),
        )

    def metrics_body(request: Request) -> Response:
        page = console.page(request)
        access = module_access(console, page, request.path_params["module"], manage=True)
        window, version = _metrics_query(request)
        return console.render(
            page, "module_metrics_body.html", **_metrics(console, page, access, window, version)
        )

    def history_page(request: Request) -> Response:
        page = console.page(request)
        access = module_access(console, page, request.path_params["module"], manage=True)
        kind = request.query_params.get("kind") or None
        cursor = _bounded(request, "cursor", _MAX_CURSOR)
        timeline = services.history.timeline(
            access.name,
            kinds=[kind] if kind else None,
            limit=HISTORY_PAGE,
            cursor=cursor,
            current=not page.principal.is_admin,
        )
        return console.render(
            page,
            "module_history.html",
            tab="history",
            access=access,
            events=timeline.events,
            next_cursor=timeline.next_cursor,
            switched_in=switch_times(timeline.events),
            kinds=EVENT_KINDS,
            kind=kind,
            first_page=cursor is None,
        )

    def drift_page(request: Request) -> Response:
        page = console.page(request)
        access = module_access(console, page, request.path_params["module"], manage=True)
        version = _bounded(request, "version", _MAX_VERSION)
        try:
            report: DriftReport | None = services.drift.report(access.name, version)
        except VersionNotFound:
            if version is not None:
                raise
            report = None  # nothing serves, and no version was named: nothing to compare yet
        follows = (
            report is None or bool(report.features) or _has_features(console, access.name, report.version)
        )
        policy = access.policy
        return console.render(
            page,
            "module_drift.html",
            tab="drift",
            access=access,
            report=report,
            version=version,
            follows=follows,
            settings=policy.drift,
            configured_by=next((api.name for api in policy.apis if api.drift is not None), None),
            versions=[v.name for v in services.versions.list(access.name)],
        )

    return [
        Route("/modules/{module}/metrics", metrics_page, methods=["GET"], name="module-metrics"),
        Route("/modules/{module}/metrics/live", metrics_body, methods=["GET"], name="module-metrics-live"),
        Route("/modules/{module}/history", history_page, methods=["GET"], name="module-history"),
        Route("/modules/{module}/drift", drift_page, methods=["GET"], name="module-drift"),
    ]


def _metrics(
    console: Console, page: Page, access: ModuleAccess, window: str, version: str | None
) -> dict[str, Any]:
    """What the Metrics tab shows of `window` (all versions, or `version`)."""
    stats = console.services.stats.stats(access.name, window=window, step=WINDOWS[window], version=version)
    return {
        "access": access,
        "stats": stats,
        "window": window,
        "version": version,
        "live": window == LIVE_WINDOW,
        "chart": chart_series(stats),
        "rows": series_rows(stats, page.language),
    }


def chart_series(stats: ModuleStats) -> dict[str, list[Any]]:
    """The series as uPlot reads them: one column per line, `t` in Unix seconds, None where a step has no
    latency (a gap in the line)."""
    points = stats.series
    return {
        "t": [int(datetime.fromisoformat(p.start).timestamp()) for p in points],
        "calls": [p.calls for p in points],
        "errors": [p.errors for p in points],
        "rps": [round(p.throughput_rps, 4) for p in points],
        "p50": [_ms(p.latency_ms.p50) for p in points],
        "p95": [_ms(p.latency_ms.p95) for p in points],
        "p99": [_ms(p.latency_ms.p99) for p in points],
    }


@dataclass(frozen=True, slots=True)
class SeriesRow:
    """One step of the series as the table shows it: its start (ISO 8601, and as shown) and its numbers,
    formatted for the page's language."""

    start: str
    shown: str
    calls: str
    errors: str
    throughput: str
    p50: str
    p95: str
    p99: str


def series_rows(stats: ModuleStats, language: str) -> list[SeriesRow]:
    """The steps that had calls, newest first. A week has 168 of them with seven numbers each: they are
    formatted with the language's symbols directly, not one Babel pattern at a time."""
    number = _number_format(language)
    return [
        SeriesRow(
            start=p.start,
            shown=p.start[:16].replace("T", " "),
            calls=number(p.calls, 0),
            errors=number(p.errors, 0),
            throughput=number(p.throughput_rps, 3),
            p50=number(p.latency_ms.p50, 1),
            p95=number(p.latency_ms.p95, 1),
            p99=number(p.latency_ms.p99, 1),
        )
        for p in reversed(stats.series)
        if p.calls
    ]


def switch_times(events: Sequence[ModuleEventRecord]) -> dict[int, float]:
    """Event id of each deploy or rollback (of `events`, newest first) → the seconds its switch took, from
    the request to the version serving: the next switch to the same version that followed it."""
    asked: dict[str, int] = {}
    took: dict[int, float] = {}
    for event in reversed(events):
        if event.kind in ("deploy", "rollback") and event.version:
            asked[event.version] = event.id
        elif event.kind == "switch" and event.version in asked and event.seconds is not None:
            took[asked.pop(event.version)] = event.seconds
    return took


def _metrics_query(request: Request) -> tuple[str, str | None]:
    """The window and version asked for; `ValidationFailed` naming the field that is not one offered."""
    window = request.query_params.get("window") or LIVE_WINDOW
    if window not in WINDOWS:
        message = f"window must be one of {', '.join(WINDOWS)}, not {window!r}"
        raise ValidationFailed(message, details=[field_error("window", "invalid_window", message)])
    return window, _bounded(request, "version", _MAX_VERSION)


def _bounded(request: Request, name: str, longest: int) -> str | None:
    """A text parameter (None when absent or empty); `ValidationFailed` naming it when it is too long."""
    value = request.query_params.get(name) or None
    if value is not None and len(value) > longest:
        message = f"{name} must be at most {longest} characters"
        raise ValidationFailed(message, details=[field_error(name, "too_long", message)])
    return value


def _has_features(console: Console, module: str, version: str) -> bool:
    """Whether the version declares an input or output that drift can follow."""
    spec = console.services.versions.detail(module, version).spec
    return bool(plan_of(ApiSpec.from_dict(spec)).rules)


@cache
def _number_format(language: str) -> Callable[[float | None, int], str]:
    """`number(value, digits)`: grouped thousands and `digits` decimals in `language`, "—" for None."""
    symbols = str.maketrans({",": get_group_symbol(language), ".": get_decimal_symbol(language)})

    def number(value: float | None, digits: int) -> str:
        return "—" if value is None else f"{value:,.{digits}f}".translate(symbols)

    return number


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
