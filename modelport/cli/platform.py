"""The platform commands: log in, push and deploy versions, roll back, list, read logs, apply manifests.

They talk to the server only through `modelport.client`; `push` packs the module here first. Each takes
`--url` and `--token`, which override `MODELPORT_URL` / `MODELPORT_TOKEN`, which override the saved login.
Results go to stdout, progress and errors to stderr.

Exit codes: 0 success; 1 the operation failed (the server refused it or could not be reached, a build or a
rollout failed or did not finish in time); 2 bad usage or input (not logged in, a module that cannot be
packed, manifests that cannot be read, a request the server rejected as invalid with 400 or 422). `diff`
follows `diff`: 0 nothing would change, 1 something would, 2 any error.
"""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TextIO

import typer
import yaml
from pydantic_core import to_jsonable_python
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn
from rich.table import Table
from rich.text import Text

from modelport.client import (
    ApiError,
    ApplyResult,
    Client,
    ClientError,
    ConfigError,
    DeploymentInfo,
    LogGap,
    Login,
    LogLine,
    ModuleInfo,
    NotLoggedIn,
    Pushed,
    VersionInfo,
    resolve_login,
    save_login,
)
from modelport.core.manifests import ManifestError, load_documents

if TYPE_CHECKING:
    from modelport.artifacts import Artifact

__all__ = ["DocumentError", "plural", "print_table", "read_documents", "register"]

err = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)

_INVALID = (400, 422)
_CLI_TOKEN_DAYS = 90  # how long the API token that `login` makes from a password lasts
_YAML_SUFFIXES = (".yaml", ".yml")
_ONE_LINE = str.maketrans("\t\r\n", "   ")


class Output(StrEnum):
    table = "table"
    json = "json"
    yaml = "yaml"


Url = Annotated[
    str | None,
    typer.Option(
        "--url", help="The server (default: MODELPORT_URL, else the saved login).", show_default=False
    ),
]
Token = Annotated[
    str | None,
    typer.Option(
        "--token", help="The API token (default: MODELPORT_TOKEN, else the saved one).", show_default=False
    ),
]
OutputOption = Annotated[Output, typer.Option("--output", "-o", help="table, json or yaml.")]
Wait = Annotated[bool, typer.Option("--wait/--no-wait", help="Wait until it is done.")]
RolloutTimeout = Annotated[float, typer.Option(min=0, help="Seconds to wait for the rollout.")]
Files = Annotated[
    list[str],
    typer.Option(
        "--filename",
        "-f",
        help="A YAML file, a directory of them, or - for stdin; may be repeated.",
        show_default=False,
    ),
]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Only say what would change.")]


def register(app: typer.Typer) -> None:
    """Add the platform commands to the `modelport` command line."""
    for command in (login, push, deploy, rollback, logs, apply, diff, delete):
        app.command()(command)
    app.add_typer(get_app, name="get")


get_app = typer.Typer(
    help="List modules, versions, buckets or calls (the request log).", no_args_is_help=True
)


# Errors


def fail(message: str, code: int) -> NoReturn:
    err.print(f"[red]error[/]: {escape(message)}")
    raise typer.Exit(code)


@contextmanager
def _reporting(*, failed: int = 1) -> Iterator[None]:
    """Turn the client's errors into a message on stderr and the documented exit code: 2 for bad usage or
    input, `failed` when the operation failed."""
    try:
        yield
    except ApiError as exc:
        err.print(f"[red]error[/]: {escape(exc.message)} ({escape(exc.code)})")
        for detail in exc.details if isinstance(exc.details, list) else []:
            if isinstance(detail, dict) and "message" in detail:
                err.print(
                    f"  [red]{escape(str(detail.get('field', '')))}[/]: {escape(str(detail['message']))}"
                )
        raise typer.Exit(2 if exc.status in _INVALID else failed) from None
    except (NotLoggedIn, ConfigError) as exc:
        fail(str(exc), 2)
    except ClientError as exc:
        fail(str(exc), failed)


@contextmanager
def connect(url: str | None, token: str | None, *, failed: int = 1) -> Iterator[Client]:
    """A client for the login that `--url` and `--token`, the environment or the saved login give; its
    errors exit as `_reporting` says."""
    with _reporting(failed=failed):
        found = resolve_login(url=url, token=token)
        with Client(found.url, found.token) as client:
            yield client


# Commands


