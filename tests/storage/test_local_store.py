"""LocalStore on disk: writes survive being killed at any byte, damage is detected, links are never followed,
and concurrent writers neither tear an object nor leak files."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import threading
import time
from contextlib import suppress
from pathlib import Path

import pytest
from stores import BUCKET, tree

from modelport.core.errors import BucketNotFound, CorruptObject, ObjectNotFound, StorageUnavailable
from modelport.storage import CHUNK, LocalStore
from modelport.storage.local import POINTER

HOUR_AGO = time.time() - 2 * 3600


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    store = LocalStore(tmp_path / "objects")
    store.create_bucket(BUCKET)
    return store


def bucket_dir(store: LocalStore) -> Path:
    return store.root / BUCKET


def data_files(store: LocalStore) -> list[Path]:
    return sorted((bucket_dir(store) / "data").iterdir())


def tmp_files(store: LocalStore) -> list[Path]:
    return sorted((bucket_dir(store) / "tmp").iterdir())


def backdate(*directories: Path) -> None:
    for directory in directories:
        for path in directory.iterdir():
            os.utime(path, (HOUR_AGO, HOUR_AGO), follow_symlinks=False)


def test_layout_keeps_a_key_and_longer_keys_apart(store: LocalStore) -> None:
    store.put(BUCKET, "a", b"short", content_type="text/plain")
    store.put(BUCKET, "a/b", b"long", content_type="text/plain")

    keys = bucket_dir(store) / "keys"
    assert (keys / "a" / POINTER).is_file()
    assert (keys / "a" / "b" / POINTER).is_file()
    assert len(data_files(store)) == 2
    assert tmp_files(store) == []

    store.delete(BUCKET, "a/b")
    assert not (keys / "a" / "b").exists()  # emptied directories are removed
    store.delete(BUCKET, "a")
    assert list(keys.iterdir()) == []
    assert data_files(store) == []


WRITER = """
import sys, time
from pathlib import Path
from modelport.storage.local import LocalStore

root, bucket, key, fill, size = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
block = bytes([fill]) * 65536
with LocalStore(Path(root)).writer(bucket, key, content_type="application/octet-stream") as writer:
    while writer.written < size:
        writer.write(block)
        print(writer.written, flush=True)
        time.sleep(0.0005)
    print("commit", flush=True)
    writer.commit()
