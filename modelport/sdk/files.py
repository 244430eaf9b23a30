"""The file object a module receives for a file input."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import IO

__all__ = ["File"]


@dataclass(frozen=True)
class File:
    """An uploaded file, already checked against the module's spec and stored on local disk."""

    path: Path
    content_type: str
    filename: str
    size: int

    def read(self) -> bytes:
        return self.path.read_bytes()

    def open(self) -> IO[bytes]:
        return self.path.open("rb")

    def __fspath__(self) -> str:
        return str(self.path)
