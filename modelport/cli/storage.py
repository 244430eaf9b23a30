"""The storage commands: list buckets and objects, copy files into and out of buckets, delete, presign.

A remote path is `BUCKET/KEY`, which may be written `mp://BUCKET/KEY`. `cp` decides its direction so: the
side written with `mp://` is the remote one; otherwise an existing local SRC is uploaded to the remote DST,
and anything else is a remote SRC downloaded to the local DST. The keys under a prefix are its "directory":
`cp -r ./weights models/digits/v2/` stores `weights/a/b.bin` as key `digits/v2/a/b.bin` of bucket `models`.

Like the other platform commands they take `--url` and `--token`; results (one line per object copied or
deleted, listings, URLs) go to stdout, progress bars and messages to stderr. Progress bars show only when
stderr is a terminal; `cp --quiet` prints only errors.

Exit codes: 0 success; 1 the operation failed (the server refused it or could not be reached, no such bucket
or object, a transfer cut short or corrupted, a local file that cannot be read or written, keys that would be
written outside the target directory); 2 bad usage (not logged in, a directory without `-r`, a path naming
no bucket).
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn, TransferSpeedColumn

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
    plural,
    print_table,
    when,
)
from modelport.client import ApiError, BucketInfo, Client, ObjectInfo, ObjectListing

__all__ = ["register"]

SCHEME = "mp://"

storage_app = typer.Typer(
    help="List, copy and delete objects in the platform's buckets.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    """Add `storage` and `get buckets` to the `modelport` command line."""
    app.add_typer(storage_app, name="storage")
    get_app.command("buckets")(get_buckets)


@dataclass(frozen=True)
class Remote:
    """An object, or a prefix of keys (`key` empty or ending with `/`), in a bucket."""

    bucket: str
    key: str

    def __str__(self) -> str:
        return f"{self.bucket}/{self.key}"

    @property
    def is_prefix(self) -> bool:
        return not self.key or self.key.endswith("/")

    def under(self) -> Remote:
        """The prefix of the keys "inside" this path: itself if it ends with `/`, else itself and `/`."""
        return self if self.is_prefix else Remote(self.bucket, self.key + "/")


RemotePath = Annotated[
    str, typer.Argument(metavar="BUCKET/KEY", help="A remote path, optionally mp://BUCKET/KEY.")
]
Recursive = Annotated[bool, typer.Option("--recursive", "-r", help="Every object under the prefix.")]

_BUCKET_COLUMNS = ("NAME", "ACCESS", "USED", "QUOTA", "RETENTION")
_OBJECT_COLUMNS = ("KEY", "SIZE", "MODIFIED", "TYPE")


# Listing


@storage_app.command("ls")
def ls(
    target: Annotated[
        str | None,
        typer.Argument(
            metavar="[BUCKET[/PREFIX]]", help="What to list; without it, the buckets.", show_default=False
        ),
    ] = None,
    recursive: Annotated[
        bool, typer.Option("--recursive", "-r", help="Every key under the prefix, not grouped at `/`.")
    ] = False,
    output: OutputOption = Output.table,
    url: Url = None,
    token: Token = None,
) -> None:
    """List the buckets, or the objects and "directories" under a prefix of one."""
    if target is None:
        get_buckets(output, url, token)
        return
    where = _remote(target)
    with connect(url, token) as client, _bucket_named(where.bucket):
        listing = _listing(client, where, recursive=recursive)
    if output is not Output.table:
        dump(listing, output)
        return
    if not listing.objects and not listing.prefixes:
        err.print(f"nothing under {escape(str(where))}")
        return
    rows = [(f"{where.bucket}/{prefix}", "-", "", "directory") for prefix in listing.prefixes]
    rows += [
        (f"{where.bucket}/{info.key}", human_size(info.size), when(info.modified), info.content_type)
        for info in listing.objects
    ]
    print_table(_OBJECT_COLUMNS, rows)


def get_buckets(output: OutputOption = Output.table, url: Url = None, token: Token = None) -> None:
    """List the buckets you may use, their usage and limits."""
    with connect(url, token) as client:
        buckets = client.buckets()
    if output is not Output.table:
        dump(buckets, output)
        return
    print_table(_BUCKET_COLUMNS, map(_bucket_row, buckets))


def _listing(client: Client, where: Remote, *, recursive: bool) -> ObjectListing:
    """Every page under `where`, joined. A prefix naming just one "directory" (`models/digits`) lists
    what is inside it, as `ls` of a directory does."""
    listing = _all_pages(client, where, recursive=recursive)
    if (
        not recursive
        and not where.is_prefix
        and not listing.objects
        and listing.prefixes == [where.key + "/"]
    ):
        listing = _all_pages(client, where.under(), recursive=False)
    return listing


def _all_pages(client: Client, where: Remote, *, recursive: bool) -> ObjectListing:
    objects: list[ObjectInfo] = []
    prefixes: dict[str, None] = {}
    for page in client.object_pages(where.bucket, prefix=where.key, delimiter=None if recursive else "/"):
        objects.extend(page.objects)
        prefixes.update(dict.fromkeys(page.prefixes))
    return ObjectListing(
        bucket=where.bucket, prefix=where.key, objects=objects, prefixes=list(prefixes), next_cursor=None
    )


def _bucket_row(bucket: BucketInfo) -> tuple[str, ...]:
    used, quota, days = bucket.used_bytes, bucket.quota_bytes, bucket.retention_days
    return (
        bucket.name,
        bucket.access,
        human_size(used) if used is not None else "-",
        human_size(quota) if quota is not None else "-",
        plural(days, "day") if days is not None else "-",
    )


# Copying


@storage_app.command("cp")
def cp(
    source: Annotated[
        str, typer.Argument(metavar="SRC", help="A local file or directory, or a remote BUCKET/KEY.")
    ],
    destination: Annotated[str, typer.Argument(metavar="DST", help="A remote BUCKET/KEY, or a local path.")],
    recursive: Annotated[
        bool,
        typer.Option("--recursive", "-r", help="Copy a directory tree, or every object under a prefix."),
    ] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Print only errors: no progress bars, no line per file.")
    ] = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """Upload files to a bucket, or download objects from one.

    A remote path is BUCKET/KEY (or mp://BUCKET/KEY). Without mp://, an existing local SRC is uploaded and
    anything else is downloaded. A DST ending with / is a prefix (or directory) that the file goes into.
    """
    upload = _is_upload(source, destination)
    remote = _remote(destination if upload else source)
    with _local_errors():
        plan = _upload_plan(Path(source), remote, recursive=recursive) if upload else []
    if not upload and remote.is_prefix and not recursive:
        fail(f"{remote} is a prefix, not an object: add -r to copy everything under it", 2)
    if upload and not plan:
        if not quiet:
            err.print(f"{escape(source)} holds no files; nothing was copied")
        return
    with (
        connect(url, token) as client,
        _bucket_named(remote.bucket),
        _local_errors(),
        _transfers(quiet=quiet) as bars,
    ):
        if upload:
            _upload(client, plan, bars=bars)
        else:
            into = destination.endswith(("/", os.sep)) or Path(destination).is_dir()
            _download(client, remote, Path(destination), into=into, recursive=recursive, bars=bars)


def _is_upload(source: str, destination: str) -> bool:
    if source.startswith(SCHEME) and destination.startswith(SCHEME):
        fail("SRC and DST are both remote: copying between buckets is not supported", 2)
    if source.startswith(SCHEME) or destination.startswith(SCHEME):
        return destination.startswith(SCHEME)
    return os.path.lexists(source)


def _upload_plan(source: Path, target: Remote, *, recursive: bool) -> list[tuple[Path, Remote]]:
    """Each file to upload and where it goes, found before any request."""
    if source.is_dir():
        if not recursive:
            fail(f"{source} is a directory: add -r to copy it and everything in it", 2)
        prefix = target.under().key
        return [(path, Remote(target.bucket, prefix + relative)) for path, relative in _tree(source)]
    if source.is_file():
        return [(source, Remote(target.bucket, target.key + source.name) if target.is_prefix else target)]
    fail(f"{source} is not a file or a directory", 2)


def _upload(client: Client, plan: list[tuple[Path, Remote]], *, bars: Bars) -> None:
    sizes = [path.stat().st_size for path, _ in plan]
    bars.expect(sum(sizes), len(plan))
    for (path, remote), size in zip(plan, sizes, strict=True):
        with bars.file(f"uploading {remote}", size) as progress:
            info = client.upload(remote.bucket, remote.key, path, progress=progress)
        bars.moved(f"uploaded {remote} ({human_size(info.size)})")


def _download(
    client: Client, source: Remote, target: Path, *, into: bool, recursive: bool, bars: Bars
) -> None:
    if recursive:
        objects = list(client.walk_objects(source.bucket, source.under().key))
        if objects:
            _download_tree(client, source.under(), objects, target, bars=bars)
            return
        if source.is_prefix:
            fail(f"no objects under {source}", 1)
    local = target / PurePath(source.key).name if into else target
    local.parent.mkdir(parents=True, exist_ok=True)
    with bars.file(f"downloading {source}", None) as progress:
        info = client.download(source.bucket, source.key, local, progress=progress)
    bars.moved(f"downloaded {source} ({human_size(info.size)}) to {local}")


def _download_tree(
    client: Client, source: Remote, objects: list[ObjectInfo], target: Path, *, bars: Bars
) -> None:
    target.mkdir(parents=True, exist_ok=True)
    root = target.resolve()
    plan: list[tuple[Remote, Path, int]] = []
    refused = 0
    for info in objects:
        local = _inside(root, target, info.key[len(source.key) :])
        if local is None:
            err.print(
                f"[red]refused[/]: {escape(source.bucket)}/{escape(info.key)} would be written "
                f"outside {escape(str(target))}"
            )
            refused += 1
        else:
            plan.append((Remote(source.bucket, info.key), local, info.size))
    bars.expect(sum(size for _, _, size in plan), len(plan))
    for remote, local, size in plan:
        local.parent.mkdir(parents=True, exist_ok=True)
        with bars.file(f"downloading {remote}", size) as progress:
            info = client.download(remote.bucket, remote.key, local, progress=progress)
        bars.moved(f"downloaded {remote} ({human_size(info.size)}) to {local}")
    if refused:
        fail(f"{refused} of {plural(len(objects), 'object')} not copied: their keys lead outside {target}", 1)


def _inside(root: Path, target: Path, relative: str) -> Path | None:
    """Where under `target` (which resolves to `root`) the key's `relative` part goes; None when it would
    land outside: `..` or empty segments, absolute parts, backslashes, or a symlink leading elsewhere."""
    parts = relative.split("/")
    for part in parts:
        pure = PurePath(part)
        if part in ("", ".", "..") or "\\" in part or "\0" in part or pure.is_absolute() or pure.drive:
            return None
    local = target.joinpath(*parts)
    return local if local.resolve().is_relative_to(root) else None


def _tree(root: Path) -> Iterator[tuple[Path, str]]:
    """Every file under `root` and its relative path in `/` form, in name order. Symbolic links are followed
    when they lead to somewhere inside `root`; the others, and links that loop, are skipped with a warning."""
    base = root.resolve()

    def walk(directory: Path, prefix: str, ancestors: frozenset[Path]) -> Iterator[tuple[Path, str]]:
        for entry in sorted(directory.iterdir(), key=lambda path: path.name):
            if entry.is_symlink():
                resolved = entry.resolve()
                if not resolved.is_relative_to(base):
                    _warn(f"skipped {entry}: a symbolic link to {resolved}, outside {root}")
                    continue
                if not resolved.exists():
                    _warn(f"skipped {entry}: a broken symbolic link")
                    continue
            if entry.is_dir():
                real = entry.resolve()
                if real in ancestors:
                    _warn(f"skipped {entry}: a symbolic link that loops back to {real}")
                    continue
                yield from walk(entry, f"{prefix}{entry.name}/", ancestors | {real})
            elif entry.is_file():
                yield entry, prefix + entry.name
            else:
                _warn(f"skipped {entry}: not a regular file")

    yield from walk(root, "", frozenset({base}))


@contextmanager
def _bucket_named(bucket: str) -> Iterator[None]:
    """A bucket that does not exist (or that the caller may not use) is reported with how to make one."""
    try:
        yield
    except ApiError as exc:
        if exc.code != "bucket_not_found":
            raise
        manifest = shlex.quote(f"apiVersion: modelport/v1\\nkind: Storage\\nmetadata: {{name: {bucket}}}\\n")
        fail(
            f"{exc.message}: an admin creates it, or gives your group access to it, with a Storage manifest "
            f"(see the README, Object storage), such as: printf {manifest} | modelport apply -f -",
            1,
        )


@contextmanager
def _local_errors() -> Iterator[None]:
    """A local file that cannot be read or written is a failure (exit 1), reported without a traceback."""
    try:
        yield
    except OSError as exc:
        fail(f"{exc.filename}: {exc.strerror or exc}" if exc.filename else str(exc), 1)


def _warn(message: str) -> None:
    err.print(f"[yellow]warning[/]: {escape(message)}")


# Progress


class Bars:
    """Progress bars on stderr: one per file being moved and, for several files, one for them all; and the
    line on stdout that says a file was moved, unless `quiet`."""

    def __init__(self, progress: Progress, *, quiet: bool = False) -> None:
        self._progress = progress
        self._quiet = quiet
        self._total: TaskID | None = None
        self._moved = 0

    def moved(self, line: str) -> None:
        if not self._quiet:
            print(line)

    def expect(self, size: int, count: int) -> None:
        if count > 1:
            self._total = self._progress.add_task(plural(count, "file"), total=size)

    @contextmanager
    def file(self, description: str, size: int | None) -> Iterator[Callable[[int, int], None]]:
        task = self._progress.add_task(escape(description), total=size)
        before, moved = self._moved, 0

        def update(done: int, total: int) -> None:
            nonlocal moved
            moved = done
            self._progress.update(task, completed=done, total=total)
            if self._total is not None:
                self._progress.update(self._total, completed=before + done)

        try:
            yield update
        finally:
            self._progress.remove_task(task)
            self._moved = before + moved


@contextmanager
def _transfers(*, quiet: bool) -> Iterator[Bars]:
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
    )
    hidden = quiet or not err.is_terminal
    with Progress(*columns, console=err, transient=True, disable=hidden) as progress:
        yield Bars(progress, quiet=quiet)


# Deleting and presigning


@storage_app.command("rm")
def rm(target: RemotePath, recursive: Recursive = False, url: Url = None, token: Token = None) -> None:
    """Delete an object, or with -r every object under a prefix; prints each key deleted."""
    where = _remote(target)
    if where.is_prefix and not recursive:
        fail(f"{where} is a prefix, not an object: add -r to delete everything under it", 2)
    with connect(url, token) as client, _bucket_named(where.bucket):
        keys = [where.key]
        if recursive:
            keys = [info.key for info in client.walk_objects(where.bucket, where.under().key)]
            if not keys and where.is_prefix:
                fail(f"no objects under {where}", 1)
            keys = keys or [where.key]  # `rm -r bucket/key` of a single object deletes it
        for key in keys:
            client.delete_object(where.bucket, key)
            print(f"deleted {where.bucket}/{key}")


@storage_app.command("presign")
def presign(
    target: RemotePath,
    put: Annotated[
        bool, typer.Option("--put", help="A URL to upload the object with, instead of downloading it.")
    ] = False,
    size: Annotated[
        int | None,
        typer.Option(min=0, help="With --put: the exact size in bytes of the object the URL uploads."),
    ] = None,
    expires: Annotated[int, typer.Option(min=1, help="Seconds the URL stays valid.")] = 3600,
    url: Url = None,
    token: Token = None,
) -> None:
    """Print a URL that downloads (or, with --put, uploads) one object without a token, until it expires."""
    where = _remote(target)
    if where.is_prefix:
        fail(f"{target} names no object", 2)
    if put and size is None:
        fail("an upload URL is for one size: give --size BYTES (the size of the file to upload)", 2)
    if size is not None and not put:
        fail("--size is for upload URLs (--put)", 2)
    with connect(url, token) as client, _bucket_named(where.bucket):
        signed = client.presign(
            where.bucket, where.key, method="PUT" if put else "GET", expires_in=expires, size=size
        )
    sized = "" if signed.size is None else f" of {plural(signed.size, 'byte')}"
    err.print(f"{signed.method} URL for {escape(str(where))}{sized}, valid until {when(signed.expires_at)}")
    print(signed.url)


# Paths and sizes


def _remote(text: str) -> Remote:
    bucket, _, key = text.removeprefix(SCHEME).partition("/")
    if not bucket:
        fail(f"{text!r} names no bucket: write BUCKET/KEY or mp://BUCKET/KEY", 2)
    return Remote(bucket, key)


def human_size(size: int) -> str:
    """`123 B`, `1.5 KiB`, `20.0 MiB`... in powers of 1024."""
    if size < 1024:
        return f"{size} B"
    scaled = float(size)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        scaled /= 1024
        if scaled < 1024 or unit == "TiB":
            break
    return f"{scaled:.1f} {unit}"
