"""Versions as artifacts: a module directory packed into one immutable, content-addressed `tar.gz`.

In a git work tree the artifact is the module directory exactly as committed at HEAD: the version name is a
tag of HEAD and the commit is recorded, so ignored and untracked files never enter it. Outside git the files
under the directory are packed, less caches, local weights and what `.modelportignore` names, and the version
must be named explicitly. Entries are sorted and their metadata normalised, so the same tree always gives the
same bytes and the digest names the content.
"""

from __future__ import annotations

import fnmatch
import gzip
import hashlib
import io
import os
import posixpath
import re
import shutil
import subprocess
import tarfile
import tempfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from modelport.artifacts.definition import ModuleDefinition, read_module
from modelport.core.errors import ModelportError

__all__ = [
    "ALWAYS_IGNORED",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_FILES",
    "IGNORE_FILE",
    "Artifact",
    "DirtyTree",
    "GitState",
    "PackError",
    "UntaggedHead",
    "VersionRequired",
    "check_version_name",
    "inspect_git",
    "pack",
    "semver_key",
    "unpack",
]

DEFAULT_MAX_BYTES = 512 * 1024 * 1024
DEFAULT_MAX_FILES = 10_000
IGNORE_FILE = ".modelportignore"
ALWAYS_IGNORED = (".git", ".modelport", ".venv", "__pycache__", "*.pyc")
"""Names never packed from a directory outside git, at any depth; the manifest's model path is skipped too."""

_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
_SEMVER = re.compile(r"^v?(\d+)\.(\d+)(?:\.(\d+))?(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$")
_GIT_TIMEOUT = 120.0
_GIT_LOCATION = frozenset({"GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY"})
_SHOWN_CHANGES = 10
_LINK_DEPTH = 40


class PackError(ModelportError):
    """The module directory cannot be packed into a version."""

    status, code = 400, "pack_failed"


class DirtyTree(PackError):
    """The module directory has changes that are not committed."""

    status, code = 409, "dirty_tree"


class UntaggedHead(PackError):
    """No tag points at HEAD, so the commit has no version name."""

    status, code = 409, "untagged_head"


class VersionRequired(PackError):
    """Outside git, the version must be named explicitly."""

    code = "version_required"


@dataclass(frozen=True)
class GitState:
    """Where a directory stands in its git repository.

    `path` is the directory relative to `root` (POSIX, `"."` at the root). `tags` are the tags pointing at
    HEAD: semver-looking ones first, highest first, then the others by name. `changes` are the uncommitted
    paths under the directory (relative to `root`): tracked changes, staged or not, and untracked files that
    are not ignored.
    """

    root: Path
    path: str
    commit: str
    tags: tuple[str, ...]
    changes: tuple[str, ...]

    @property
    def dirty(self) -> bool:
        return bool(self.changes)


@dataclass(frozen=True)
class Artifact:
    """One packed version: the bytes of a deterministic `tar.gz` and what they were made from.

    `data` is held in memory: a module is code, a manifest and small assets (weights live in the model store),
    the size is capped, and bytes keep the artifact immutable with no temporary file to clean up.
    `commit`, `tag` and `repo_path` (the module's directory inside its repository) are None outside git.
    """

    name: str
    version: str
    digest: str
    data: bytes = field(repr=False)
    files: tuple[str, ...]
    commit: str | None
    tag: str | None
    repo_path: str | None

    @property
    def size(self) -> int:
        """Bytes of the `tar.gz`."""
        return len(self.data)


@dataclass(frozen=True)
class _File:
    path: str
    data: bytes
    executable: bool


@dataclass(frozen=True)
class _Limits:
    max_files: int
    max_bytes: int

    def check(self, count: int, total: int) -> None:
        if count > self.max_files:
            raise PackError(f"the module has more than {self.max_files} files")
        if total > self.max_bytes:
            raise PackError(f"the module's files add up to more than {self.max_bytes} bytes")


