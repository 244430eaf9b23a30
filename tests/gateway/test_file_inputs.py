"""File inputs over HTTP against the `files` fixture module.

`inputs.image` is `image/png or image/jpeg, max size 1 MB`, `inputs.document` is any optional file; the module
answers with the image mirrored (a PNG output served by URL), its width and what it saw of each file.
"""

from __future__ import annotations

import base64
import io
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

URL = "/api/v1/modules/files/predict"
MB = 1024 * 1024


def picture(width: int, height: int, image_format: str = "PNG") -> bytes:
    """An RGB image, red on its left half and blue on its right half."""
    image = Image.new("RGB", (width, height), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, width // 2, height))
    buffer = io.BytesIO()
    image.save(buffer, format=image_format)
    return buffer.getvalue()


def noise_png(width: int, height: int) -> bytes:
    """A greyscale PNG of random pixels: it does not compress, so its size is about width x height bytes."""
    buffer = io.BytesIO()
    Image.frombytes("L", (width, height), os.urandom(width * height)).save(buffer, format="PNG")
    return buffer.getvalue()


def bilevel_png(width: int, height: int) -> bytes:
    """A valid, all-black 1-bit PNG; zlib shrinks its rows of zeros to almost nothing."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed pixels
    compressor = zlib.compressobj(9)
    pixels = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def data_url(data: bytes, content_type: str = "image/png") -> str:
    return f"data:{content_type};base64,{base64.b64encode(data).decode()}"


def detail(field: str, code: str, message: str) -> dict[str, str]:
    return {"field": field, "code": code, "message": message}


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}
    return body["error"]


def outputs_made(tmp_path: Path) -> int:
    """Output files the module wrote: one per call that reached it."""
    outputs = tmp_path / "data" / "outputs"
    return len(list(outputs.iterdir())) if outputs.exists() else 0


def uploads_left(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "data" / "uploads").rglob("*"))


# Accepted files


async def test_png_upload_reaches_the_module_as_a_checked_file(fixture_module, serve, tmp_path):
    image = picture(30, 20)
    async with serve(fixture_module("files")) as served:
        response = await served.client.post(URL, files={"inputs.image": ("photo.png", image, "image/png")})
        assert response.status_code == 200
        outputs = response.json()["outputs"]
        assert outputs["width"] == 30
        assert outputs["info"] == {
            "image": {
                "content_type": "image/png",
                "filename": "photo.png",
                "size": len(image),
                "bytes_match": True,
            },
            "document": None,
        }
        mirrored = outputs["mirrored"]
        assert set(mirrored) == {"url", "content_type", "size"}
        assert mirrored["content_type"] == "image/png"
        assert mirrored["url"].startswith("/api/v1/modules/files/outputs/mirrored-")

        served_file = await served.client.get(mirrored["url"])
        assert served_file.status_code == 200
        assert served_file.headers["content-type"] == "image/png"
        assert len(served_file.content) == mirrored["size"]
        with Image.open(io.BytesIO(served_file.content)) as result:
            assert result.format == "PNG"
            assert result.size == (30, 20)
            assert result.convert("RGB").getpixel((0, 0)) == (0, 0, 255)  # mirrored: blue is now on the left
            assert result.convert("RGB").getpixel((29, 0)) == (255, 0, 0)
    assert uploads_left(tmp_path) == []


async def test_jpeg_upload_is_accepted(fixture_module, serve):
    image = picture(64, 48, "JPEG")
    async with serve(fixture_module("files")) as served:
        response = await served.client.post(URL, files={"inputs.image": ("shot.jpeg", image, "image/jpeg")})
        assert response.status_code == 200
        outputs = response.json()["outputs"]
        assert outputs["width"] == 64
        assert outputs["info"]["image"] == {
            "content_type": "image/jpeg",
            "filename": "shot.jpeg",
            "size": len(image),
            "bytes_match": True,
        }


async def test_the_sniffed_type_wins_over_a_mislabelled_upload(fixture_module, serve):
    image = picture(8, 8)
    async with serve(fixture_module("files")) as served:
        for filename, declared in (
            ("photo.jpg", "image/jpeg"),
            ("photo", "application/octet-stream"),
            ("x.txt", ""),
        ):
            response = await served.client.post(URL, files={"inputs.image": (filename, image, declared)})
            assert response.status_code == 200, declared
            assert response.json()["outputs"]["info"]["image"]["content_type"] == "image/png"
            assert response.json()["outputs"]["info"]["image"]["filename"] == filename


async def test_a_text_file_labelled_as_png_is_refused(fixture_module, serve, tmp_path):
    async with serve(fixture_module("files")) as served:
        response = await served.client.post(
            URL, files={"inputs.image": ("photo.png", b"just some text, honestly\n", "image/png")}
        )
        assert response.status_code == 422
        error = error_of(response)
        assert error["code"] == "validation_failed"
        assert error["details"] == [
            detail("inputs.image", "content_type", "the file is text/plain; expected image/png, image/jpeg")
        ]
        assert outputs_made(tmp_path) == 0
    assert uploads_left(tmp_path) == []


async def test_an_empty_upload_is_not_an_image(fixture_module, serve, tmp_path):
    async with serve(fixture_module("files")) as served:
        response = await served.client.post(URL, files={"inputs.image": ("empty.png", b"", "image/png")})
        assert response.status_code == 422
        assert error_of(response)["details"] == [
            detail(
                "inputs.image",
                "content_type",
                "the file is application/octet-stream; expected image/png, image/jpeg",
            )
        ]
        assert outputs_made(tmp_path) == 0


async def test_a_png_data_url_in_json_works(fixture_module, serve, tmp_path):
    image = picture(12, 6)
    async with serve(fixture_module("files")) as served:
        response = await served.predict(inputs={"image": data_url(image)})
        assert response.status_code == 200
        outputs = response.json()["outputs"]
        assert outputs["width"] == 12
        info = outputs["info"]["image"]
        assert (info["content_type"], info["size"], info["bytes_match"]) == ("image/png", len(image), True)
        mislabelled = await served.predict(inputs={"image": data_url(image, "text/plain")})
        assert mislabelled.status_code == 200
        assert mislabelled.json()["outputs"]["info"]["image"]["content_type"] == "image/png"
    assert uploads_left(tmp_path) == []


async def test_a_list_of_records_with_data_urls_answers_in_order(fixture_module, serve):
    async with serve(fixture_module("files")) as served:
        widths = [7, 3, 11]
        response = await served.predict(inputs=[{"image": data_url(picture(w, 5))} for w in widths])
        assert response.status_code == 200
        assert [o["width"] for o in response.json()["outputs"]] == widths


async def test_a_bad_base64_data_url_is_refused(fixture_module, serve, tmp_path):
    async with serve(fixture_module("files")) as served:
        response = await served.predict(inputs={"image": "data:image/png;base64,iVBORw0KGgo*not-base64*"})
        assert response.status_code == 422
        assert error_of(response)["details"] == [
            detail("inputs.image", "type", 'expected a file: {"object": "bucket/key"} or a data: URL')
        ]
        assert outputs_made(tmp_path) == 0


async def test_a_stored_object_reference_is_not_supported_here(fixture_module, serve, tmp_path):
    async with serve(fixture_module("files")) as served:
        response = await served.predict(inputs={"image": {"object": "bucket/key.png"}})
        assert response.status_code == 422
        assert error_of(response)["details"] == [
            detail("inputs.image", "not_supported", "stored objects are not available on this server")
        ]
        batch = await served.predict(
            inputs=[{"image": data_url(picture(4, 4))}, {"image": {"object": "b/k"}}]
        )
        assert batch.status_code == 422
        assert error_of(batch)["details"] == [
            detail("inputs[1].image", "not_supported", "stored objects are not available on this server")
        ]
        assert outputs_made(tmp_path) == 0
    assert uploads_left(tmp_path) == []


async def test_an_optional_document_of_arbitrary_bytes(fixture_module, serve):
    blob = bytes(range(256)) * 4
    async with serve(fixture_module("files")) as served:
        response = await served.client.post(
            URL,
            files={
                "inputs.image": ("photo.png", picture(4, 4), "image/png"),
                "inputs.document": ("blob.bin", blob, "application/octet-stream"),
            },
        )
        assert response.status_code == 200
        assert response.json()["outputs"]["info"]["document"] == {
            "content_type": "application/octet-stream",
            "filename": "blob.bin",
            "size": len(blob),
        }


async def test_a_text_part_for_a_file_field_is_refused(fixture_module, serve):
    async with serve(fixture_module("files")) as served:
        response = await served.client.post(
            URL,
            data={"inputs.document": "not a file"},
            files={"inputs.image": ("photo.png", picture(4, 4), "image/png")},
        )
        assert response.status_code == 422
        assert error_of(response)["details"] == [detail("inputs.document", "type", "expected a file part")]


# Sizes


async def test_a_file_over_the_fields_max_size_is_413(fixture_module, serve, tmp_path):
    image = noise_png(1100, 1000)
    assert len(image) > MB
    async with serve(fixture_module("files")) as served:
        response = await served.client.post(URL, files={"inputs.image": ("big.png", image, "image/png")})
        assert response.status_code == 413
        error = error_of(response)
        assert error["code"] == "payload_too_large"
        assert error["details"] == [
            detail("inputs.image", "file_too_large", f"{len(image)} bytes; the limit is {MB} bytes")
        ]
        inline = await served.predict(inputs={"image": data_url(image)})
        assert inline.status_code == 413
        assert error_of(inline)["details"] == error["details"]
        assert outputs_made(tmp_path) == 0
    assert uploads_left(tmp_path) == []


async def test_the_servers_upload_limit_applies_below_the_fields(fixture_module, serve, tmp_path):
    image = noise_png(60, 60)
    assert len(image) > 2048
    async with serve(fixture_module("files"), max_upload_bytes=2048) as served:
        response = await served.client.post(
            URL,
            files={
                "inputs.image": ("small.png", picture(4, 4), "image/png"),
                "inputs.document": ("big.png", image, "image/png"),
            },
        )
        assert response.status_code == 413
        assert error_of(response)["details"] == [
            detail("inputs.document", "file_too_large", f"{len(image)} bytes; the limit is 2048 bytes")
        ]
        response = await served.client.post(URL, files={"inputs.image": ("big.png", image, "image/png")})
        assert response.status_code == 413
        assert error_of(response)["details"] == [
            detail("inputs.image", "file_too_large", f"{len(image)} bytes; the limit is 2048 bytes")
        ]
        assert outputs_made(tmp_path) == 0


async def test_an_image_over_the_pixel_cap_is_413(fixture_module, serve, tmp_path):
    async with serve(fixture_module("files"), max_image_pixels=10_000) as served:
        response = await served.client.post(
            URL, files={"inputs.image": ("big.png", picture(200, 200), "image/png")}
        )
        assert response.status_code == 413
        error = error_of(response)
        assert error["code"] == "payload_too_large"
        assert error["details"] == [
            detail("inputs.image", "image_too_large", "200x200 pixels; the limit is 10000 pixels")
        ]
        assert outputs_made(tmp_path) == 0
        at_cap = await served.client.post(
            URL, files={"inputs.image": ("ok.png", picture(100, 100), "image/png")}
        )
        assert at_cap.status_code == 200
    assert uploads_left(tmp_path) == []


async def test_a_decompression_bomb_is_413(fixture_module, serve, tmp_path):
    bomb = bilevel_png(20_000, 20_000)
    assert len(bomb) < 100_000
    async with serve(fixture_module("files")) as served:
        response = await served.client.post(URL, files={"inputs.image": ("bomb.png", bomb, "image/png")})
        assert response.status_code == 413
        error = error_of(response)
        assert error["code"] == "payload_too_large"
        assert error["details"] == [
            detail("inputs.image", "image_too_large", "20000x20000 pixels; the limit is 40000000 pixels")
        ]
        as_document = await served.client.post(
            URL,
            files={
                "inputs.image": ("ok.png", picture(4, 4), "image/png"),
                "inputs.document": ("bomb.png", bomb, "application/octet-stream"),
            },
        )
        assert as_document.status_code == 413
        assert [d["code"] for d in error_of(as_document)["details"]] == ["image_too_large"]
        assert outputs_made(tmp_path) == 0
    assert uploads_left(tmp_path) == []


async def test_the_configured_pixel_cap_is_the_one_applied(fixture_module, serve):
    """`max_image_pixels` may be set above Pillow's default bomb threshold (about 89 million pixels)."""
    large = bilevel_png(10_000, 9_500)  # 95 million pixels, a few kilobytes
    async with serve(fixture_module("files"), max_image_pixels=200_000_000) as served:
        response = await served.client.post(
            URL,
            files={
                "inputs.image": ("ok.png", picture(4, 4), "image/png"),
                "inputs.document": ("scan.png", large, "image/png"),
            },
        )
        assert response.status_code == 200, response.text
        assert response.json()["outputs"]["info"]["document"]["content_type"] == "image/png"


async def test_a_corrupt_png_is_a_bad_image(fixture_module, serve, tmp_path):
    corrupt = b"\x89PNG\r\n\x1a\n" + b"this is not a chunk" * 10
    async with serve(fixture_module("files")) as served:
        response = await served.client.post(URL, files={"inputs.image": ("broken.png", corrupt, "image/png")})
        assert response.status_code == 422
        error = error_of(response)
        assert error["code"] == "validation_failed"
        (problem,) = error["details"]
        assert (problem["field"], problem["code"]) == ("inputs.image", "bad_image")
        assert problem["message"].startswith("the image cannot be decoded: ")
        assert outputs_made(tmp_path) == 0
    assert uploads_left(tmp_path) == []


# Clean-up


async def test_upload_files_are_removed_after_every_request(fixture_module, serve, tmp_path):
    async with serve(fixture_module("files")) as served:
        image = picture(10, 10)
        answers = [
            await served.client.post(URL, files={"inputs.image": ("a.png", image, "image/png")}),
            await served.client.post(URL, files={"inputs.image": ("a.png", b"text", "image/png")}),
            await served.client.post(
                URL, data={"inputs.other": "x"}, files={"inputs.image": ("a.png", image, "image/png")}
            ),
            await served.predict(inputs={"image": data_url(image)}),
            await served.predict(
                inputs=[{"image": data_url(image)}, {"image": data_url(b"\x89PNG\r\n\x1a\nxx")}]
            ),
        ]
        assert [a.status_code for a in answers] == [200, 422, 422, 200, 422]
        uploads = tmp_path / "data" / "uploads"
        assert uploads.is_dir()
        assert uploads_left(tmp_path) == []
