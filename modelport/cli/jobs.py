"""`modelport jobs ...` and `modelport webhooks secret`: asynchronous predictions from the shell.

`jobs submit` queues one prediction, its `-i`/`-p` values read as `modelport predict` reads them (text, or
`@file` for a file input) and sent as a form, so that the server reads each by its declared type; `get`,
`list` (also `modelport get jobs`), `cancel`, `wait` and `deliveries` follow jobs; `webhooks secret` tells
when the caller's webhook signing secret was made, and `--rotate` makes a new one and prints it, once. Like
the other platform commands they take `--url`, `--token` and `-o table|json|yaml`; results go to stdout,
messages and errors to stderr.

Exit codes: 0 success (a job that was waited for succeeded); 1 a job waited for failed, was canceled or did
not finish in time, or the server refused or could not be reached; 2 bad usage or input (a request the
server rejected as invalid with 400 or 422).
"""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.markup import escape

from modelport.cli.options import Cursor, InputValues, OutputFields, ParameterValues
from modelport.cli.platform import (
    Output,
    OutputOption,
    Token,
    Url,
    connect,
    dump,
    err,
    fail,
    get_app,
    print_table,
    when,
)
from modelport.client import ApiError
from modelport.core.records import JobInfo, JobProgress, WebhookAttempt, WebhookAttemptList, WebhookSecret

__all__ = ["describe", "duration", "finish", "progress_text", "register", "show"]

jobs_app = typer.Typer(help="Queue predictions to run later and follow them.", no_args_is_help=True)
webhooks_app = typer.Typer(help="The signing secret of your webhooks.", no_args_is_help=True)

_COLUMNS = ("CREATED", "ID", "MODULE", "KIND", "STATUS", "VERSION", "ATTEMPTS", "PROGRESS", "ERROR")
_DELIVERY_COLUMNS = ("AT", "EVENT", "ATTEMPT", "URL", "STATUS", "MS", "DELIVERED", "ERROR")


class Event(StrEnum):
    started = "started"
    completed = "completed"


class Kind(StrEnum):
    job = "job"
    batch = "batch"


