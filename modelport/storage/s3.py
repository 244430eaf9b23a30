"""Objects in an S3-compatible service (AWS S3, MinIO, Ceph…), through boto3.

Each bucket is the S3 bucket `bucket_prefix + bucket`. A writer buffers one part (`part_size`) at a time: an
object that ends below a part is one `PutObject`, a larger one a multipart upload, which S3 publishes only
when it completes, so an aborted write leaves the previous object in place. The SHA-256 goes into the user
metadata `sha256`. Metadata is fixed when an upload starts, before the digest is known, so a multipart object
gets it from a server-side copy onto itself (`UploadPartCopy`) right after it completes; in between, a reader
sees the new bytes unverified.

A whole-object read checks the `sha256` metadata or, for objects written around modelport, the ETag when it
is a plain MD5 (not for KMS- or customer-key-encrypted objects, whose ETags are not); ranged reads are not
checked. `ListObjectsV2` carries neither content type nor metadata: listed objects have `content_type` ""
and `sha256` None (`head` has both).
"""

from __future__ import annotations

import builtins
import hashlib
import re
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, cast

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from modelport.core.errors import (
    BucketNotFound,
    CorruptObject,
    InvalidKey,
    ModelportError,
    ObjectNotFound,
    PayloadTooLarge,
    RangeNotSatisfiable,
    StorageUnavailable,
)
from modelport.storage.base import (
    CHUNK,
    Listing,
    ObjectInfo,
    ObjectReader,
    ObjectStore,
    ObjectWriter,
    PresignMethod,
)
from modelport.storage.keys import check_bucket_name, check_key, check_prefix

if TYPE_CHECKING:
    from botocore.response import StreamingBody
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.literals import BucketLocationConstraintType
    from mypy_boto3_s3.type_defs import (
        CompletedPartTypeDef,
        CopySourceTypeDef,
        GetObjectOutputTypeDef,
        GetObjectRequestTypeDef,
        ListObjectsV2RequestTypeDef,
    )

__all__ = ["S3Store"]

MiB = 1024 * 1024
MIN_PART_SIZE = 5 * MiB
"""S3's smallest part (but the last)."""
MAX_PARTS = 10_000
COPY_PART_BYTES = 5 * 1024 * MiB
"""S3's largest part, used when a completed object is copied onto itself."""
MAX_LIMIT = 1000
MAX_PRESIGN_SECONDS = 7 * 86_400
STALE_SECONDS = 3600.0

