"""The web console in a real browser (Chromium driven by Playwright) against a real `modelport server`.

The server accepts a real OpenID Connect provider's tokens and names the console's public client, so signing
in goes through the provider's own login page (authorization code + PKCE, run by the console's server). The
world: `echo` with two versions, `files` (an image in, a mirrored image out) and `prints` (log lines during
calls). The tests deploy and watch the status change, try a module with an image and see the rendered output,
roll back, follow a log line as it appears, and check that markup in outputs stays inert and that forged forms
are refused. Screenshots of the main pages go to `test-artifacts/console/` (or
`$MODELPORT_TEST_ARTIFACTS/console/`), at desktop and phone widths, for a reviewer to look at.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import httpx
import pytest
from drive import deploy, push, wait_built, wait_deployment
from oidc_provider import Account, OidcProvider, public_client
from pages import CHROMIUM, WAIT_MS, console_line
from PIL import Image
from platform_server import ADMIN_TOKEN, ServerProcess
from playwright.sync_api import Browser, FilePayload, Page, Response, expect, sync_playwright

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "modules"
CLIENT_ID = "modelport-console"
pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

ACCOUNTS = {
    "root": Account("password-root", ("/admins",), ("admin",), "root@example.test"),
    "alice": Account("password-alice", ("/team-a",), ("user",), "alice@example.test"),
}


def artifacts() -> Path:
    base = Path(os.environ.get("MODELPORT_TEST_ARTIFACTS") or ROOT / "test-artifacts")
    folder = base / "console"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@dataclass
class Console:
    server: ServerProcess
    provider: OidcProvider
    browser: Browser
    shots: Path

    @property
    def ui(self) -> str:
        return f"{self.server.url}/ui"


ANSWERED = "#try-status .try-badge-ok, #try-status .try-badge-bad"  # the try-it form's status badge
LONG = "a-module-with-a-rather-long-name-made-to-test-the-page-layout-0"  # 63 characters, the most


def _push(admin: httpx.Client, root: Path, fixture: str, version: str, *, name: str | None = None) -> None:
    directory = root / version / (name or fixture)  # a module without a manifest is named after its folder
    shutil.copytree(FIXTURES / fixture, directory, ignore=shutil.ignore_patterns("__pycache__"))
    if fixture == "files":
        (directory / "requirements.txt").write_text("pillow\n")
    if version == "v2":  # a different artifact under the same module
        entry = directory / "inference.py"
        entry.write_text(entry.read_text() + "\n# v2\n")
    pushed = push(admin, directory, version=version)
    assert pushed.status_code == 201, pushed.text


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    assert CHROMIUM.exists(), "Debian's chromium is not installed: run scripts/install-system-deps.sh"
    root = tmp_path_factory.mktemp("console-browser")
    with ExitStack() as stack:
        client = public_client(CLIENT_ID, redirect_uris=("http://127.0.0.1/ui/sign-in/oidc/callback",))
        provider = stack.enter_context(OidcProvider(accounts=ACCOUNTS, clients=[client]))
        env = {
            "MODELPORT_OIDC_ISSUER": provider.issuer,
            "MODELPORT_OIDC_AUDIENCE": "modelport",
            "MODELPORT_OIDC_CLIENT_ID": CLIENT_ID,
        }
        server = ServerProcess(root / "server", token=ADMIN_TOKEN, env=env)
        stack.callback(server.stop)
        server.start()
        with server.client(timeout=60) as admin:
            for fixture, version in (("echo", "v1"), ("echo", "v2"), ("files", "v1"), ("prints", "v1")):
                _push(admin, root, fixture, version)
            _push(admin, root, "echo", "v1", name=LONG)
            for fixture, version in (("echo", "v1"), ("echo", "v2"), ("files", "v1"), ("prints", "v1")):
                assert wait_built(admin, fixture, version, timeout=90)["build_status"] == "ready"
            for fixture in ("echo", "files", "prints"):
                generation = deploy(admin, fixture, "v1")["generation"]
                assert wait_deployment(admin, fixture, generation)["status"] == "ready"
        playwright = stack.enter_context(sync_playwright())
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        stack.callback(browser.close)
        yield Console(server, provider, browser, artifacts())


class Visitor:
    """One person in a fresh browser profile, with what the browser logged."""

    def __init__(
        self, console: Console, *, width: int = 1280, height: int = 860, locale: str = "en-US"
    ) -> None:
        self.console = console
        self.context = console.browser.new_context(viewport={"width": width, "height": height}, locale=locale)
        self.context.set_default_timeout(WAIT_MS)
        self.page: Page = self.context.new_page()
        self.log: list[str] = []
        self.page.on("console", lambda message: self.log.append(console_line(message)))
        self.page.on("pageerror", lambda error: self.log.append(f"pageerror: {error}"))
        self.page.on("response", self._answered)

    def _answered(self, response: Response) -> None:
        """Our server's answers that failed, besides pages a test opens to see them refused."""
        ours = response.url.startswith(self.console.server.url)
        if ours and response.status >= 400 and response.request.resource_type != "document":
            self.log.append(f"failed: {response.status} {response.url}")

    def sign_in_with_oidc(self, user: str, *, then: str = "/modules") -> None:
        self.page.goto(f"{self.console.ui}{then}")
        expect(self.page).to_have_url(re.compile(r"/ui/sign-in\?"))
        self.page.get_by_role("link", name=re.compile("single sign-on|единый вход", re.I)).click()
        self.page.fill("#username", user)  # the provider's own page
        self.page.fill("#password", ACCOUNTS[user].password)
        self.page.click("#login")
        self.page.wait_for_url(f"{self.console.ui}{then}")

    def sign_in_with_token(self, token: str = ADMIN_TOKEN) -> None:
        self.page.goto(f"{self.console.ui}/sign-in")
        self.page.locator("summary").click()
        self.page.fill("#token", token)
        self.page.get_by_role("button", name="Sign in with the token").click()
        self.page.wait_for_url(f"{self.console.ui}/modules")

    def shot(self, name: str) -> None:
        self.page.screenshot(path=str(self.console.shots / f"{name}.png"), full_page=True)

    def errors(self) -> list[str]:
        """What went wrong on our pages: script errors and our failed answers (the provider's pages, such as
        its missing favicon, are not ours)."""
        return [line for line in self.log if line.startswith(("pageerror", "failed"))]

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def visitor(console: Console) -> Iterator[Visitor]:
    opened = Visitor(console)
    yield opened
    opened.close()


