"""The files of requests, kept in the request bucket: stored objects a request names, the uploads of
synchronous calls, and file outputs.

- A file input given as `{"object": "bucket/key"}` is read for the caller only if the caller may read that
  bucket; otherwise the answer is the same as for an object that does not exist.
- Files uploaded with a request (multipart parts, `data:` URLs) are kept under
  `uploads/<caller>/<date>/<request id>/` for the request log, as long as the bucket's retention says.
- File outputs are stored under `outputs/<caller>/<module>/<field>-<128 random bits>`; only that caller can
  fetch them (`/api/v1/modules/<module>/outputs/<name>`, where the module's CORS rules apply), and nobody can
  guess their names.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from modelport.control.identity import Principal
from modelport.core.errors import (
    BadModuleOutput,
    ModelportError,
    NotFound,
    ObjectNotFound,
    PayloadTooLarge,
    Unauthorized,
)
from modelport.sdk.validation import UploadedFile
from modelport.storage import ObjectReader, ObjectStore, check_key

__all__ = ["Readable", "RequestFiles"]

log = logging.getLogger("modelport.requests")

Readable = Callable[[Principal, str], None]
"""Raises unless the principal may read the named bucket (`BucketNotFound`, `Unauthorized`)."""


class RequestFiles:
    """Request files in `bucket` of `store`; `readable` checks callers' access to the buckets they name."""

    def __init__(self, store: ObjectStore, *, bucket: str, readable: Readable | None) -> None:
        self.store, self.bucket, self.readable = store, bucket, readable

    def fetcher(self, principal: Principal, directory: Path) -> Callable[[str, int], UploadedFile] | None:
        """A function fetching `bucket/key` objects for `principal` into `directory`, up to a size; None
        where requests may not name stored objects (the dev server)."""
        if self.readable is None:
            return None

        def fetch(reference: str, max_bytes: int) -> UploadedFile:
            return self.fetch(principal, reference, directory, max_bytes=max_bytes)

        return fetch

    def fetch(self, principal: Principal, reference: str, directory: Path, *, max_bytes: int) -> UploadedFile:
        """Copy the object `bucket/key` to a local file, checked against its recorded checksum."""
        bucket, _, key = reference.partition("/")
        missing = ObjectNotFound(f"no object {reference!r}, or none you may read")
        if self.readable is None or not bucket or not key:
            raise missing
        check_key(key)
        try:
            self.readable(principal, bucket)
            reader = self.store.reader(bucket, key)
        except (NotFound, Unauthorized):
            raise missing from None
        target = directory / f"object-{secrets.token_hex(8)}"
        with reader, target.open("wb") as out:
            info = reader.info
            if info.size > max_bytes:
                raise PayloadTooLarge(f"{info.size} bytes; the limit is {max_bytes} bytes")
            for chunk in reader:
                out.write(chunk)
        return UploadedFile(str(target), key.rsplit("/", 1)[-1], info.content_type, info.size)

    @staticmethod
    def upload_key(owner: str, request_id: str, name: str, *, at: float) -> str:
        """The key an upload named `name` of a request that arrived at `at` (Unix seconds) is kept under."""
        day = datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d")
        return f"uploads/{owner}/{day}/{request_id}/{name}"

    def keep_uploads(self, request_id: str, files: list[tuple[str, Path, str]]) -> None:
        """Store each `(key, path, content type)` uploaded with a request (`upload_key`); failures are logged,
        not raised (the request has been answered)."""
        for key, path, content_type in files:
            name = key.rsplit("/", 1)[-1]
            try:
                with path.open("rb") as source:
                    self.store.put(self.bucket, key, source, content_type=content_type)
            except (OSError, ModelportError) as exc:
                log.warning("request %s: keeping upload %s failed: %s", request_id, name, exc)

    def publish_output(
        self, owner: str, module: str, field: str, path: Path, content_type: str, *, directory: Path
    ) -> str:
        """Store a file a module produced in `directory` (its workers' output directory); returns the name its
        caller fetches it by.

        The path comes from the worker, so from module code: only a regular file directly in `directory`, not
        a link of any kind, is taken, or a module could have the server publish (and then remove) any file the
        server can read, its database among them."""
        name = f"{field}-{secrets.token_hex(16)}{path.suffix}"
        with _output_file(path, directory) as source:
            self.store.put(self.bucket, f"outputs/{owner}/{module}/{name}", source, content_type=content_type)
        path.unlink(missing_ok=True)
        return name

    def open_output(self, owner: str, module: str, name: str, *, pipeline: bool = False) -> ObjectReader:
        """A file output `owner` was answered with by `module` (or by the pipeline of that name)."""
        if "/" in name or "/" in module:
            raise NotFound("no such output file")
        where = f"pipelines/{module}" if pipeline else module
        try:
            return self.store.reader(self.bucket, check_key(f"outputs/{owner}/{where}/{name}"))
        except ModelportError:
            raise NotFound("no such output file") from None


def _output_file(path: Path, directory: Path) -> BinaryIO:
    """`path` opened for reading if it is a regular file of one name directly in `directory`."""
    refused = BadModuleOutput(f"the module answered with a file outside its output directory: {path.name!r}")
    if Path(os.path.abspath(path)).parent != Path(os.path.abspath(directory)):
        raise refused
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        raise refused from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        os.close(fd)
        raise refused
    return os.fdopen(fd, "rb")