def pack(
    directory: Path,
    *,
    version: str | None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_files: int = DEFAULT_MAX_FILES,
    use_git: bool = True,
) -> Artifact:
    """Pack a module directory into an artifact.

    The module is read first (`ManifestError` or `SourceError` if it is broken). In git the tree under the
    directory must be clean (`DirtyTree`) and HEAD tagged (`UntaggedHead`); `version` must then be one of
    HEAD's tags, and without it the highest semver tag is used (a single tag is used whatever its form).
    Outside git, or with `use_git=False` (the working tree as it is), `version` is required
    (`VersionRequired`). Links leaving the directory, special files and more than `max_files` files or
    `max_bytes` bytes are refused (`PackError`).
    """
    if not directory.is_dir():
        raise PackError(f"{directory} is not a directory")
    if version is not None:
        check_version_name(version)
    definition = read_module(directory)
    limits = _Limits(max_files, max_bytes)
    state = inspect_git(definition.directory) if use_git else None
    if state is None:
        if version is None:
            raise VersionRequired(f"{definition.directory} is not in a git repository; name the version")
        files = _working_files(definition, limits)
    else:
        if state.dirty:
            raise DirtyTree(_dirty_message(state))
        version = _choose_tag(state, version)
        files = _committed_files(state, limits)
    _check_required(definition, files)
    data = _archive(files)
    return Artifact(
        name=definition.name,
        version=version,
        digest=f"sha256:{hashlib.sha256(data).hexdigest()}",
        data=data,
        files=tuple(sorted(f.path for f in files)),
        commit=state.commit if state else None,
        tag=version if state else None,
        repo_path=state.path if state else None,
    )


def check_version_name(version: str) -> str:
    if not _VERSION.fullmatch(version):
        raise PackError(
            f"{version!r} is not a valid version name: letters, digits and `._+-`, "
            "starting with a letter or digit, at most 64 characters"
        )
    return version


# Git


def inspect_git(directory: Path) -> GitState | None:
    """The git state of `directory`, or None when it is not inside a git work tree."""
    directory = directory.resolve()
    root = _toplevel(directory)
    if root is None:
        return None
    path = directory.relative_to(root).as_posix()
    head = _run_git(root, ["rev-parse", "--verify", "--quiet", "HEAD^{commit}"], stdin=None)
    if head.returncode != 0:
        raise PackError(f"the repository at {root} has no commit yet; commit the module first")
    tags = _git(root, "tag", "--points-at", "HEAD").decode().split()
    status = _git(root, "status", "--porcelain=v1", "-z", "--untracked-files=all", *_pathspec(path))
    return GitState(root, path, head.stdout.decode().strip(), _tag_order(tags), _status_paths(status))


def _toplevel(directory: Path) -> Path | None:
    if shutil.which("git") is None:
        if any((parent / ".git").exists() for parent in (directory, *directory.parents)):
            raise PackError(f"{directory} is in a git repository, but the `git` command is not installed")
        return None
    done = _run_git(directory, ["rev-parse", "--show-toplevel"], stdin=None)
    if done.returncode != 0 and b"not a git repository" in done.stderr:
        return None
    if done.returncode != 0:
        raise PackError(f"git cannot read {directory}: {os.fsdecode(done.stderr).strip()}")
    return Path(os.fsdecode(done.stdout).strip()).resolve()


