"""The pipeline commands: `get pipelines` lists the pipelines the token may call, with whether each can run
now; `describe pipeline` shows one: its steps, the version each runs (or why it cannot), and its API's fields.

Pipelines are made and changed with `modelport apply -f` (a `Pipeline` manifest) and called through their
HTTP routes, or queued with `modelport jobs submit NAME --pipeline`. Exit codes: 0 success; 1 the server
refused or could not be reached (404 for a pipeline one may not call).
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer
import yaml

from modelport.cli.platform import Output, OutputOption, Token, Url, connect, dump, get_app, print_table
from modelport.cli.requests import describe_app
from modelport.client import PipelineInfo

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add `get pipelines` and `describe pipeline` to the `modelport` command line."""
    get_app.command("pipelines")(get_pipelines)
    describe_app.command("pipeline")(describe_pipeline)


def get_pipelines(output: OutputOption = Output.table, url: Url = None, token: Token = None) -> None:
    """List the pipelines you may call, and whether each can run now."""
    with connect(url, token) as client:
        pipelines = client.pipelines()
    if output is not Output.table:
        dump(pipelines, output)
        return
    print_table(("NAME", "READY", "STEPS", "INPUTS", "OUTPUTS"), map(_row, pipelines))


def describe_pipeline(
    name: Annotated[str, typer.Argument(help="The pipeline.")],
    output: OutputOption = Output.table,
    url: Url = None,
    token: Token = None,
) -> None:
    """Show one pipeline: its steps and the versions they run, its API's fields and its manifest."""
    with connect(url, token) as client:
        pipeline = client.pipeline(name)
    if output is not Output.table:
        dump(pipeline, output)
        return
    sys.stdout.write(describe(pipeline))


def describe(pipeline: PipelineInfo) -> str:
    lines = [
        f"Name:        {pipeline.name}",
        f"Owner:       {pipeline.owner or '(admins)'}",
        f"Ready:       {'yes' if pipeline.ready else 'no'}",
        f"Inputs:      {', '.join(pipeline.inputs) or '-'}",
        f"Parameters:  {', '.join(pipeline.parameters) or '-'}",
        f"Outputs:     {', '.join(pipeline.outputs) or '-'}",
        "Steps:",
    ]
    for step in pipeline.steps:
        after = f" after {', '.join(step.needs)}" if step.needs else ""
        serving = f"runs {step.serving}" if step.serving else "cannot run"
        lines.append(f"  {step.name}: {step.module} ({serving}{after})")
        if step.problem:
            lines.append(f"    problem: {step.problem}")
    lines += [
        "Manifest:",
        *(
            "  " + line
            for line in yaml.safe_dump(pipeline.manifest, sort_keys=False, allow_unicode=True).splitlines()
        ),
    ]
    return "\n".join(lines) + "\n"


def _row(pipeline: PipelineInfo) -> tuple[str, ...]:
    steps = " -> ".join(f"{s.name}({s.module})" for s in pipeline.steps)
    return (
        pipeline.name,
        "yes" if pipeline.ready else "no",
        steps,
        ", ".join(pipeline.inputs) or "-",
        ", ".join(pipeline.outputs) or "-",
    )
