"""The inference route: parse and validate the request, check its files, run it, shape the answer."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
from starlette.background import BackgroundTask
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response

from modelport.control.modules import ModuleRegistry, ServedModule, predict
from modelport.control.request_files import RequestFiles
from modelport.core.errors import BadRequest, InvalidJson, PayloadTooLarge, UnsupportedMediaType
from modelport.core.settings import Settings
from modelport.gateway.auth import owner_key, principal_of
from modelport.gateway.errors import error_response
from modelport.runtime.files import FileChecker
from modelport.sdk.validation import ParsedRequest, UploadedFile, parse_form, parse_json

__all__ = ["PredictRoute"]

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()
_FORMS = ("multipart/form-data", "application/x-www-form-urlencoded")


class PredictRoute:
    """`POST /api/v1/modules/{module}/predict`, for every module the registry serves."""

    def __init__(self, *, registry: ModuleRegistry, settings: Settings, files: RequestFiles) -> None:
        self.registry = registry
        self.settings = settings
        self.files = files
        self.uploads = settings.data_dir / "uploads"

    async def handle(self, request: Request) -> Response:
        request_id = os.urandom(16).hex()
        try:
            served = self.registry.get(request.path_params["module"], request.query_params.get("version"))
        except Exception as exc:
            return error_response(exc, request_id=request_id)
        served.in_flight += 1
        try:
            return await self._handle(request, served, request_id)
        finally:
            served.in_flight -= 1

    async def _handle(self, request: Request, served: ServedModule, request_id: str) -> Response:
        workdir: list[Path] = []
        kept: list[tuple[str, Path, str]] = []
        owner = owner_key(request.scope)
        try:
            parsed = await self._parse(request, served, lambda: self._workdir(workdir))
            if served.spec.has_file_inputs:
                directory = self._workdir(workdir)
                checker = self._checker(directory, request)
                await asyncio.to_thread(checker.resolve, served.spec, parsed)
                kept = _uploaded_files(served, parsed)
            outputs = await predict(served, parsed)
            if served.spec.has_file_outputs:
                await asyncio.to_thread(self._publish_all, served, outputs, owner)
            body = {
                "outputs": outputs if parsed.batch else outputs[0],
                "module": served.name,
                "version": served.version,
                "request_id": request_id,
            }
            headers = {"X-Request-Id": request_id, "X-Model-Version": served.version}
            response = Response(_encoder.encode(body), headers=headers, media_type="application/json")
        except Exception as exc:
            response = error_response(exc, request_id=request_id)
            response.headers["X-Model-Version"] = served.version
        if workdir:
            # The answer goes out first; keeping the uploads and removing the work files follow it.
            response.background = BackgroundTask(self._finish, workdir[0], owner, request_id, kept)
        return response

    def _finish(self, workdir: Path, owner: str, request_id: str, kept: list[tuple[str, Path, str]]) -> None:
        try:
            if kept:
                self.files.keep_uploads(owner, request_id, kept)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def _workdir(self, holder: list[Path]) -> Path:
        if not holder:
            self.uploads.mkdir(parents=True, exist_ok=True)
            holder.append(Path(tempfile.mkdtemp(dir=self.uploads)))
        return holder[0]

    def _checker(self, directory: Path, request: Request) -> FileChecker:
        return FileChecker(
            directory=directory,
            max_upload_bytes=self.settings.max_upload_bytes,
            max_image_pixels=self.settings.max_image_pixels,
            fetch=self.files.fetcher(principal_of(request.scope), directory),
        )

    async def _parse(
        self, request: Request, served: ServedModule, workdir: Callable[[], Path]
    ) -> ParsedRequest:
        content_type = (
            request.headers.get("content-type", "application/json").split(";", 1)[0].strip().lower()
        )
        if content_type in ("application/json", "") or content_type.endswith("+json"):
            return parse_json(served.spec, self._decode(await request.body()))
        if content_type in _FORMS:
            return parse_form(served.spec, await self._form(request, workdir))
        raise UnsupportedMediaType(
            f"content type {content_type!r} is not accepted; send application/json or multipart/form-data"
        )

    def _decode(self, body: bytes) -> Any:
        if not body:
            raise InvalidJson("the request body is empty; expected a JSON object")
        try:
            value = _decoder.decode(body)
        except msgspec.DecodeError as exc:
            raise InvalidJson(f"the request body is not valid JSON: {exc}") from None
        except RecursionError:
            raise BadRequest(
                f"the JSON body is nested deeper than {self.settings.max_json_depth} levels"
            ) from None
        if body.count(b"[") + body.count(b"{") > self.settings.max_json_depth:
            _check_depth(value, self.settings.max_json_depth)
        return value

    async def _form(
        self, request: Request, workdir: Callable[[], Path]
    ) -> list[tuple[str, str | UploadedFile]]:
        limit = self.settings.max_form_fields
        try:
            form = await request.form(
                max_files=limit, max_fields=limit, max_part_size=self.settings.max_body_bytes
            )
        except PayloadTooLarge:
            raise
        except Exception as exc:
            raise BadRequest(f"the form cannot be parsed: {exc}") from None
        items: list[tuple[str, str | UploadedFile]] = []
        try:
            for name, value in form.multi_items():
                if isinstance(value, UploadFile):
                    items.append((name, _save_upload(value, workdir())))
                else:
                    items.append((name, value))
        finally:
            await form.close()
        return items

    def _publish_all(self, served: ServedModule, records: list[dict[str, Any]], owner: str) -> None:
        """Replace file outputs (local paths from the worker) with URLs this server serves to the caller.

        Each file is stored as the caller's own, under a name with 128 random bits, so that one caller's
        outputs cannot be fetched by another, nor guessed.
        """
        for outputs in records:
            for field in served.spec.outputs:
                value = outputs.get(field.name)
                if field.has_file and isinstance(value, dict) and "path" in value:
                    name = self.files.publish_output(
                        owner,
                        served.name,
                        field.name,
                        Path(value["path"]),
                        value["content_type"],
                        directory=served.output_dir or self.settings.data_dir / "outputs",
                    )
                    outputs[field.name] = {
                        "url": f"/api/v1/modules/{served.name}/outputs/{name}",
                        "content_type": value["content_type"],
                        "size": value["size"],
                    }


def _uploaded_files(served: ServedModule, parsed: ParsedRequest) -> list[tuple[str, Path, str]]:
    """(name, path, content type) of each file sent with the request (not the stored objects it named)."""
    found: list[tuple[str, Path, str]] = []
    for index, record in enumerate(parsed.records):
        for field in served.spec.inputs:
            value = record.get(field.name)
            values = value if isinstance(value, list) else [value]
            for position, item in enumerate(values):
                if isinstance(item, dict) and "path" in item:
                    path = Path(item["path"])
                    if path.name.startswith("object-"):
                        continue
                    name = f"{index}-{field.name}" if parsed.batch else field.name
                    if isinstance(value, list):
                        name += f"-{position}"
                    found.append((name, path, item["content_type"]))
    return found


def _save_upload(upload: UploadFile, directory: Path) -> UploadedFile:
    handle = tempfile.NamedTemporaryFile(dir=directory, prefix="upload-", delete=False)  # noqa: SIM115
    with handle:
        upload.file.seek(0)
        shutil.copyfileobj(upload.file, handle, 1 << 20)
        size = handle.tell()
    content_type = (upload.content_type or "application/octet-stream").split(";", 1)[0]
    return UploadedFile(handle.name, upload.filename or "", content_type, size)


def _check_depth(value: Any, limit: int) -> None:
    """Refuse bodies whose objects and arrays nest deeper than `limit` (the outermost one is level 1)."""
    stack: list[tuple[Any, int]] = [(value, 1)] if isinstance(value, dict | list) else []
    while stack:
        current, depth = stack.pop()
        if depth > limit:
            raise BadRequest(f"the JSON body is nested deeper than {limit} levels")
        children = current.values() if isinstance(current, dict) else current
        stack.extend((v, depth + 1) for v in children if isinstance(v, dict | list))
