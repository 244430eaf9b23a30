"""`modelport storage ...` and `modelport get buckets`: first what they refuse before any request and how they
treat a scripted server's hostile or corrupt answers, then whole round trips against one real
`modelport server` with a `models` bucket (files and trees up and back, odd names, listings, rm, presign,
and the errors a user sees)."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from platform_server import ServerProcess
from rich.progress import Progress
from typer.testing import CliRunner

from modelport.cli.main import app
from modelport.cli.storage import Bars, human_size

runner = CliRunner()

Handler = Callable[[httpx.Request], httpx.Response]


def run(*args: str) -> Any:
    return runner.invoke(app, list(args), env={"COLUMNS": "200"})


def tree(root: Path) -> dict[str, bytes]:
    """Every file under `root` by its relative path, with its bytes."""
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and not path.is_symlink()
    }


def files_named(root: Path, name: str) -> list[Path]:
    return [path for path in root.rglob(name)]


def test_sizes_read_like_a_person_would() -> None:
    assert [human_size(n) for n in (0, 1023, 1024, 1536, 20 * 1024**2, 5 * 1024**4, 3 * 1024**5)] == [
        "0 B",
        "1023 B",
        "1.0 KiB",
        "1.5 KiB",
        "20.0 MiB",
        "5.0 TiB",
        "3072.0 TiB",
    ]


def test_the_total_bar_adds_up_the_files() -> None:
    with Progress(disable=True) as progress:
        bars = Bars(progress)
        bars.expect(100, 2)
        [total] = progress.tasks
        for size in (60, 40):
            with bars.file("moving", size) as moved:
                moved(size // 2, size)
                moved(size, size)
            assert len(progress.tasks) == 1
        assert (total.completed, total.total) == (100, 100)


# Refused before any request


@pytest.mark.usefixtures("server_url", "no_server")
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["cp", "mp://a/b", "mp://c/d"], "both remote"),
        (["cp", "missing-file", "mp://models/x"], "is not a file or a directory"),
        (["cp", "/nope", "mp://"], "names no bucket"),
        (["rm", "/key"], "names no bucket"),
        (["presign", "models/"], "names no object"),
        (["rm", "models/a/"], "add -r"),
        (["cp", "models/a/", "out"], "add -r"),
    ],
)
def test_usage_errors_exit_2(args: list[str], message: str) -> None:
    result = run("storage", *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert result.stdout == ""


@pytest.mark.usefixtures("server_url", "no_server")
def test_a_directory_needs_r(tmp_path: Path) -> None:
    result = run("storage", "cp", str(tmp_path), "models/x/")
    assert result.exit_code == 2
    assert "is a directory: add -r" in result.stderr


# Against a scripted server


def listing(*keys: str) -> dict[str, Any]:
    objects = [
        {"key": k, "size": 2, "etag": "e", "content_type": "x", "modified": "", "sha256": None} for k in keys
    ]
    return {"bucket": "models", "prefix": "p/", "objects": objects, "prefixes": [], "next_cursor": None}


def test_keys_leading_outside_the_target_are_refused(answer: Any, tmp_path: Path) -> None:
    target = tmp_path / "deep" / "out"
    target.mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (target / "link").symlink_to(tmp_path / "elsewhere")
    keys = ["p/ok.txt", "p/../../evil.txt", "p/link/evil.txt", "p/a//evil.txt", "p/sub/ok.txt"]

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v1/storage/models":
            return httpx.Response(200, json=listing(*keys))
        assert "evil" not in request.url.path
        return httpx.Response(200, content=b"ok", headers={"Content-Length": "2"})

    seen = answer(handler)
    result = run("storage", "cp", "-r", "models/p", str(target))
    assert result.exit_code == 1, result.output
    assert result.stderr.count("refused") == 3
    assert "3 of 5 objects not copied" in result.stderr
    assert tree(tmp_path) == {"deep/out/ok.txt": b"ok", "deep/out/sub/ok.txt": b"ok"}
    assert files_named(tmp_path, "evil.txt") == []
    assert dict(seen[0].url.params) == {"prefix": "p/", "limit": "1000"}


def test_a_corrupt_download_fails_and_leaves_nothing(answer: Any, tmp_path: Path) -> None:
    answer(
        lambda r: httpx.Response(
            200, content=b"abc", headers={"Content-Length": "3", "X-Checksum-Sha256": "0" * 64}
        )
    )
    result = run("storage", "cp", "mp://models/k.bin", str(tmp_path / "k.bin"))
    assert result.exit_code == 1
    assert "the download of models/k.bin does not match its checksum" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_cp_quiet_prints_nothing_but_errors(answer: Any, tmp_path: Path) -> None:
    (tmp_path / "weights").mkdir()
    for name in ("a.bin", "b.bin"):
        (tmp_path / "weights" / name).write_bytes(b"ab")
    stored = {"key": "k", "size": 2, "etag": "e", "content_type": "x", "modified": "", "sha256": None}
    seen = answer(lambda r: httpx.Response(201, json=stored))
    result = run("storage", "cp", "-r", "--quiet", str(tmp_path / "weights"), "models/w/")
    assert result.exit_code == 0, result.output
    assert (result.stdout, result.stderr) == ("", "")
    assert [r.url.path for r in seen] == [
        "/api/v1/storage/models/objects/w/a.bin",
        "/api/v1/storage/models/objects/w/b.bin",
    ]
    loud = run("storage", "cp", "-r", str(tmp_path / "weights"), "models/w/")
    assert loud.stdout.splitlines() == ["uploaded models/w/a.bin (2 B)", "uploaded models/w/b.bin (2 B)"]


@pytest.mark.parametrize(
    "args",
    [
        ["ls", "receipts/2026/"],
        ["cp", "mp://receipts/r1.png", "{file}.copy"],
        ["cp", "{file}", "mp://receipts/r1.png"],
    ],
)
def test_a_missing_bucket_says_how_to_make_one(answer: Any, tmp_path: Path, args: list[str]) -> None:
    (tmp_path / "r1.png").write_bytes(b"png")
    body = {"error": {"code": "bucket_not_found", "message": "no bucket named 'receipts'", "details": None}}
    answer(lambda r: httpx.Response(404, json=body))
    result = run("storage", *(arg.format(file=tmp_path / "r1.png") for arg in args))
    assert result.exit_code == 1
    [line] = result.stderr.splitlines()
    assert line == (
        "error: no bucket named 'receipts': an admin creates it, or gives your group access to it, with a "
        "Storage manifest (see the README, Object storage), such as: printf "
        "'apiVersion: modelport/v1\\nkind: Storage\\nmetadata: {name: receipts}\\n' | modelport apply -f -"
    )


def test_bucket_retention_counts_days(answer: Any) -> None:
    buckets = [
        {
            "name": n,
            "quota_bytes": None,
            "used_bytes": 0,
            "retention_days": days,
            "access": "write",
            "groups": [],
            "read_groups": [],
        }
        for n, days in (("one", 1), ("half", 0.5), ("month", 30))
    ]
    answer(lambda r: httpx.Response(200, json={"buckets": buckets}))
    result = run("get", "buckets")
    assert result.exit_code == 0, result.output
    assert [line.split("\t")[-1] for line in result.stdout.splitlines()] == [
        "RETENTION",
        "1 day",
        "0.5 days",
        "30 days",
    ]


# Against a real server


@pytest.fixture
def remote(storage_server: ServerProcess, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """Log the commands in to the server; returns a fresh prefix of bucket `models` (`models/t-.../`)."""
    monkeypatch.setenv("MODELPORT_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("MODELPORT_URL", storage_server.url)
    monkeypatch.setenv("MODELPORT_TOKEN", storage_server.token)
    return f"models/t-{uuid.uuid4().hex[:8]}/"


def weights_tree(root: Path, outside: Path) -> Path:
    """A directory with nested files, odd names, a link inside it and a link leading out of it."""
    source = root / "weights"
    (source / "a" / "b").mkdir(parents=True)
    (source / "a" / "weights.txt").write_text("weights\n")
    (source / "a" / "b" / "deep.bin").write_bytes(os.urandom(70_000))
    (source / "top.json").write_text('{"a": 1}')
    (source / "what? #1 ü.txt").write_text("odd")
    (source / "inside.json").symlink_to("top.json")
    outside.write_text("secret")
    (source / "escape.txt").symlink_to(outside)
    return source


@pytest.mark.slow
def test_ls_lists_the_buckets(remote: str) -> None:
    result = run("storage", "ls")
    assert result.exit_code == 0, result.output
    models = next(line for line in result.stdout.splitlines() if line.startswith("models\t"))
    assert models.split("\t")[:2] == ["models", "write"]
    assert "1.0 GiB" in models
    assert "30 days" in models
    as_json = run("get", "buckets", "-o", "json")
    assert as_json.exit_code == 0, as_json.output
    assert {"models", "tiny"} <= {bucket["name"] for bucket in json.loads(as_json.stdout)}
    as_yaml = yaml.safe_load(run("storage", "ls", "-o", "yaml").stdout)
    assert {"models", "tiny"} <= {bucket["name"] for bucket in as_yaml}


@pytest.mark.slow
def test_one_file_up_and_down(remote: str, tmp_path: Path) -> None:
    source = tmp_path / "in" / "model weights.bin"
    source.parent.mkdir()
    data = os.urandom(123_456)
    source.write_bytes(data)
    up = run("storage", "cp", str(source), remote)
    assert up.exit_code == 0, up.output
    assert up.stdout == f"uploaded {remote}model weights.bin (120.6 KiB)\n"
    named = run("storage", "cp", str(source), f"mp://{remote}renamed.bin")
    assert named.stdout == f"uploaded {remote}renamed.bin (120.6 KiB)\n"

    into = tmp_path / "out"
    into.mkdir()
    down = run("storage", "cp", f"mp://{remote}model weights.bin", str(into))
    assert down.exit_code == 0, down.output
    assert (
        down.stdout == f"downloaded {remote}model weights.bin (120.6 KiB) to {into / 'model weights.bin'}\n"
    )
    assert (into / "model weights.bin").read_bytes() == data
    plain = run("storage", "cp", f"{remote}renamed.bin", str(tmp_path / "new" / "copy.bin"))
    assert plain.exit_code == 0, plain.output
    assert (tmp_path / "new" / "copy.bin").read_bytes() == data
    assert list(tmp_path.rglob("*.part")) == []


@pytest.mark.slow
def test_a_tree_up_and_back(remote: str, tmp_path: Path) -> None:
    source = weights_tree(tmp_path, tmp_path / "outside.txt")
    up = run("storage", "cp", "-r", str(source), remote + "v2/")
    assert up.exit_code == 0, up.output
    keys = ["a/b/deep.bin", "a/weights.txt", "inside.json", "top.json", "what? #1 ü.txt"]
    assert [line.split(" (")[0] for line in up.stdout.splitlines()] == [
        f"uploaded {remote}v2/{key}" for key in keys
    ]
    assert "skipped" in up.stderr
    assert "escape.txt" in up.stderr

    listed = run("storage", "ls", remote + "v2")
    assert listed.exit_code == 0, listed.output
    names = [line.split()[0] for line in listed.stdout.splitlines()[1:]]
    assert names == [f"{remote}v2/a/", f"{remote}v2/inside.json", f"{remote}v2/top.json", f"{remote}v2/what?"]
    assert "directory" in listed.stdout
    everything = json.loads(run("storage", "ls", "-r", "-o", "json", remote + "v2/").stdout)
    assert everything["prefixes"] == []
    assert [info["key"] for info in everything["objects"]] == [
        remote.partition("/")[2] + "v2/" + k for k in keys
    ]

    back = tmp_path / "back"
    down = run("storage", "cp", "-r", f"mp://{remote}v2", str(back))
    assert down.exit_code == 0, down.output
    assert len(down.stdout.splitlines()) == len(keys)
    expected = tree(source)
    expected["inside.json"] = expected["top.json"]
    assert tree(back) == expected
    assert "escape.txt" not in tree(back)


@pytest.mark.slow
def test_rm_and_rm_r(remote: str, tmp_path: Path) -> None:
    source = weights_tree(tmp_path, tmp_path / "outside.txt")
    assert run("storage", "cp", "-r", str(source), remote).exit_code == 0
    one = run("storage", "rm", f"{remote}top.json")
    assert one.exit_code == 0, one.output
    assert one.stdout == f"deleted {remote}top.json\n"
    again = run("storage", "rm", f"{remote}top.json")
    assert again.exit_code == 1
    assert "top.json" in again.stderr
    prefix = run("storage", "rm", f"{remote}a/")
    assert prefix.exit_code == 2
    assert "add -r" in prefix.stderr
    under = run("storage", "rm", "-r", f"mp://{remote}a")
    assert under.exit_code == 0, under.output
    assert under.stdout.splitlines() == [f"deleted {remote}a/b/deep.bin", f"deleted {remote}a/weights.txt"]
    rest = run("storage", "rm", "-r", remote)
    assert rest.stdout.splitlines() == [f"deleted {remote}inside.json", f"deleted {remote}what? #1 ü.txt"]
    empty = run("storage", "ls", "-r", remote)
    assert empty.exit_code == 0
    assert empty.stdout == ""
    assert "nothing under" in empty.stderr
    nothing = run("storage", "rm", "-r", remote)
    assert nothing.exit_code == 1
    assert "no objects under" in nothing.stderr


@pytest.mark.slow
def test_presign_prints_a_url_that_needs_no_token(remote: str, tmp_path: Path) -> None:
    source = tmp_path / "f.txt"
    source.write_bytes(b"presigned bytes")
    assert run("storage", "cp", str(source), remote).exit_code == 0
    got = run("storage", "presign", f"{remote}f.txt", "--expires", "60")
    assert got.exit_code == 0, got.output
    assert "GET URL" in got.stderr
    unsized = run("storage", "presign", f"{remote}g.txt", "--put")
    assert unsized.exit_code == 2 and "--size" in unsized.stderr
    put = run("storage", "presign", f"{remote}g.txt", "--put", "--size", str(len(b"put bytes")))
    assert put.exit_code == 0, put.output
    assert "of 9 bytes" in put.stderr
    with httpx.Client(timeout=30) as anonymous:
        assert anonymous.get(got.stdout.strip()).content == b"presigned bytes"
        assert anonymous.put(put.stdout.strip(), content=b"put bytes").status_code == 201
    down = run("storage", "cp", f"{remote}g.txt", str(tmp_path / "g.txt"))
    assert down.exit_code == 0, down.output
    assert (tmp_path / "g.txt").read_bytes() == b"put bytes"


@pytest.mark.slow
def test_missing_objects_and_buckets_are_named(remote: str, tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    missing = run("storage", "cp", f"{remote}missing.bin", str(target))
    assert missing.exit_code == 1
    assert "missing.bin" in missing.stderr
    assert "object_not_found" in missing.stderr
    no_bucket = run("storage", "cp", "mp://no-such-bucket/k", str(target))
    assert no_bucket.exit_code == 1
    assert "no-such-bucket" in no_bucket.stderr
    listed = run("storage", "ls", "no-such-bucket")
    assert listed.exit_code == 1
    assert "no-such-bucket" in listed.stderr
    nothing = run("storage", "cp", "-r", f"{remote}nothing/", str(tmp_path / "dir"))
    assert nothing.exit_code == 1
    assert "no objects under" in nothing.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_full_bucket_is_reported(remote: str, tmp_path: Path) -> None:
    source = tmp_path / "big.bin"
    source.write_bytes(b"x" * 1000)
    result = run("storage", "cp", str(source), "tiny/")
    assert result.exit_code == 1
    assert "quota_exceeded" in result.stderr
