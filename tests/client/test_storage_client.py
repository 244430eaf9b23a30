"""The client's storage calls: first against a scripted transport (the exact paths and headers sent, downloads
that are cut short or corrupted leaving nothing behind), then against one real `modelport server` with a
`models` bucket (round trips of files and odd keys, listings page by page, presigned URLs, a 20 MB
transfer, quota and missing objects)."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from platform_server import ServerProcess

from modelport.client import ApiError, Client, TransferFailed

BUCKET = "models"
ODD_KEYS = ["with space.txt", "what?.txt", "hash#tag.txt", "100% sure.txt", "ünïcødé/日本語.txt", "a+b=c&d"]


def entry(key: str = "k", **fields: Any) -> dict[str, Any]:
    base = {
        "key": key,
        "size": 3,
        "etag": "e",
        "content_type": "text/plain",
        "modified": "2024-01-01T00:00:00+00:00",
        "sha256": None,
    }
    return base | fields


def served(data: bytes, **headers: str) -> httpx.Response:
    sent = {"Content-Length": str(len(data)), "X-Checksum-Sha256": hashlib.sha256(data).hexdigest()}
    return httpx.Response(200, content=data, headers=sent | headers)


def leftovers(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


# Against a scripted transport


def test_keys_are_quoted_once_into_the_path(client_for: Any) -> None:
    client, seen = client_for(lambda r: httpx.Response(204))
    for key in ["a b/c?d#e%f.txt", "ü/x", "../up", "a/./b"]:
        client.delete_object("models", key)
    assert [r.url.raw_path for r in seen.requests] == [
        b"/base/api/v1/storage/models/objects/a%20b/c%3Fd%23e%25f.txt",
        b"/base/api/v1/storage/models/objects/%C3%BC/x",
        b"/base/api/v1/storage/models/objects/%2E%2E/up",
        b"/base/api/v1/storage/models/objects/a/%2E/b",
    ]


def test_listing_sends_only_what_is_given(client_for: Any) -> None:
    page = {"bucket": "models", "prefix": "", "objects": [], "prefixes": [], "next_cursor": None}
    client, seen = client_for(lambda r: httpx.Response(200, json=page))
    client.objects("models")
    client.objects("models", prefix="a b/", delimiter="/", cursor="c1", limit=2)
    assert [dict(r.url.params) for r in seen.requests] == [
        {"limit": "1000"},
        {"prefix": "a b/", "delimiter": "/", "cursor": "c1", "limit": "2"},
    ]


def test_walk_follows_the_cursor_to_the_last_page(client_for: Any) -> None:
    pages = {
        None: ([entry("a"), entry("b")], "b"),
        "b": ([entry("c")], "c"),
        "c": ([], None),
    }

    def handler(request: httpx.Request) -> httpx.Response:
        objects, following = pages[request.url.params.get("cursor")]
        body = {"bucket": "m", "prefix": "", "objects": objects, "prefixes": [], "next_cursor": following}
        return httpx.Response(200, json=body)

    client, seen = client_for(handler)
    assert [info.key for info in client.walk_objects("m")] == ["a", "b", "c"]
    assert len(seen.requests) == 3


def test_a_listing_that_does_not_advance_is_an_error(client_for: Any) -> None:
    body = {"bucket": "m", "prefix": "", "objects": [entry()], "prefixes": [], "next_cursor": "same"}
    client, _ = client_for(lambda r: httpx.Response(200, json=body))
    with pytest.raises(ApiError, match="does not advance"):
        list(client.walk_objects("m"))


def test_upload_streams_the_file_with_its_size_and_type(client_for: Any, tmp_path: Path) -> None:
    source = tmp_path / "notes.json"
    data = os.urandom(3 * 1024 * 1024 + 5)
    source.write_bytes(data)
    client, seen = client_for(lambda r: httpx.Response(201, json=entry("x", size=len(data))))
    reported: list[tuple[int, int]] = []
    info = client.upload("models", "x", source, progress=lambda done, total: reported.append((done, total)))
    assert info.size == len(data)
    request = seen.requests[0]
    assert request.method == "PUT"
    assert request.headers["Content-Length"] == str(len(data))
    assert request.headers["Content-Type"] == "application/json"
    assert request.content == data
    assert reported[0] == (0, len(data))
    assert reported[-1] == (len(data), len(data))
    assert [done for done, _ in reported] == sorted({done for done, _ in reported})


@pytest.mark.parametrize(
    ("name", "given", "sent"),
    [
        ("weights.bin", None, "application/octet-stream"),
        ("model.tar.gz", None, "application/gzip"),
        ("readme.txt", None, "text/plain"),
        ("no-suffix", None, "application/octet-stream"),
        ("readme.txt", "text/markdown", "text/markdown"),
    ],
)
def test_upload_content_types(
    client_for: Any, tmp_path: Path, name: str, given: str | None, sent: str
) -> None:
    source = tmp_path / name
    source.write_bytes(b"abc")
    client, seen = client_for(lambda r: httpx.Response(201, json=entry()))
    client.upload("models", "k", source, content_type=given)
    assert seen.requests[0].headers["Content-Type"] == sent


def test_download_renames_the_whole_file_into_place(client_for: Any, tmp_path: Path) -> None:
    data = os.urandom(200_000)
    headers = {"ETag": '"abc"', "Content-Type": "application/octet-stream"}
    client, seen = client_for(lambda r: served(data, **headers))
    reported: list[tuple[int, int]] = []
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    info = client.download("models", "a/b.bin", target, progress=lambda d, t: reported.append((d, t)))
    assert target.read_bytes() == data
    assert leftovers(tmp_path) == ["out.bin"]
    assert info.key == "a/b.bin"
    assert info.size == len(data)
    assert info.etag == "abc"
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert reported[0] == (0, len(data))
    assert reported[-1] == (len(data), len(data))
    assert seen.requests[0].url.raw_path == b"/base/api/v1/storage/models/objects/a/b.bin"


def test_a_checksum_mismatch_leaves_nothing_and_keeps_the_old_file(client_for: Any, tmp_path: Path) -> None:
    data = b"the bytes the server sent"
    client, _ = client_for(lambda r: served(data, **{"X-Checksum-Sha256": "0" * 64}))
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(TransferFailed, match="does not match its checksum") as caught:
        client.download("models", "k", target)
    assert "models/k" in str(caught.value)
    assert target.read_bytes() == b"old"
    assert leftovers(tmp_path) == ["out.bin"]


def test_a_download_cut_short_leaves_nothing(client_for: Any, tmp_path: Path) -> None:
    def body() -> Iterator[bytes]:
        yield b"x" * 1000
        raise httpx.ReadError("connection reset")

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body(), headers={"Content-Length": "5000"})

    client, _ = client_for(handler)
    with pytest.raises(TransferFailed, match="cut short after 1000 of 5000 bytes"):
        client.download("models", "k", tmp_path / "out.bin")
    assert leftovers(tmp_path) == []


def test_a_body_shorter_than_its_length_leaves_nothing(client_for: Any, tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=iter([b"abc"]), headers={"Content-Length": "10"})

    client, _ = client_for(handler)
    with pytest.raises(TransferFailed, match="ended after 3 of its 10 bytes"):
        client.download("models", "k", tmp_path / "out.bin")
    assert leftovers(tmp_path) == []


def test_a_refused_download_leaves_nothing(client_for: Any, tmp_path: Path) -> None:
    error = {"error": {"code": "object_not_found", "message": "no object 'k' in bucket 'models'"}}
    client, _ = client_for(lambda r: httpx.Response(404, json=error))
    with pytest.raises(ApiError) as caught:
        client.download("models", "k", tmp_path / "out.bin")
    assert (caught.value.status, caught.value.code) == (404, "object_not_found")
    assert leftovers(tmp_path) == []


def test_stat_of_a_missing_object_names_it(client_for: Any) -> None:
    client, seen = client_for(lambda r: httpx.Response(404))
    with pytest.raises(ApiError, match="no object 'a/b' in bucket 'models'"):
        client.stat_object("models", "a/b")
    assert seen.requests[0].method == "HEAD"


def test_presign_asks_for_a_method_and_lifetime(client_for: Any) -> None:
    answer = {"url": "http://x/y", "method": "PUT", "expires_at": "2024-01-01T00:00:00+00:00", "size": 3}
    client, seen = client_for(lambda r: httpx.Response(200, json=answer))
    assert client.presign("models", "a b", method="PUT", expires_in=60, size=3).model_dump() == answer
    assert seen.sent() == [
        (
            "POST",
            "/base/api/v1/storage/models/presign",
            {"key": "a b", "method": "PUT", "expires_in": 60, "size": 3},
        )
    ]


# Against a real server


@pytest.fixture
def client(storage_server: ServerProcess) -> Iterator[Client]:
    with Client(storage_server.url, storage_server.token) as client:
        yield client


@pytest.fixture
def prefix() -> str:
    """A fresh prefix in the shared bucket, so that the tests do not see each other's objects."""
    return f"t-{uuid.uuid4().hex[:8]}/"


