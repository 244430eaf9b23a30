"""File outputs are taken only from the module's output directory: the path comes from module code."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from modelport.control.request_files import RequestFiles
from modelport.core.errors import BadModuleOutput
from modelport.storage import LocalStore


@pytest.fixture
def files(tmp_path: Path) -> RequestFiles:
    store = LocalStore(tmp_path / "objects")
    store.create_bucket("requests")
    return RequestFiles(store, bucket="requests", readable=None)


@pytest.fixture
def outputs(tmp_path: Path) -> Path:
    directory = tmp_path / "outputs"
    directory.mkdir()
    return directory


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "metadata.db"
    path.write_bytes(b"the server's database")
    return path


def publish(files: RequestFiles, path: Path, outputs: Path) -> str:
    return files.publish_output("owner", "mod", "image", path, "image/png", directory=outputs)


def test_a_file_in_the_output_directory_is_published_and_removed(files, outputs):
    made = outputs / "image-1.png"
    made.write_bytes(b"\x89PNG made by the module")
    name = publish(files, made, outputs)
    with files.open_output("owner", "mod", name) as reader:
        assert b"".join(reader) == b"\x89PNG made by the module"
    assert not made.exists()


@pytest.mark.parametrize("how", ["named", "traversal", "symlink", "hardlink"])
def test_a_path_to_any_other_file_is_refused_and_the_file_left_alone(files, outputs, secret, how):
    if how == "named":
        path = secret
    elif how == "traversal":
        path = outputs / ".." / secret.name
    elif how == "symlink":
        path = outputs / "image-2.png"
        path.symlink_to(secret)
    else:
        path = outputs / "image-3.png"
        os.link(secret, path)
    with pytest.raises(BadModuleOutput, match="outside its output directory"):
        publish(files, path, outputs)
    assert secret.read_bytes() == b"the server's database"
