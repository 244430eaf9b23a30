"""Object keys and bucket names: one strict rule, applied before any backend sees a key.

A key is a `/`-separated path relative to its bucket. Refused (`InvalidKey`, 400): the empty key, keys over
1024 bytes of UTF-8 or with a segment over 255 bytes, a leading `/`, empty, `.` or `..` segments (`a//b`,
`a/./b`, `../x`, `a/`), backslashes, NUL and other control characters, percent escapes left in the key after
the URL was decoded (double encoding: `%2e%2e`, `%2f`), and any key whose Unicode compatibility form (NFKC)
would break one of those rules (fullwidth `．．／`). Everything else, `?`, `#`, spaces and non-ASCII letters
included, is kept exactly as sent, so an accepted key round-trips unchanged.
"""

from __future__ import annotations

import re
import unicodedata

from modelport.core.errors import InvalidKey
from modelport.core.names import BUCKET_NAME

__all__ = ["MAX_KEY_BYTES", "MAX_SEGMENT_BYTES", "check_bucket_name", "check_key", "check_prefix"]

MAX_KEY_BYTES = 1024
MAX_SEGMENT_BYTES = 255
_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")


def check_key(key: str) -> str:
    """`key` if it is an acceptable object key; `InvalidKey` saying why otherwise."""
    problem = _problem(key)
    if problem is not None:
        raise InvalidKey(f"invalid object key {_shown(key)}: {problem}")
    return key


def check_prefix(prefix: str) -> str:
    """`prefix` if it can begin object keys: empty, or a key's beginning (it may end with `/`)."""
    if prefix == "":
        return prefix
    problem = _problem(prefix.removesuffix("/")) if prefix != "/" else "a prefix cannot be `/` alone"
    if problem is None and prefix.endswith("//"):
        problem = "it holds an empty segment (`//`)"
    if problem is not None:
        raise InvalidKey(f"invalid key prefix {_shown(prefix)}: {problem}")
    return prefix


def check_bucket_name(name: str) -> str:
    if not BUCKET_NAME.match(name):
        raise InvalidKey(f"invalid bucket name {_shown(name)}: expected 3-63 of a-z, 0-9 and -")
    return name


def _problem(key: str) -> str | None:
    if not key:
        return "it is empty"
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        return f"it is longer than {MAX_KEY_BYTES} bytes"
    if any(_is_control(c) for c in key):
        return "it holds a control character"
    if any(0xD800 <= ord(c) <= 0xDFFF for c in key):
        return "it is not valid Unicode"
    if _ESCAPE.search(key):
        return "it holds a percent escape (keys are sent URL-encoded once, never twice)"
    for form in (key, unicodedata.normalize("NFKC", key)):
        if "\\" in form:
            return "it holds a backslash"
        if form.startswith("/"):
            return "it starts with `/`"
        for segment in form.split("/"):
            if segment in ("", ".", ".."):
                return "it holds an empty, `.` or `..` segment"
            if len(segment.encode("utf-8")) > MAX_SEGMENT_BYTES:
                return f"a segment is longer than {MAX_SEGMENT_BYTES} bytes"
    return None


def _is_control(char: str) -> bool:
    return unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp")


def _shown(key: str) -> str:
    text = ascii(key)
    return text if len(text) <= 80 else text[:77] + "..."