def login(
    url: Annotated[str, typer.Argument(help="The server, such as https://modelport.example.com.")],
    token: Annotated[
        str | None,
        typer.Option(help="Save this API token instead of signing in with a password.", show_default=False),
    ] = None,
    username: Annotated[
        str | None, typer.Option(help="Your user name (asked when not given).", show_default=False)
    ] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from the first line of stdin.")
    ] = False,
) -> None:
    """Sign in to a server and save the login for the next commands.

    With a user name and password it makes an API token named modelport-cli@HOST that expires in 90 days,
    and saves that; with --token it checks the token given and saves it.
    """
    with _reporting():
        server = Login(url)
    if token is not None:
        if username is not None or password_stdin:
            fail("--token does not go with --username or --password-stdin", 2)
        found = Login(server.url, token.strip())
    else:
        found = _sign_in(server.url, username, password_stdin=password_stdin)
    with _reporting():
        with Client(found.url, found.token) as client:
            try:
                caller = client.me()
            except ApiError as exc:
                if exc.status == 401:
                    fail("the server refused the token", 1)
                raise
        path = save_login(found)
    err.print(f"Logged in to {escape(found.url)} as {escape(caller.name)} ({escape(caller.role)})")
    err.print(f"saved in {escape(str(path))}")


def _sign_in(url: str, username: str | None, *, password_stdin: bool) -> Login:
    """A new long-lived API token for the user, made with the short-lived one their password buys."""
    if password_stdin and username is None:
        fail("--password-stdin needs --username", 2)
    name = username if username is not None else typer.prompt("User name", err=True)
    password = read_password() if password_stdin else typer.prompt("Password", hide_input=True, err=True)
    with _reporting():
        try:
            session = Client.exchange_password(url, name, password)
        except ApiError as exc:
            if exc.status == 401:
                fail("the server refused the user name or password", 1)
            raise
        with Client(url, session.access_token) as client:
            created = client.create_token(
                f"modelport-cli@{socket.gethostname()}", expires_in_days=_CLI_TOKEN_DAYS
            )
    return Login(url, created.token)


def read_password() -> str:
    """The first line of stdin, without its line ending; exits 2 when there is none."""
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        fail("no password on stdin", 2)
    return password


def push(
    directory: Annotated[Path, typer.Argument(help="The module directory.")] = Path("."),
    version: Annotated[
        str | None,
        typer.Option(
            help="The version name: a tag of HEAD in git (default: the highest), required outside git."
        ),
    ] = None,
    wait: Wait = False,
    timeout: Annotated[float, typer.Option(min=0, help="Seconds to wait for the build.")] = 600,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Print only errors and the version's name.")
    ] = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """Pack a module directory into a version and upload it; prints the version's name."""
    with _reporting():
        found = resolve_login(url=url, token=token)
    artifact = _pack(directory, version)
    say = _Say(quiet=quiet)
    with _reporting(), Client(found.url, found.token) as client:
        pushed = _upload(client, artifact, quiet=quiet)
        if pushed.created:
            say(f"pushed {artifact.name} {artifact.version} ({_size(artifact.size)}, {artifact.digest})")
        else:
            say(f"{artifact.name} {artifact.version} was already pushed with the same content")
        if wait:
            _await_build(client, artifact.name, artifact.version, timeout, say=say)
    print(artifact.version)


def deploy(
    module: Annotated[str, typer.Argument(help="The module.")],
    version: Annotated[str, typer.Argument(help="The version to roll out.")],
    replicas: Annotated[int | None, typer.Option(min=1, help="Worker processes to run.")] = None,
    canary: Annotated[
        int | None,
        typer.Option(
            min=0, max=100, help="Roll out as the canary taking this percent of calls (0 removes it)."
        ),
    ] = None,
    wait: Wait = False,
    timeout: RolloutTimeout = 300,
    url: Url = None,
    token: Token = None,
) -> None:
    """Roll a pushed version out, or make it the canary."""
    with connect(url, token) as client:
        deployment = client.deploy(module, version, replicas=replicas, canary=canary)
        if wait:
            deployment = _await_rollout(client, module, deployment.generation, timeout)
    print(_describe(deployment))


def rollback(
    module: Annotated[str, typer.Argument(help="The module.")],
    wait: Wait = False,
    timeout: RolloutTimeout = 300,
    url: Url = None,
    token: Token = None,
) -> None:
    """Serve the previously active version again."""
    with connect(url, token) as client:
        deployment = client.rollback(module)
        if wait:
            deployment = _await_rollout(client, module, deployment.generation, timeout)
    print(_describe(deployment))


