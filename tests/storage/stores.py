"""What the storage tests share: the backends' common handle and how to see everything a backend holds."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from s3_server import S3Server

from modelport.storage import ObjectStore, S3Store

BUCKET = "objects"
PART_SIZE = 5 * 1024 * 1024
"""S3's smallest part: small enough to test multipart uploads with ~11 MiB objects."""


@dataclass
class Backend:
    store: ObjectStore
    contents: Callable[[], list[str]]
    """Everything the backend holds (files and directories; buckets, objects and pending uploads): a call
    that must change nothing leaves it equal."""


def s3_store(server: S3Server, *, prefix: str) -> S3Store:
    return S3Store(
        endpoint_url=server.endpoint_url,
        region=server.region,
        access_key_id=server.access_key_id,
        secret_access_key=server.secret_access_key,
        bucket_prefix=prefix,
        part_size=PART_SIZE,
    )


def tree(directory: Path) -> list[str]:
    """Every path under `directory`, links included but not followed."""
    found = []
    for parent, directories, files in os.walk(directory, followlinks=False):
        for name in [*directories, *files]:
            found.append(os.path.relpath(os.path.join(parent, name), directory))
    return sorted(found)


def s3_contents(store: S3Store) -> list[str]:
    client = store.client
    found = []
    for listed in client.list_buckets().get("Buckets", []):
        name = listed.get("Name", "")
        if not name.startswith(store.bucket_prefix):
            continue
        found.append(f"bucket {name}")
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
            found += [f"object {name}/{item['Key']}" for item in page.get("Contents", [])]
        uploads = client.list_multipart_uploads(Bucket=name).get("Uploads", [])
        found += [f"upload {name}/{upload['Key']}" for upload in uploads]
    return sorted(found)


def empty_s3(store: S3Store) -> None:
    """Delete this store's buckets, so that moto's memory does not grow over the session."""
    client = store.client
    for listed in client.list_buckets().get("Buckets", []):
        name = listed.get("Name", "")
        if not name.startswith(store.bucket_prefix):
            continue
        for upload in client.list_multipart_uploads(Bucket=name).get("Uploads", []):
            client.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
            for item in page.get("Contents", []):
                client.delete_object(Bucket=name, Key=item["Key"])
        client.delete_bucket(Bucket=name)
