"""Options that several commands take the same way: what a call of a module sends."""

from __future__ import annotations

from typing import Annotated

import typer

__all__ = ["Cursor", "InputValues", "OutputFields", "ParameterValues"]

InputValues = Annotated[
    list[str] | None,
    typer.Option("--input", "-i", help="An input: name=value, or name=@file for a file."),
]
ParameterValues = Annotated[list[str] | None, typer.Option("--param", "-p", help="A parameter: name=value.")]
OutputFields = Annotated[list[str] | None, typer.Option("--output-field", help="Only these outputs.")]
Cursor = Annotated[str | None, typer.Option(help="The cursor the page before printed.", show_default=False)]