_MD5 = re.compile(r"[0-9a-f]{32}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_CONTENT_RANGE = re.compile(r"bytes \d+-\d+/(\d+)")


class S3Store(ObjectStore):
    """Buckets in one S3 service. Credentials left None come from boto3's own lookup (environment, profile,
    instance role)."""

    name = "s3"

    def __init__(
        self,
        *,
        endpoint_url: str | None,
        region: str,
        access_key_id: str | None,
        secret_access_key: str | None,
        bucket_prefix: str,
        part_size: int = 8 * MiB,
    ) -> None:
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE} bytes (S3's smallest part)")
        self.region = region
        self.bucket_prefix = bucket_prefix
        self.part_size = part_size
        config = Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"max_attempts": 3, "mode": "standard"},
            # Checksums only where S3 demands them: many S3-compatible services reject the newer headers.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        self.client: S3Client = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            config=config,
        )

    def physical(self, bucket: str) -> str:
        """The S3 bucket behind `bucket`."""
        name = self.bucket_prefix + check_bucket_name(bucket)
        if len(name) > 63:
            raise InvalidKey(f"bucket name {bucket!r} is too long with the prefix {self.bucket_prefix!r}")
        return name

    @contextmanager
    def errors(self, bucket: str, key: str | None = None) -> Iterator[None]:
        """Turn boto3's failures into the store's errors (their messages hold no endpoint or credentials)."""
        try:
            yield
        except ClientError as error:
            raise self._translate(error, bucket, key) from error
        except BotoCoreError as error:
            raise StorageUnavailable(f"the S3 service cannot be reached ({type(error).__name__})") from error

    def _translate(self, error: ClientError, bucket: str, key: str | None) -> ModelportError:
        code = _code(error)
        if code == "NoSuchBucket":
            return BucketNotFound(f"no bucket {bucket!r}")
        if code == "NoSuchKey" and key is not None:
            return ObjectNotFound(f"no object {key!r} in bucket {bucket!r}")
        if code in ("404", "NotFound"):  # HEAD answers have no body: the bucket or the key may be missing
            if key is not None and self._bucket_exists(self.physical(bucket)):
                return ObjectNotFound(f"no object {key!r} in bucket {bucket!r}")
            return BucketNotFound(f"no bucket {bucket!r}")
        if code == "InvalidRange":
            return RangeNotSatisfiable(f"the range lies outside object {key!r}")
        return StorageUnavailable(f"the S3 service failed a request ({code or 'no error code'})")

    def _bucket_exists(self, physical: str) -> bool:
        try:
            self.client.head_bucket(Bucket=physical)
        except ClientError as error:
            return _code(error) not in ("404", "NoSuchBucket", "NotFound")
        except BotoCoreError:
            return True
        return True

    def create_bucket(self, bucket: str) -> None:
        physical = self.physical(bucket)
        with self.errors(bucket):
            try:
                self.client.head_bucket(Bucket=physical)
                return
            except ClientError as error:
                if _code(error) not in ("404", "NoSuchBucket", "NotFound"):
                    raise
            try:
                if self.region == "us-east-1":
                    self.client.create_bucket(Bucket=physical)
                else:
                    location = cast("BucketLocationConstraintType", self.region)
                    self.client.create_bucket(
                        Bucket=physical, CreateBucketConfiguration={"LocationConstraint": location}
                    )
            except ClientError as error:
                if _code(error) != "BucketAlreadyOwnedByYou":
                    raise

    def writer(self, bucket: str, key: str, *, content_type: str) -> ObjectWriter:
        check_key(key)
        physical = self.physical(bucket)
        with self.errors(bucket):
            self.client.head_bucket(Bucket=physical)  # fail before the caller streams a body
        return _S3Writer(self, bucket, key, content_type=content_type)

    def head(self, bucket: str, key: str) -> ObjectInfo:
        check_key(key)
        with self.errors(bucket, key):
            response = self.client.head_object(Bucket=self.physical(bucket), Key=key)
        return ObjectInfo(
            key=key,
            size=response["ContentLength"],
            etag=response["ETag"].strip('"'),
            content_type=response.get("ContentType", ""),
            modified=_utc(response["LastModified"]),
            sha256=_recorded_sha256(response.get("Metadata", {})),
        )

    def reader(self, bucket: str, key: str, *, start: int = 0, stop: int | None = None) -> ObjectReader:
        check_key(key)
        _check_range(start, stop)
        if stop == start:
            return self._empty_reader(bucket, key, start)
        request: GetObjectRequestTypeDef = {"Bucket": self.physical(bucket), "Key": key}
        whole = start == 0 and stop is None
        if not whole:
            request["Range"] = f"bytes={start}-{'' if stop is None else stop - 1}"
        with self.errors(bucket, key):
            try:
                response = self.client.get_object(**request)
            except ClientError as error:
                if _code(error) == "InvalidRange" and start == 0:  # an empty object, asked for [0, stop)
                    return self._empty_reader(bucket, key, start)
                raise
        return _S3Reader(
            self, bucket, _info(key, response), response["Body"], _expected(response) if whole else None
        )

    def _empty_reader(self, bucket: str, key: str, start: int) -> ObjectReader:
        info = self.head(bucket, key)
        if start > 0 and start >= info.size:
            raise RangeNotSatisfiable(f"object {key!r} has {info.size} bytes; the range starts at {start}")
        return _S3Reader(self, bucket, info, None, None)

    def delete(self, bucket: str, key: str) -> bool:
        check_key(key)
        physical = self.physical(bucket)
        with self.errors(bucket, key):
            try:
                self.client.head_object(Bucket=physical, Key=key)
            except ClientError as error:
                if _code(error) in ("404", "NoSuchKey", "NotFound") and self._bucket_exists(physical):
                    return False
                raise
            self.client.delete_object(Bucket=physical, Key=key)
        return True

    def list(
        self,
        bucket: str,
        *,
        prefix: str = "",
        delimiter: str | None = None,
        cursor: str | None = None,
        limit: int = 1000,
    ) -> Listing:
        """A page of the listing; see `ObjectStore.list`. `limit` is at most 1000, S3's own largest page. A
        common prefix passed back as `cursor` skips every key under it."""
        check_prefix(prefix)
        _check_limit(limit)
        request: ListObjectsV2RequestTypeDef = {
            "Bucket": self.physical(bucket),
            "MaxKeys": min(limit + 1, MAX_LIMIT),
        }
        if prefix:
            request["Prefix"] = prefix
        if delimiter:
            request["Delimiter"] = delimiter
        if cursor is not None:
            request["StartAfter"] = cursor
        with self.errors(bucket):
            response = self.client.list_objects_v2(**request)
        entries: builtins.list[ObjectInfo | str] = [
            ObjectInfo(
                key=item["Key"],
                size=item["Size"],
                etag=item["ETag"].strip('"'),
                content_type="",
                modified=_utc(item["LastModified"]),
                sha256=None,
            )
            for item in response.get("Contents", [])
        ]
        # S3 rolls keys after `cursor` up into a common prefix that `cursor` itself may lie under.
        entries += [
            common["Prefix"]
            for common in response.get("CommonPrefixes", [])
            if cursor is None or common["Prefix"] > cursor
        ]
        entries.sort(key=lambda entry: entry.key if isinstance(entry, ObjectInfo) else entry)
        page = entries[:limit]
        more = len(entries) > limit or response.get("IsTruncated", False)
        last = page[-1] if page else None
        return Listing(
            objects=[entry for entry in page if isinstance(entry, ObjectInfo)],
            prefixes=[entry for entry in page if isinstance(entry, str)],
            next_cursor=(last.key if isinstance(last, ObjectInfo) else last) if more else None,
        )

    def presign(
        self, bucket: str, key: str, *, method: PresignMethod, expires_in: int, size: int | None = None
    ) -> str:
        """A SigV4 URL for `GET` or `PUT` of this one object. A `PUT` URL signs `Content-Length: size`, so S3
        refuses a body of any other size (a presigned URL never bypasses the object-size limit or a quota).
        A `PUT` through it records no `sha256`; reads of such an object are checked against its MD5 ETag
        instead."""
        check_key(key)
        if not 1 <= expires_in <= MAX_PRESIGN_SECONDS:
            raise ValueError(f"expires_in must be between 1 and {MAX_PRESIGN_SECONDS} seconds")
        params: dict[str, object] = {"Bucket": self.physical(bucket), "Key": key}
        if method == "PUT":
            if size is None:
                raise ValueError("a PUT URL needs the size of the object it uploads")
            params["ContentLength"] = size
        operation = "get_object" if method == "GET" else "put_object"
        with self.errors(bucket, key):
            return self.client.generate_presigned_url(
                operation, Params=params, ExpiresIn=expires_in, HttpMethod=method
            )

    def sweep(self, *, older_than: float = STALE_SECONDS) -> None:
        """Abort the multipart uploads started more than `older_than` seconds ago in this store's buckets
        (writers that died before committing or aborting). A lifecycle rule on the buckets
        (`AbortIncompleteMultipartUpload`) does the same on the service's side."""
        cutoff = datetime.now(UTC) - timedelta(seconds=older_than)
        with self.errors("*"):
            for bucket in self.client.list_buckets().get("Buckets", []):
                name = bucket.get("Name", "")
                if name.startswith(self.bucket_prefix):
                    self._abort_uploads(name, cutoff)

    def _abort_uploads(self, physical: str, cutoff: datetime) -> None:
        pages = self.client.get_paginator("list_multipart_uploads").paginate(Bucket=physical)
        for page in pages:
            for upload in page.get("Uploads", []):
                if upload["Initiated"] < cutoff:
                    self.client.abort_multipart_upload(
                        Bucket=physical, Key=upload["Key"], UploadId=upload["UploadId"]
                    )

    def close(self) -> None:
        self.client.close()


