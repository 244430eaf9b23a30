"""`modelport history`: a module's publication history as a timeline.

Each line is one event, newest first: when, what (push, build, deploy, switch, canary, rollback, scale,
failure, delete), which version (`v1 → v2` when one replaced another), who, how long it took (a build, a
switch from the request to the new version taking calls), how it ended, and the rest in a few words. Like
the other platform commands it takes `--url`, `--token` and `-o table|json|yaml`; results go to stdout,
messages and errors to stderr.

Exit codes: 0 success; 1 the server refused or could not be reached; 2 bad usage or input (a `--since` that
is neither a time nor a span, a request the server rejected as invalid).
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.markup import escape

from modelport.cli.platform import (
    Output,
    OutputOption,
    Token,
    Url,
    connect,
    dump,
    err,
    fail,
    plural,
    print_table,
    when,
)
from modelport.core.records import ModuleEventRecord
from modelport.core.times import parse_instant

__all__ = ["register"]

_COLUMNS = ("TIME", "EVENT", "VERSION", "WHO", "TOOK", "OUTCOME", "DETAIL")
_SHORT_DIGEST = 19  # `sha256:` and 12 hex digits


class EventKind(StrEnum):
    push = "push"
    build = "build"
    deploy = "deploy"
    switch = "switch"
    canary = "canary"
    rollback = "rollback"
    scale = "scale"
    failure = "failure"
    delete = "delete"


def register(app: typer.Typer) -> None:
    """Add `history` to the `modelport` command line."""
    app.command()(history)


def history(
    module: Annotated[str, typer.Argument(help="The module.")],
    kind: Annotated[
        list[EventKind] | None,
        typer.Option("--kind", help="Only events of this kind; may be repeated.", show_default=False),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(help="Only events since this ISO 8601 time, or this long ago: 30m, 12h, 7d, 2w."),
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Only events before this time or this long ago.", show_default=False)
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many events.")] = 50,
    cursor: Annotated[
        str | None,
        typer.Option(help="Older events: the cursor the page before ended with.", show_default=False),
    ] = None,
    output: OutputOption = Output.table,
    url: Url = None,
    token: Token = None,
) -> None:
    """Show a module's publication history, newest first: pushes, builds, deploys, switches, canaries,
    rollbacks, scales and failures."""
    now = datetime.now(UTC)
    start, end = moment(since, now=now, option="--since"), moment(until, now=now, option="--until")
    with connect(url, token) as client:
        page = client.history(
            module, kinds=[k.value for k in kind or ()], since=start, until=end, limit=limit, cursor=cursor
        )
    if output is not Output.table:
        dump(page, output)
        return
    print_table(_COLUMNS, map(row, page.events))
    if page.next_cursor is not None:
        err.print(f"older events: --cursor {escape(page.next_cursor)}")


def moment(value: str | None, *, now: datetime, option: str) -> datetime | None:
    """The time an option names (`core/times.py`); exits 2 for anything else."""
    if value is None:
        return None
    try:
        return parse_instant(value, now=now)
    except ValueError as exc:
        fail(f"{option} {value!r}: {exc}", 2)


def row(event: ModuleEventRecord) -> tuple[str, ...]:
    """One line of the timeline."""
    return (
        when(event.at),
        event.kind,
        _versions(event),
        event.actor or "-",
        took(event.seconds),
        event.outcome or "-",
        detail(event),
    )


def _versions(event: ModuleEventRecord) -> str:
    if event.from_version and event.version and event.from_version != event.version:
        return f"{event.from_version} → {event.version}"
    return event.version or "-"


def took(seconds: float | None) -> str:
    """`850 ms`, `12.4 s`, `3m 05s`, or `-` when the event took no measured time."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m {rest:02d}s"


def detail(event: ModuleEventRecord) -> str:
    """What else the event says, in a few words."""
    details = event.details
    describe = _DETAILS.get(event.kind)
    return describe(details) if describe is not None else ""


def _push(details: dict[str, Any]) -> str:
    parts = [f"tag {details['tag']}" if details.get("tag") else ""]
    parts.append(f"commit {str(details['commit'])[:12]}" if details.get("commit") else "")
    parts.append(str(details.get("digest", ""))[:_SHORT_DIGEST])
    return ", ".join(part for part in parts if part)


def _build(details: dict[str, Any]) -> str:
    return str(details.get("error", ""))


def _deploy(details: dict[str, Any]) -> str:
    text = _replicas(details)
    return f"{text}; {details['reason']}" if details.get("reason") else text


def _canary(details: dict[str, Any]) -> str:
    action, percent, before = (
        details.get("action", ""),
        details.get("percent"),
        details.get("previous_percent"),
    )
    if action == "removed":
        return "removed"
    was = f" (was {before} %)" if before and before != percent else ""
    return f"{action} at {percent} % of calls{was}"


def _reason(details: dict[str, Any]) -> str:
    return str(details.get("reason", ""))


def _delete(details: dict[str, Any]) -> str:
    return "through a manifest" if details.get("via") == "manifest" else ""


def _replicas(details: dict[str, Any]) -> str:
    replicas, before = details.get("replicas"), details.get("previous_replicas")
    if not isinstance(replicas, int):
        return ""
    if isinstance(before, int) and before != replicas:
        return f"{before} → {plural(replicas, 'replica')}"
    return plural(replicas, "replica")


_DETAILS = {
    "push": _push,
    "build": _build,
    "deploy": _deploy,
    "canary": _canary,
    "rollback": _reason,
    "scale": _replicas,
    "failure": _reason,
    "delete": _delete,
}
