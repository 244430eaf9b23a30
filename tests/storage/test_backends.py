"""Both backends behave alike: round trips, listing order and pages, ranges, aborted writes, big objects."""

from __future__ import annotations

import hashlib
import io
import random
import time
import tracemalloc
from pathlib import Path

import httpx
import pytest
from stores import BUCKET, PART_SIZE, Backend

from modelport.core.errors import (
    BucketNotFound,
    CorruptObject,
    ObjectNotFound,
    RangeNotSatisfiable,
    StorageUnavailable,
)
from modelport.storage import CHUNK, LocalStore, ObjectStore, ObjectWriter, S3Store

MiB = 1024 * 1024


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pattern(size: int, *, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def keys_of(store: ObjectStore, bucket: str, **options: object) -> list[str]:
    return [info.key for info in store.list(bucket, **options).objects]  # type: ignore[arg-type]


def test_round_trip(store: ObjectStore, bucket: str) -> None:
    written = store.put(bucket, "models/a.bin", b"hello", content_type="application/octet-stream")

    assert (written.key, written.size, written.sha256) == ("models/a.bin", 5, sha256(b"hello"))
    assert written.modified.utcoffset() is not None
    head = store.head(bucket, "models/a.bin")
    assert (head.key, head.size, head.etag) == ("models/a.bin", 5, written.etag)
    assert head.sha256 == sha256(b"hello")
    assert not head.etag.startswith('"')
    assert store.get(bucket, "models/a.bin") == b"hello"
    assert keys_of(store, bucket) == ["models/a.bin"]

    assert store.delete(bucket, "models/a.bin") is True
    assert store.delete(bucket, "models/a.bin") is False
    with pytest.raises(ObjectNotFound):
        store.head(bucket, "models/a.bin")
    with pytest.raises(ObjectNotFound):
        store.get(bucket, "models/a.bin")
    assert keys_of(store, bucket) == []


def test_empty_object(store: ObjectStore, bucket: str) -> None:
    written = store.put(bucket, "empty", b"", content_type="text/plain")

    assert (written.size, written.sha256) == (0, sha256(b""))
    assert store.get(bucket, "empty") == b""
    with store.reader(bucket, "empty", start=0, stop=10) as reader:
        assert b"".join(reader) == b""


def test_overwrite_replaces_content_and_etag(store: ObjectStore, bucket: str) -> None:
    first = store.put(bucket, "k", b"one", content_type="text/plain")
    second = store.put(bucket, "k", b"two!", content_type="application/json")

    assert second.etag != first.etag
    head = store.head(bucket, "k")
    assert (head.size, head.etag, head.content_type) == (4, second.etag, "application/json")
    assert head.sha256 == sha256(b"two!")
    assert store.get(bucket, "k") == b"two!"
    assert keys_of(store, bucket) == ["k"]


@pytest.mark.parametrize("content_type", ["image/png", "text/plain; charset=utf-8", "application/x-npy"])
def test_content_type_is_kept(store: ObjectStore, bucket: str, content_type: str) -> None:
    store.put(bucket, "file", b"x", content_type=content_type)

    assert store.head(bucket, "file").content_type == content_type
    with store.reader(bucket, "file") as reader:
        assert reader.info.content_type == content_type


def test_sha256_is_recorded_from_a_stream(store: ObjectStore, bucket: str) -> None:
    data = pattern(3 * CHUNK + 17)

    written = store.put(bucket, "blob", io.BytesIO(data), content_type="application/octet-stream")

    assert written.sha256 == sha256(data)
    assert store.head(bucket, "blob").sha256 == sha256(data)
    with store.reader(bucket, "blob") as reader:
        assert reader.info.sha256 == sha256(data)
        chunks = list(reader)
    assert b"".join(chunks) == data
    assert max(len(chunk) for chunk in chunks) <= CHUNK


ORDERED_KEYS = [
    "a",
    "a-c",
    "a.b",
    "a/b",
    "a/b/c",
    "a0",
    "b",
    "Z",
    "z",
    "é",
    "ü/x",
    "日本",
    "\ue000",  # private use: above the surrogates in UTF-8, below them in UTF-16
    "😀",
    "\U00010000",
]


def test_list_is_in_utf8_byte_order(store: ObjectStore, bucket: str) -> None:
    for key in random.Random(1).sample(ORDERED_KEYS, len(ORDERED_KEYS)):
        store.put(bucket, key, key.encode(), content_type="text/plain")

    listed = keys_of(store, bucket)

    assert listed == sorted(ORDERED_KEYS, key=lambda key: key.encode("utf-8"))
    assert listed.index("a-c") < listed.index("a/b") < listed.index("a0")


def test_list_prefix_is_any_string(store: ObjectStore, bucket: str) -> None:
    for key in ["a", "a-c", "a.b", "a/b", "a/bc/d", "a0", "b/a"]:
        store.put(bucket, key, b"", content_type="text/plain")

    assert keys_of(store, bucket, prefix="a") == ["a", "a-c", "a.b", "a/b", "a/bc/d", "a0"]
    assert keys_of(store, bucket, prefix="a/") == ["a/b", "a/bc/d"]
    assert keys_of(store, bucket, prefix="a/b") == ["a/b", "a/bc/d"]
    assert keys_of(store, bucket, prefix="a-") == ["a-c"]
    assert keys_of(store, bucket, prefix="b/a") == ["b/a"]
    assert keys_of(store, bucket, prefix="zz") == []
    assert keys_of(store, bucket, prefix="zz/y/") == []


def every_entry(store: ObjectStore, bucket: str, *, limit: int, **options: str) -> list[list[str]]:
    """The listing's pages, each as the keys and prefixes on it in order."""
    pages: list[list[str]] = []
    cursor = None
    while True:
        page = store.list(bucket, cursor=cursor, limit=limit, **options)
        pages.append(sorted([info.key for info in page.objects] + page.prefixes))
        if page.next_cursor is None:
            return pages
        assert page.next_cursor == pages[-1][-1]
        cursor = page.next_cursor
        assert len(pages) < 100


def test_list_delimiter_rolls_keys_into_common_prefixes(store: ObjectStore, bucket: str) -> None:
    for key in ["a", "a/b", "a/c/d", "a-c", "b/x", "b/y/z", "c", "d/e"]:
        store.put(bucket, key, b"", content_type="text/plain")

    page = store.list(bucket, delimiter="/")
    assert [info.key for info in page.objects] == ["a", "a-c", "c"]
    assert page.prefixes == ["a/", "b/", "d/"]
    assert page.next_cursor is None
    one_by_one = every_entry(store, bucket, limit=1, delimiter="/")
    assert one_by_one == [["a"], ["a-c"], ["a/"], ["b/"], ["c"], ["d/"]]

    nested = store.list(bucket, prefix="a/", delimiter="/")
    assert ([info.key for info in nested.objects], nested.prefixes) == (["a/b"], ["a/c/"])
    partial = store.list(bucket, prefix="b", delimiter="/")
    assert (partial.objects, partial.prefixes) == ([], ["b/"])
    other = store.list(bucket, delimiter="-")
    assert ([info.key for info in other.objects], other.prefixes) == (
        ["a", "a/b", "a/c/d", "b/x", "b/y/z", "c", "d/e"],
        ["a-"],
    )


def test_cursor_pages_through_the_listing(store: ObjectStore, bucket: str) -> None:
    keys = [f"item/{n:02d}" for n in range(25)]
    for key in random.Random(2).sample(keys, len(keys)):
        store.put(bucket, key, key.encode(), content_type="text/plain")

    pages = every_entry(store, bucket, limit=7)

    assert [len(page) for page in pages] == [7, 7, 7, 4]
    assert [key for page in pages for key in page] == keys
    tens = every_entry(store, bucket, limit=7, prefix="item/1")
    assert tens == [[f"item/1{n}" for n in range(7)], ["item/17", "item/18", "item/19"]]
    after = store.list(bucket, cursor="item/22")
    assert [info.key for info in after.objects] == ["item/23", "item/24"]
    assert after.next_cursor is None


def test_cursor_pages_through_common_prefixes(store: ObjectStore, bucket: str) -> None:
    keys = [f"d/{n}" for n in range(5)] + [f"e{n}" for n in range(5)] + ["f/x/y", "f/z", "g"]
    for key in keys:
        store.put(bucket, key, b"", content_type="text/plain")

    pages = every_entry(store, bucket, limit=2, delimiter="/")

    assert pages == [["d/", "e0"], ["e1", "e2"], ["e3", "e4"], ["f/", "g"]]


def test_missing_bucket(store: ObjectStore) -> None:
    with pytest.raises(BucketNotFound):
        store.put("nope", "k", b"x", content_type="text/plain")
    with pytest.raises(BucketNotFound):
        store.writer("nope", "k", content_type="text/plain")
    with pytest.raises(BucketNotFound):
        store.head("nope", "k")
    with pytest.raises(BucketNotFound):
        store.get("nope", "k")
    with pytest.raises(BucketNotFound):
        store.delete("nope", "k")
    with pytest.raises(BucketNotFound):
        store.list("nope")


def test_missing_object(store: ObjectStore, bucket: str) -> None:
    store.put(bucket, "there", b"x", content_type="text/plain")

    with pytest.raises(ObjectNotFound):
        store.head(bucket, "not/there")
    with pytest.raises(ObjectNotFound):
        store.reader(bucket, "not/there")
    with pytest.raises(ObjectNotFound):
        store.reader(bucket, "not/there", start=1, stop=2)
    with pytest.raises(ObjectNotFound):
        store.head(bucket, "ther")
    assert store.delete(bucket, "not/there") is False


def test_create_bucket_twice(store: ObjectStore) -> None:
    store.create_bucket("twice")
    store.put("twice", "k", b"kept", content_type="text/plain")

    store.create_bucket("twice")

    assert store.get("twice", "k") == b"kept"


def read(store: ObjectStore, bucket: str, key: str, start: int, stop: int | None) -> bytes:
    with store.reader(bucket, key, start=start, stop=stop) as reader:
        return b"".join(reader)


def test_ranged_reads(store: ObjectStore, bucket: str) -> None:
    data = pattern(2 * CHUNK + 100)
    store.put(bucket, "r", data, content_type="application/octet-stream")

    assert read(store, bucket, "r", 10, 20) == data[10:20]
    assert read(store, bucket, "r", 0, 5) == data[:5]
    assert read(store, bucket, "r", CHUNK - 3, None) == data[CHUNK - 3 :]
    assert read(store, bucket, "r", len(data) - 10, len(data) + 1000) == data[-10:]  # `stop` is clamped
    assert read(store, bucket, "r", 7, 7) == b""
    with store.reader(bucket, "r", start=5, stop=2 * CHUNK + 50) as reader:
        assert reader.info.size == len(data)
        chunks = list(reader)
    assert b"".join(chunks) == data[5 : 2 * CHUNK + 50]
    assert max(len(chunk) for chunk in chunks) <= CHUNK
    with pytest.raises(RangeNotSatisfiable):
        store.reader(bucket, "r", start=len(data), stop=None)
    with pytest.raises(RangeNotSatisfiable):
        store.reader(bucket, "r", start=len(data) + 5, stop=len(data) + 10)
    with pytest.raises(ValueError):
        store.reader(bucket, "r", start=5, stop=4)
    with pytest.raises(ValueError):
        store.reader(bucket, "r", start=-1)


def test_a_key_and_longer_keys_under_it_coexist(store: ObjectStore, bucket: str) -> None:
    for key in ["a", "a/b", "a/b/c"]:
        store.put(bucket, key, key.encode(), content_type="text/plain")

    assert [store.get(bucket, key) for key in ["a", "a/b", "a/b/c"]] == [b"a", b"a/b", b"a/b/c"]
    assert keys_of(store, bucket) == ["a", "a/b", "a/b/c"]
    assert store.delete(bucket, "a/b") is True
    assert keys_of(store, bucket) == ["a", "a/b/c"]
    assert store.delete(bucket, "a/b/c") is True
    assert keys_of(store, bucket) == ["a"]
    store.put(bucket, "a/b/c", b"again", content_type="text/plain")
    assert store.get(bucket, "a/b/c") == b"again"
    assert store.get(bucket, "a") == b"a"


class Interrupted(Exception):
    pass


def interrupted_write(store: ObjectStore, bucket: str, key: str, size: int) -> ObjectWriter:
    """Write `size` bytes to `key`, then fail inside the writer's `with`; the writer."""
    with store.writer(bucket, key, content_type="text/plain") as writer:
        for start in range(0, size, CHUNK):
            writer.write(pattern(min(CHUNK, size - start), seed=start))
        raise Interrupted(writer)


@pytest.mark.parametrize("size", [1000, PART_SIZE + CHUNK], ids=["small", "past-one-part"])
def test_an_aborted_writer_leaves_the_previous_object(backend: Backend, bucket: str, size: int) -> None:
    store = backend.store
    before = store.put(bucket, "k", b"previous", content_type="text/plain")
    contents = backend.contents()

    with pytest.raises(Interrupted) as interrupted:
        interrupted_write(store, bucket, "k", size)
    with pytest.raises(Interrupted):
        interrupted_write(store, bucket, "fresh", 7)

    assert store.get(bucket, "k") == b"previous"
    assert store.head(bucket, "k").etag == before.etag
    with pytest.raises(ObjectNotFound):
        store.head(bucket, "fresh")
    assert keys_of(store, bucket) == ["k"]
    assert backend.contents() == contents  # no partial file or pending upload left
    writer: ObjectWriter = interrupted.value.args[0]
    writer.abort()  # a second abort is harmless
    with pytest.raises(RuntimeError):
        writer.write(b"more")


def test_a_committed_writer_is_closed(store: ObjectStore, bucket: str) -> None:
    with store.writer(bucket, "k", content_type="text/plain") as writer:
        writer.write(b"abc")
        info = writer.commit()
    assert (info.size, info.sha256) == (3, sha256(b"abc"))
    with pytest.raises(RuntimeError):
        writer.write(b"more")
    with pytest.raises(RuntimeError):
        writer.commit()
    assert store.get(bucket, "k") == b"abc"


def test_a_multipart_sized_object_round_trips(store: ObjectStore, bucket: str) -> None:
    data = pattern(11 * MiB + 123, seed=3)  # three parts on S3: 5 MiB, 5 MiB and the rest

    written = store.put(bucket, "big", io.BytesIO(data), content_type="application/octet-stream")

    assert (written.size, written.sha256) == (len(data), sha256(data))
    head = store.head(bucket, "big")
    assert (head.size, head.sha256) == (len(data), sha256(data))
    assert head.content_type == "application/octet-stream"
    assert store.get(bucket, "big") == data
    assert read(store, bucket, "big", 6 * MiB, 6 * MiB + 10) == data[6 * MiB : 6 * MiB + 10]


class Pattern(io.RawIOBase):
    """`size` bytes made on demand: a stream that never holds more than one read's worth."""

    def __init__(self, size: int) -> None:
        self.left = size
        self.digest = hashlib.sha256()
        self.block = pattern(CHUNK, seed=4)

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        count = min(self.left, CHUNK if size < 0 else size)
        self.left -= count
        chunk = self.block[:count]
        self.digest.update(chunk)
        return chunk


def test_a_large_stream_keeps_memory_flat(store: ObjectStore, bucket: str) -> None:
    source = Pattern(64 * MiB)

    tracemalloc.start()
    try:
        store.put(bucket, "huge", source, content_type="application/octet-stream")  # type: ignore[arg-type]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert peak < 3 * PART_SIZE
    assert store.head(bucket, "huge").sha256 == source.digest.hexdigest()
    digest = hashlib.sha256()
    with store.reader(bucket, "huge") as reader:
        for chunk in reader:
            digest.update(chunk)
    assert digest.hexdigest() == source.digest.hexdigest()
    store.delete(bucket, "huge")


def test_local_store_has_no_presigned_urls(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "objects")
    store.create_bucket(BUCKET)

    assert store.presign(BUCKET, "k", method="GET", expires_in=60) is None


def test_presigned_urls_serve_one_object_and_method(s3: S3Store) -> None:
    s3.create_bucket(BUCKET)
    s3.put(BUCKET, "models/a b?.bin", b"weights", content_type="application/octet-stream")
    s3.put(BUCKET, "other", b"secret", content_type="application/octet-stream")

    get_url = s3.presign(BUCKET, "models/a b?.bin", method="GET", expires_in=60)
    put_url = s3.presign(BUCKET, "uploaded", method="PUT", expires_in=60, size=len(b"new bytes"))

    fetched = httpx.get(get_url)
    assert (fetched.status_code, fetched.content) == (200, b"weights")
    # the URL is signed for its size: S3 refuses a body of any other size, larger or smaller
    assert httpx.put(put_url, content=b"new bytes and then many more").status_code == 403
    assert httpx.put(put_url, content=b"new").status_code == 403
    with pytest.raises(ObjectNotFound):
        s3.get(BUCKET, "uploaded")
    uploaded = httpx.put(put_url, content=b"new bytes")
    assert uploaded.status_code == 200
    assert s3.get(BUCKET, "uploaded") == b"new bytes"  # no sha256 metadata: checked against the MD5 ETag
    with pytest.raises(ValueError, match="size"):
        s3.presign(BUCKET, "uploaded", method="PUT", expires_in=60)

    path = f"/{s3.physical(BUCKET)}/models/a%20b%3F.bin?"
    assert path in get_url
    assert httpx.get(get_url.replace(path, f"/{s3.physical(BUCKET)}/other?")).status_code == 403
    assert httpx.get(put_url).status_code == 403
    assert httpx.put(get_url, content=b"overwrite").status_code == 403
    assert httpx.put(put_url.replace("/uploaded?", "/other?"), content=b"overwrite").status_code == 403
    assert s3.get(BUCKET, "other") == b"secret"
    assert s3.get(BUCKET, "models/a b?.bin") == b"weights"


def test_presigned_urls_expire(s3: S3Store) -> None:
    s3.create_bucket(BUCKET)
    s3.put(BUCKET, "k", b"x", content_type="text/plain")
    url = s3.presign(BUCKET, "k", method="GET", expires_in=1)

    deadline = time.monotonic() + 10  # signed at the whole second: it expires within one second
    while (answer := httpx.get(url)).status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.05)

    assert answer.status_code == 403, f"a 1 s presigned URL still answers {answer.status_code} after 10 s"
    assert "<Code>AccessDenied</Code>" in answer.text  # expired; a bad signature is SignatureDoesNotMatch
    with pytest.raises(ValueError):
        s3.presign(BUCKET, "k", method="GET", expires_in=0)


