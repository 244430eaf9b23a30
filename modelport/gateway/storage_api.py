"""The files API: buckets, listings, and objects streamed in both directions, with presigned URLs.

Bodies are never held whole: uploads go to the store chunk by chunk as they arrive, downloads leave it chunk
by chunk (one megabyte at a time), so a gigabyte moves with flat memory. An upload must say its size in
`Content-Length`, which is reserved against the bucket's quota before the first byte is stored.

A request carrying `expires` and `signature` query parameters is a presigned request: it needs no token, and
is allowed exactly the method and object the signature covers, until it expires.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterator
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from modelport.control.platform import Services
from modelport.core.errors import (
    BadRequest,
    CorruptObject,
    LengthRequired,
    RangeNotSatisfiable,
    StorageUnavailable,
)
from modelport.core.records import BucketList, ObjectInfo, ObjectListing, PresignedUrl, PresignMethod
from modelport.gateway.auth import principal_of
from modelport.gateway.identity_api import actor_of
from modelport.gateway.routes import PRESIGNED, SIGNED_IN, allow
from modelport.storage import CHUNK, ObjectReader, check_key
from modelport.storage import ObjectInfo as StoredObject

__all__ = ["storage_router"]

log = logging.getLogger("modelport.storage")

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_ATTEMPTS = 3


class PresignRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str = Field(min_length=1, max_length=1024, description="The object the URL is for.")
    method: PresignMethod = Field("GET", description="What the URL may do: download or upload.")
    expires_in: int = Field(3600, ge=1, description="Seconds the URL stays valid.")
    size: int | None = Field(
        None,
        ge=0,
        description="PUT only, and required there: the exact size in bytes of the object the URL uploads. "
        "The upload must send it as `Content-Length`; it must fit the object-size limit and the bucket's "
        "quota.",
    )


def storage_router(services: Services) -> APIRouter:
    storage = services.storage

    def guard(request: Request) -> None:
        """Before anything else, even validation: the caller may use the bucket (a bucket it may not see is
        404), or brings a presigned URL for this method and object."""
        bucket = request.path_params.get("bucket")
        if bucket is None:
            return
        key = request.path_params.get("key")
        query = request.query_params
        if key is not None and "signature" in query:  # the URL is the credential, whoever holds it
            check_key(key)
            storage.check_signature(
                request.method,
                bucket,
                key,
                query.get("expires", ""),
                query.get("signature", ""),
                size=query.get("size"),
                content_length=request.headers.get("content-length"),
            )
            return
        write = request.method in ("PUT", "DELETE")
        storage.require(principal_of(request.scope), bucket, write=write)

    router = APIRouter(prefix="/api/v1/storage", tags=["storage"], dependencies=[Depends(guard)])

    @router.get(
        "", dependencies=[allow(SIGNED_IN)], response_model=BucketList, summary="List the buckets you may use"
    )
    def list_buckets(request: Request) -> BucketList:
        return BucketList(buckets=storage.buckets(principal_of(request.scope)))

    @router.get(
        "/{bucket}",
        dependencies=[allow(SIGNED_IN)],
        response_model=ObjectListing,
        summary="List a bucket's objects",
    )
    def list_objects(
        request: Request,
        bucket: str,
        prefix: Annotated[str, Query(max_length=1024, description="Only keys starting with this.")] = "",
        delimiter: Annotated[
            Literal["/"] | None, Query(description="Group keys by their next `/` into `prefixes`.")
        ] = None,
        cursor: Annotated[
            str | None, Query(max_length=1024, description="`next_cursor` of the page before.")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
    ) -> ObjectListing:
        return storage.objects(bucket, prefix=prefix, delimiter=delimiter, cursor=cursor, limit=limit)

    @router.put(
        "/{bucket}/objects/{key:path}",
        dependencies=[allow(PRESIGNED)],
        response_model=ObjectInfo,
        status_code=201,
        summary="Upload an object",
        description="The body is the object, streamed; `Content-Length` is required and `Content-Type` is "
        "kept. Replaces an object of the same key atomically: readers see the old object or the new one.",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
            }
        },
    )
    async def put_object(request: Request, response: Response, bucket: str, key: str) -> ObjectInfo:
        length = request.headers.get("content-length")
        if length is None or not length.isdigit():
            raise LengthRequired("send the object's size in Content-Length")
        size = int(length)  # at most `max_object_bytes`: `BodyLimit` refused larger ones already
        content_type = request.headers.get("content-type") or "application/octet-stream"
        # Whoever holds a presigned URL is nobody the audit trail could name.
        actor = None if principal_of(request.scope).is_anonymous else actor_of(request)
        upload = await asyncio.to_thread(
            storage.upload, bucket, key, size=size, content_type=content_type, actor=actor
        )
        with upload:
            buffer = bytearray()
            async for chunk in request.stream():
                buffer += chunk
                if len(buffer) >= CHUNK:
                    await asyncio.to_thread(upload.write, bytes(buffer))
                    buffer.clear()
            if buffer:
                await asyncio.to_thread(upload.write, bytes(buffer))
            info = await asyncio.to_thread(upload.commit)
        response.headers["ETag"] = f'"{info.etag}"'
        return info

    @router.get(
        "/{bucket}/objects/{key:path}",
        dependencies=[allow(PRESIGNED)],
        summary="Download an object",
        description="Streams the object. `Range: bytes=a-b` gets part of it (206). `If-None-Match` with its "
        "ETag gets 304. A whole object is checked against the SHA-256 recorded when it was written; if the "
        "bytes do not match, the connection is cut before the end.",
        response_class=Response,
    )
    async def get_object(request: Request, bucket: str, key: str) -> Response:
        check_key(key)
        for _ in range(_ATTEMPTS):
            info = await asyncio.to_thread(storage.store.head, bucket, key)
            headers = _headers(info)
            if request.headers.get("if-none-match") in (f'"{info.etag}"', "*"):
                return Response(status_code=304, headers=headers)
            span = _range(request.headers.get("range"), info.size)
            start, stop = span or (0, info.size)
            if span is not None:
                headers["Content-Range"] = f"bytes {start}-{stop - 1}/{info.size}"
            headers["Content-Length"] = str(stop - start)
            headers["Content-Type"] = info.content_type  # as stored: no charset added
            status = 200 if span is None else 206
            if request.method == "HEAD":
                return Response(status_code=status, headers=headers)
            reader = await asyncio.to_thread(
                storage.store.reader, bucket, key, start=start, stop=None if span is None else stop
            )
            if reader.info.etag == info.etag:
                return StreamingResponse(_stream(reader, bucket, key), status_code=status, headers=headers)
            reader.close()  # replaced between the two reads: these headers would describe another object
        raise StorageUnavailable("the object keeps changing while it is read; try again", retry_after=1)

    @router.head(
        "/{bucket}/objects/{key:path}",
        dependencies=[allow(PRESIGNED)],
        summary="An object's size, type and checksum",
        description="The headers `GET` would send, without the body.",
        response_class=Response,
    )
    async def head_object(request: Request, bucket: str, key: str) -> Response:
        return await get_object(request, bucket, key)

    @router.delete(
        "/{bucket}/objects/{key:path}",
        dependencies=[allow(SIGNED_IN)],  # presigned URLs only read or write
        status_code=204,
        summary="Delete an object",
    )
    async def delete_object(request: Request, bucket: str, key: str) -> Response:
        await asyncio.to_thread(storage.delete, bucket, key, actor=actor_of(request))
        return Response(status_code=204)

    @router.post(
        "/{bucket}/presign",
        dependencies=[allow(SIGNED_IN)],
        response_model=PresignedUrl,
        summary="Make a presigned URL",
        description="A URL that lets whoever holds it GET or PUT one object without a token until it "
        "expires. On S3 it is S3's own presigned URL; on the local store, a URL of this server.",
    )
    def presign(request: Request, bucket: str, body: PresignRequest) -> PresignedUrl:
        if body.method == "PUT":
            storage.require(principal_of(request.scope), bucket, write=True)
        return storage.presign(
            bucket,
            body.key,
            method=body.method,
            expires_in=body.expires_in,
            base_url=str(request.base_url),
            actor=actor_of(request),
            size=body.size,
        )

    return router


def _headers(info: StoredObject) -> dict[str, str]:
    headers = {
        "ETag": f'"{info.etag}"',
        "Last-Modified": info.modified.strftime("%a, %d %b %Y %H:%M:%S GMT"),
        "Accept-Ranges": "bytes",
        "X-Content-Type-Options": "nosniff",
    }
    if info.sha256:
        headers["X-Checksum-Sha256"] = info.sha256
    return headers


def _range(header: str | None, size: int) -> tuple[int, int] | None:
    """The `[start, stop)` a `Range: bytes=...` header asks for; None for the whole object."""
    if header is None:
        return None
    match = _RANGE.match(header.strip())
    if match is None:  # several ranges or another unit: the whole object, as RFC 9110 allows
        return None
    first, last = match.groups()
    if not first and not last:
        raise BadRequest("a Range needs a start or a length: `bytes=0-99`, `bytes=100-`, `bytes=-100`")
    if not first:
        start, stop = max(0, size - int(last)), size
    else:
        start = int(first)
        stop = min(size, int(last) + 1) if last else size
        if last and int(last) < start:
            raise BadRequest("the Range ends before it starts")
    if start >= size or stop <= start:
        raise RangeNotSatisfiable(f"the object has {size} bytes", details={"size": size})
    return start, stop


def _stream(reader: ObjectReader, bucket: str, key: str) -> Iterator[bytes]:
    """The object's chunks, each sent only once the next one is read: the reader checks the checksum after
    the last chunk, so a corrupt object never arrives whole (its last chunk is held back and the connection
    cut), and no client can mistake it for a good one."""
    held: bytes | None = None
    try:
        for chunk in reader:
            if held is not None:
                yield held
            held = chunk
    except CorruptObject:
        log.error("object %s/%s does not match its recorded checksum; the download was cut", bucket, key)
        raise
    finally:
        reader.close()
    if held is not None:
        yield held
