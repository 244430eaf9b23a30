"""Object storage through a real server, on the local store and on S3 (moto's server on loopback): buckets
by group, the files API (streaming, ranges, ETags), key canonicalisation over HTTP, quotas, presigned URLs,
request files named as `{"object": "bucket/key"}` and interrupted uploads.

One server per backend holds the world:

- buckets `receipts` (read and write: `/team-a`, read only: `/auditors`), `tiny` (`/team-a`, 1000 bytes)
  and `models` (admins only);
- `user-a` in `/team-a`, `user-b` in `/team-b`, `auditor` in `/auditors`;
- module `mirror` (image in, mirrored image out) callable by `/team-a` and `/team-b`.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import boto3
import httpx
import pytest
from drive import deploy, push, wait_built, wait_deployment
from PIL import Image
from platform_server import ADMIN_TOKEN, ServerProcess

pytestmark = pytest.mark.slow

FIXTURES = Path(__file__).parents[1] / "fixtures" / "modules"
MAX_OBJECT_BYTES = 8_000_000


@dataclass
class World:
    backend: str
    server: ServerProcess
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.server.url

    def client(self, who: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[who]}"} if who else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


def storage(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "modelport/v1", "kind": "Storage", "metadata": {"name": name}, "spec": spec}


@pytest.fixture(scope="module", params=["local", "s3"])
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp(f"storage-{request.param}")
    env: dict[str, str] = {}
    if request.param == "s3":
        s3 = request.getfixturevalue("s3_server")
        env = {
            "MODELPORT_STORAGE_BACKEND": "s3",
            "MODELPORT_S3_ENDPOINT_URL": s3.endpoint_url,
            "MODELPORT_S3_ACCESS_KEY_ID": s3.access_key_id,
            "MODELPORT_S3_SECRET_ACCESS_KEY": s3.secret_access_key,
            "MODELPORT_S3_REGION": s3.region,
            "MODELPORT_S3_BUCKET_PREFIX": f"t{uuid.uuid4().hex[:8]}-",
        }
    env["MODELPORT_MAX_OBJECT_BYTES"] = str(MAX_OBJECT_BYTES)
    server = ServerProcess(root / "server", token=ADMIN_TOKEN, env=env)
    server.start()
    try:
        world = World(request.param, server, tokens={"admin": ADMIN_TOKEN})
        with server.client() as admin:
            for path in ["/team-a", "/team-b", "/auditors"]:
                assert admin.post("/api/v1/groups", json={"path": path}).status_code == 201
            for name, group in {"user-a": "/team-a", "user-b": "/team-b", "auditor": "/auditors"}.items():
                made = admin.post("/api/v1/users", json={"name": name, "role": "user", "groups": [group]})
                assert made.status_code == 201, made.text
                token = admin.post("/api/v1/tokens", json={"name": "tests", "user": made.json()["id"]})
                world.tokens[name] = token.json()["token"]
            directory = root / "mirror"
            shutil.copytree(FIXTURES / "files", directory, ignore=shutil.ignore_patterns("__pycache__"))
            (directory / "modelport.yaml").write_text(
                "apiVersion: modelport/v1\nkind: Module\nmetadata: {name: mirror}\n"
            )
            (directory / "requirements.txt").write_text("pillow\n")
            assert push(admin, directory, version="v1").status_code == 201
            built = wait_built(admin, "mirror", "v1")
            assert built["build_status"] == "ready", built["build_error"]
            wait_deployment(admin, "mirror", deploy(admin, "mirror", "v1")["generation"])
            documents = [
                storage("receipts", access={"groups": ["/team-a"], "readGroups": ["/auditors"]}),
                storage("tiny", access={"groups": ["/team-a"]}, quota=1000),
                storage("models"),
                {
                    "apiVersion": "modelport/v1",
                    "kind": "Api",
                    "metadata": {"name": "mirror"},
                    "spec": {"module": "mirror", "access": {"groups": ["/team-a", "/team-b"]}},
                },
            ]
            applied = admin.post("/api/v1/apply", json={"documents": documents})
            assert applied.status_code == 200, applied.text
        yield world
    finally:
        server.stop()


def obj(bucket: str, key: str) -> str:
    return f"/api/v1/storage/{bucket}/objects/{quote(key, safe='/')}"


def png(width: int = 4, height: int = 3) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 10, 10)).save(buffer, format="PNG")
    return buffer.getvalue()


def error_code(response: httpx.Response) -> str:
    code: str = response.json()["error"]["code"]
    return code


# Buckets by group


def test_each_caller_sees_only_the_buckets_its_groups_may_use(world: World) -> None:
    with world.client("user-a") as a, world.client("auditor") as auditor, world.client("user-b") as b:
        assert {x["name"]: x["access"] for x in a.get("/api/v1/storage").json()["buckets"]} == {
            "receipts": "write",
            "tiny": "write",
        }
        assert [x["name"] for x in auditor.get("/api/v1/storage").json()["buckets"]] == ["receipts"]
        assert b.get("/api/v1/storage").json() == {"buckets": []}
    with world.client("admin") as admin:
        names = [x["name"] for x in admin.get("/api/v1/storage").json()["buckets"]]
        assert names == ["models", "receipts", "requests", "tiny"]


def test_bucket_access_is_enforced_on_every_route(world: World) -> None:
    key = f"by-group/{uuid.uuid4().hex}.txt"
    with (
        world.client("user-a") as a,
        world.client("user-b") as b,
        world.client("auditor") as auditor,
        world.client(None) as nobody,
    ):
        assert a.put(obj("receipts", key), content=b"team a's").status_code == 201
        assert auditor.get(obj("receipts", key)).content == b"team a's"
        assert auditor.get("/api/v1/storage/receipts").status_code == 200
        refused = auditor.put(obj("receipts", key), content=b"auditor's")
        assert (refused.status_code, error_code(refused)) == (403, "forbidden")
        assert auditor.delete(obj("receipts", key)).status_code == 403
        for method, path in [
            ("GET", obj("receipts", key)),
            ("HEAD", obj("receipts", key)),
            ("PUT", obj("receipts", key)),
            ("DELETE", obj("receipts", key)),
            ("GET", "/api/v1/storage/receipts"),
            ("POST", "/api/v1/storage/receipts/presign"),
            ("GET", obj("models", "x")),
        ]:
            body = {"key": key} if path.endswith("presign") else None
            response = b.request(method, path, json=body, content=b"x" if method == "PUT" else None)
            assert response.status_code == 404, (method, path, response.status_code)
            if method != "HEAD":
                assert error_code(response) == "bucket_not_found"
            assert nobody.request(method, path).status_code == 401, (method, path)
        assert a.get(obj("receipts", key)).content == b"team a's"


# The files API


def test_objects_round_trip_with_etag_content_type_and_ranges(world: World) -> None:
    key = f"docs/{uuid.uuid4().hex}/report.txt"
    data = b"0123456789abcdefghij"
    with world.client("user-a") as a:
        put = a.put(obj("receipts", key), content=data, headers={"Content-Type": "text/plain"})
        assert put.status_code == 201, put.text
        entry = put.json()
        assert entry["size"] == 20 and entry["key"] == key
        got = a.get(obj("receipts", key))
        assert got.content == data
        assert got.headers["content-type"].startswith("text/plain")
        assert got.headers["etag"] == f'"{entry["etag"]}"' == put.headers["etag"]
        head = a.head(obj("receipts", key))
        assert head.status_code == 200 and head.headers["content-length"] == "20" and head.content == b""
        assert a.get(obj("receipts", key), headers={"If-None-Match": got.headers["etag"]}).status_code == 304
        part = a.get(obj("receipts", key), headers={"Range": "bytes=2-5"})
        assert (part.status_code, part.content, part.headers["content-range"]) == (
            206,
            b"2345",
            "bytes 2-5/20",
        )
        assert a.get(obj("receipts", key), headers={"Range": "bytes=-3"}).content == b"hij"
        assert a.get(obj("receipts", key), headers={"Range": "bytes=15-"}).content == b"fghij"
        outside = a.get(obj("receipts", key), headers={"Range": "bytes=20-"})
        assert outside.status_code == 416 and outside.headers["content-range"] == "bytes */20"
        replaced = a.put(obj("receipts", key), content=b"new", headers={"Content-Type": "text/plain"})
        assert replaced.json()["etag"] != entry["etag"]
        assert a.get(obj("receipts", key)).content == b"new"
        assert a.delete(obj("receipts", key)).status_code == 204
        gone = a.get(obj("receipts", key))
        assert (gone.status_code, error_code(gone)) == (404, "object_not_found")
        assert error_code(a.delete(obj("receipts", key))) == "object_not_found"


def test_listing_pages_through_a_prefix(world: World) -> None:
    prefix = f"list-{uuid.uuid4().hex[:8]}/"
    keys = [f"{prefix}{name}" for name in ["a", "a-b", "a/b", "b/c/d", "c"]]
    with world.client("user-a") as a:
        for key in keys:
            assert a.put(obj("receipts", key), content=key.encode()).status_code == 201
        seen: list[str] = []
        cursor = None
        while True:
            params = {"prefix": prefix, "limit": 2, **({"cursor": cursor} if cursor else {})}
            page = a.get("/api/v1/storage/receipts", params=params).json()
            assert len(page["objects"]) <= 2
            seen += [o["key"] for o in page["objects"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == sorted(keys, key=lambda k: k.encode())
        grouped = a.get("/api/v1/storage/receipts", params={"prefix": prefix, "delimiter": "/"}).json()
        assert [o["key"] for o in grouped["objects"]] == [f"{prefix}a", f"{prefix}a-b", f"{prefix}c"]
        assert grouped["prefixes"] == [f"{prefix}a/", f"{prefix}b/"]


def test_odd_keys_round_trip_exactly(world: World) -> None:
    with world.client("user-a") as a:
        for key in ["with space/x.txt", "q?uestion#hash.txt", "ünïcödé/文件.txt", "100%.txt", "a+b=c&d"]:
            key = f"odd-{uuid.uuid4().hex[:6]}/{key}"
            put = a.put(obj("receipts", key), content=key.encode())
            assert put.status_code == 201, (key, put.text)
            assert put.json()["key"] == key
            assert a.get(obj("receipts", key)).content == key.encode()
            listed = a.get("/api/v1/storage/receipts", params={"prefix": key.split("/")[0] + "/"}).json()
            assert [o["key"] for o in listed["objects"]] == [key]


TRAVERSALS = [
    "../outside",
    "a/../../outside",
    "%2e%2e/outside",
    "%2E%2E%2Foutside",
    "%252e%252e/outside",
    "a%252fb",
    "..%5coutside",
    "a%5cb",
    "a//b",
    "a/./b",
    "./a",
    "a/",
    "%00",
    "a%0ab",
    "%EF%BC%8E%EF%BC%8E/outside",
    "a/%EF%BC%8E%EF%BC%8E/b",
    "x" * 1025,
]


@pytest.mark.parametrize("raw", TRAVERSALS)
def test_keys_that_could_leave_their_bucket_are_refused(world: World, raw: str) -> None:
    target = f"/api/v1/storage/receipts/objects/{raw}".encode()
    with world.client("user-a") as a:
        for method in ("PUT", "GET", "DELETE"):
            request = a.build_request(method, "/", content=b"x" if method == "PUT" else None)
            request.extensions["target"] = target  # sent as written: no client-side normalisation
            response = a.send(request)
            assert response.status_code in (400, 404), (raw, method, response.status_code)
            if response.status_code == 404:  # the path did not reach the object route at all
                assert error_code(response) == "not_found", (raw, method)
            else:
                assert error_code(response) == "invalid_key", (raw, method)
        for bucket in ("receipts", "tiny", "requests", "models"):
            with world.client("admin") as admin:
                listed = admin.get(f"/api/v1/storage/{bucket}", params={"prefix": "outside"}).json()
                assert listed["objects"] == []
    assert not (world.server.data_dir / "outside").exists()
    assert not (world.server.data_dir / "objects" / "outside").exists()


# Quotas


def test_quota_refuses_what_does_not_fit_and_changes_nothing(world: World) -> None:
    key = f"q-{uuid.uuid4().hex[:6]}"
    with world.client("user-a") as a:
        assert a.put(obj("tiny", f"{key}-1"), content=b"x" * 600).status_code == 201
        refused = a.put(obj("tiny", f"{key}-2"), content=b"y" * 600)
        assert (refused.status_code, error_code(refused)) == (507, "quota_exceeded")
        assert a.head(obj("tiny", f"{key}-2")).status_code == 404
        assert (
            next(b for b in a.get("/api/v1/storage").json()["buckets"] if b["name"] == "tiny")["used_bytes"]
            == 600
        )
        assert a.put(obj("tiny", f"{key}-1"), content=b"z" * 300).status_code == 201
        assert a.put(obj("tiny", f"{key}-2"), content=b"y" * 600).status_code == 201
        assert a.delete(obj("tiny", f"{key}-1")).status_code == 204
        assert a.delete(obj("tiny", f"{key}-2")).status_code == 204
        tiny = next(b for b in a.get("/api/v1/storage").json()["buckets"] if b["name"] == "tiny")
        assert tiny["used_bytes"] == 0


def test_an_object_over_the_size_limit_is_refused_before_its_body_is_read(world: World) -> None:
    host, port = urlsplit(world.url).hostname, urlsplit(world.url).port
    with socket.create_connection((host, port), timeout=10) as raw:
        raw.sendall(
            f"PUT {obj('receipts', 'huge.bin')} HTTP/1.1\r\nHost: x\r\n"
            f"Content-Length: {MAX_OBJECT_BYTES + 1}\r\n"
            f"Authorization: Bearer {world.tokens['user-a']}\r\n\r\n".encode()
        )
        # No body was sent: the whole answer comes from the header alone.
        answer = http.client.HTTPResponse(raw)
        answer.begin()
        body = answer.read()
    assert answer.status == 413, body
    assert json.loads(body)["error"]["code"] == "payload_too_large"
    with world.client("user-a") as a:
        assert a.head(obj("receipts", "huge.bin")).status_code == 404


def test_an_upload_must_say_its_length(world: World) -> None:
    with world.client("user-a") as a:
        response = a.put(obj("receipts", "chunked"), content=iter([b"a", b"b"]))
        assert (response.status_code, error_code(response)) == (411, "length_required")


def test_an_upload_cut_off_midway_leaves_the_previous_object(world: World) -> None:
    key = f"cut-{uuid.uuid4().hex[:6]}.bin"
    with world.client("user-a") as a:
        assert a.put(obj("tiny", key), content=b"old" * 10).status_code == 201
    host, port = urlsplit(world.url).hostname, urlsplit(world.url).port
    for sent in [0, 499, *random.Random(7).sample(range(1, 499), 3)]:  # killed at seeded random offsets
        with socket.create_connection((host, port)) as raw:
            raw.sendall(
                f"PUT {obj('tiny', key)} HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n"
                f"Authorization: Bearer {world.tokens['user-a']}\r\n\r\n".encode()
                + b"n" * sent
            )
        deadline = time.monotonic() + 10
        with world.client("user-a") as a:
            while time.monotonic() < deadline:  # the server notices the closed connection, and gives back
                tiny = next(b for b in a.get("/api/v1/storage").json()["buckets"] if b["name"] == "tiny")
                if tiny["used_bytes"] == 30:
                    break
                time.sleep(0.05)
            assert tiny["used_bytes"] == 30, sent
            assert a.get(obj("tiny", key)).content == b"old" * 10
    with world.client("user-a") as a:
        assert a.delete(obj("tiny", key)).status_code == 204


# Presigned URLs


def test_presigned_urls_are_good_for_one_object_and_one_method_until_they_expire(world: World) -> None:
    key = f"presigned/{uuid.uuid4().hex}.png"
    image = png()
    with world.client("user-a") as a:
        unsized = a.post("/api/v1/storage/receipts/presign", json={"key": key, "method": "PUT"})
        assert unsized.status_code == 400 and "size" in unsized.json()["error"]["message"]
        made = a.post(
            "/api/v1/storage/receipts/presign",
            json={"key": key, "method": "PUT", "expires_in": 60, "size": len(image)},
        )
        assert made.status_code == 200, made.text
        assert made.json()["size"] == len(image)
        put_url = made.json()["url"]
        if world.backend == "s3":
            assert put_url.startswith(world.server.env["MODELPORT_S3_ENDPOINT_URL"])
        else:
            assert put_url.startswith(world.url)
        # Only the size the URL was made for: neither more (past the quota or limit) nor less.
        assert httpx.put(put_url, content=image + b"more").status_code == 403
        assert httpx.put(put_url, content=image[:-1]).status_code == 403
        assert a.get(obj("receipts", key)).status_code == 404
        # A web client uploads with the URL alone, no token.
        assert httpx.put(put_url, content=image).status_code in (200, 201)
        assert a.get(obj("receipts", key)).content == image
        assert httpx.get(put_url).status_code == 403  # a PUT URL does not read
        get_url = a.post("/api/v1/storage/receipts/presign", json={"key": key}).json()["url"]
        assert httpx.get(get_url).content == image
        assert httpx.put(get_url, content=b"overwrite").status_code == 403
        other = get_url.replace(quote(key, safe="/"), quote(key + "x", safe="/"))
        assert httpx.get(other).status_code == 403
        short = a.post("/api/v1/storage/receipts/presign", json={"key": key, "expires_in": 1}).json()["url"]
        deadline = time.monotonic() + 10  # signed to the whole second: it expires within one second
        while (expired := httpx.get(short)).status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert expired.status_code == 403, f"a 1 s URL still answers {expired.status_code} after 10 s"
        assert ("<Code>AccessDenied</Code>" if world.backend == "s3" else "has expired") in expired.text
        assert a.get(obj("receipts", key)).content == image
        too_long = a.post("/api/v1/storage/receipts/presign", json={"key": key, "expires_in": 10**8})
        assert too_long.status_code in (400, 422)
    with world.client("auditor") as auditor:  # readers may not hand out upload URLs
        refused = auditor.post(
            "/api/v1/storage/receipts/presign", json={"key": key, "method": "PUT", "size": 1}
        )
        assert refused.status_code == 403


# Request files


def test_a_module_reads_a_stored_object_the_caller_may_read(world: World) -> None:
    key = f"receipts/{uuid.uuid4().hex}.png"
    image = png(5, 2)
    with world.client("user-a") as a:
        url = a.post(
            "/api/v1/storage/receipts/presign", json={"key": key, "method": "PUT", "size": len(image)}
        ).json()["url"]
        assert httpx.put(url, content=image).status_code in (200, 201)
        called = a.post(
            "/api/v1/modules/mirror/predict", json={"inputs": {"image": {"object": f"receipts/{key}"}}}
        )
        assert called.status_code == 200, called.text
        outputs = called.json()["outputs"]
        assert outputs["width"] == 5
        assert outputs["info"]["image"]["content_type"] == "image/png"
        assert outputs["info"]["image"]["size"] == len(image)
        mirrored = outputs["mirrored"]
        assert mirrored["content_type"] == "image/png" and mirrored["size"] > 0
        fetched = a.get(mirrored["url"])
        assert fetched.status_code == 200 and fetched.headers["content-type"] == "image/png"
        assert len(fetched.content) == mirrored["size"]
    with world.client("user-b") as b:
        assert b.get(mirrored["url"]).status_code == 404  # another caller's output
        refused = b.post(
            "/api/v1/modules/mirror/predict", json={"inputs": {"image": {"object": f"receipts/{key}"}}}
        )
        assert refused.status_code == 422
        (problem,) = refused.json()["error"]["details"]
        assert problem["field"] == "inputs.image" and problem["code"] == "object_not_found"
        missing = b.post(
            "/api/v1/modules/mirror/predict", json={"inputs": {"image": {"object": "receipts/no-such.png"}}}
        )
        assert missing.status_code == 422  # the same answer as for an object one may not read
        assert missing.json()["error"]["details"] == [
            {**problem, "message": problem["message"].replace(f"receipts/{key}", "receipts/no-such.png")}
        ]


def test_a_stored_object_is_held_to_the_field_limits_before_any_worker_sees_it(world: World) -> None:
    key = f"big/{uuid.uuid4().hex}.png"
    big = png() + b"\0" * (1024 * 1024 + 1)  # past the field's `max size 1 MB`
    with world.client("user-a") as a:
        assert a.put(obj("receipts", key), content=big).status_code == 201
        refused = a.post(
            "/api/v1/modules/mirror/predict", json={"inputs": {"image": {"object": f"receipts/{key}"}}}
        )
        assert refused.status_code == 413
        (problem,) = refused.json()["error"]["details"]
        assert (problem["field"], problem["code"]) == ("inputs.image", "file_too_large")
        text = f"text/{uuid.uuid4().hex}.png"
        assert a.put(obj("receipts", text), content=b"not an image at all").status_code == 201
        wrong = a.post(
            "/api/v1/modules/mirror/predict", json={"inputs": {"image": {"object": f"receipts/{text}"}}}
        )
        assert wrong.status_code == 422
        assert wrong.json()["error"]["details"][0]["code"] == "content_type"


def test_uploads_of_synchronous_calls_are_kept_in_the_request_bucket(world: World) -> None:
    image = png(3, 3)
    with world.client("user-b") as b:
        called = b.post(
            "/api/v1/modules/mirror/predict", files={"inputs.image": ("r.png", image, "image/png")}
        )
        assert called.status_code == 200, called.text
        request_id = called.json()["request_id"]
    with world.client("admin") as admin:
        deadline = time.monotonic() + 10
        kept: list[dict[str, Any]] = []
        while time.monotonic() < deadline and not kept:
            listing = admin.get("/api/v1/storage/requests", params={"prefix": "uploads/"}).json()
            kept = [o for o in listing["objects"] if f"/{request_id}/" in o["key"]]
            time.sleep(0.05)
        assert [o["key"].rsplit("/", 1)[1] for o in kept] == ["image"]
        assert admin.get(obj("requests", kept[0]["key"])).content == image
    with world.client("user-b") as b:  # callers do not browse the request bucket
        assert b.get("/api/v1/storage/requests").status_code == 404


# Model weights


def test_a_module_serves_two_weight_sets_from_a_bucket_selected_by_model_key(
    world: World, tmp_path: Path
) -> None:
    # The operator ships both weight sets with the command line.
    weights = tmp_path / "shipped"
    for key in ("a", "b"):
        (weights / key).mkdir(parents=True)
        (weights / key / "weights.txt").write_text(f"weights of {key}")
    env = {**os.environ, "MODELPORT_URL": world.url, "MODELPORT_TOKEN": ADMIN_TOKEN}
    env["MODELPORT_CONFIG_DIR"] = str(tmp_path / "config")
    shipped = subprocess.run(
        [sys.executable, "-m", "modelport", "storage", "cp", "-r", str(weights), "models/digits/"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert shipped.returncode == 0, shipped.stderr
    assert "models/digits/b/weights.txt" in shipped.stdout
    with world.client("admin") as admin:
        directory = tmp_path / "weights"
        shutil.copytree(FIXTURES / "weights", directory, ignore=shutil.ignore_patterns("__pycache__"))
        assert push(admin, directory, version="v1").status_code == 201
        built = wait_built(admin, "weights", "v1")
        assert built["build_status"] == "ready", built["build_error"]
        wait_deployment(admin, "weights", deploy(admin, "weights", "v1")["generation"])

        def call(**extra: Any) -> dict[str, Any]:
            response = admin.post("/api/v1/modules/weights/predict", json={"inputs": {"text": "x"}, **extra})
            assert response.status_code == 200, response.text
            outputs: dict[str, Any] = response.json()["outputs"]
            return outputs

        assert call() == {"weights": "weights of a", "key": "a"}
        assert call(model_key="b") == {"weights": "weights of b", "key": "b"}
        assert call(model_key="a") == {"weights": "weights of a", "key": "a"}
        missing = admin.post(
            "/api/v1/modules/weights/predict", json={"inputs": {"text": "x"}, "model_key": "c"}
        )
        assert (missing.status_code, error_code(missing)) == (404, "model_not_found")
        assert call(model_key="b")["weights"] == "weights of b"


def test_a_module_loads_weights_only_from_a_bucket_its_owner_group_may_read(
    world: World, tmp_path: Path
) -> None:
    with world.client("admin") as admin:
        assert admin.put(obj("models", "digits/a/weights.txt"), content=b"weights of a").status_code == 201
        directory = tmp_path / "borrower"
        shutil.copytree(FIXTURES / "weights", directory, ignore=shutil.ignore_patterns("__pycache__"))
        manifest = (directory / "modelport.yaml").read_text()
        (directory / "modelport.yaml").write_text(
            manifest.replace("{name: weights}", "{name: borrower}") + "  owner: /team-b\n"
        )
        assert push(admin, directory, version="v1").status_code == 201
        assert wait_built(admin, "borrower", "v1")["build_status"] == "ready"
        deployment = wait_deployment(admin, "borrower", deploy(admin, "borrower", "v1")["generation"])
        assert deployment["status"] == "failed"  # nothing serves
        assert "/team-b, which may not read bucket 'models'" in deployment["message"]
        assert (deployment["rollout"]["version"], deployment["rollout"]["status"]) == ("v1", "failed")
        called = admin.post("/api/v1/modules/borrower/predict", json={"inputs": {"text": "x"}})
        assert called.status_code in (404, 503)


def test_a_version_whose_weights_fail_their_checksum_never_takes_traffic(
    world: World, tmp_path: Path
) -> None:
    with world.client("admin") as admin:
        for path, text in [("served/a", "good weights"), ("broken/a", "good weights, soon flipped")]:
            assert admin.put(obj("models", f"{path}/weights.txt"), content=text.encode()).status_code == 201
        flip_a_byte(world, "models", "broken/a/weights.txt")
        directory = tmp_path / "checked"
        shutil.copytree(FIXTURES / "weights", directory, ignore=shutil.ignore_patterns("__pycache__"))
        manifest = (directory / "modelport.yaml").read_text().replace("{name: weights}", "{name: checked}")
        for version, path in [("v1", "served"), ("v2", "broken")]:
            (directory / "modelport.yaml").write_text(manifest.replace("path: digits", f"path: {path}"))
            assert push(admin, directory, version=version).status_code == 201
            assert wait_built(admin, "checked", version)["build_status"] == "ready"
        assert (
            wait_deployment(admin, "checked", deploy(admin, "checked", "v1")["generation"])["status"]
            == "ready"
        )
        deployment = wait_deployment(admin, "checked", deploy(admin, "checked", "v2")["generation"])
        assert deployment["status"] == "ready", deployment  # v1 serves on; the rollout of v2 failed
        failed = deployment["rollout"]
        assert (failed["version"], failed["status"]) == ("v2", "failed"), deployment
        assert "does not match" in failed["message"] or "checksum" in failed["message"], deployment
        assert deployment["version"] == "v1"
        called = admin.post("/api/v1/modules/checked/predict", json={"inputs": {"text": "x"}})
        assert called.status_code == 200
        assert called.headers["x-model-version"] == "v1"
        assert called.json()["outputs"]["weights"] == "good weights"
        with pytest.raises(httpx.RemoteProtocolError):  # and a download of it is cut short
            admin.get(obj("models", "broken/a/weights.txt"))


def flip_a_byte(world: World, bucket: str, key: str) -> None:
    """Rot one bit of a stored object behind the platform's back, keeping its recorded checksum."""
    if world.backend == "local":
        directory = world.server.data_dir / "objects" / bucket
        pointer = json.loads((directory / "keys" / key / "%00object.json").read_text())
        data = directory / "data" / pointer["data"]
        rotten = bytearray(data.read_bytes())
        rotten[3] ^= 0x01
        data.write_bytes(bytes(rotten))
        return
    env = world.server.env
    s3 = boto3.client(
        "s3",
        endpoint_url=env["MODELPORT_S3_ENDPOINT_URL"],
        aws_access_key_id=env["MODELPORT_S3_ACCESS_KEY_ID"],
        aws_secret_access_key=env["MODELPORT_S3_SECRET_ACCESS_KEY"],
        region_name=env["MODELPORT_S3_REGION"],
    )
    physical = env["MODELPORT_S3_BUCKET_PREFIX"] + bucket
    stored = s3.get_object(Bucket=physical, Key=key)
    rotten = bytearray(stored["Body"].read())
    rotten[3] ^= 0x01
    s3.put_object(Bucket=physical, Key=key, Body=bytes(rotten), Metadata=stored["Metadata"])


def test_a_download_racing_an_overwrite_gets_one_whole_object(world: World) -> None:
    key = f"race-{uuid.uuid4().hex[:6]}.bin"
    payloads = [b"a" * 3000, b"b" * 70_000]
    stop = threading.Event()

    def overwrite() -> None:
        with world.client("user-a") as writer:
            turn = 0
            while not stop.is_set():
                writer.put(obj("receipts", key), content=payloads[turn % 2])
                turn += 1

    with world.client("user-a") as a:
        assert a.put(obj("receipts", key), content=payloads[0]).status_code == 201
        thread = threading.Thread(target=overwrite)
        thread.start()
        try:
            outcomes = []
            for _ in range(150):
                response = a.get(obj("receipts", key))
                if response.status_code == 503:  # it kept changing under three attempts
                    outcomes.append("retry")
                    continue
                assert response.status_code == 200
                assert response.content in payloads
                assert int(response.headers["content-length"]) == len(response.content)
                outcomes.append("whole")
        finally:
            stop.set()
            thread.join(30)
        assert outcomes.count("whole") > 100