class _S3Writer(ObjectWriter):
    """Buffers up to a part; the first full part starts a multipart upload."""

    def __init__(self, store: S3Store, bucket: str, key: str, *, content_type: str) -> None:
        super().__init__()
        self._store = store
        self._bucket = bucket
        self._physical = store.physical(bucket)
        self._key = key
        self._content_type = content_type
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[CompletedPartTypeDef] = []
        self._open = True

    def _write(self, chunk: bytes) -> None:
        self._require_open()
        self._buffer += chunk
        if len(self._buffer) >= self._store.part_size:
            self._send_part()

    def _require_open(self) -> None:
        if not self._open:
            raise RuntimeError("this writer is committed or aborted")

    def _send_part(self) -> None:
        client = self._store.client
        with self._store.errors(self._bucket, self._key):
            if self._upload_id is None:
                created = client.create_multipart_upload(
                    Bucket=self._physical, Key=self._key, ContentType=self._content_type
                )
                self._upload_id = created["UploadId"]
            if len(self._parts) == MAX_PARTS:
                raise PayloadTooLarge(
                    f"an object is at most {MAX_PARTS} parts of {self._store.part_size} bytes"
                )
            body, self._buffer = self._buffer, bytearray()
            number = len(self._parts) + 1
            sent = client.upload_part(
                Bucket=self._physical,
                Key=self._key,
                UploadId=self._upload_id,
                PartNumber=number,
                Body=_blob(body),
            )
            self._parts.append({"ETag": sent["ETag"], "PartNumber": number})

    def commit(self) -> ObjectInfo:
        self._require_open()
        client = self._store.client
        if self._upload_id is None:
            with self._store.errors(self._bucket, self._key):
                put = client.put_object(
                    Bucket=self._physical,
                    Key=self._key,
                    Body=_blob(self._buffer),
                    ContentType=self._content_type,
                    Metadata={"sha256": self.sha256},
                )
            etag = put["ETag"]
        else:
            if self._buffer:
                self._send_part()
            etag = self._complete(self._upload_id, self._parts)
            self._upload_id = None
            etag = self._stamp(etag)
        self._open = False
        self._buffer = bytearray()
        return ObjectInfo(
            key=self._key,
            size=self.written,
            etag=etag.strip('"'),
            content_type=self._content_type,
            modified=datetime.now(UTC),
            sha256=self.sha256,
        )

    def _complete(self, upload_id: str, parts: list[CompletedPartTypeDef]) -> str:
        with self._store.errors(self._bucket, self._key):
            completed = self._store.client.complete_multipart_upload(
                Bucket=self._physical, Key=self._key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        return completed.get("ETag", "")

    def _stamp(self, etag: str) -> str:
        """Copy the completed object onto itself with its `sha256` metadata; its final ETag. If another
        writer replaced it meanwhile (`If-Match` fails), theirs stands."""
        client = self._store.client
        source: CopySourceTypeDef = {"Bucket": self._physical, "Key": self._key}
        with self._store.errors(self._bucket, self._key):
            created = client.create_multipart_upload(
                Bucket=self._physical,
                Key=self._key,
                ContentType=self._content_type,
                Metadata={"sha256": self.sha256},
            )
            self._upload_id = upload_id = created["UploadId"]
            parts: list[CompletedPartTypeDef] = []
            for number, first in enumerate(range(0, self.written, COPY_PART_BYTES), start=1):
                last = min(first + COPY_PART_BYTES, self.written) - 1
                try:
                    copied = client.upload_part_copy(
                        Bucket=self._physical,
                        Key=self._key,
                        UploadId=upload_id,
                        PartNumber=number,
                        CopySource=source,
                        CopySourceRange=f"bytes={first}-{last}",
                        CopySourceIfMatch=etag,
                    )
                except ClientError as error:
                    if _code(error) != "PreconditionFailed":
                        raise
                    self.abort()
                    return etag
                parts.append({"ETag": copied["CopyPartResult"].get("ETag", ""), "PartNumber": number})
        final = self._complete(upload_id, parts)
        self._upload_id = None
        return final

    def abort(self) -> None:
        """Drop the buffer and abort the multipart upload, if any. Should S3 be out of reach, the upload is
        left to `sweep`."""
        self._open = False
        self._buffer = bytearray()
        upload_id, self._upload_id = self._upload_id, None
        if upload_id is None:
            return
        with suppress(ClientError, BotoCoreError):
            self._store.client.abort_multipart_upload(
                Bucket=self._physical, Key=self._key, UploadId=upload_id
            )


class _S3Reader(ObjectReader):
    def __init__(
        self,
        store: S3Store,
        bucket: str,
        info: ObjectInfo,
        body: StreamingBody | None,
        expected: tuple[str, str] | None,
    ) -> None:
        self.info = info
        self._store = store
        self._bucket = bucket
        self._body = body
        self._expected = expected

    def __iter__(self) -> Iterator[bytes]:
        if self._body is None:
            return
        algorithm, expected = self._expected or ("", "")
        digest = hashlib.md5(usedforsecurity=False) if algorithm == "md5" else hashlib.sha256()
        while chunk := self._read():
            if algorithm:
                digest.update(chunk)
            yield chunk
        if algorithm and digest.hexdigest() != expected:
            raise CorruptObject(f"object {self.info.key!r} does not match its recorded {algorithm}")

    def _read(self) -> bytes:
        assert self._body is not None
        with self._store.errors(self._bucket, self.info.key):
            return self._body.read(CHUNK)

    def close(self) -> None:
        if self._body is not None:
            self._body.close()


def _info(key: str, response: GetObjectOutputTypeDef) -> ObjectInfo:
    size = response["ContentLength"]
    if match := _CONTENT_RANGE.fullmatch(response.get("ContentRange", "")):
        size = int(match.group(1))
    return ObjectInfo(
        key=key,
        size=size,
        etag=response["ETag"].strip('"'),
        content_type=response.get("ContentType", ""),
        modified=_utc(response["LastModified"]),
        sha256=_recorded_sha256(response.get("Metadata", {})),
    )


def _expected(response: GetObjectOutputTypeDef) -> tuple[str, str] | None:
    """(algorithm, hex digest) a whole object's bytes must have, if anything says."""
    recorded = _recorded_sha256(response.get("Metadata", {}))
    if recorded is not None:
        return "sha256", recorded
    etag = response["ETag"].strip('"')
    encrypted = response.get("ServerSideEncryption", "").startswith("aws:kms") or response.get(
        "SSECustomerAlgorithm"
    )
    if _MD5.fullmatch(etag) and not encrypted:
        return "md5", etag
    return None


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


def _blob(buffer: bytearray) -> bytes:
    """The buffer as a request body, uncopied: botocore sends a bytearray as it is (its stubs say bytes)."""
    return cast("bytes", buffer)


def _recorded_sha256(metadata: dict[str, str]) -> str | None:
    value = metadata.get("sha256", "").lower()
    return value if _SHA256.fullmatch(value) else None


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _check_range(start: int, stop: int | None) -> None:
    if start < 0 or (stop is not None and stop < start):
        raise ValueError(f"invalid byte range [{start}, {stop})")


def _check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be between 1 and {MAX_LIMIT}")