def test_an_unreachable_s3_is_storage_unavailable(s3: S3Store) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    store = S3Store(
        endpoint_url=f"http://127.0.0.1:{port}",
        region="us-east-1",
        access_key_id="AKIDLEAKCHECK",
        secret_access_key="do-not-show-this-secret",
        bucket_prefix="x-",
    )
    try:
        with pytest.raises(StorageUnavailable) as caught:
            store.head(BUCKET, "k")
    finally:
        store.close()
    message = str(caught.value) + caught.value.public_message()
    assert "do-not-show-this-secret" not in message
    assert "AKIDLEAKCHECK" not in message


def test_sweep_removes_abandoned_writes(backend: Backend, bucket: str) -> None:
    store = backend.store
    before = backend.contents()
    writer = store.writer(bucket, "abandoned", content_type="text/plain")
    writer.write(pattern(PART_SIZE))  # S3: one part sent; local: a partial file
    assert backend.contents() != before

    # moto reports a fixed start time for every upload: the hour of grace is tested on LocalStore alone.
    store.sweep(older_than=0)  # type: ignore[call-arg]

    assert backend.contents() == before
    with pytest.raises(ObjectNotFound):
        store.head(bucket, "abandoned")
    writer.abort()


def test_s3_detects_bytes_that_do_not_match_their_sha256(s3: S3Store) -> None:
    s3.create_bucket(BUCKET)
    s3.client.put_object(
        Bucket=s3.physical(BUCKET), Key="tampered", Body=b"abc", Metadata={"sha256": sha256(b"abd")}
    )

    assert s3.head(BUCKET, "tampered").sha256 == sha256(b"abd")
    with pytest.raises(CorruptObject):
        s3.get(BUCKET, "tampered")
    assert read(s3, BUCKET, "tampered", 0, 2) == b"ab"  # ranged reads are not checked