def _run_git(cwd: Path, args: Sequence[str], *, stdin: bytes | None) -> subprocess.CompletedProcess[bytes]:
    """Run git with a plain locale, no prompts and no inherited repository location."""
    env = {k: v for k, v in os.environ.items() if k not in _GIT_LOCATION}
    env.update(LC_ALL="C", GIT_TERMINAL_PROMPT="0")
    try:
        return subprocess.run(
            ["git", "--literal-pathspecs", *args],
            cwd=cwd,
            input=stdin,
            capture_output=True,
            env=env,
            timeout=_GIT_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise PackError(f"`git {args[0]}` took longer than {_GIT_TIMEOUT:.0f} s") from None
    except OSError as exc:
        raise PackError(f"cannot run git: {exc}") from None


def _git(cwd: Path, *args: str, stdin: bytes | None = None) -> bytes:
    done = _run_git(cwd, args, stdin=stdin)
    if done.returncode != 0:
        raise PackError(f"`git {args[0]}` failed: {os.fsdecode(done.stderr).strip()}")
    return done.stdout


def _pathspec(path: str) -> list[str]:
    return [] if path == "." else ["--", path]


def _status_paths(output: bytes) -> tuple[str, ...]:
    """Paths of `git status --porcelain -z`; a rename's or copy's second token (its source) is skipped."""
    paths: list[str] = []
    tokens = iter(os.fsdecode(output).split("\0"))
    for token in tokens:
        if token:
            paths.append(token[3:])
            if {"R", "C"} & set(token[:2]):
                next(tokens, None)
    return tuple(paths)


def semver_key(tag: str) -> tuple[int, int, int, int, tuple[tuple[int, int | str], ...]] | None:
    """A sort key following semver precedence (`v` prefix and a missing patch allowed); None if not semver."""
    match = _SEMVER.match(tag)
    if match is None:
        return None
    major, minor, patch, pre = match.groups()
    if pre is None:
        return int(major), int(minor), int(patch or 0), 1, ()
    ids = tuple((0, int(p)) if p.isdigit() else (1, p) for p in pre.split("."))
    return int(major), int(minor), int(patch or 0), 0, ids


def _tag_order(tags: list[str]) -> tuple[str, ...]:
    semver = sorted((t for t in tags if semver_key(t)), key=lambda t: (semver_key(t), t), reverse=True)
    return (*semver, *sorted(t for t in tags if not semver_key(t)))


def _choose_tag(state: GitState, version: str | None) -> str:
    head = f"HEAD ({state.commit[:12]})"
    if not state.tags:
        raise UntaggedHead(f"{head} has no tag; its tag names the version: `git tag {version or 'v1.0.0'}`")
    if version is not None:
        if version not in state.tags:
            raise PackError(f"{version!r} is not a tag of {head}; its tags: {', '.join(state.tags)}")
        return version
    names = [t for t in state.tags if _VERSION.fullmatch(t)]
    if not names:
        raise PackError(f"no tag of {head} is a valid version name: {', '.join(state.tags)}")
    if len(names) > 1 and semver_key(names[0]) is None:
        raise PackError(f"{head} has several tags, none a semantic version; choose one: {', '.join(names)}")
    return names[0]


def _dirty_message(state: GitState) -> str:
    shown = [f"  {p}" for p in state.changes[:_SHOWN_CHANGES]]
    if len(state.changes) > _SHOWN_CHANGES:
        shown.append(f"  … and {len(state.changes) - _SHOWN_CHANGES} more")
    where = "the repository" if state.path == "." else state.path
    return f"{where} has uncommitted changes; commit or stash them first:\n" + "\n".join(shown)


def _committed_files(state: GitState, limits: _Limits) -> list[_File]:
    """The module directory as committed at HEAD, read from git's objects."""
    listing = _git(state.root, "ls-tree", "-r", "-z", "-l", "--full-tree", "HEAD", *_pathspec(state.path))
    prefix = "" if state.path == "." else state.path + "/"
    tree: dict[str, tuple[str, str]] = {}
    total = 0
    for token in filter(None, os.fsdecode(listing).split("\0")):
        meta, _, full = token.partition("\t")
        mode, _, oid, size = meta.split()
        if not full.startswith(prefix):
            continue
        if mode == "160000":
            raise PackError(f"{full} is a git submodule; submodules cannot be packed")
        tree[full[len(prefix) :]] = (mode, oid)
        total += int(size)
        limits.check(len(tree), total)
    blobs = _read_blobs(state.root, sorted({oid for _, oid in tree.values()}))
    files = []
    for path in tree:
        real_mode, oid = tree[_follow_link(path, tree, blobs)]
        files.append(_File(path, blobs[oid], real_mode == "100755"))
    limits.check(len(files), sum(len(f.data) for f in files))
    return files


def _read_blobs(root: Path, oids: list[str]) -> dict[str, bytes]:
    """Contents of `oids`, read by one `git cat-file --batch`."""
    output = _git(root, "cat-file", "--batch", stdin="".join(f"{oid}\n" for oid in oids).encode())
    blobs: dict[str, bytes] = {}
    at = 0
    for oid in oids:
        end = output.index(b"\n", at)
        header = output[at:end].split()
        if len(header) != 3:
            raise PackError(f"git cannot read object {oid}")
        start, size = end + 1, int(header[2])
        blobs[oid] = output[start : start + size]
        at = start + size + 1
    return blobs


def _follow_link(path: str, tree: dict[str, tuple[str, str]], blobs: dict[str, bytes]) -> str:
    """The committed file that `path` is or links to; links out of the module or to folders are refused."""
    current = path
    for _ in range(_LINK_DEPTH):
        mode, oid = tree[current]
        if mode != "120000":
            return current
        target = os.fsdecode(blobs[oid])
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(current), target))
        if target.startswith("/") or resolved == ".." or resolved.startswith("../"):
            raise PackError(f"{path} links outside the module directory (to {target})")
        if resolved not in tree:
            is_dir = any(p.startswith(resolved + "/") for p in tree)
            problem = "a directory" if is_dir else "nothing committed"
            raise PackError(f"{path} links to {problem} ({target}); only links to files can be packed")
        current = resolved
    raise PackError(f"{path}: too many levels of links")


