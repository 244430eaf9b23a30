"""Turn request file values into checked files on local disk, before any worker sees them.

The content type is sniffed from the bytes, never trusted from the request; sizes are checked against the
field's `max size` and the server's upload limit; images are decoded far enough to read their dimensions and
refused above the pixel cap (which also stops decompression bombs).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import puremagic
from PIL import Image

from modelport.core.errors import BadRequest, NotFound, PayloadTooLarge, ValidationFailed
from modelport.core.protocol import FileRef
from modelport.sdk import ApiSpec, FieldSpec
from modelport.sdk.validation import DataFile, ObjectFile, ParsedRequest, UploadedFile

__all__ = ["WORK_FILES_SECONDS", "FileChecker", "remove_stale", "sniff"]

WORK_FILES_SECONDS = 86_400 + 3600
"""How old a request's work files (its uploads, a call's file outputs) must be before they are taken for what
a crash or a failed call left behind: longer than any call may run (`timeoutSeconds` is at most a day)."""

_ALIASES = {
    "audio/wave": "audio/wav",
    "audio/x-wav": "audio/wav",
    "audio/vnd.wave": "audio/wav",
    "image/jpg": "image/jpeg",
    "image/pjpeg": "image/jpeg",
    "audio/x-flac": "audio/flac",
}
_TEXT_TYPES = ("text/", "application/json", "application/x-ndjson", "application/xml")


def remove_stale(directory: Path, *, older_than: float, now: float) -> int:
    """Remove the entries of `directory` last changed more than `older_than` seconds before `now` (a
    `time.time()`); returns how many went. Entries that vanish meanwhile are skipped."""
    removed = 0
    with contextlib.suppress(FileNotFoundError), os.scandir(directory) as entries:
        for entry in entries:
            try:
                if now - entry.stat(follow_symlinks=False).st_mtime <= older_than:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)
                removed += 1
            except FileNotFoundError:
                continue
    return removed


def sniff(path: Path, declared: str) -> str:
    """The content type of the file at `path`, judged from its first bytes."""
    with path.open("rb") as stream:
        head = stream.read(8192)
    try:
        found = puremagic.from_string(head, mime=True) if head else ""
    except puremagic.PureError:
        found = ""
    if found:
        return _ALIASES.get(found, found)
    declared = declared.split(";", 1)[0].strip().lower()
    if declared.startswith(_TEXT_TYPES) and _is_text(head):
        return declared
    return "text/plain" if head and _is_text(head) else "application/octet-stream"


def _is_text(head: bytes) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start >= len(head) - 3  # a character cut at the end of the sample
    return b"\x00" not in head


FetchObject = Callable[[str, int], UploadedFile]
"""Copies the stored object `bucket/key` (at most the given bytes) to a local file, for the caller."""


class FileChecker:
    """Checks and stores the file values of one request under `directory`.

    `fetch` reads `{"object": "bucket/key"}` values; without it they are refused.
    """

    def __init__(
        self,
        *,
        directory: Path,
        max_upload_bytes: int,
        max_image_pixels: int,
        fetch: FetchObject | None = None,
    ) -> None:
        self.directory = directory
        self.max_upload_bytes = max_upload_bytes
        self.max_image_pixels = max_image_pixels
        self.fetch = fetch

    def resolve(self, spec: ApiSpec, request: ParsedRequest) -> None:
        """Replace every file value in `request.records` with a checked `FileRef` dict, in place."""
        problems: list[dict[str, str]] = []
        too_large: list[dict[str, str]] = []
        for index, record in enumerate(request.records):
            prefix = f"inputs[{index}]" if request.batch else "inputs"
            for field in spec.inputs:
                if field.has_file and field.name in record:
                    label = f"{prefix}.{field.name}"
                    record[field.name] = self._resolve_value(
                        field, record[field.name], label, problems, too_large
                    )
        if too_large:
            raise PayloadTooLarge("a file is larger than allowed", details=too_large)
        if problems:
            raise ValidationFailed("the request does not match the module's API", details=problems)

    def _resolve_value(
        self,
        field: FieldSpec,
        value: Any,
        label: str,
        problems: list[dict[str, str]],
        large: list[dict[str, str]],
    ) -> Any:
        if isinstance(value, list):
            return [
                self._resolve_value(field, v, f"{label}[{i}]", problems, large) for i, v in enumerate(value)
            ]
        reference = value.ref if isinstance(value, ObjectFile) else None
        if isinstance(value, ObjectFile):
            if self.fetch is None:
                problems.append(
                    _problem(label, "not_supported", "stored objects are not available on this server")
                )
                return None
            limit = min(field.max_bytes or self.max_upload_bytes, self.max_upload_bytes)
            try:
                value = self.fetch(value.ref, limit)
            except PayloadTooLarge as exc:
                large.append(_problem(label, "file_too_large", exc.message))
                return None
            except NotFound as exc:
                problems.append(_problem(label, "object_not_found", exc.message))
                return None
            except BadRequest as exc:
                problems.append(_problem(label, exc.code, exc.message))
                return None
        if isinstance(value, DataFile):
            value = self._write(value)
        if not isinstance(value, UploadedFile):
            return value
        checked = self._check(field, value, label, problems, large)
        if reference is not None and checked is not None:
            checked["object"] = reference  # the request log names the object, never the local copy
        return checked

    def _write(self, data_file: DataFile) -> UploadedFile:
        handle, path = tempfile.mkstemp(dir=self.directory, prefix="data-")
        with os.fdopen(handle, "wb") as stream:
            stream.write(data_file.data)
        return UploadedFile(path, Path(path).name, data_file.content_type, len(data_file.data))

    def _check(
        self,
        field: FieldSpec,
        upload: UploadedFile,
        label: str,
        problems: list[dict[str, str]],
        large: list[dict[str, str]],
    ) -> dict[str, Any] | None:
        limit = min(field.max_bytes or self.max_upload_bytes, self.max_upload_bytes)
        if upload.size > limit:
            large.append(
                _problem(label, "file_too_large", f"{upload.size} bytes; the limit is {limit} bytes")
            )
            return None
        file_type = field.file_type
        assert file_type is not None
        content_type = sniff(Path(upload.path), upload.content_type)
        if not file_type.accepts_mime(content_type):
            accepted = ", ".join(file_type.mime)
            problems.append(
                _problem(label, "content_type", f"the file is {content_type}; expected {accepted}")
            )
            return None
        if content_type.startswith("image/") and (problem := self._check_image(Path(upload.path))):
            (large if problem[0] == "image_too_large" else problems).append(_problem(label, *problem))
            return None
        ref = FileRef(path=upload.path, content_type=content_type, filename=upload.filename, size=upload.size)
        return {
            "path": ref.path,
            "content_type": ref.content_type,
            "filename": ref.filename,
            "size": ref.size,
        }

    def _check_image(self, path: Path) -> tuple[str, str] | None:
        pillow_limit = Image.MAX_IMAGE_PIXELS
        try:
            # Only the header is read here, so Pillow's own cap is lifted and ours, below, is the one that
            # applies (no await inside, so nothing else runs while the global is changed).
            Image.MAX_IMAGE_PIXELS = None
            with Image.open(path) as image:
                width, height = image.size
        except (OSError, SyntaxError, ValueError) as exc:
            return "bad_image", f"the image cannot be decoded: {exc}"
        finally:
            Image.MAX_IMAGE_PIXELS = pillow_limit
        if width * height > self.max_image_pixels:
            return "image_too_large", f"{width}x{height} pixels; the limit is {self.max_image_pixels} pixels"
        return None


def _problem(field: str, code: str, message: str) -> dict[str, str]:
    return {"field": field, "code": code, "message": message}