def logs(
    module: Annotated[str, typer.Argument(help="The module.")],
    build: Annotated[
        str | None, typer.Option(help="Show the build log of this version instead.", show_default=False)
    ] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines until Ctrl+C.")
    ] = False,
    request_id: Annotated[
        str | None,
        typer.Option(
            "--request-id", help="Only lines printed for this request (its X-Request-Id).", show_default=False
        ),
    ] = None,
    version: Annotated[
        str | None, typer.Option(help="Only lines of this version.", show_default=False)
    ] = None,
    replica: Annotated[
        int | None, typer.Option(min=0, help="Only lines of this replica.", show_default=False)
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(help="Only lines written since: ISO 8601, or 30s, 10m, 2h, 1d.", show_default=False),
    ] = None,
    tail: Annotated[
        int, typer.Option(min=1, max=100_000, help="The most lines shown (before following).")
    ] = 200,
    output: OutputOption = Output.table,
    url: Url = None,
    token: Token = None,
) -> None:
    """Print a module's worker logs (`time version/replica stream line`), or the build log of a version."""
    query: dict[str, Any] = {
        "version": version,
        "replica": replica,
        "since": since,
        "tail": tail,
        "request_id": request_id,
    }
    with connect(url, token) as client:
        if build is not None:
            text = client.build_log(module, build)
            sys.stdout.write(text if not text or text.endswith("\n") else text + "\n")
        elif follow:
            _follow_logs(client, module, query, output)
        else:
            lines = client.logs(module, **query)
            if output is Output.table:
                sys.stdout.write("".join(_log_text(line) + "\n" for line in lines))
            else:
                dump(lines, output)


def _follow_logs(client: Client, module: str, query: dict[str, Any], output: Output) -> None:
    """Print each line as it comes until Ctrl+C: as text, one JSON object a line, or YAML documents. Lost
    lines are reported on stderr; a follow the server ends (it stopped) fails."""
    try:
        for item in client.follow_logs(module, **query):
            if isinstance(item, LogGap):
                err.print(f"[yellow]{item.dropped} lines lost: they came faster than they were read[/]")
                continue
            if output is Output.table:
                sys.stdout.write(_log_text(item) + "\n")
            elif output is Output.json:
                sys.stdout.write(item.model_dump_json() + "\n")
            else:
                sys.stdout.write(yaml.safe_dump(item.model_dump(), sort_keys=False, explicit_start=True))
            sys.stdout.flush()
    except KeyboardInterrupt:
        return
    fail("the server ended the log stream (it is stopping)", 1)


def _log_text(line: LogLine) -> str:
    return f"{line.time} {line.version}/{line.replica} {line.stream} {line.line}"


def apply(files: Files, dry_run: DryRun = False, url: Url = None, token: Token = None) -> None:
    """Create or update what manifest documents describe."""
    documents = _documents(files)
    with connect(url, token) as client:
        results = client.apply(documents, dry_run=dry_run)
    _print_results(results, dry_run=dry_run)


def diff(files: Files, url: Url = None, token: Token = None) -> None:
    """Show what applying manifest documents would change.

    Exits 0 when nothing would change, 1 when something would, 2 on any error (as diff and kubectl diff do).
    """
    documents = _documents(files)
    with connect(url, token, failed=2) as client:
        results = client.diff(documents)
    _print_results(results, dry_run=False, diffs=True)
    if any(result.action != "unchanged" for result in results):
        raise typer.Exit(1)


def delete(files: Files, dry_run: DryRun = False, url: Url = None, token: Token = None) -> None:
    """Delete what manifest documents name."""
    documents = _documents(files)
    with connect(url, token) as client:
        results = client.delete(documents, dry_run=dry_run)
    _print_results(results, dry_run=dry_run)


@get_app.command("modules")
def get_modules(output: OutputOption = Output.table, url: Url = None, token: Token = None) -> None:
    """List the modules and what they serve."""
    with connect(url, token) as client:
        modules = client.modules()
    if output is not Output.table:
        dump(modules, output)
        return
    columns = ("NAME", "SERVING", "CANARY", "REPLICAS", "STATUS", "ROLLOUT", "MESSAGE")
    print_table(columns, map(_module_row, modules))


@get_app.command("versions")
def get_versions(
    module: Annotated[str, typer.Argument(help="The module.")],
    output: OutputOption = Output.table,
    url: Url = None,
    token: Token = None,
) -> None:
    """List a module's versions, newest first."""
    with connect(url, token) as client:
        versions = client.versions(module)
        roles = _roles(client.module(module).deployment) if output is Output.table else {}
    if output is not Output.table:
        dump(versions, output)
        return
    columns = ("VERSION", "STATUS", "DEPLOYED", "COMMIT", "PUSHED BY", "PUSHED AT")
    print_table(columns, (_version_row(info, roles) for info in versions))