@pytest.mark.slow
def test_a_file_goes_up_and_comes_back(client: Client, tmp_path: Path, prefix: str) -> None:
    source = tmp_path / "weights.bin"
    data = os.urandom(100_000)
    source.write_bytes(data)
    stored = client.upload(BUCKET, prefix + "weights.bin", source)
    assert stored.key == prefix + "weights.bin"
    assert stored.size == len(data)
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    stat = client.stat_object(BUCKET, prefix + "weights.bin")
    assert (stat.size, stat.etag, stat.sha256) == (len(data), stored.etag, stored.sha256)
    target = tmp_path / "copy.bin"
    info = client.download(BUCKET, prefix + "weights.bin", target)
    assert target.read_bytes() == data
    assert info.sha256 == stored.sha256


@pytest.mark.slow
def test_odd_keys_round_trip(client: Client, tmp_path: Path, prefix: str) -> None:
    for number, key in enumerate(ODD_KEYS):
        source = tmp_path / f"{number}.txt"
        source.write_text(key)
        assert client.upload(BUCKET, prefix + key, source).key == prefix + key
    listed = [info.key for info in client.walk_objects(BUCKET, prefix)]
    assert sorted(listed) == sorted(prefix + key for key in ODD_KEYS)
    for key in ODD_KEYS:
        target = tmp_path / "back.txt"
        client.download(BUCKET, prefix + key, target)
        assert target.read_text() == key
        client.delete_object(BUCKET, prefix + key)
    assert list(client.walk_objects(BUCKET, prefix)) == []


