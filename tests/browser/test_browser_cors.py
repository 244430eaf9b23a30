"""A real browser signs in as keycloak-js does, against a real OIDC provider, and calls a modelport module.

`page.html` is served from two loopback origins: one that the module's `Api` lists in its CORS `allowOrigin`,
one that it does not. From both, Chromium (Debian's, driven by Playwright) signs alice in through the
authorization-code + PKCE flow; only the listed origin may then read the module's answer, while from the other
the browser itself refuses the call at the preflight, with a token that is good everywhere else.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from oidc_provider import OidcProvider
from pages import CHROMIUM, WAIT_MS, PageServer, console_line, failure_line
from platform_server import ADMIN_TOKEN, ServerProcess
from playwright.sync_api import Browser, Page, sync_playwright

# The helpers that drive a platform server live in tests/server, which pytest puts on sys.path for its own
# tests only.
sys.path.insert(0, str(Path(__file__).parents[1] / "server"))
from drive import deploy, push, wait_built, wait_deployment

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

PAGE = Path(__file__).with_name("page.html")
ECHO = Path(__file__).parents[1] / "fixtures" / "modules" / "echo"
MODULE = "mod-web"


@dataclass
class Site:
    server: ServerProcess
    allowed: PageServer
    unlisted: PageServer
    browser: Browser


@dataclass
class Visit:
    """What one sign-in and call did: the DOM's verdict, the access token, and the browser's complaints."""

    user: str
    outcome: str
    text: str
    token: str
    console: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def deploy_echo(server: ServerProcess, root: Path, origin: str) -> None:
    """`mod-web`: the echo fixture, callable by `/team-a` from browsers on `origin` only."""
    directory = root / MODULE
    shutil.copytree(ECHO, directory, ignore=shutil.ignore_patterns("__pycache__"))
    (directory / "modelport.yaml").write_text(
        f"apiVersion: modelport/v1\nkind: Module\nmetadata: {{name: {MODULE}}}\n"
    )
    manifest = {
        "apiVersion": "modelport/v1",
        "kind": "Api",
        "metadata": {"name": "web-api"},
        "spec": {
            "module": MODULE,
            "access": {"groups": ["/team-a"]},
            "restfulApi": {"cors": {"enabled": True, "allowOrigin": [origin]}},
        },
    }
    with server.client() as admin:
        pushed = push(admin, directory, version="v1")
        assert pushed.status_code == 201, pushed.text
        assert wait_built(admin, MODULE, "v1", timeout=60)["build_status"] == "ready"
        deployment = wait_deployment(admin, MODULE, deploy(admin, MODULE, "v1")["generation"], timeout=30)
        assert deployment["status"] == "ready", deployment
        applied = admin.post("/api/v1/apply", json={"documents": [manifest]})
        assert applied.status_code == 200, applied.text


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    assert CHROMIUM.exists(), "Debian's chromium is not installed: run scripts/install-system-deps.sh"
    root = tmp_path_factory.mktemp("browser")
    with ExitStack() as stack:
        provider = stack.enter_context(OidcProvider())
        server = ServerProcess(
            root / "server",
            token=ADMIN_TOKEN,
            env={"MODELPORT_OIDC_ISSUER": provider.issuer, "MODELPORT_OIDC_AUDIENCE": "modelport"},
        )
        stack.callback(server.stop)
        server.start()
        config = {"issuer": provider.issuer, "modelport": server.url, "module": MODULE}
        allowed = PageServer(PAGE, config, paths=("/", "/callback"))
        stack.callback(allowed.close)
        unlisted = PageServer(PAGE, config, paths=("/", "/callback"))
        stack.callback(unlisted.close)
        deploy_echo(server, root, allowed.origin)
        playwright = stack.enter_context(sync_playwright())
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        stack.callback(browser.close)
        yield Site(server, allowed, unlisted, browser)


def visit(browser: Browser, origin: str, *, user: str = "alice") -> Visit:
    """Open the page on `origin` in a fresh profile, sign `user` in and wait for the module call's outcome."""
    context = browser.new_context()
    context.set_default_timeout(WAIT_MS)
    try:
        page = context.new_page()
        console: list[str] = []
        failed: list[str] = []
        page.on("console", lambda message: console.append(console_line(message)))
        page.on("requestfailed", lambda request: failed.append(failure_line(request)))
        page.goto(f"{origin}/")
        page.fill("#username", user)  # the provider's login page, reached by the page's redirect
        page.fill("#password", f"password-{user}")
        page.click("#login")
        result = page.wait_for_selector("#result")
        assert result is not None
        return Visit(
            user=page.text_content("#user") or "",
            outcome=result.get_attribute("data-outcome") or "",
            text=result.text_content() or "",
            token=_access_token(page),
            console=console,
            failed=failed,
        )
    finally:
        context.close()


def _access_token(page: Page) -> str:
    return str(page.evaluate("window.accessToken ?? ''"))


def test_a_page_on_a_listed_origin_signs_in_and_reads_the_answer(site: Site) -> None:
    seen = visit(site.browser, site.allowed.origin)
    assert (seen.user, seen.outcome) == ("alice", "ok"), seen
    body = json.loads(seen.text)
    assert body["module"] == MODULE
    assert body["outputs"] == {"text": "from the browser", "length": 16}
    assert seen.failed == [], seen


def test_a_page_on_an_unlisted_origin_signs_in_but_the_browser_blocks_the_call(site: Site) -> None:
    seen = visit(site.browser, site.unlisted.origin)
    assert seen.user == "alice", seen  # the sign-in worked: CORS on the provider is open to any origin
    assert seen.outcome == "blocked", seen
    assert seen.text.startswith("blocked: TypeError"), seen
    assert "outputs" not in seen.text and "from the browser" not in seen.text
    predict_url = f"{site.server.url}/api/v1/modules/{MODULE}/predict"
    refusals = [line for line in seen.console if "blocked by CORS policy" in line]
    assert [line for line in refusals if f"from origin '{site.unlisted.origin}'" in line], seen.console
    assert [line for line in seen.failed if line.startswith(f"POST {predict_url}")], seen.failed

    # The token is good: outside a browser, where no origin is enforced, the same call succeeds.
    answer = httpx.post(
        predict_url,
        json={"inputs": {"text": "from the browser"}},
        headers={"Authorization": f"Bearer {seen.token}"},
        timeout=20,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"]["text"] == "from the browser"
