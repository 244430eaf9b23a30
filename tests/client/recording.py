"""A scripted transport for `Client` tests that records what the client sent."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx

Handler = Callable[[httpx.Request], httpx.Response]


class Recorder:
    """A transport that answers with `handler` and keeps every request it saw, body read."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        return self.handler(request)

    def sent(self) -> list[tuple[str, str, Any]]:
        """(method, path with query, JSON body or None) of each request."""
        return [
            (r.method, r.url.raw_path.decode(), json.loads(r.content) if r.content else None)
            for r in self.requests
        ]