def test_sign_in_through_the_oidc_provider(console: Console, visitor: Visitor) -> None:
    visitor.sign_in_with_oidc("root")
    expect(visitor.page.locator(".who")).to_have_text("root")
    expect(visitor.page.locator("#modules")).to_contain_text("echo")
    cookies = {c["name"]: c for c in visitor.context.cookies()}
    assert cookies["mp_session"]["httpOnly"] and cookies["mp_session"]["sameSite"] == "Lax"
    visitor.shot("modules")
    visitor.page.get_by_role("button", name="Sign out").click()
    visitor.page.wait_for_url(f"{console.ui}/sign-in")
    visitor.page.goto(f"{console.ui}/modules")
    expect(visitor.page).to_have_url(re.compile(r"/ui/sign-in\?"))
    assert not visitor.errors(), visitor.log


def test_a_user_outside_the_group_sees_no_module(console: Console, visitor: Visitor) -> None:
    visitor.sign_in_with_oidc("alice")
    expect(visitor.page.locator("main")).to_contain_text("No modules yet.")
    answer = visitor.page.goto(f"{console.ui}/modules/echo")
    assert answer is not None and answer.status == 404
    answer = visitor.page.goto(f"{console.ui}/modules/prints/logs")
    assert answer is not None and answer.status == 404


def test_deploy_watch_the_status_then_roll_back(console: Console, visitor: Visitor) -> None:
    visitor.sign_in_with_token()
    visitor.page.goto(f"{console.ui}/modules/echo")
    expect(visitor.page.locator("#active-version")).to_have_text("v1")
    visitor.shot("module")
    row = visitor.page.locator('tr[data-version="v2"]')
    row.get_by_role("button", name="Deploy", exact=True).click()
    dialog = visitor.page.locator("dialog#confirm")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("Deploy v2 to echo?")
    dialog.get_by_role("button", name="Confirm").click()
    # The deployment card refreshes itself: the new version becomes active without a reload.
    expect(visitor.page.locator("#active-version")).to_have_text("v2", timeout=60_000)
    expect(visitor.page.locator("#deployment [data-status]")).to_have_attribute("data-status", "ready")
    visitor.page.get_by_role("button", name=re.compile("Roll back to v1")).click()
    expect(dialog).to_contain_text("Roll echo back to v1?")
    visitor.page.keyboard.press("Enter")  # the dialog confirms by keyboard
    expect(visitor.page.locator("#active-version")).to_have_text("v1", timeout=60_000)
    with console.server.client() as admin:
        assert admin.get("/api/v1/modules/echo").json()["deployment"]["version"] == "v1"
    assert not visitor.errors(), visitor.log