# Pushing and waiting


def _pack(directory: Path, version: str | None) -> Artifact:
    """The module packed into a version; problems with the directory exit 2 before any server is asked."""
    from modelport.artifacts import PackError, VersionRequired, pack
    from modelport.sdk.source import SourceError

    try:
        return pack(directory, version=version)
    except VersionRequired:
        fail(
            f"{directory} is not in a git repository: name the version with --version, "
            f"as in `modelport push {directory} --version v1.0.0`",
            2,
        )
    except PackError as exc:
        fail(exc.message, 2)
    except (ManifestError, SourceError) as exc:
        fail(f"{directory} is not a valid module: {exc}", 2)


class _Say:
    """Progress messages on stderr, or none with `--quiet`; errors are printed either way."""

    def __init__(self, *, quiet: bool) -> None:
        self.quiet = quiet

    def __call__(self, message: str) -> None:
        if not self.quiet:
            err.print(escape(message))

    def status(self, message: str) -> AbstractContextManager[object]:
        return nullcontext() if self.quiet else err.status(escape(message))


def _upload(client: Client, artifact: Artifact, *, quiet: bool) -> Pushed:
    """Upload the artifact, with a progress bar when stderr is a terminal and the command is not quiet."""
    columns = (TextColumn("pushing {task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    hidden = quiet or not err.is_terminal
    with Progress(*columns, console=err, transient=True, disable=hidden) as progress:
        task = progress.add_task(escape(f"{artifact.name} {artifact.version}"), total=artifact.size)
        return client.push(
            artifact.data,
            module=artifact.name,
            version=artifact.version,
            commit=artifact.commit,
            tag=artifact.tag,
            progress=lambda sent, total: progress.update(task, completed=sent, total=total),
        )


def _await_build(client: Client, module: str, version: str, timeout: float, *, say: _Say) -> None:
    with say.status(f"building {module} {version}"):
        info = client.wait_build(module, version, timeout=timeout)
    if info.build_status == "failed":
        fail(f"the build of {module} {version} failed: {info.build_error or 'no reason given'}", 1)
    say(f"built {module} {version}")


def _await_rollout(client: Client, module: str, generation: int, timeout: float) -> DeploymentInfo:
    with err.status(f"rolling out {escape(module)}"):
        deployment = client.wait_deployment(module, generation, timeout=timeout)
    rollout = deployment.rollout
    if rollout is not None and rollout.status == "failed":
        serving = f"; {deployment.version} keeps serving" if deployment.status == "ready" else ""
        fail(f"the rollout of {module} {rollout.version} failed: {rollout.message}{serving}", 1)
    if deployment.status == "failed":
        fail(f"the rollout of {module} failed: {deployment.message or 'no reason given'}", 1)
    return deployment


def _describe(deployment: DeploymentInfo) -> str:
    """One line: the version served (or being rolled out), its replicas or generation, and the canary.

    A deploy with `--canary` changes only the canary, so the line then says what the canary takes."""
    module, status, canary = deployment.module, deployment.status, deployment.canary_version
    share = f"canary {canary} at {deployment.canary_percent} % of calls" if canary else ""
    if status == "ready":
        line = f"{module}: {deployment.version} ready, {plural(deployment.replicas, 'replica')}"
    elif canary and deployment.target_version is None:
        return f"{module}: {share}, {status}, generation {deployment.generation}"
    else:
        rolling = deployment.target_version or deployment.version
        line = f"{module}: {rolling} {status}, generation {deployment.generation}"
    return f"{line}, {share}" if share else line


# Manifest documents


class DocumentError(Exception):
    """Manifest documents that cannot be read."""


def read_documents(sources: Sequence[str], *, stdin: TextIO) -> list[dict[str, Any]]:
    """The YAML documents of each source, in order: a file, every `*.yaml` / `*.yml` of a directory by name,
    or `-` for `stdin`. Empty documents are skipped; anything unreadable raises `DocumentError`."""
    documents: list[dict[str, Any]] = []
    for source in sources:
        for name, text in _texts(source, stdin):
            documents.extend(_parse(name, text))
    if not documents:
        raise DocumentError(f"no documents in {', '.join(sources)}")
    return documents


def _documents(sources: Sequence[str]) -> list[dict[str, Any]]:
    try:
        return read_documents(sources, stdin=sys.stdin)
    except DocumentError as exc:
        fail(str(exc), 2)


def _texts(source: str, stdin: TextIO) -> Iterator[tuple[str, str]]:
    if source == "-":
        yield "<stdin>", stdin.read()
        return
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in _YAML_SUFFIXES and p.is_file())
        if not files:
            raise DocumentError(f"{source} holds no .yaml or .yml files")
    elif path.exists():
        files = [path]
    else:
        raise DocumentError(f"{source}: no such file or directory")
    for file in files:
        try:
            yield str(file), file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise DocumentError(f"cannot read {file}: {exc}") from None


def _parse(name: str, text: str) -> list[dict[str, Any]]:
    try:
        return load_documents(text, source=name)
    except ManifestError as exc:
        raise DocumentError(str(exc)) from None


def _print_results(results: list[ApplyResult], *, dry_run: bool, diffs: bool = False) -> None:
    for result in results:
        done = f", {result.message}" if result.message else ""
        print(f"{result.kind}/{result.name} {result.action}{done}" + (" (dry run)" if dry_run else ""))
        if diffs and result.diff:
            sys.stdout.write(result.diff if result.diff.endswith("\n") else result.diff + "\n")


# Output


def dump(value: object, output: Output) -> None:
    """Print records (or lists of them) as the server sent them, in JSON or YAML."""
    plain = to_jsonable_python(value)
    if output is Output.yaml:
        sys.stdout.write(yaml.safe_dump(plain, sort_keys=False, allow_unicode=True))
    else:
        sys.stdout.write(json.dumps(plain, indent=2, ensure_ascii=False) + "\n")


def print_table(columns: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    """Print rows under a header line. On a terminal: columns aligned to fit its width. Anywhere else (a
    pipe, a file): one line per row with its cells whole and separated by tabs, for `grep`, `cut -f` and
    `awk -F'\\t'`; tabs and line breaks inside a cell become spaces."""
    if not sys.stdout.isatty():
        for row in (columns, *rows):
            sys.stdout.write("\t".join(cell.translate(_ONE_LINE) for cell in row) + "\n")
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))
    out.print(table)