@pytest.mark.slow
def test_listings_page_and_fold_directories(client: Client, tmp_path: Path, prefix: str) -> None:
    source = tmp_path / "f"
    source.write_bytes(b"x")
    keys = ["a.txt", "b.txt", "c.txt", "d/one", "d/two", "e/f/g"]
    for key in keys:
        client.upload(BUCKET, prefix + key, source)
    first = client.objects(BUCKET, prefix=prefix, limit=2)
    assert [info.key for info in first.objects] == [prefix + "a.txt", prefix + "b.txt"]
    assert first.next_cursor is not None
    seen, cursor = [], None
    while True:
        page = client.objects(BUCKET, prefix=prefix, cursor=cursor, limit=2)
        assert len(page.objects) <= 2
        seen += [info.key for info in page.objects]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == [prefix + key for key in keys]
    folded = client.objects(BUCKET, prefix=prefix, delimiter="/")
    assert [info.key for info in folded.objects] == [prefix + k for k in ["a.txt", "b.txt", "c.txt"]]
    assert folded.prefixes == [prefix + "d/", prefix + "e/"]
    assert [info.key for info in client.walk_objects(BUCKET, prefix + "d/")] == [
        prefix + "d/one",
        prefix + "d/two",
    ]


@pytest.mark.slow
def test_buckets_say_access_and_usage(client: Client) -> None:
    buckets = {bucket.name: bucket for bucket in client.buckets()}
    models = buckets[BUCKET]
    assert models.access == "write"
    assert models.quota_bytes == 1024**3
    assert models.retention_days == 30
    assert models.groups == ["/team"]
    assert isinstance(models.used_bytes, int)


@pytest.mark.slow
def test_presigned_urls_need_no_token(client: Client, tmp_path: Path, prefix: str) -> None:
    data = os.urandom(5000)
    put = client.presign(BUCKET, prefix + "up load.bin", method="PUT", expires_in=60, size=len(data))
    assert put.method == "PUT"
    with httpx.Client(timeout=30) as anonymous:
        response = anonymous.put(put.url, content=data)
        assert response.status_code == 201, response.text
        get = client.presign(BUCKET, prefix + "up load.bin")
        fetched = anonymous.get(get.url)
        assert fetched.status_code == 200, fetched.text
        assert fetched.content == data
        assert anonymous.get(get.url.replace("up%20load", "other")).status_code in (401, 403)
    target = tmp_path / "back.bin"
    client.download(BUCKET, prefix + "up load.bin", target)
    assert target.read_bytes() == data