def test_a_cancelled_confirmation_changes_nothing(console: Console, visitor: Visitor) -> None:
    visitor.sign_in_with_token()
    visitor.page.goto(f"{console.ui}/modules/echo")
    with console.server.client() as admin:
        before = admin.get("/api/v1/modules/echo").json()["deployment"]
    visitor.page.locator('tr[data-version="v2"]').get_by_role("button", name="Deploy", exact=True).click()
    visitor.page.locator("dialog#confirm").get_by_role("button", name="Cancel").click()
    expect(visitor.page.locator("dialog#confirm")).to_be_hidden()
    visitor.page.wait_for_timeout(300)  # a submitted form would have left by now
    assert visitor.page.url == f"{console.ui}/modules/echo"
    with console.server.client() as admin:
        after = admin.get("/api/v1/modules/echo").json()["deployment"]
    assert (after["version"], after["generation"]) == (before["version"], before["generation"])


def test_a_forged_form_from_another_site_is_refused(console: Console, visitor: Visitor) -> None:
    visitor.sign_in_with_token()
    with console.server.client() as admin:
        before = admin.get("/api/v1/modules/echo").json()["deployment"]["generation"]
    forged = (
        f'<form id="f" method="post" action="{console.ui}/modules/echo/deploy">'
        '<input name="version" value="v2"><input name="csrf" value="guessed"></form>'
        '<script>document.getElementById("f").submit()</script>'
    )
    visitor.page.route(
        "http://evil.test/", lambda route: route.fulfill(body=forged, content_type="text/html")
    )
    visitor.page.goto("http://evil.test/")
    visitor.page.wait_for_load_state()
    with console.server.client() as admin:
        assert admin.get("/api/v1/modules/echo").json()["deployment"]["generation"] == before


def test_pages_fit_a_phone(console: Console) -> None:
    phone = Visitor(console, width=360, height=740)
    try:
        phone.sign_in_with_token()
        pages = [
            ("/modules", "modules-phone"),
            ("/modules/echo", "module-phone"),
            (f"/modules/{LONG}", "long-name-phone"),
            ("/modules/files/try", "try-phone"),
            ("/modules/prints/logs", "logs-phone"),
            ("/modules/echo/metrics", "metrics-phone"),
            ("/jobs", "jobs-phone"),
            ("/storage", "storage-phone"),
            ("/new", "new-module-phone"),
        ]
        for path, name in pages:
            phone.page.goto(f"{console.ui}{path}")
            phone.shot(name)
            width = phone.page.evaluate("document.documentElement.scrollWidth")
            wide = phone.page.evaluate(
                "[...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > 361)"
                ".filter(e => !e.closest('.table-wrap')).map(e => e.tagName + '.' + e.className).slice(0, 5)"
            )
            assert width <= 360, f"{path} is {width} px wide: {wide}"
    finally:
        phone.close()


def test_try_an_image_and_see_the_rendered_output(console: Console, visitor: Visitor) -> None:
    visitor.sign_in_with_token()
    visitor.page.goto(f"{console.ui}/modules/files/try")
    image: FilePayload = {"name": "half-red.png", "mimeType": "image/png", "buffer": png(64, 32)}
    visitor.page.set_input_files("#field-inputs\\.image", files=[image])
    preview = visitor.page.locator(".try-preview img")
    expect(preview).to_have_count(1)  # shown before anything is sent
    visitor.page.click("#try-run")
    expect(visitor.page.locator(ANSWERED)).to_contain_text("200", timeout=30_000)
    mirrored = visitor.page.locator("#try-view img")
    expect(mirrored).to_have_count(1)
    visitor.page.wait_for_function(
        "() => { const i = document.querySelector('#try-view img'); return i?.complete && i.naturalWidth }"
    )
    assert mirrored.evaluate("i => [i.naturalWidth, i.naturalHeight]") == [64, 32]
    expect(visitor.page.locator("#try-view")).to_contain_text("64")  # the `width` output
    visitor.shot("try-it")
    assert not visitor.errors(), visitor.log


