"""What the browser tests share: a loopback origin serving one test page, and readable lines of what the
browser complained about."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from playwright.sync_api import ConsoleMessage, Request

CHROMIUM = Path("/usr/bin/chromium")
WAIT_MS = 20_000


class PageServer:
    """`page` on `paths` of a loopback origin of its own, its `__CONFIG__` replaced by `config` as the dict is
    when the page is asked for (so values known only later, such as a token, can still be filled in)."""

    def __init__(self, page: Path, config: dict[str, str], *, paths: tuple[str, ...] = ("/",)) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] not in paths:
                    self.send_error(404)
                    return
                body = page.read_text().replace("__CONFIG__", json.dumps(config)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


def console_line(message: ConsoleMessage) -> str:
    return f"{message.type}: {message.text}"


def failure_line(request: Request) -> str:
    return f"{request.method} {request.url}: {request.failure}"
