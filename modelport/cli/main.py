"""The `modelport` command line. Results go to stdout, progress and logs to stderr.

Exit codes: 0 success, 1 the operation failed (a module error, a failed request), 2 bad usage or input.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from modelport.cli.options import InputValues, OutputFields, ParameterValues
from modelport.core.errors import DatabaseUnavailable, ModelportError
from modelport.core.manifests import ManifestError, load_module_manifest
from modelport.core.settings import Settings
from modelport.sdk.source import SourceError
from modelport.sdk.validation import InvalidRequest

app = typer.Typer(
    name="modelport",
    help="Turn a trained model into a production web service.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True, soft_wrap=True)

_HOST_HELP = "Address to bind [default: MODELPORT_HOST, else 127.0.0.1]."
_PORT_HELP = "Port to listen on, 0 picks a free one [default: MODELPORT_PORT, else 8000]."


@app.command()
def dev(
    directory: Annotated[Path, typer.Argument(help="The module directory (holding inference.py).")] = Path(
        "."
    ),
    host: Annotated[str | None, typer.Option(help=_HOST_HELP, show_default=False)] = None,
    port: Annotated[int | None, typer.Option(help=_PORT_HELP, show_default=False)] = None,
    workers: Annotated[
        int | None, typer.Option(help="Worker processes (default: the manifest's replicas).")
    ] = None,
    reload: Annotated[bool, typer.Option(help="Reload the module when its files change.")] = True,
) -> None:
    """Serve one module with hot reload, Swagger UI and a try-it page."""
    directory = _module_dir(directory)
    options = {"host": "--host", "port": "--port"}
    settings = _settings(options, **_given(host=host, port=port), data_dir=directory / ".modelport")
    _require_entrypoint(directory)
    from modelport.app import CannotListen, run_dev_server  # after the settings: refusing them needs none

    def ready(url: str, module: str) -> None:
        err.print(f"[bold green]modelport dev[/] serving [bold]{module}[/] on {url}")
        err.print(f"  try it:   {url}/")
        err.print(f"  API docs: {url}/docs")
        err.print("  press Ctrl+C to stop")

    try:
        run_dev_server(directory, settings=settings, workers=workers, reload=reload, on_ready=ready)
    except CannotListen as exc:
        _refuse(exc.message)


@app.command()
def predict(
    target: Annotated[Path, typer.Argument(help="A module directory.")],
    inputs: InputValues = None,
    parameters: ParameterValues = None,
    output_fields: OutputFields = None,
    model_key: Annotated[str | None, typer.Option(help="Which model to use.")] = None,
    output: Annotated[str, typer.Option("--output", "-o", help="json or yaml.")] = "json",
) -> None:
    """Run one call of a module from the shell."""
    directory = _module_dir(target)
    form: list[tuple[str, str | Path]] = []
    for group, values in (("inputs", inputs or []), ("parameters", parameters or [])):
        for item in values:
            form.append(_form_item(group, item))
    form.extend(("output_fields", name) for name in output_fields or [])
    if model_key:
        form.append(("model_key", model_key))
    settings = _settings({}, data_dir=directory / ".modelport")
    from modelport.app import run_local_predict  # after the settings, as in `dev`

    try:
        result = asyncio.run(run_local_predict(directory, form=form, settings=settings))
    except InvalidRequest as exc:
        for detail in exc.details:
            err.print(f"[red]{detail['field']}[/]: {detail['message']}")
        raise typer.Exit(2) from None
    except ModelportError as exc:
        err.print(f"[red]error[/] ({exc.code}): {exc.message}")
        for detail in exc.details or []:
            err.print(f"  [red]{detail['field']}[/]: {detail['message']}")
        raise typer.Exit(2 if exc.status < 500 else 1) from None  # 4xx: the input; 5xx: the module
    except (ManifestError, SourceError) as exc:
        err.print(f"[red]error[/]: {exc}")
        raise typer.Exit(2) from None
    _print(result, output)


@app.command()
def init(
    name: Annotated[str, typer.Argument(help="Module name: lowercase letters, digits and hyphens.")],
    directory: Annotated[Path, typer.Option("--dir", help="Where to create it.")] = Path("."),
) -> None:
    """Create a working module skeleton: manifest, inference.py, requirements, README and a test."""
    from modelport.cli.scaffold import create_module

    try:
        path = create_module(name, directory)
    except (ValueError, FileExistsError) as exc:
        err.print(f"[red]error[/]: {exc}")
        raise typer.Exit(2) from None
    err.print(f"created {path}")
    err.print(f"next: [bold]modelport dev {path}[/]")
    print(path)


@app.command()
def server(
    host: Annotated[str | None, typer.Option(help=_HOST_HELP, show_default=False)] = None,
    port: Annotated[int | None, typer.Option(help=_PORT_HELP, show_default=False)] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="Where the database, versions, environments and logs live "
            "[default: MODELPORT_DATA_DIR, else .modelport].",
            show_default=False,
        ),
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(
            help="Metadata database (default: SQLite in the data directory); postgresql://... works."
        ),
    ] = None,
    demo: Annotated[bool, typer.Option(help="Push and deploy the gallery's modules.")] = False,
) -> None:
    """Run the platform: versions, builds, deployments and every deployed module behind one API."""
    overrides = _given(
        host=host, port=port, data_dir=data_dir.resolve() if data_dir else None, database_url=database_url
    )
    options = {"host": "--host", "port": "--port", "data_dir": "--data-dir", "database_url": "--database-url"}
    settings = _settings(options, **overrides)
    from modelport.app import CannotListen, demo_admin_token, run_platform_server  # as in `dev`

    if demo and settings.bootstrap_token is None:
        settings = settings.model_copy(update={"bootstrap_token": demo_admin_token(settings.data_dir)})

    def announce(message: str) -> None:
        err.print(f"[bold green]modelport[/] {message}", soft_wrap=True)
        if message.startswith("serving on "):
            url = message.removeprefix("serving on ")
            err.print(f"  console:   {url}/ui/", soft_wrap=True)
            err.print(f"  API docs:  {url}/docs", soft_wrap=True)
            if demo and settings.bootstrap_token is not None:
                token = settings.bootstrap_token.get_secret_value()
                err.print(f"  admin token: {token}", soft_wrap=True)
                sign_in = f"{url}/ui/ with the token, or: modelport login {url} --token {token}"
                err.print(f"  sign in:   {sign_in}", soft_wrap=True)
                err.print(
                    f"  call:      curl -H 'Authorization: Bearer {token}' "
                    "-H 'Content-Type: application/json' "
                    """-d '{"inputs": {"text": "My laptop battery drains since the update."}}' """
                    f"{url}/api/v1/modules/text-classifier/predict",
                    soft_wrap=True,
                )
                err.print(f"  receipts:  {url}/apps/receipt-webapp/ (sign in with the token)", soft_wrap=True)
            err.print("  press Ctrl+C to stop")

    try:
        run_platform_server(settings, demo=demo, announce=announce)
    except (CannotListen, DatabaseUnavailable) as exc:
        _refuse(exc.message)


def _given(**options: Any) -> dict[str, Any]:
    """The options given on the command line; the others come from `MODELPORT_*` or their defaults."""
    return {name: value for name, value in options.items() if value is not None}


def _settings(options: dict[str, str], **values: Any) -> Settings:
    """The settings of `values` and the `MODELPORT_*` environment, checked against this machine; exit 2 with
    one line per setting that can never work. `options` names the command-line option of each field that
    `values` may hold."""
    try:
        settings = Settings(**values)
        settings.check()
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            field = str(error["loc"][0]) if error["loc"] else ""
            given = field in options and field in values
            name = f"MODELPORT_{field.upper()}" + (f" ({options[field]})" if given else "")
            # Only the message: the value may be a secret, and `Settings` messages never repeat one.
            err.print(
                f"modelport: invalid setting {name}: {error['msg']}",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
        raise typer.Exit(2) from None
    return settings


def _refuse(message: str) -> NoReturn:
    """Exit 2 with `message` as one line: what the server needs at start is not there, and saying so is all
    the operator needs, not a traceback."""
    err.print(f"modelport: {message}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def _module_dir(path: Path) -> Path:
    if not path.is_dir():
        err.print(f"[red]error[/]: {path} is not a directory")
        raise typer.Exit(2)
    return path.resolve()


def _require_entrypoint(directory: Path) -> None:
    """Exit 2 when the directory lacks the entrypoint's file, which a reload could not bring: it is not a
    module's directory. A manifest that cannot be read is left to the server, which reports it and waits."""
    try:
        entrypoint = load_module_manifest(directory).spec.entrypoint
    except ManifestError:
        return
    source = entrypoint.partition(":")[0]
    if not (directory / source).is_file():
        err.print(
            f"[red]error[/]: {escape(str(directory))} has no {escape(source)} (the entrypoint "
            f"{escape(entrypoint)}): give a module's directory, or create one with `modelport init NAME`",
            soft_wrap=True,
        )
        raise typer.Exit(2)