def test_markup_in_an_output_stays_text(console: Console, visitor: Visitor) -> None:
    dialogs: list[str] = []
    visitor.page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    visitor.sign_in_with_token()
    visitor.page.goto(f"{console.ui}/modules/echo/try")
    markup = '<img src=x onerror="alert(1)"><script>window.pwned = 1</script>'
    visitor.page.fill("#field-inputs\\.text", markup)
    visitor.page.click("#try-run")
    expect(visitor.page.locator(ANSWERED)).to_contain_text("200", timeout=30_000)
    expect(visitor.page.locator("#try-view .try-text").first).to_have_text(markup)
    assert visitor.page.evaluate("window.pwned") is None
    assert visitor.page.locator("#try-view img").count() == 0
    assert not dialogs
    csp = [line for line in visitor.log if "Content Security Policy" in line]
    assert not csp, csp


def test_follow_a_log_line_as_it_appears(console: Console, visitor: Visitor) -> None:
    visitor.sign_in_with_token()
    visitor.page.goto(f"{console.ui}/modules/prints/logs")
    lines = visitor.page.locator("#log-lines .log-line")
    expect(visitor.page.locator("#log-lines")).to_be_visible()
    before = lines.count()
    with console.server.client() as admin:
        answer = admin.post("/api/v1/modules/prints/predict", json={"inputs": {"text": "seen-live-7"}})
    assert answer.status_code == 200, answer.text
    request_id = answer.headers["x-request-id"]
    printed = visitor.page.locator("#log-lines .log-line", has_text="stdout line for seen-live-7")
    expect(printed).to_have_count(1, timeout=30_000)  # arrives over the stream, without a reload
    assert lines.count() > before
    expect(printed.locator("a.log-request")).to_have_text(request_id)
    visitor.shot("logs")
    with console.server.client() as admin:  # the request log is written within a second, off the call's path
        deadline = time.monotonic() + 10
        while admin.get(f"/api/v1/requests/{request_id}").status_code == 404 and time.monotonic() < deadline:
            time.sleep(0.1)
    printed.locator("a.log-request").click()
    visitor.page.wait_for_url(f"{console.ui}/modules/prints/requests/{request_id}")
    expect(visitor.page.locator("main")).to_contain_text("stdout line for seen-live-7")
    visitor.shot("request")
    assert not visitor.errors(), visitor.log


def test_every_main_page_renders_without_a_script_error(console: Console, visitor: Visitor) -> None:
    """A tour of the main pages, each screenshotted, in English and then in Russian."""
    visitor.sign_in_with_token()
    with console.server.client() as admin:
        assert admin.post("/api/v1/modules/echo/jobs", json={"inputs": {"text": "a job"}}).status_code == 202
    tour = [
        ("/modules/echo/docs", "api"),
        ("/modules/echo/requests", "requests"),
        ("/modules/echo/history", "history"),
        ("/modules/echo/drift", "drift"),
        ("/modules/echo/metrics?window=24h", "metrics"),
        ("/jobs", "jobs"),
        ("/pipelines", "pipelines"),
        ("/storage", "storage"),
        ("/tokens", "tokens"),
        ("/users", "users"),
        ("/groups", "groups"),
        ("/audit", "audit"),
        ("/new", "new-module"),
    ]
    for path, name in tour:
        answer = visitor.page.goto(f"{console.ui}{path}")
        assert answer is not None and answer.status == 200, path
        visitor.shot(name)
    visitor.page.get_by_role("link", name="RU", exact=True).click()
    expect(visitor.page.locator("html")).to_have_attribute("lang", "ru")
    for path, name in (("/modules", "modules-ru"), ("/modules/echo", "module-ru"), ("/new", "new-module-ru")):
        visitor.page.goto(f"{console.ui}{path}")
        visitor.shot(name)
    expect(visitor.page.locator("nav.nav")).to_contain_text("Модули")
    csp = [line for line in visitor.log if "Content Security Policy" in line]
    assert not csp and not visitor.errors(), visitor.log


def png(width: int, height: int) -> bytes:
    image = Image.new("RGB", (width, height), (255, 255, 255))
    for x in range(width // 2):
        for y in range(height):
            image.putpixel((x, y), (200, 30, 30))
    out = BytesIO()
    image.save(out, "PNG")
    return out.getvalue()
