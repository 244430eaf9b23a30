"""Keys that could leave their bucket are refused by `check_key` and by every backend before any I/O; every
key it accepts round-trips unchanged and, on disk, stays inside its bucket's directory."""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from stores import BUCKET, Backend

from modelport.core.errors import InvalidKey
from modelport.storage import LocalStore, ObjectStore, check_key, check_prefix

REFUSED = {
    "empty": "",
    "dot-dot": "..",
    "dot-dot-then-name": "../x",
    "climbing": "a/../../x",
    "leading-dot": "./a",
    "inner-dot": "a/./b",
    "trailing-dot": "a/.",
    "empty-segment": "a//b",
    "absolute": "/abs",
    "trailing-slash": "a/",
    "escaped-dots": "%2e%2e/x",
    "upper-escaped-dots": "%2E%2E/x",
    "double-escaped-dots": "%252e%252e",
    "escaped-slash": "a%2fb",
    "dots-escaped-slash": "..%2f",
    "backslash": "a\\b",
    "backslash-climb": "..\\x",
    "drive": "C:\\x",
    "nul": "a\x00b",
    "newline": "a\nb",
    "carriage-return": "a\rb",
    "tab": "a\tb",
    "delete": "a\x7fb",
    "right-to-left-override": "a\u202eb",
    "byte-order-mark": "\ufeffa",
    "line-separator": "a\u2028b",
    "fullwidth-dots": "．．/x",
    "inner-fullwidth-dots": "a/．．/b",
    "fullwidth-solidus": "a／..",
    "one-fullwidth-dot": "．",
    "lone-surrogate": "a\ud800b",
    "store-pointer-name": "a/%00object.json",
    "key-too-long": "/".join(["x" * 255] * 4 + ["y"]),  # 1025 bytes
    "segment-too-long": "é" * 128,  # 256 bytes
    "deep-segment-too-long": "a/" + "x" * 256,
}

ACCEPTED = {
    "question-mark": "a?b",
    "hash": "a#b",
    "query-like": "x?y=1&z=2#frag",
    "spaces": "dir/file name with spaces.txt",
    "accents": "ü/ñandú",
    "emoji": "emoji/😀.png",
    "percent-without-hex": "100%/50%off",
    "three-dots": ".../x",
    "dot-prefixed": ".hidden/..a/a.",
    "layout-names": "keys/data/tmp/lock",
    "key-at-limit": "/".join(["x" * 255] * 3 + ["x" * 254, "y"]),  # 1024 bytes
    "segment-at-limit": "é" * 127 + "x",  # 255 bytes
}


def test_limits_are_where_they_say() -> None:
    assert len(ACCEPTED["key-at-limit"].encode()) == 1024
    assert len(REFUSED["key-too-long"].encode()) == 1025
    assert len(ACCEPTED["segment-at-limit"].encode()) == 255
    assert len(REFUSED["segment-too-long"].encode()) == 256


@pytest.mark.parametrize("key", REFUSED.values(), ids=REFUSED.keys())
def test_check_key_refuses(key: str) -> None:
    with pytest.raises(InvalidKey):
        check_key(key)