# Outside git


def _working_files(definition: ModuleDefinition, limits: _Limits) -> list[_File]:
    """The files under the directory, less the ignored ones; links to files inside it are packed as copies."""
    patterns = _ignore_patterns(definition)
    files: list[_File] = []
    total = 0
    for path, source in _scan(definition.directory, definition.directory, patterns):
        info = source.stat()
        total += info.st_size
        limits.check(len(files) + 1, total)
        files.append(_File(path, source.read_bytes(), bool(info.st_mode & 0o111)))
    return files


def _ignore_patterns(definition: ModuleDefinition) -> list[str]:
    """Always-ignored names, the model path, and the lines of `.modelportignore`.

    A pattern is an `fnmatch` glob: with a `/` (a leading one is dropped) it matches the path from the
    module's root, without one it matches any file or directory name; a trailing `/` matches directories only.
    """
    patterns = list(ALWAYS_IGNORED)
    models = posixpath.normpath(definition.manifest.spec.model.path)
    if models != "." and not models.startswith(("/", "../")) and models != "..":
        patterns.append(f"/{models}/")
    ignore_file = definition.directory / IGNORE_FILE
    if ignore_file.is_file():
        for line in ignore_file.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line.startswith("!"):
                raise PackError(f"{ignore_file}: negated patterns such as {line!r} are not supported")
            if line and not line.startswith("#"):
                patterns.append(line)
    return patterns


def _ignored(path: str, is_dir: bool, patterns: list[str]) -> bool:
    for pattern in patterns:
        if pattern.endswith("/"):
            if not is_dir:
                continue
            pattern = pattern.rstrip("/")
        if "/" in pattern:
            if fnmatch.fnmatchcase(path, pattern.lstrip("/")):
                return True
        elif fnmatch.fnmatchcase(posixpath.basename(path), pattern):
            return True
    return False


