"""The request log commands: `get requests` lists the calls the token may see, `describe request` shows one
call with its payload and the command that prints its log lines.

Like the other platform commands they take `--url` and `--token` and talk to the server only through the
client. Exit codes: 0 success; 1 the server refused or could not be reached (404 for a call one may not
see); 2 bad usage or a filter the server rejected (422 names it, 400 for a cursor it did not give).
"""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from modelport.cli.options import Cursor
from modelport.cli.platform import (
    Output,
    OutputOption,
    Token,
    Url,
    connect,
    dump,
    err,
    get_app,
    print_table,
    when,
)
from modelport.client import RequestDetail, RequestRecord

__all__ = ["register"]

describe_app = typer.Typer(help="Show one object in detail.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add `get requests` and `describe request` to the `modelport` command line."""
    get_app.command("requests")(get_requests)
    app.add_typer(describe_app, name="describe")


def get_requests(
    module: Annotated[
        str | None, typer.Argument(help="Only this module's calls.", show_default=False)
    ] = None,
    status: Annotated[
        str | None, typer.Option(help="A status (200) or a class (4xx, 5xx).", show_default=False)
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(help="An ISO 8601 time, or a span before now (30m, 1h, 7d).", show_default=False),
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="An ISO 8601 time, or a span before now.", show_default=False)
    ] = None,
    caller: Annotated[str | None, typer.Option(help="The caller's user name.", show_default=False)] = None,
    code: Annotated[str | None, typer.Option(help="The error code.", show_default=False)] = None,
    version: Annotated[
        str | None, typer.Option(help="The version that answered.", show_default=False)
    ] = None,
    min_latency_ms: Annotated[
        float | None, typer.Option(help="Only calls at least this slow.", show_default=False)
    ] = None,
    pipeline: Annotated[
        str | None, typer.Option(help="Only the steps of this pipeline's calls.", show_default=False)
    ] = None,
    parent: Annotated[
        str | None,
        typer.Option(help="Only the steps of the pipeline call with this request id.", show_default=False),
    ] = None,
    limit: Annotated[int, typer.Option(help="Calls on the page (1 to 1000).")] = 100,
    cursor: Cursor = None,
    output: OutputOption = Output.table,
    url: Url = None,
    token: Token = None,
) -> None:
    """List answered calls, newest first: a module's, or all those you may see."""
    with connect(url, token) as client:
        page = client.requests(
            module,
            version=version,
            status=status,
            code=code,
            caller=caller,
            since=since,
            until=until,
            min_latency_ms=min_latency_ms,
            pipeline=pipeline,
            parent=parent,
            limit=limit,
            cursor=cursor,
        )
    if output is not Output.table:
        dump(page, output)
        return
    columns = ("TIME", "ID", "MODULE", "VERSION", "CALLER", "STATUS", "CODE", "TOTAL MS", "QUEUE MS", "BATCH")
    print_table(columns, map(_row, page.requests))
    if page.next_cursor is not None:
        err.print(f"more: --cursor {page.next_cursor}", markup=False, highlight=False)


@describe_app.command("request")
def describe_request(
    request_id: Annotated[str, typer.Argument(help="The call's id (its X-Request-Id).")],
    output: OutputOption = Output.table,
    url: Url = None,
    token: Token = None,
) -> None:
    """Show one call: what the log kept of it, its payload, and how to read its log lines."""
    with connect(url, token) as client:
        detail = client.request(request_id)
    if output is not Output.table:
        dump(detail, output)
        return
    sys.stdout.write(_describe(detail))


def _row(record: RequestRecord) -> tuple[str, ...]:
    return (
        when(record.at),
        record.id,
        record.module if record.step is None else f"{record.module} ({record.pipeline} step {record.step})",
        record.version,
        record.caller,
        str(record.status),
        record.code or "-",
        f"{record.total_ms:.1f}",
        f"{record.queue_ms:.1f}",
        str(record.batch_size),
    )


def _describe(detail: RequestDetail) -> str:
    fields = [
        ("id", detail.id),
        ("trace id", detail.trace_id),
        ("time", detail.at),
        ("module", f"{detail.module} {detail.version}"),
        ("replica", "-" if detail.replica is None else str(detail.replica)),
        ("caller", detail.caller + (f" ({detail.client})" if detail.client else "")),
        ("status", str(detail.status) + (f" {detail.code}" if detail.code else "")),
        (
            "latency",
            f"{detail.total_ms:.1f} ms (queue {detail.queue_ms:.1f}, compute {detail.compute_ms:.1f})",
        ),
        ("batch", f"{detail.records} of {detail.batch_size} records"),
        ("bytes", f"{detail.request_bytes} in, {detail.response_bytes} out"),
        ("model key", detail.model_key or "-"),
    ]
    lines = [f"{name + ':':<10} {value}" for name, value in fields]
    if detail.payload is None:
        lines.append("payload:   not captured")
    else:
        lines.append("payload:")
        lines.extend(
            "  " + line for line in json.dumps(detail.payload, indent=2, ensure_ascii=False).splitlines()
        )
    lines.append(f"logs:      modelport logs {detail.module} --request-id {detail.id}")
    return "\n".join(lines) + "\n"