@pytest.mark.parametrize("key", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_check_key_accepts_unchanged(key: str) -> None:
    assert check_key(key) == key


@pytest.mark.parametrize("prefix", ["../", "a//", "/", "a/../", "%2e%2e/", "．．/", "a\\"])
def test_check_prefix_refuses(prefix: str) -> None:
    with pytest.raises(InvalidKey):
        check_prefix(prefix)


def every_call(store: ObjectStore, bucket: str, key: str) -> dict[str, Callable[[], object]]:
    """Each method that takes a key, called with `key`."""
    return {
        "put": lambda: store.put(bucket, key, b"data", content_type="text/plain"),
        "writer": lambda: store.writer(bucket, key, content_type="text/plain"),
        "get": lambda: store.get(bucket, key),
        "head": lambda: store.head(bucket, key),
        "reader": lambda: store.reader(bucket, key, start=1, stop=2),
        "delete": lambda: store.delete(bucket, key),
        "presign": lambda: store.presign(bucket, key, method="PUT", expires_in=60, size=4),
    }


def test_backends_refuse_before_touching_anything(backend: Backend, bucket: str) -> None:
    store = backend.store
    store.put(bucket, "existing", b"x", content_type="text/plain")
    before = backend.contents()

    for key in REFUSED.values():
        for name, call in every_call(store, bucket, key).items():
            try:
                call()
            except InvalidKey:
                continue
            pytest.fail(f"{name} accepted {key!r}")
    for prefix in ["../", "a//", "/"]:
        with pytest.raises(InvalidKey):
            store.list(bucket, prefix=prefix)

    assert backend.contents() == before
    assert [info.key for info in store.list(bucket).objects] == ["existing"]


def test_backends_keep_odd_keys_exactly(store: ObjectStore, bucket: str) -> None:
    for key in ACCEPTED.values():
        store.put(bucket, key, key.encode(), content_type="text/plain")

    for key in ACCEPTED.values():
        assert store.get(bucket, key) == key.encode()
        assert store.head(bucket, key).key == key
    listed = [info.key for info in store.list(bucket).objects]
    assert listed == sorted(ACCEPTED.values(), key=lambda key: key.encode())
    for key in ACCEPTED.values():
        assert store.delete(bucket, key) is True
    assert store.list(bucket).objects == []


def test_normalisation_does_not_merge_keys(store: ObjectStore, bucket: str) -> None:
    composed, decomposed = "caf\u00e9", unicodedata.normalize("NFD", "caf\u00e9")
    store.put(bucket, composed, b"composed", content_type="text/plain")
    store.put(bucket, decomposed, b"decomposed", content_type="text/plain")
    store.put(bucket, "Case", b"upper", content_type="text/plain")
    store.put(bucket, "case", b"lower", content_type="text/plain")

    assert store.get(bucket, composed) == b"composed"
    assert store.get(bucket, decomposed) == b"decomposed"
    assert (store.get(bucket, "Case"), store.get(bucket, "case")) == (b"upper", b"lower")
    assert len(store.list(bucket).objects) == 4


# Segments that probe the rules: dots of both widths, escapes, slashes of both widths, backslashes.
DOTS = [".", "..", "...", "．", "．．", "%2e", "%2E%2e"]
tricky_segments = st.sampled_from([*DOTS, "%", "a", "b", "ü", " ", "?", "#", "\\", "／", "\x00", ""])
printable = st.characters(exclude_categories=("Cc", "Cs", "Cf", "Zl", "Zp"), exclude_characters="\\%/")
segments = tricky_segments | st.text(printable, min_size=1, max_size=8) | st.text(min_size=1, max_size=8)
joined_keys = st.lists(segments, min_size=1, max_size=6).map("/".join)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, LocalStore]:
    """A LocalStore whose root is inside a directory nothing else writes to."""
    directory = tmp_path_factory.mktemp("sandbox")
    store = LocalStore(directory / "root")
    store.create_bucket(BUCKET)
    store.create_bucket("neighbour")
    return directory, store


def files_under(directory: Path) -> dict[str, int]:
    found = {}
    for parent, _, files in os.walk(directory, followlinks=False):
        for name in files:
            path = os.path.join(parent, name)
            found[os.path.realpath(path)] = os.stat(path, follow_symlinks=False).st_mtime_ns
    return found


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(key=st.text(max_size=20) | joined_keys)
def test_local_store_keeps_every_accepted_key_inside_its_bucket(
    sandbox: tuple[Path, LocalStore], key: str
) -> None:
    directory, store = sandbox
    try:
        check_key(key)
    except InvalidKey:
        event("refused")
        before = files_under(directory)
        with pytest.raises(InvalidKey):
            store.put(BUCKET, key, b"refused", content_type="text/plain")
        assert files_under(directory) == before
        return
    event("accepted")
    before = files_under(directory)
    payload = key.encode("utf-8") + b"!"

    store.put(BUCKET, key, payload, content_type="text/plain")

    changed = {path for path, mtime in files_under(directory).items() if before.get(path) != mtime}
    bucket_directory = os.path.realpath(directory / "root" / BUCKET)
    assert changed
    assert all(path.startswith(bucket_directory + os.sep) for path in changed), changed
    assert store.get(BUCKET, key) == payload
    assert store.list(BUCKET, prefix=key, limit=1).objects[0].key == key
    assert store.delete(BUCKET, key) is True
    assert store.list(BUCKET).objects == []