def _scan(root: Path, folder: Path, patterns: list[str]) -> Iterator[tuple[str, Path]]:
    """(path in the artifact, file to read) for each regular file under `folder`, links resolved."""
    with os.scandir(folder) as found:
        entries = sorted(found, key=lambda e: e.name)
    for entry in entries:
        source = Path(entry.path)
        path = source.relative_to(root).as_posix()
        if _ignored(path, os.path.isdir(source), patterns):
            continue
        if entry.is_symlink():
            yield path, _link_target(root, source, path)
        elif entry.is_dir(follow_symlinks=False):
            yield from _scan(root, source, patterns)
        elif entry.is_file(follow_symlinks=False):
            yield path, source
        else:
            raise PackError(f"{path} is a special file (device, socket or pipe); it cannot be packed")


def _link_target(root: Path, link: Path, path: str) -> Path:
    try:
        target = link.resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: a loop of links
        raise PackError(f"{path}: cannot follow the link: {exc}") from None
    if not target.is_relative_to(root):
        raise PackError(f"{path} links outside the module directory (to {os.readlink(link)})")
    if not target.is_file():
        raise PackError(f"{path} links to {os.readlink(link)}; only links to files can be packed")
    return target


# Both


def _check_required(definition: ModuleDefinition, files: list[_File]) -> None:
    """The files the module was read from must be in the artifact, not only in the working tree."""
    spec = definition.manifest.spec
    needed = {spec.entrypoint.partition(":")[0]}
    if definition.load:
        needed.add(definition.load.partition(":")[0])
    if spec.requirements:
        needed.add(spec.requirements)
    if (definition.directory / "modelport.yaml").exists():
        needed.add("modelport.yaml")
    missing = sorted({posixpath.normpath(p) for p in needed} - {f.path for f in files})
    if missing:
        raise PackError(f"the module needs {', '.join(missing)}, but it is not committed or is ignored")


def _archive(files: list[_File]) -> bytes:
    """A `tar.gz` that depends on the files only: sorted entries, no times, owners or stray mode bits."""
    raw = io.BytesIO()
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as zipped,
        tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for item in sorted(files, key=lambda f: f.path):
            info = tarfile.TarInfo(item.path)
            info.size = len(item.data)
            info.mode = 0o755 if item.executable else 0o644
            info.mtime = info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(item.data))
    return raw.getvalue()


# Unpacking


def unpack(data: bytes | Path, target: Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
    """Extract an artifact (its bytes, or the file holding them) into `target`, which must not exist or be an
    empty directory.

    Every entry is checked before anything is written: only regular files and directories, relative paths with
    no `..`, nothing resolving outside `target`, at most `max_bytes` in all. The files land in a sibling
    directory first, renamed into place once complete, so a failure leaves nothing behind.
    """
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise PackError(f"{target} already exists and is not an empty directory")
    try:
        source = io.BytesIO(data) if isinstance(data, bytes) else data.open("rb")
        with source, tarfile.open(fileobj=source, mode="r:gz") as tar:
            members = tar.getmembers()
            _check_members(members, target.resolve(), max_bytes)
            target.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=".unpack-", dir=target.parent))
            try:
                tar.extractall(staging, members=members, filter="data")
                staging.chmod(0o755)
                staging.replace(target)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise PackError(f"not a valid artifact: {exc}") from None


def _check_members(members: list[tarfile.TarInfo], root: Path, max_bytes: int) -> None:
    seen: set[str] = set()
    total = 0
    for member in members:
        name = member.name
        parts = PurePosixPath(name).parts
        if not parts or name.startswith("/") or ".." in parts or "\\" in name:
            raise PackError(f"the artifact holds an unsafe path: {name!r}")
        if not (member.isfile() or member.isdir()):
            raise PackError(f"the artifact holds {name!r}, which is a link or a special file")
        if not (root / name).resolve().is_relative_to(root):
            raise PackError(f"the artifact's {name!r} resolves outside {root}")
        normalised = posixpath.normpath(name)
        if normalised in seen:
            raise PackError(f"the artifact holds {name!r} twice")
        seen.add(normalised)
        total += member.size
        if total > max_bytes:
            raise PackError(f"the artifact unpacks to more than {max_bytes} bytes")
