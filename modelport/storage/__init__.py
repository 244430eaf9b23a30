"""The object store: buckets of objects on local disk or in an S3-compatible service, behind one interface."""

from __future__ import annotations

from modelport.core.settings import Settings
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
from modelport.storage.local import LocalStore
from modelport.storage.s3 import S3Store

__all__ = [
    "CHUNK",
    "Listing",
    "LocalStore",
    "ObjectInfo",
    "ObjectReader",
    "ObjectStore",
    "ObjectWriter",
    "PresignMethod",
    "S3Store",
    "check_bucket_name",
    "check_key",
    "check_prefix",
    "open_store",
]


def open_store(settings: Settings) -> ObjectStore:
    """The store `settings.storage_backend` names: files under `settings.storage_dir()`, or S3."""
    if settings.storage_backend == "s3":
        secret = settings.s3_secret_access_key
        return S3Store(
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=secret.get_secret_value() if secret is not None else None,
            bucket_prefix=settings.s3_bucket_prefix,
        )
    return LocalStore(settings.storage_dir())
