"""`modelport batch MODULE --input bucket/key --output bucket/prefix/`: a stored file of records through a
module, as one job.

The input is a JSON Lines object (one record of inputs a line), or every object under a `bucket/prefix/`;
the results are written as JSON Lines parts under the output prefix. Without `--wait` the command prints the
queued job; with it, a progress bar on stderr (records done of the total, the rate, the time left) follows the
batch, and its final state is printed to stdout. `--output` names where the results go, so the format of
what is printed is `--format table|json|yaml`. Like the other platform commands it takes `--url` and
`--token`.

Exit codes: 0 success (a batch waited for succeeded); 1 a batch waited for failed, was canceled or did not
finish in time, or the server refused or could not be reached; 2 bad usage or input (a request the server
rejected as invalid with 400 or 422).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn

from modelport.cli.jobs import duration, finish, progress_text, show
from modelport.cli.options import OutputFields
from modelport.cli.platform import Output, Token, Url, connect, err, fail
from modelport.client import Client, WaitTimeout
from modelport.core.records import JobInfo

__all__ = ["BatchBar", "follow", "register"]

POLL_SECONDS = 1.0
"""How often a followed batch is looked at; each look is a long poll, which the batch's end answers at
once."""

_FINISHED = ("succeeded", "failed", "canceled")


def register(app: typer.Typer) -> None:
    """Add `batch` to the `modelport` command line."""
    app.command()(batch)


def batch(
    module: Annotated[str, typer.Argument(help="The module.")],
    source: Annotated[
        str,
        typer.Option(
            "--input", help="A JSON Lines object (bucket/key), or every object under bucket/prefix/."
        ),
    ],
    target: Annotated[
        str, typer.Option("--output", help="Where the results go: bucket/prefix/.", show_default=False)
    ],
    parameters: Annotated[
        list[str] | None,
        typer.Option(
            "--param",
            "-p",
            help="A parameter for every record: name=value, the value read as JSON (3, true, [1, 2]) "
            "when it is JSON, else as text.",
        ),
    ] = None,
    output_fields: OutputFields = None,
    model_key: Annotated[str | None, typer.Option(help="Which model to use.", show_default=False)] = None,
    webhook: Annotated[
        str | None, typer.Option(help="A URL told when the batch completes.", show_default=False)
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Follow the batch with a progress bar until it ends.")
    ] = False,
    timeout: Annotated[float, typer.Option(min=0, help="Seconds to wait for the batch.")] = 3600,
    output: Annotated[Output, typer.Option("--format", help="table, json or yaml.")] = Output.table,
    url: Url = None,
    token: Token = None,
) -> None:
    """Run every record of a stored JSON Lines file through a module, as one job."""
    params = _parameters(parameters or [])
    with connect(url, token) as client:
        job = client.submit_batch(
            module,
            input=source,
            output=target,
            parameters=params,
            output_fields=output_fields,
            model_key=model_key,
            webhook=webhook,
        )
        if not wait:
            show(job, output)
            return
        with _bar(job) as bar:
            job = follow(client, job, timeout=timeout, bar=bar)
    finish(job, output)


class BatchBar:
    """A batch's progress bar: records done of the total (unknown until the input is counted), and the rate
    and the time left as the server estimates them."""

    def __init__(self, progress: Progress, job: JobInfo) -> None:
        self._progress = progress
        self._task = progress.add_task(escape(f"batch {job.id}"), total=None, counts="", rate="", eta="")
        self.show(job)

    def show(self, job: JobInfo) -> None:
        state = job.progress
        if state is None:
            return
        total = "?" if state.total is None else str(state.total)
        failed = f", {state.failed} failed" if state.failed else ""
        self._progress.update(
            self._task,
            completed=state.done,
            total=state.total,
            counts=f"{state.done}/{total}{failed}",
            rate="" if state.rate is None else f"{state.rate:.3g}/s",
            eta="" if state.eta_seconds is None else f"ETA {duration(state.eta_seconds)}",
        )


def follow(client: Client, job: JobInfo, *, timeout: float, bar: BatchBar) -> JobInfo:
    """Look at the batch every `POLL_SECONDS` until it has finished, showing its progress on `bar`;
    `WaitTimeout` (with the batch last seen) if it has not within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while job.status not in _FINISHED:
        bar.show(job)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            done = f": {progress_text(job.progress)}" if job.progress is not None else ""
            raise WaitTimeout(
                f"batch {job.id} did not finish within {timeout:g} s (it is {job.status}{done})", job
            )
        job = client.job(job.id, wait=min(POLL_SECONDS, remaining))
    bar.show(job)
    return job


@contextmanager
def _bar(job: JobInfo) -> Iterator[BatchBar]:
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[counts]}"),
        TextColumn("{task.fields[rate]}"),
        TextColumn("{task.fields[eta]}"),
    )
    with Progress(*columns, console=err, transient=True, disable=not err.is_terminal) as progress:
        yield BatchBar(progress, job)


def _parameters(items: list[str]) -> dict[str, Any]:
    """`-p name=value` as JSON values: the value parsed as JSON when it is JSON, else the text itself."""
    from modelport.cli.main import _form_item  # here: main imports this module to register its commands

    found: dict[str, Any] = {}
    for item in items:
        key, value = _form_item("parameters", item)
        name = key.removeprefix("parameters.")
        if isinstance(value, Path):
            fail(f"parameter {name} cannot be a file", 2)
        try:
            found[name] = json.loads(value)
        except ValueError:
            found[name] = value
    return found