class Status(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    canceled = "canceled"


JobId = Annotated[str, typer.Argument(help="The job's id.")]
JobTimeout = Annotated[float, typer.Option("--timeout", min=0, help="Seconds to wait for the job.")]


def register(app: typer.Typer) -> None:
    """Add `jobs`, `webhooks` and `get jobs` to the `modelport` command line."""
    app.add_typer(jobs_app, name="jobs")
    app.add_typer(webhooks_app, name="webhooks")
    get_app.command("jobs")(list_jobs)


@jobs_app.command("submit")
def submit(
    module: Annotated[str, typer.Argument(help="The module.")],
    inputs: InputValues = None,
    parameters: ParameterValues = None,
    output_fields: OutputFields = None,
    model_key: Annotated[str | None, typer.Option(help="Which model to use.", show_default=False)] = None,
    version: Annotated[
        str | None,
        typer.Option(help="Run this version (default: the active one when it runs).", show_default=False),
    ] = None,
    webhook: Annotated[
        str | None, typer.Option(help="A URL told of the job's events.", show_default=False)
    ] = None,
    events: Annotated[
        list[Event] | None,
        typer.Option(
            "--event", help="An event the webhook is told of (default: completed); may be repeated."
        ),
    ] = None,
    idempotency_key: Annotated[
        str | None,
        typer.Option(help="Sending again with this key gives back the same job.", show_default=False),
    ] = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Wait until the job finishes.")] = False,
    pipeline: Annotated[bool, typer.Option("--pipeline", help="MODULE names a pipeline.")] = False,
    timeout: JobTimeout = 600,
    output: OutputOption = Output.table,
    url: Url = None,
    token: Token = None,
) -> None:
    """Queue one prediction of a module (or, with --pipeline, one call of a pipeline); with --wait, follow
    it to its end."""
    texts, files, params = _form_values(inputs or [], parameters or [])
    with connect(url, token) as client:
        job = client.submit_job(
            module,
            texts,
            parameters=params,
            files=files,
            output_fields=output_fields,
            model_key=model_key,
            version=version,
            webhook=webhook,
            webhook_events=events,
            idempotency_key=idempotency_key,
            pipeline=pipeline,
        )
        if not wait:
            show(job, output)
            err.print(f"follow it with: modelport jobs wait {escape(job.id)}", highlight=False)
            return
        with err.status(f"waiting for job {escape(job.id)}"):
            job = client.wait_job(job.id, timeout=timeout)
    finish(job, output)


@jobs_app.command("get")
def get_job(job_id: JobId, output: OutputOption = Output.table, url: Url = None, token: Token = None) -> None:
    """Show one job: its state and, once it has finished, its outputs or its error."""
    with connect(url, token) as client:
        job = client.job(job_id)
    show(job, output)


@jobs_app.command("list")
def list_jobs(
    module: Annotated[str | None, typer.Option(help="Only this module's jobs.", show_default=False)] = None,
    status: Annotated[
        Status | None, typer.Option(help="Only jobs in this state.", show_default=False)
    ] = None,
    kind: Annotated[
        Kind | None, typer.Option(help="Only predictions (job) or batches.", show_default=False)
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(help="An ISO 8601 time, or a span before now (30m, 1h, 7d).", show_default=False),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Jobs on the page.")] = 100,
    cursor: Cursor = None,
    output: OutputOption = Output.table,
    url: Url = None,
    token: Token = None,
) -> None:
    """List the jobs you may see, newest first."""
    with connect(url, token) as client:
        page = client.jobs(module=module, status=status, kind=kind, since=since, limit=limit, cursor=cursor)
    if output is not Output.table:
        dump(page, output)
        return
    print_table(_COLUMNS, map(_row, page.jobs))
    if page.next_cursor is not None:
        err.print(f"more: --cursor {page.next_cursor}", markup=False, highlight=False)


@jobs_app.command("cancel")
def cancel(job_id: JobId, output: OutputOption = Output.table, url: Url = None, token: Token = None) -> None:
    """Cancel a queued or running job."""
    with connect(url, token) as client:
        job = client.cancel_job(job_id)
    show(job, output)


@jobs_app.command("wait")
def wait_job(
    job_id: JobId,
    timeout: JobTimeout = 600,
    output: OutputOption = Output.table,
    url: Url = None,
    token: Token = None,
) -> None:
    """Wait until a job finishes and show it; exits 1 when it failed or was canceled."""
    with connect(url, token) as client, err.status(f"waiting for job {escape(job_id)}"):
        job = client.wait_job(job_id, timeout=timeout)
    finish(job, output)


@jobs_app.command("deliveries")
def deliveries(
    job_id: JobId, output: OutputOption = Output.table, url: Url = None, token: Token = None
) -> None:
    """List the attempts to deliver a job's webhook events, and the events still to be delivered."""
    with connect(url, token) as client:
        found = client.job_deliveries(job_id)
    if output is not Output.table:
        dump(found, output)
        return
    _print_deliveries(found)


@webhooks_app.command("secret")
def secret(
    rotate: Annotated[
        bool,
        typer.Option(
            "--rotate", help="Make a new secret (the one before keeps signing beside it for a while)."
        ),
    ] = False,
    output: OutputOption = Output.table,
    url: Url = None,
    token: Token = None,
) -> None:
    """Tell when your webhook signing secret was made; with --rotate make one and print it, once."""
    with connect(url, token) as client:
        try:
            found = client.rotate_webhook_secret() if rotate else client.webhook_secret()
        except ApiError as exc:
            if exc.code == "webhook_secret_not_found":
                fail("no webhook signing secret yet: make one with `modelport webhooks secret --rotate`", 1)
            raise
    if output is not Output.table:
        dump(found, output)
        return
    _print_secret(found)


# Showing jobs


def show(job: JobInfo, output: Output) -> None:
    """Print one job: as the server sent it in JSON or YAML, or described line by line."""
    if output is Output.table:
        sys.stdout.write(describe(job))
    else:
        dump(job, output)


def finish(job: JobInfo, output: Output) -> NoReturn:
    """Print a job that was waited for and exit by how it ended: 0 succeeded, 1 failed or canceled."""
    show(job, output)
    if job.status == "succeeded":
        raise typer.Exit(0)
    reason = f": {job.error.message} ({job.error.code})" if job.error is not None else ""
    fail(f"job {job.id} {job.status}{reason}", 1)


def describe(job: JobInfo) -> str:
    """The job as `name: value` lines, its outputs (or its error) last."""
    fields = [
        ("id", job.id),
        ("kind", job.kind),
        ("module", job.module + _versions(job)),
        ("status", job.status),
        ("caller", job.caller),
        ("created", when(job.created_at)),
        ("started", when(job.started_at) if job.started_at else "-"),
        ("finished", when(job.finished_at) if job.finished_at else "-"),
        ("attempts", f"{job.attempts} of {job.max_attempts}"),
    ]
    if job.run_at and job.status == "queued":
        fields.append(("next run", when(job.run_at)))
    if job.progress is not None:
        fields.append(("progress", progress_text(job.progress)))
    if job.output is not None:
        fields.append(("results", job.output))
    if job.webhook is not None:
        fields.append(("webhook", f"{job.webhook} ({', '.join(job.webhook_events_filter) or '-'})"))
    if job.request_id is not None:
        fields.append(("request", job.request_id))
    if job.error is not None:
        fields.append(("error", f"{job.error.message} ({job.error.code}, {job.error.status})"))
    lines = [f"{name + ':':<10} {value}" for name, value in fields]
    if job.outputs is not None:
        lines.append("outputs:")
        lines.extend(
            "  " + line for line in json.dumps(job.outputs, indent=2, ensure_ascii=False).splitlines()
        )
    return "\n".join(lines) + "\n"


def progress_text(progress: JobProgress) -> str:
    """`40/100 records, 2 failed, 12.5/s, ETA 5 s`: what is known of a batch's progress."""
    total = "?" if progress.total is None else str(progress.total)
    parts = [f"{progress.done}/{total} records", f"{progress.failed} failed"]
    if progress.rate is not None:
        parts.append(f"{progress.rate:.3g}/s")
    if progress.eta_seconds is not None:
        parts.append(f"ETA {duration(progress.eta_seconds)}")
    return ", ".join(parts)


def duration(seconds: float) -> str:
    """`42 s`, `3 min 5 s`, `2 h 10 min`: a time left, to the second under an hour."""
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes, rest = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {rest} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def _versions(job: JobInfo) -> str:
    if job.served_version is not None:
        return f" {job.served_version}"
    return f" {job.version} (pinned)" if job.version is not None else ""


def _row(job: JobInfo) -> tuple[str, ...]:
    progress = job.progress
    return (
        when(job.created_at),
        job.id,
        job.module,
        job.kind,
        job.status,
        job.served_version or job.version or "-",
        str(job.attempts),
        "-" if progress is None else f"{progress.done}/{'?' if progress.total is None else progress.total}",
        job.error.code if job.error is not None else "-",
    )


def _print_deliveries(found: WebhookAttemptList) -> None:
    print_table(_DELIVERY_COLUMNS, map(_delivery_row, found.attempts))
    for pending in found.pending:
        event, due = pending.get("event"), pending.get("next_at")
        if event is not None and due is not None:
            sys.stdout.write(f"pending: {event}, next attempt at {when(str(due))}\n")
        else:
            sys.stdout.write("pending: " + ", ".join(f"{k} {v}" for k, v in pending.items()) + "\n")


def _delivery_row(attempt: WebhookAttempt) -> tuple[str, ...]:
    return (
        when(attempt.at),
        attempt.event,
        str(attempt.attempt),
        attempt.url,
        "-" if attempt.status is None else str(attempt.status),
        f"{attempt.duration_ms:.0f}",
        "yes" if attempt.delivered else "no",
        attempt.error or "-",
    )


def _print_secret(found: WebhookSecret) -> None:
    if found.secret is None:
        sys.stdout.write(f"created: {when(found.created_at)}\n")
        return
    sys.stdout.write(found.secret + "\n")
    err.print("this secret is shown only now: keep it where your receiver reads it", highlight=False)


# Reading -i and -p


def _form_values(
    inputs: list[str], parameters: list[str]
) -> tuple[dict[str, str], dict[str, Path], dict[str, str]]:
    """The text inputs, the file inputs and the parameters of `-i` and `-p`, read as `modelport predict`
    reads them; exit 2 on a value that is not `name=value`, a file that is not there, or a file parameter."""
    from modelport.cli.main import _form_item  # here: main imports this module to register its commands

    texts: dict[str, str] = {}
    files: dict[str, Path] = {}
    for item in inputs:
        key, value = _form_item("inputs", item)
        name = key.removeprefix("inputs.")
        if isinstance(value, Path):
            files[name] = value
        else:
            texts[name] = value
    params: dict[str, str] = {}
    for item in parameters:
        key, value = _form_item("parameters", item)
        if isinstance(value, Path):
            fail(f"parameter {key.removeprefix('parameters.')} cannot be a file", 2)
        params[key.removeprefix("parameters.")] = value
    return texts, files, params