print("done", flush=True)
"""
SIZE = 8 * 1024 * 1024


def write_until_killed(store: LocalStore, key: str, fill: int, target: int | None) -> bool:
    """Run a writer in a child process and SIGKILL it once it reports `target` bytes written (None: once it
    starts committing). Whether it had started committing (what it printed before dying says)."""
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(store.root), BUCKET, key, str(fill), str(SIZE)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    printed = []
    try:
        for line in child.stdout:
            printed.append(line.strip())
            if printed[-1] in ("commit", "done") or (target is not None and int(printed[-1]) >= target):
                break
    finally:
        child.kill()
        child.wait(timeout=30)
        printed += child.stdout.read().split()
        child.stdout.close()
    return "commit" in printed


def test_a_killed_writer_never_leaves_a_partial_object(store: LocalStore) -> None:
    chance = random.Random(7)
    targets: list[int | None] = [chance.randrange(SIZE) for _ in range(4)] + [None]
    previous: bytes | None = None

    for run, target in enumerate(targets, start=1):
        committing = write_until_killed(store, "model.bin", fill=run, target=target)

        try:
            found: bytes | None = store.get(BUCKET, "model.bin")
        except ObjectNotFound:
            found = None
        allowed = [previous] + ([bytes([run]) * SIZE] if committing else [])
        assert found in allowed, f"run {run}: {len(found or b'')} bytes of {found[:1] if found else None!r}"
        if found is None:
            previous = b"previous object"
            store.put(BUCKET, "model.bin", previous, content_type="application/octet-stream")
        else:
            previous = found

    leftovers = tmp_files(store)
    assert leftovers  # the killed writers' partial files
    store.sweep()
    assert tmp_files(store) == leftovers  # less than an hour old: perhaps still being written
    backdate(bucket_dir(store) / "tmp", bucket_dir(store) / "data")
    store.sweep()
    assert tmp_files(store) == []
    assert len(data_files(store)) == 1  # the object's own, however old
    assert store.get(BUCKET, "model.bin") == previous


def test_sweep_removes_unreferenced_data_and_empty_directories(store: LocalStore) -> None:
    store.put(BUCKET, "kept/one", b"one", content_type="text/plain")
    orphan = bucket_dir(store) / "data" / ("0" * 32)
    orphan.write_bytes(b"left by a crash between the data rename and the pointer rename")
    (bucket_dir(store) / "keys" / "empty" / "deeper").mkdir(parents=True)
    (store.root / ".new-0123456789abcdef" / "keys").mkdir(parents=True)

    store.sweep()
    assert orphan.exists()
    backdate(bucket_dir(store) / "data", store.root)
    store.sweep()

    assert not orphan.exists()
    assert not (bucket_dir(store) / "keys" / "empty").exists()
    assert not (store.root / ".new-0123456789abcdef").exists()
    assert store.get(BUCKET, "kept/one") == b"one"


def test_sweep_keeps_data_while_a_pointer_is_unreadable(store: LocalStore) -> None:
    store.put(BUCKET, "damaged", b"x", content_type="text/plain")
    store.put(BUCKET, "fine", b"y", content_type="text/plain")
    (bucket_dir(store) / "keys" / "damaged" / POINTER).write_text("{not json")
    backdate(bucket_dir(store) / "data")

    store.sweep()

    assert len(data_files(store)) == 2
    with pytest.raises(CorruptObject):
        store.head(BUCKET, "damaged")
    assert [info.key for info in store.list(BUCKET).objects] == ["fine"]


@pytest.mark.parametrize(
    "damage",
    [
        lambda path: path.write_bytes(flipped(path.read_bytes(), CHUNK + 5)),
        lambda path: path.write_bytes(path.read_bytes()[:-1]),
        lambda path: path.write_bytes(path.read_bytes() + b"\0"),
    ],
    ids=["flipped-byte", "truncated", "extended"],
)
def test_damaged_data_is_detected_on_whole_reads(store: LocalStore, damage: object) -> None:
    data = random.Random(5).randbytes(3 * CHUNK)
    store.put(BUCKET, "weights", data, content_type="application/octet-stream")
    [path] = data_files(store)

    damage(path)  # type: ignore[operator]

    with pytest.raises(CorruptObject):
        store.get(BUCKET, "weights")
    with store.reader(BUCKET, "weights") as reader:
        chunks = iter(reader)
        assert next(chunks) == data[:CHUNK]  # the error comes after the last chunk
        with pytest.raises(CorruptObject):
            list(chunks)
    with store.reader(BUCKET, "weights", start=0, stop=10) as reader:
        assert b"".join(reader) == data[:10]  # ranged reads are not checked
    assert store.head(BUCKET, "weights").size == len(data)


def flipped(data: bytes, offset: int) -> bytes:
    return data[:offset] + bytes([data[offset] ^ 0xFF]) + data[offset + 1 :]


def test_a_reader_keeps_the_object_it_opened(store: LocalStore) -> None:
    store.put(BUCKET, "k", b"first" * 1000, content_type="text/plain")

    with store.reader(BUCKET, "k") as reader:
        store.put(BUCKET, "k", b"second", content_type="text/plain")
        assert b"".join(reader) == b"first" * 1000

    assert store.get(BUCKET, "k") == b"second"
    assert len(data_files(store)) == 1


def snapshot(directory: Path) -> dict[str, bytes]:
    return {path: (directory / path).read_bytes() for path in tree(directory) if (directory / path).is_file()}


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    directory = tmp_path / "outside"
    directory.mkdir()
    (directory / "secret").write_bytes(b"outside the store")
    return directory


def assert_refused(store: LocalStore, key: str) -> None:
    with pytest.raises(ObjectNotFound):
        store.head(BUCKET, key)
    with pytest.raises(ObjectNotFound):
        store.get(BUCKET, key)
    with pytest.raises(StorageUnavailable):
        store.put(BUCKET, key, b"through the link", content_type="text/plain")
    assert store.delete(BUCKET, key) is False
    assert key not in [info.key for info in store.list(BUCKET).objects]


def test_a_linked_key_directory_is_never_followed(store: LocalStore, outside: Path) -> None:
    store.put(BUCKET, "dir/obj", b"inside", content_type="text/plain")
    store.put(BUCKET, "other", b"other", content_type="text/plain")
    linked = bucket_dir(store) / "keys" / "dir"
    shutil.copytree(linked, outside / "copy")  # a valid pointer, naming a data file that exists
    shutil.rmtree(linked)
    linked.symlink_to(outside / "copy", target_is_directory=True)
    before = snapshot(outside)

    assert_refused(store, "dir/obj")
    with pytest.raises(StorageUnavailable):
        store.put(BUCKET, "dir/new", b"x", content_type="text/plain")
    assert store.list(BUCKET, prefix="dir/").objects == []
    assert store.list(BUCKET, delimiter="/").prefixes == []
    assert [info.key for info in store.list(BUCKET).objects] == ["other"]
    store.sweep(older_than=0)

    assert snapshot(outside) == before
    assert linked.is_symlink()


@pytest.mark.parametrize("kind", ["symlink", "fifo", "directory"])
def test_a_pointer_that_is_not_a_file_is_never_read(store: LocalStore, outside: Path, kind: str) -> None:
    store.put(BUCKET, "obj", b"inside", content_type="text/plain")
    pointer = bucket_dir(store) / "keys" / "obj" / POINTER
    (outside / "pointer").write_bytes(pointer.read_bytes())
    pointer.unlink()
    if kind == "symlink":
        pointer.symlink_to(outside / "pointer")
    elif kind == "fifo":
        os.mkfifo(pointer)
    else:
        pointer.mkdir()
    before = snapshot(outside)

    assert_refused(store, "obj")

    assert snapshot(outside) == before


def test_a_linked_data_file_is_never_read(store: LocalStore, outside: Path) -> None:
    store.put(BUCKET, "obj", b"outside the store", content_type="text/plain")
    [data] = data_files(store)
    data.unlink()
    data.symlink_to(outside / "secret")
    before = snapshot(outside)

    with pytest.raises(CorruptObject):
        store.get(BUCKET, "obj")
    with pytest.raises(CorruptObject):
        store.reader(BUCKET, "obj", start=0, stop=5)
    store.put(BUCKET, "obj", b"replaced", content_type="text/plain")  # unlinks the link, not its target
    assert store.get(BUCKET, "obj") == b"replaced"

    assert snapshot(outside) == before
    assert len(data_files(store)) == 1


@pytest.mark.parametrize("part", ["", "keys", "data", "tmp"])
def test_a_linked_bucket_is_not_a_bucket(store: LocalStore, outside: Path, part: str) -> None:
    store.put(BUCKET, "obj", b"inside", content_type="text/plain")
    linked = bucket_dir(store) / part if part else bucket_dir(store)
    shutil.copytree(linked, outside / "copy")
    shutil.rmtree(linked)
    linked.symlink_to(outside / "copy", target_is_directory=True)
    before = snapshot(outside)

    with pytest.raises(BucketNotFound):
        store.get(BUCKET, "obj")
    with pytest.raises(BucketNotFound):
        store.put(BUCKET, "obj", b"x", content_type="text/plain")
    with pytest.raises(BucketNotFound):
        store.list(BUCKET)
    with pytest.raises(BucketNotFound):
        store.delete(BUCKET, "obj")
    if not part:
        with pytest.raises(StorageUnavailable):
            store.create_bucket(BUCKET)
    store.sweep(older_than=0)

    assert snapshot(outside) == before


OVERWRITER = """
import sys
from pathlib import Path
from modelport.storage.local import LocalStore