def plural(count: float, noun: str) -> str:
    """`1 replica`, `2 replicas`, `0.5 days`: the count and the noun, plural unless the count is one."""
    number = str(count) if isinstance(count, int) else f"{count:g}"
    return f"{number} {noun}" if count == 1 else f"{number} {noun}s"


def _module_row(module: ModuleInfo) -> tuple[str, ...]:
    deployment = module.deployment
    if deployment is None:
        return module.name, "-", "-", "-", "not deployed", "-", ""
    canary = deployment.canary_version
    return (
        module.name,
        _serving(deployment),
        f"{canary} ({deployment.canary_percent}%)" if canary else "-",
        str(deployment.replicas),
        deployment.status,
        _rollout(deployment),
        deployment.message,
    )


def _serving(deployment: DeploymentInfo) -> str:
    """The version taking calls, `(not ready)` while its workers are not all up; `-` when none is."""
    for serving in deployment.serving:
        if serving.role == "active":
            return serving.version if serving.ready else f"{serving.version} (not ready)"
    return "-"


def _rollout(deployment: DeploymentInfo) -> str:
    """The version rolling out (`v2 progressing`) or the one that failed to, and why (`v2 failed: ...`)."""
    rollout = deployment.rollout
    if rollout is None:
        return "-"
    if rollout.status == "failed":
        return f"{rollout.version} failed: {rollout.message}"
    return f"{rollout.version} {rollout.status}"


def _roles(deployment: DeploymentInfo | None) -> dict[str, str]:
    if deployment is None:
        return {}
    named = (
        ("previous", deployment.previous_version),
        ("canary", deployment.canary_version),
        ("active", deployment.version),
    )
    return {version: role for role, version in named if version}


def _version_row(info: VersionInfo, roles: dict[str, str]) -> tuple[str, ...]:
    return (
        info.name,
        info.build_status,
        roles.get(info.name, ""),
        (info.commit or "-")[:12],
        info.pushed_by or "-",
        when(info.pushed_at),
    )


def when(stamp: str) -> str:
    try:
        return datetime.fromisoformat(stamp).strftime("%Y-%m-%d %H:%M:%S")
    except (TypeError, ValueError):
        return stamp


def _size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    scaled = size / 1024
    for unit in ("KiB", "MiB"):
        if scaled < 1024:
            return f"{scaled:.1f} {unit}"
        scaled /= 1024
    return f"{scaled:.1f} GiB"
