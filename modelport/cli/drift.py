"""`modelport drift MODULE`: whether a module version's recent calls still look like its reference.

It prints the verdict, where the reference comes from and how full it and the window are, then a table with
one row per feature: its kind, PSI, KS statistic and p-value (numbers only), verdict, and what its values look
like in the reference and recently. On a terminal the verdicts are coloured; elsewhere the table is
tab-separated. `-o json` or `-o yaml` prints the server's answer as it is. Like the other platform commands it
takes `--url` and `--token`.

Exit codes: 0 success, whatever the verdict; 1 the server refused or could not be reached; 2 bad usage (not
logged in).
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from modelport.cli.platform import Output, OutputOption, Token, Url, connect, dump, print_table
from modelport.core.records import DriftFeature, DriftReport, FeatureSummary

__all__ = ["describe", "register"]

out = Console(soft_wrap=True)

COLUMNS = ("FEATURE", "KIND", "PSI", "KS", "P-VALUE", "VERDICT", "REFERENCE", "RECENT")
COLOURS = {"ok": "green", "drift": "bold red", "insufficient_data": "yellow"}


def register(app: typer.Typer) -> None:
    """Add `drift` to the `modelport` command line."""
    app.command()(drift)


def drift(
    module: Annotated[str, typer.Argument(help="The module.")],
    version: Annotated[
        str | None, typer.Option(help="The version (default: the active one).", show_default=False)
    ] = None,
    output: OutputOption = Output.table,
    url: Url = None,
    token: Token = None,
) -> None:
    """Compare a module version's recent calls with its reference, feature by feature."""
    with connect(url, token) as client:
        report = client.drift(module, version=version)
    if output is not Output.table:
        dump(report, output)
        return
    print_report(report)


def print_report(report: DriftReport) -> None:
    """The verdict, the reference and window lines, and the table of features."""
    reference, window = report.reference, report.window
    verdict = Text(f"{report.module} {report.version}: ")
    verdict.append(report.verdict, style=COLOURS[report.verdict])
    verdict.append(f" (PSI threshold {report.threshold:g})")
    _line(verdict)
    _line(Text(f"reference: {reference.source}, {reference.calls} of {reference.needed} calls"))
    if reference.message:
        _line(Text(f"  {reference.message}"))
    since = f" since {window.since}" if window.since else ""
    _line(Text(f"window: {window.calls} of {window.needed} calls{since}"))
    if not report.features:
        return
    sys.stdout.write("\n")
    rows = [_row(feature) for feature in report.features]
    if not sys.stdout.isatty():
        print_table(COLUMNS, rows)
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in COLUMNS:
        table.add_column(column, overflow="fold")
    for feature, row in zip(report.features, rows, strict=True):
        cells = [Text(cell) for cell in row]
        cells[5] = Text(feature.verdict, style=COLOURS[feature.verdict])
        table.add_row(*cells)
    out.print(table)


def _line(text: Text) -> None:
    if sys.stdout.isatty():
        out.print(text)
    else:
        sys.stdout.write(text.plain + "\n")


def _row(feature: DriftFeature) -> tuple[str, ...]:
    return (
        feature.name,
        feature.kind,
        _number(feature.psi),
        _number(feature.ks),
        "-" if feature.p_value is None else f"{feature.p_value:.2g}",
        feature.verdict,
        describe(feature.reference_summary),
        describe(feature.recent_summary),
    )


def describe(summary: FeatureSummary) -> str:
    """A summary in a few words: `mean 0.93 (0.41..1)`, or the three most common categories with their
    shares (`7 31%, 1 12%, 3 10%`); `-` when there are no values."""
    if summary.count == 0:
        return "-"
    if summary.shares is not None:
        top = list(summary.shares.items())[:3]
        return ", ".join(f"{category} {share:.0%}" for category, share in top)
    return f"mean {_number(summary.mean)} ({_number(summary.min)}..{_number(summary.max)})"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"
