"""Packing module directories into versions: what goes in, what is refused, same tree → same bytes."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from modelport.artifacts import (
    DirtyTree,
    PackError,
    UntaggedHead,
    VersionRequired,
    inspect_git,
    pack,
    unpack,
)
from modelport.sdk.source import SourceError

ECHO = Path(__file__).parents[1] / "fixtures" / "modules" / "echo"


@pytest.fixture(autouse=True)
def _plain_git(monkeypatch: pytest.MonkeyPatch) -> None:
    """Git without the machine's configuration, with an identity for commits."""
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for role in ("AUTHOR", "COMMITTER"):
        monkeypatch.setenv(f"GIT_{role}_NAME", "Test")
        monkeypatch.setenv(f"GIT_{role}_EMAIL", "test@example.com")


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "init.defaultBranch=main", *args], cwd=cwd, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def module(directory: Path) -> Path:
    shutil.copytree(ECHO, directory, ignore=shutil.ignore_patterns("__pycache__"))
    return directory


def repo(root: Path, *, module_dir: str = ".", tags: tuple[str, ...] = ("v1.0.0",)) -> Path:
    """A repository with the echo module at `module_dir`, committed and tagged; returns the module's path."""
    root.mkdir(parents=True, exist_ok=True)
    git(root, "init", "-q")
    path = module(root / module_dir) if module_dir != "." else _copy_into(root)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "Add the module")
    for tag in tags:
        git(root, "tag", tag)
    return path


def _copy_into(root: Path) -> Path:
    shutil.copytree(ECHO, root, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]


# In git


def test_tagged_head_packs_the_module_as_committed(tmp_path: Path) -> None:
    directory = repo(tmp_path / "repo", tags=())
    (directory / ".gitignore").write_text("cache.bin\n")
    git(directory, "add", ".gitignore")
    git(directory, "commit", "-q", "-m", "Ignore the cache")
    git(directory, "tag", "v1.0.0")
    (directory / "cache.bin").write_bytes(b"ignored")

    artifact = pack(directory, version=None)

    assert (artifact.name, artifact.version, artifact.tag) == ("repo", "v1.0.0", "v1.0.0")
    assert artifact.commit == git(directory, "rev-parse", "HEAD")
    assert artifact.repo_path == "."
    assert artifact.files == (".gitignore", "inference.py")
    assert artifact.digest == f"sha256:{hashlib.sha256(artifact.data).hexdigest()}"
    assert artifact.size == len(artifact.data)
    assert members(artifact.data)["inference.py"] == (ECHO / "inference.py").read_bytes()


