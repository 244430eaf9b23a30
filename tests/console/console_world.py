"""The console tests' world: a platform served in this process, and callers signed in to its console.

`world` (one per test module) is the real platform application on SQLite with its lifespan running (modules
build and deploy for real); `world.api()` is an admin's API client, `world.console(token)` a console session
signed in with a token (the admin's by default) through the sign-in form, as a browser would.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from drive import deploy, push, wait_built, wait_deployment
from inprocess import InProcessApp
from platform_server import ADMIN_TOKEN

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "modules"
_META_CSRF = re.compile(r'<meta name="csrf-token" content="([^"]*)">')


class ConsoleSession:
    """A browser's view of the console: its cookies, and the CSRF token its pages carry (sent with each
    form)."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client
        self.csrf = ""

    def get(self, path: str, **options: Any) -> httpx.Response:
        response = self.client.get(path, **options)
        self._remember(response)
        return response

    def post(
        self, path: str, data: dict[str, Any] | None = None, *, csrf: bool = True, **options: Any
    ) -> httpx.Response:
        form = dict(data or {})
        if csrf:
            form.setdefault("csrf", self.csrf)
        response = self.client.post(path, data=form, **options)
        self._remember(response)
        return response

    def _remember(self, response: httpx.Response) -> None:
        found = (
            _META_CSRF.search(response.text)
            if "text/html" in response.headers.get("content-type", "")
            else None
        )
        if found and found.group(1):
            self.csrf = found.group(1)


@dataclass
class World:
    served: InProcessApp
    root: Path

    def api(self, token: str = ADMIN_TOKEN) -> httpx.Client:
        return self.served.client({"Authorization": f"Bearer {token}"})

    def anonymous(self) -> ConsoleSession:
        return ConsoleSession(self.served.client())

    def console(self, token: str = ADMIN_TOKEN) -> ConsoleSession:
        session = self.anonymous()
        page = session.get("/ui/sign-in")
        assert page.status_code == 200, page.text
        answer = session.post("/ui/sign-in/token", {"token": token, "next": "/ui/modules"})
        assert answer.status_code == 303, answer.text
        assert answer.headers["location"] == "/ui/modules"
        session.get("/ui/modules")  # the signed-in CSRF token
        return session

    def module(
        self, fixture: str, version: str = "v1", *, name: str | None = None, deployed: bool = True
    ) -> str:
        """Push (and deploy) a fixture module under `name`; returns the module's name."""
        directory = (
            self.root / version / (name or fixture)
        )  # a module without a manifest is named after its folder
        if not directory.exists():
            shutil.copytree(FIXTURES / fixture, directory, ignore=shutil.ignore_patterns("__pycache__"))
            if fixture == "files":  # its workers read images
                (directory / "requirements.txt").write_text("pillow\n")
        with self.api() as api:
            answer = push(api, directory, version=version)
            assert answer.status_code in (200, 201), answer.text
            module = answer.json()["module"]
            assert wait_built(api, module, version)["build_status"] == "ready"
            if deployed:
                generation = deploy(api, module, version)["generation"]
                assert wait_deployment(api, module, generation)["status"] == "ready"
        return str(module)
