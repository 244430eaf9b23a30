"""Every store test that takes `store` runs on both backends: LocalStore under tmp_path, S3Store against the
session's moto server with a bucket prefix of its own."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from s3_server import S3Server
from stores import BUCKET, Backend, empty_s3, s3_contents, s3_store, tree

from modelport.storage import LocalStore, ObjectStore, S3Store


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "local":
        store = LocalStore(tmp_path / "objects")
        yield Backend(store, lambda: tree(tmp_path))
        return
    server: S3Server = request.getfixturevalue("s3_server")
    s3 = s3_store(server, prefix=f"t{uuid.uuid4().hex[:10]}-")
    try:
        yield Backend(s3, lambda: s3_contents(s3))
    finally:
        empty_s3(s3)
        s3.close()


@pytest.fixture
def store(backend: Backend) -> ObjectStore:
    return backend.store


@pytest.fixture
def bucket(store: ObjectStore) -> str:
    store.create_bucket(BUCKET)
    return BUCKET


@pytest.fixture
def s3(s3_server: S3Server) -> Iterator[S3Store]:
    """An S3Store alone, for what only S3 does (presigned URLs)."""
    store = s3_store(s3_server, prefix=f"t{uuid.uuid4().hex[:10]}-")
    try:
        yield store
    finally:
        empty_s3(store)
        store.close()