def test_module_in_a_subdirectory_packs_only_its_own_files(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    (root / "README.md").write_text("other things\n")
    directory = repo(root, module_dir="modules/echo")
    (root / "notes.txt").write_text("untracked, but outside the module\n")

    state = inspect_git(directory)
    artifact = pack(directory, version=None)

    assert state is not None
    assert (state.root, state.path, state.dirty) == (root.resolve(), "modules/echo", False)
    assert artifact.repo_path == "modules/echo"
    assert artifact.files == ("inference.py",)


def test_outside_a_repository_there_is_no_git_state(tmp_path: Path) -> None:
    assert inspect_git(module(tmp_path / "echo")) is None


def test_a_modified_tracked_file_is_refused(tmp_path: Path) -> None:
    directory = repo(tmp_path / "repo")
    with (directory / "inference.py").open("a") as file:
        file.write("# edited\n")

    with pytest.raises(DirtyTree) as caught:
        pack(directory, version=None)

    assert (caught.value.status, caught.value.code) == (409, "dirty_tree")
    assert "inference.py" in caught.value.message
    assert "commit or stash" in caught.value.message


def test_an_untracked_file_is_refused(tmp_path: Path) -> None:
    directory = repo(tmp_path / "repo", module_dir="echo")
    (directory / "helpers.py").write_text("x = 1\n")

    with pytest.raises(DirtyTree, match=r"echo/helpers\.py"):
        pack(directory, version=None)


def test_a_staged_rename_counts_once_under_its_new_name(tmp_path: Path) -> None:
    directory = repo(tmp_path / "repo", tags=())
    (directory / "a.txt").write_text("a\n")
    git(directory, "add", "a.txt")
    git(directory, "commit", "-q", "-m", "Add a file")
    git(directory, "mv", "a.txt", "b.txt")

    state = inspect_git(directory)

    assert state is not None
    assert state.changes == ("b.txt",)


def test_the_dirty_message_lists_ten_paths(tmp_path: Path) -> None:
    directory = repo(tmp_path / "repo")
    for number in range(12):
        (directory / f"new{number:02}.py").write_text("")

    with pytest.raises(DirtyTree) as caught:
        pack(directory, version=None)

    assert "new09.py" in caught.value.message
    assert "new10.py" not in caught.value.message
    assert "and 2 more" in caught.value.message


def test_an_untagged_head_is_refused(tmp_path: Path) -> None:
    directory = repo(tmp_path / "repo")
    with (directory / "inference.py").open("a") as file:
        file.write("# next\n")
    git(directory, "commit", "-q", "-am", "Change after the tag")

    with pytest.raises(UntaggedHead) as caught:
        pack(directory, version=None)
    with pytest.raises(UntaggedHead, match="git tag v2"):
        pack(directory, version="v2")

    assert (caught.value.status, caught.value.code) == (409, "untagged_head")


def test_an_explicit_version_must_be_a_tag_of_head(tmp_path: Path) -> None:
    directory = repo(tmp_path / "repo", tags=("v1.0.0", "stable"))

    with pytest.raises(PackError, match="not a tag of HEAD") as caught:
        pack(directory, version="v2.0.0")

    assert (caught.value.status, caught.value.code) == (400, "pack_failed")
    assert pack(directory, version="stable").version == "stable"


def test_the_highest_semver_tag_names_the_version(tmp_path: Path) -> None:
    directory = repo(tmp_path / "repo", tags=("v1.2.0", "latest", "v1.10.0-rc.1", "v1.10.0", "v1.9"))

    state = inspect_git(directory)

    assert state is not None
    assert state.tags == ("v1.10.0", "v1.10.0-rc.1", "v1.9", "v1.2.0", "latest")
    assert pack(directory, version=None).version == "v1.10.0"


def test_several_tags_that_are_not_versions_need_a_choice(tmp_path: Path) -> None:
    directory = repo(tmp_path / "repo", tags=("stable", "prod"))

    with pytest.raises(PackError, match="choose one"):
        pack(directory, version=None)


def test_a_file_the_module_needs_must_be_committed(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    (root / ".gitignore").write_text("inference.py\n")
    directory = repo(root)

    with pytest.raises(PackError, match=r"needs inference\.py"):
        pack(directory, version=None)


def test_a_committed_link_out_of_the_module_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    (root / "secret.txt").write_text("secret\n")
    directory = module(root / "echo")
    (directory / "secret.txt").symlink_to("../secret.txt")
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "Link out")
    git(root, "tag", "v1")

    with pytest.raises(PackError, match="links outside the module directory"):
        pack(directory, version=None)


def test_a_committed_link_inside_the_module_is_packed_as_a_copy(tmp_path: Path) -> None:
    directory = repo(tmp_path / "repo", tags=())
    (directory / "alias.py").symlink_to("inference.py")
    git(directory, "add", "-A")
    git(directory, "commit", "-q", "-m", "Link in")
    git(directory, "tag", "v1")

    files = members(pack(directory, version=None).data)

    assert files["alias.py"] == files["inference.py"]


# Outside git


def test_outside_git_the_version_is_required(tmp_path: Path) -> None:
    directory = module(tmp_path / "echo")

    with pytest.raises(VersionRequired) as caught:
        pack(directory, version=None)
    artifact = pack(directory, version="1.0")

    assert (caught.value.status, caught.value.code) == (400, "version_required")
    assert (artifact.version, artifact.commit, artifact.tag, artifact.repo_path) == ("1.0", None, None, None)


@pytest.mark.parametrize("version", ["../x", "-x", "a b", "v1\n", "x" * 65, ""])
def test_a_bad_version_name_is_refused(tmp_path: Path, version: str) -> None:
    with pytest.raises(PackError, match="not a valid version name"):
        pack(module(tmp_path / "echo"), version=version)


def test_caches_weights_and_ignored_files_stay_out(tmp_path: Path) -> None:
    directory = module(tmp_path / "echo")
    for path in [
        "__pycache__/inference.cpython-311.pyc",
        "lib/helper.pyc",
        "lib/helper.py",
        ".venv/bin/python",
        ".modelport/state.json",
        ".git/HEAD",
        "models/default/weights.bin",
        "lib/models/kept.py",
        "data/big.csv",
        "debug.log",
        "lib/trace.log",
        "notes/draft.md",
    ]:
        (directory / path).parent.mkdir(parents=True, exist_ok=True)
        (directory / path).write_text("x\n")
    (directory / ".modelportignore").write_text("# local things\n\n*.log\ndata/\n/notes/*.md\n")

    artifact = pack(directory, version="1")

    assert artifact.files == (".modelportignore", "inference.py", "lib/helper.py", "lib/models/kept.py")


def test_a_link_out_of_the_module_is_refused(tmp_path: Path) -> None:
    directory = module(tmp_path / "echo")
    (tmp_path / "secret.txt").write_text("secret\n")
    (directory / "secret.txt").symlink_to(tmp_path / "secret.txt")

    with pytest.raises(PackError, match="links outside the module directory"):
        pack(directory, version="1")


def test_a_link_inside_the_module_is_packed_as_a_copy(tmp_path: Path) -> None:
    directory = module(tmp_path / "echo")
    (directory / "alias.py").symlink_to("inference.py")

    files = members(pack(directory, version="1").data)

    assert files["alias.py"] == files["inference.py"]


def test_a_loop_of_links_is_refused(tmp_path: Path) -> None:
    directory = module(tmp_path / "echo")
    (directory / "a").symlink_to("b")
    (directory / "b").symlink_to("a")

    with pytest.raises(PackError, match="link"):
        pack(directory, version="1")


def test_a_special_file_is_refused(tmp_path: Path) -> None:
    directory = module(tmp_path / "echo")
    os.mkfifo(directory / "pipe")

    with pytest.raises(PackError, match="special file"):
        pack(directory, version="1")


def test_file_count_and_size_are_capped(tmp_path: Path) -> None:
    directory = module(tmp_path / "echo")
    (directory / "extra.py").write_text("x = 1\n")

    with pytest.raises(PackError, match="more than 1 files"):
        pack(directory, version="1", max_files=1)
    with pytest.raises(PackError, match="more than 100 bytes"):
        pack(directory, version="1", max_bytes=100)


def test_a_broken_docstring_stops_packing(tmp_path: Path) -> None:
    directory = module(tmp_path / "echo")
    source = directory / "inference.py"
    source.write_text(source.read_text().replace(":type inputs.text: str", ":type inputs.text: strange"))

    with pytest.raises(SourceError, match=r"inference\.py:\d+"):
        pack(directory, version=None)


# The same tree, the same bytes


def test_the_same_commit_gives_the_same_bytes_in_any_clone(tmp_path: Path) -> None:
    directory = repo(tmp_path / "repo")
    git(tmp_path, "clone", "-q", str(directory), "clone")
    clone = tmp_path / "clone"
    for path in clone.iterdir():
        os.utime(path, (1_000_000, 1_000_000))

    first, again, cloned = (pack(d, version=None) for d in (directory, directory, clone))

    assert first.data == again.data == cloned.data
    assert first.digest == cloned.digest


def test_the_same_files_give_the_same_bytes_with_or_without_git(tmp_path: Path) -> None:
    committed = pack(repo(tmp_path / "repo"), version=None)
    plain = module(tmp_path / "plain")
    os.utime(plain / "inference.py", (2_000_000, 2_000_000))

    assert pack(plain, version="v1.0.0").digest == committed.digest


def test_different_content_gives_a_different_digest(tmp_path: Path) -> None:
    directory = module(tmp_path / "echo")
    before = pack(directory, version="1")
    (directory / "extra.txt").write_text("more\n")

    assert pack(directory, version="1").digest != before.digest


def test_the_archive_carries_no_times_owners_or_stray_modes(tmp_path: Path) -> None:
    directory = module(tmp_path / "echo")
    (directory / "run.sh").write_text("#!/bin/sh\n")
    (directory / "run.sh").chmod(0o775)
    (directory / "inference.py").chmod(0o600)

    data = pack(directory, version="1").data

    assert data[4:8] == b"\0\0\0\0"  # the gzip header's mtime
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        infos = tar.getmembers()
    assert [i.name for i in infos] == ["inference.py", "run.sh"]
    assert [i.mode for i in infos] == [0o644, 0o755]
    assert {(i.mtime, i.uid, i.gid, i.uname, i.gname) for i in infos} == {(0, 0, 0, "", "")}


# Unpacking


def test_unpack_round_trips_files_and_modes(tmp_path: Path) -> None:
    directory = module(tmp_path / "echo")
    (directory / "bin").mkdir()
    (directory / "bin" / "run.sh").write_text("#!/bin/sh\n")
    (directory / "bin" / "run.sh").chmod(0o755)
    target = tmp_path / "out" / "v1"

    unpack(pack(directory, version="1").data, target)

    assert (target / "inference.py").read_bytes() == (directory / "inference.py").read_bytes()
    assert stat.S_IMODE((target / "bin" / "run.sh").stat().st_mode) == 0o755
    assert stat.S_IMODE((target / "inference.py").stat().st_mode) == 0o644
    assert sorted(p.name for p in target.parent.iterdir()) == ["v1"]


def test_unpack_fills_an_empty_directory_but_not_a_full_one(tmp_path: Path) -> None:
    data = pack(module(tmp_path / "echo"), version="1").data
    target = tmp_path / "out"
    target.mkdir()

    unpack(data, target)
    with pytest.raises(PackError, match="not an empty directory"):
        unpack(data, target)


def crafted(*infos: tarfile.TarInfo) -> bytes:
    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=raw, mode="wb") as zipped, tarfile.open(fileobj=zipped, mode="w") as tar:
        tar.addfile(_regular("ok.txt"), io.BytesIO(b"ok"))
        for info in infos:
            tar.addfile(info, io.BytesIO(b"ok") if info.isfile() else None)
    return raw.getvalue()


def _regular(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = 2
    return info


def _link(name: str, target: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def _device(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.CHRTYPE
    return info


@pytest.mark.parametrize(
    "info",
    [
        _regular("../x"),
        _regular("sub/../../x"),
        _regular("/tmp/x"),
        _link("link", "/etc/passwd", tarfile.SYMTYPE),
        _link("inner", "ok.txt", tarfile.SYMTYPE),
        _link("hard", "ok.txt", tarfile.LNKTYPE),
        _device("null"),
        _regular("ok.txt"),
    ],
    ids=["dotdot", "nested-dotdot", "absolute", "symlink-out", "symlink-in", "hardlink", "device", "twice"],
)
def test_unpack_refuses_unsafe_entries(tmp_path: Path, info: tarfile.TarInfo) -> None:
    parent = tmp_path / "out"
    parent.mkdir()

    with pytest.raises(PackError):
        unpack(crafted(info), parent / "v1")

    assert list(parent.iterdir()) == []
    assert not (tmp_path / "x").exists()


def test_unpack_refuses_bytes_that_are_not_an_artifact(tmp_path: Path) -> None:
    with pytest.raises(PackError, match="not a valid artifact"):
        unpack(b"not a tarball", tmp_path / "out")