@pytest.mark.slow
def test_twenty_megabytes_with_progress(client: Client, tmp_path: Path, prefix: str) -> None:
    size = 20 * 1024 * 1024
    source = tmp_path / "big.bin"
    data = os.urandom(size)
    source.write_bytes(data)
    for direction in ("up", "down"):
        reported: list[tuple[int, int]] = []

        def progress(done: int, total: int, reported: list[tuple[int, int]] = reported) -> None:
            reported.append((done, total))

        if direction == "up":
            assert client.upload(BUCKET, prefix + "big.bin", source, progress=progress).size == size
        else:
            client.download(BUCKET, prefix + "big.bin", tmp_path / "back.bin", progress=progress)
        done = [d for d, _ in reported]
        assert done == sorted(done), direction
        assert {t for _, t in reported} == {size}, direction
        assert reported[-1] == (size, size), direction
        assert len(reported) > 10, direction
    assert (tmp_path / "back.bin").read_bytes() == data


@pytest.mark.slow
def test_missing_objects_and_buckets(client: Client, tmp_path: Path, prefix: str) -> None:
    with pytest.raises(ApiError) as caught:
        client.download(BUCKET, prefix + "nothing.bin", tmp_path / "out.bin")
    assert caught.value.status == 404
    assert caught.value.code == "object_not_found"
    assert prefix + "nothing.bin" in caught.value.message
    with pytest.raises(ApiError) as caught:
        client.download("no-such-bucket", "k", tmp_path / "out.bin")
    assert (caught.value.status, caught.value.code) == (404, "bucket_not_found")
    assert leftovers(tmp_path) == []
    with pytest.raises(ApiError) as caught:
        client.stat_object(BUCKET, prefix + "nothing.bin")
    assert caught.value.status == 404
    with pytest.raises(ApiError) as caught:
        client.delete_object(BUCKET, prefix + "nothing.bin")
    assert (caught.value.status, caught.value.code) == (404, "object_not_found")


@pytest.mark.slow
def test_a_corrupted_object_is_not_saved(
    client: Client, storage_server: ServerProcess, tmp_path: Path, prefix: str
) -> None:
    """The server cuts the download of bytes that do not match their recorded SHA-256 (holding back the last
    chunk), and the client checks the checksum too: whichever notices first, nothing is saved."""
    source = tmp_path / "f.bin"
    data = os.urandom(3 * 1024 * 1024)
    source.write_bytes(data)
    client.upload(BUCKET, prefix + "f.bin", source)
    files = storage_server.data_dir.rglob("*")
    stored = [path for path in files if path.is_file() and path.read_bytes() == data]
    assert len(stored) == 1, "the local store keeps each object's bytes in one file"
    stored[0].write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    with pytest.raises(TransferFailed) as caught:
        client.download(BUCKET, prefix + "f.bin", tmp_path / "out.bin")
    assert prefix + "f.bin" in str(caught.value)
    assert leftovers(tmp_path) == ["f.bin"]


@pytest.mark.slow
def test_delete_removes_the_object(client: Client, tmp_path: Path, prefix: str) -> None:
    source = tmp_path / "f"
    source.write_bytes(b"x")
    client.upload(BUCKET, prefix + "f", source)
    client.delete_object(BUCKET, prefix + "f")
    with pytest.raises(ApiError) as caught:
        client.stat_object(BUCKET, prefix + "f")
    assert caught.value.status == 404


@pytest.mark.slow
def test_a_full_bucket_refuses_the_upload(client: Client, tmp_path: Path) -> None:
    source = tmp_path / "f"
    source.write_bytes(b"x" * 2000)
    with pytest.raises(ApiError) as caught:
        client.upload("tiny", "f", source)
    assert (caught.value.status, caught.value.code) == (507, "quota_exceeded")


@pytest.mark.slow
def test_dot_segments_reach_the_server_and_are_refused(client: Client, tmp_path: Path) -> None:
    source = tmp_path / "f"
    source.write_bytes(b"x")
    with pytest.raises(ApiError) as caught:
        client.upload(BUCKET, "a/../b", source)
    assert (caught.value.status, caught.value.code) == (400, "invalid_key")