def _form_item(group: str, item: str) -> tuple[str, str | Path]:
    name, sep, value = item.partition("=")
    if not sep or not name:
        err.print(f"[red]error[/]: expected name=value, got {item!r}")
        raise typer.Exit(2)
    if value.startswith("@"):
        path = Path(value[1:]).expanduser()
        if not path.is_file():
            err.print(f"[red]error[/]: {path} is not a file")
            raise typer.Exit(2)
        return f"{group}.{name}", path
    return f"{group}.{name}", value


def _print(result: object, output: str) -> None:
    if output == "yaml":
        sys.stdout.write(yaml.safe_dump(result, sort_keys=False, allow_unicode=True))
    else:
        sys.stdout.write(json.dumps(result, indent=2, ensure_ascii=False) + "\n")


def main() -> None:
    app()


from modelport.cli import batch as _batch  # noqa: E402
from modelport.cli import drift as _drift  # noqa: E402
from modelport.cli import history as _history  # noqa: E402
from modelport.cli import identity as _identity  # noqa: E402 (registered after the local commands)
from modelport.cli import jobs as _jobs  # noqa: E402
from modelport.cli import pipelines as _pipelines  # noqa: E402
from modelport.cli import platform as _platform  # noqa: E402
from modelport.cli import requests as _requests  # noqa: E402
from modelport.cli import stats as _stats  # noqa: E402
from modelport.cli import storage as _storage  # noqa: E402

_platform.register(app)
_identity.register(app)
_storage.register(app)
_requests.register(app)
_stats.register(app)
_history.register(app)
_drift.register(app)
_jobs.register(app)
_batch.register(app)
_pipelines.register(app)