root, bucket, key, writer = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
store = LocalStore(Path(root))
print("ready", flush=True)
sys.stdin.readline()
for n in range(50):
    store.put(bucket, key, f"{writer}:{n}:".encode() * (2000 + n), content_type="text/plain")
"""


def payload(writer: int, n: int) -> bytes:
    return f"{writer}:{n}:".encode() * (2000 + n)


def test_concurrent_writers_leave_one_whole_object_and_no_files(store: LocalStore) -> None:
    children = [
        subprocess.Popen(
            [sys.executable, "-c", OVERWRITER, str(store.root), BUCKET, "shared", str(writer)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for writer in range(2)
    ]
    seen: list[bytes] = []
    try:
        for child in children:
            assert child.stdout is not None and child.stdout.readline() == "ready\n"
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        while any(child.poll() is None for child in children):
            with suppress(ObjectNotFound):
                seen.append(store.get(BUCKET, "shared"))  # a whole object each time, never a torn one
    finally:
        for child in children:
            child.wait(timeout=60)
            for stream in (child.stdin, child.stdout):
                if stream is not None:
                    stream.close()

    assert [child.returncode for child in children] == [0, 0]
    written = {payload(writer, n) for writer in range(2) for n in range(50)}
    assert all(found in written for found in seen)
    assert store.get(BUCKET, "shared") in {payload(0, 49), payload(1, 49)}
    assert len(data_files(store)) == 1
    assert tmp_files(store) == []


def test_concurrent_threads_leave_one_whole_object(store: LocalStore) -> None:
    def overwrite(writer: int) -> None:
        for n in range(25):
            store.put(BUCKET, "shared", payload(writer, n), content_type="text/plain")
            store.put(BUCKET, f"by/{writer}/{n}", b"x", content_type="text/plain")
            store.delete(BUCKET, f"by/{writer}/{n}")

    threads = [threading.Thread(target=overwrite, args=(writer,)) for writer in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert store.get(BUCKET, "shared") in {payload(writer, 24) for writer in range(4)}
    assert [info.key for info in store.list(BUCKET).objects] == ["shared"]
    assert len(data_files(store)) == 1
    assert list((bucket_dir(store) / "keys").iterdir()) == [bucket_dir(store) / "keys" / "shared"]
