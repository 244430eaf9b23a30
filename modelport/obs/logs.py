"""Worker logs: every line a module's workers print, kept per module in rotated files under one directory."""

from __future__ import annotations

import logging
import logging.handlers
import re
import threading
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from modelport.obs.redact import RedactingFilter

__all__ = ["ModuleLogs"]

_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


class ModuleLogs:
    """`<root>/<module>.log`, rotated at `max_bytes` with `backups` old files kept."""

    def __init__(self, root: Path, *, max_bytes: int = 10 * 1024 * 1024, backups: int = 3) -> None:
        self.root = root
        self.max_bytes, self.backups = max_bytes, backups
        self._handlers: dict[str, logging.Handler] = {}
        self._lock = threading.Lock()

    def sink(self, module: str, version: str) -> Callable[[str, str], None]:
        """A log callback for one version's workers; lines are stamped with time, version and stream."""
        handler = self._handler(module)

        def write(stream: str, line: str) -> None:
            stamp = datetime.now(UTC).isoformat(timespec="milliseconds")
            record = logging.LogRecord(
                module, logging.INFO, "", 0, f"{stamp} {version} {stream}: {line}", None, None
            )
            handler.handle(record)

        return write

    def tail(self, module: str, lines: int) -> str:
        """The last `lines` lines logged for `module` (empty when it never logged)."""
        path = self._path(module)
        if not path.is_file():
            return ""
        with path.open(encoding="utf-8", errors="replace") as handle:
            return "".join(deque(handle, maxlen=max(0, lines)))

    def close(self) -> None:
        with self._lock:
            for handler in self._handlers.values():
                handler.close()
            self._handlers.clear()

    def _handler(self, module: str) -> logging.Handler:
        with self._lock:
            handler = self._handlers.get(module)
            if handler is None:
                self.root.mkdir(parents=True, exist_ok=True)
                handler = logging.handlers.RotatingFileHandler(
                    self._path(module), maxBytes=self.max_bytes, backupCount=self.backups, encoding="utf-8"
                )
                handler.setFormatter(logging.Formatter("%(message)s"))
                handler.addFilter(RedactingFilter())
                self._handlers[module] = handler
            return handler

    def _path(self, module: str) -> Path:
        if not _NAME.match(module):
            raise ValueError(f"{module!r} is not a module name")
        return self.root / f"{module}.log"
