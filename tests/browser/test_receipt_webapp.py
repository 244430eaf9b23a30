"""The gallery's receipt page (`gallery/receipt-webapp/`) in a real browser, hosted away from the platform as
its README says: any static server, the platform's address in `<meta name="modelport-url">`, and the page's
origin allowed by the `receipt-payments` Api and the `receipt-uploads` bucket (the README's own YAML,
applied here).

A real `modelport server` accepts the tokens of a real OpenID Connect provider and names its public client in
`GET /api/v1/auth/config`; `tesseract-ocr` and `receipt-extractor` are pushed, built and deployed, and the
gallery's `receipt-payments` manifests applied. Chromium (Debian's, driven by Playwright) opens the page,
signs in on the provider's login page and chooses a rendered receipt photo: carol, in the pipeline's group,
sees the receipt's total, date and ИНН; bob, outside it, sees the refusal and no fields. Server data the page
shows stays text even when it looks like markup, and a platform without OIDC asks for a modelport token.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import re
import shutil
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml
from drive import deploy, push, wait_built, wait_deployment
from oidc_provider import Account, OidcProvider, public_client
from pages import CHROMIUM, WAIT_MS, console_line, failure_line
from PIL import Image
from platform_server import ADMIN_TOKEN, ServerProcess
from playwright.sync_api import Browser, Dialog, FilePayload, Page, Route, sync_playwright

from modelport.app import PlatformServer
from modelport.core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

WEBAPP = ROOT / "gallery" / "receipt-webapp"
MANIFESTS = ROOT / "gallery" / "receipt-payments" / "manifests.yaml"
MODULES = ("tesseract-ocr", "receipt-extractor")
GROUP = "/pu-gallery-pa-receipt-payments/gallery-receipt-payments-users"
CLIENT_ID = "modelport-receipts"
README_ORIGIN = "https://receipts.example.com"  # the page's origin in the README's YAML
PREDICT = "/api/v1/pipelines/receipt-payments/predict"
ACCOUNTS = {
    "carol": Account("password-carol", (GROUP,), ("user",), "carol@example.test"),
    "bob": Account("password-bob", ("/team-b",), ("user",), "bob@example.test"),
}


@dataclass(frozen=True)
class Photo:
    """A phone photo of a rendered Russian receipt (`bench/receiptset.py`), and what the receipt shows."""

    jpeg: bytes
    size: tuple[int, int]
    truth: dict[str, Any]


@functools.cache
def photo() -> Photo:
    """The receipt enlarged to 2272 pixels high, as a phone takes it, so that the page scales it down."""
    spec = importlib.util.spec_from_file_location("bench_receiptset", ROOT / "bench" / "receiptset.py")
    assert spec is not None and spec.loader is not None
    receiptset = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = receiptset
    spec.loader.exec_module(receiptset)
    receipt = receiptset.receipts(count=1, seed=3)[0]
    with Image.open(BytesIO(receipt.image_bytes)) as image:
        enlarged = image.convert("RGB").resize((image.width * 2, image.height * 2), Image.Resampling.LANCZOS)
    out = BytesIO()
    enlarged.save(out, "JPEG", quality=92)
    return Photo(out.getvalue(), enlarged.size, receipt.truth)


class StaticSite:
    """`gallery/receipt-webapp/` as any static server serves it, on an origin of its own, with the platform's
    address written into index.html's `<meta name="modelport-url">`."""

    def __init__(self, platform: str) -> None:
        index = (WEBAPP / "index.html").read_text(encoding="utf-8")
        empty = '<meta name="modelport-url" content="">'
        assert index.count(empty) == 1
        page = index.replace(empty, f'<meta name="modelport-url" content="{platform}">').encode()

        class Handler(SimpleHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] not in ("/", "/index.html"):
                    super().do_GET()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(page)))
                self.end_headers()
                self.wfile.write(page)

            def log_message(self, *args: Any) -> None:
                pass

        handler = functools.partial(Handler, directory=str(WEBAPP))
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


@dataclass
class Site:
    server: ServerProcess
    provider: OidcProvider
    page: StaticSite
    browser: Browser
    shots: Path
    token: str
    """A modelport token of `dana`, a local user in the pipeline's group."""


def readme_cors(origin: str) -> list[dict[str, Any]]:
    """The documents of the README's "host it anywhere" YAML, for a page on `origin`."""
    text = (WEBAPP / "README.md").read_text(encoding="utf-8")
    (block,) = [b for b in re.findall(r"```yaml\n(.*?)```", text, re.S) if "restfulApi" in b]
    assert README_ORIGIN in block
    return list(yaml.safe_load_all(block.replace(README_ORIGIN, origin)))


def build_world(server: ServerProcess, root: Path, origin: str) -> str:
    """The two modules deployed, the gallery's manifests and the README's CORS change applied; returns the
    token of `dana`, a local user in the pipeline's group."""
    with server.client(timeout=60) as admin:
        for name in MODULES:
            directory = root / name
            ignored = shutil.ignore_patterns("tests", "__pycache__", "models", ".modelport")
            shutil.copytree(ROOT / "gallery" / name, directory, ignore=ignored)
            pushed = push(admin, directory, version="v1")
            assert pushed.status_code == 201, pushed.text
        for name in MODULES:
            built = wait_built(admin, name, "v1", timeout=90)
            assert built["build_status"] == "ready", built["build_error"]
        generations = {name: deploy(admin, name, "v1")["generation"] for name in MODULES}
        for name, generation in generations.items():
            deployment = wait_deployment(admin, name, generation, timeout=60)
            assert deployment["status"] == "ready", deployment
        for documents in (list(yaml.safe_load_all(MANIFESTS.read_text())), readme_cors(origin)):
            applied = admin.post("/api/v1/apply", json={"documents": documents})
            assert applied.status_code == 200, applied.text
        assert admin.post("/api/v1/groups", json={"path": GROUP}).status_code == 201
        made = admin.post("/api/v1/users", json={"name": "dana", "role": "user", "groups": [GROUP]})
        assert made.status_code == 201, made.text
        issued = admin.post("/api/v1/tokens", json={"name": "receipts", "user": made.json()["id"]})
        assert issued.status_code == 201, issued.text
        token: str = issued.json()["token"]
        return token


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    assert CHROMIUM.exists(), "Debian's chromium is not installed: run scripts/install-system-deps.sh"
    root = tmp_path_factory.mktemp("receipt-webapp")
    shots = root / "screenshots"
    shots.mkdir()
    print(f"screenshots of the receipt page: {shots}")
    with ExitStack() as stack:
        # The page's redirect URI is its own address; a loopback one is accepted on any port.
        client = public_client(CLIENT_ID, redirect_uris=("http://127.0.0.1/",))
        provider = stack.enter_context(OidcProvider(accounts=ACCOUNTS, clients=[client]))
        env = {
            "MODELPORT_OIDC_ISSUER": provider.issuer,
            "MODELPORT_OIDC_AUDIENCE": "modelport",
            "MODELPORT_OIDC_CLIENT_ID": CLIENT_ID,
        }
        server = ServerProcess(root / "server", token=ADMIN_TOKEN, env=env)
        stack.callback(server.stop)
        server.start()
        page = StaticSite(server.url)
        stack.callback(page.close)
        token = build_world(server, root, page.origin)
        playwright = stack.enter_context(sync_playwright())
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        stack.callback(browser.close)
        yield Site(server, provider, page, browser, shots, token)


@dataclass
class Visit:
    """What the page showed after a photo: its state, the problem's words and code, the fields by name."""

    state: str
    problem: str
    code: str
    fields: dict[str, str]
    text: str
    console: list[str]
    failed: list[str]
    dialogs: list[str]


class Browse:
    """One visitor in a fresh browser profile, with what the browser complained about."""

    def __init__(self, site: Site, name: str) -> None:
        self.site, self.name = site, name
        self.context = site.browser.new_context(viewport={"width": 360, "height": 780})
        self.context.set_default_timeout(WAIT_MS)
        self.page: Page = self.context.new_page()
        self.console: list[str] = []
        self.failed: list[str] = []
        self.dialogs: list[str] = []
        self.page.on("console", lambda message: self.console.append(console_line(message)))
        self.page.on("requestfailed", lambda request: self.failed.append(failure_line(request)))
        self.page.on("dialog", self._dialog)
        self.context.route(site.provider.metadata["token_endpoint"], self._as_keycloak)

    def _as_keycloak(self, route: Route) -> None:
        """The token endpoint's answer, with the CORS header Keycloak adds for a client's web origins.

        keycloak-js asks for tokens with `credentials: 'include'`, which Keycloak allows; oidc-provider
        never does, so the browser would keep its answer from the page."""
        response = route.fetch()
        headers = {**response.headers, "access-control-allow-credentials": "true"}
        route.fulfill(response=response, headers=headers)

    def _dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def open(self) -> None:
        self.page.goto(f"{self.site.page.origin}/")
        self.wait_for("ready", "error")

    def wait_for(self, *states: str) -> str:
        self.page.wait_for_function(
            "states => states.includes(document.body.dataset.state)", arg=list(states), timeout=WAIT_MS
        )
        return str(self.page.evaluate("document.body.dataset.state"))

    def sign_in(self, user: str) -> None:
        """Through the provider's login page, and back to the page signed in."""
        self.open()
        self.page.click("#sign-in")
        self.page.fill("#username", user)  # the provider's page
        self.page.fill("#password", ACCOUNTS[user].password)
        self.page.click("#login")
        self.page.wait_for_url(f"{self.site.page.origin}/**")
        assert self.wait_for("ready", "error") == "ready", "\n".join(self.console)
        assert self.page.text_content("#who") == f"Signed in as {user}"

    def choose_photo(self) -> Visit:
        payload: FilePayload = {"name": "receipt.jpg", "mimeType": "image/jpeg", "buffer": photo().jpeg}
        self.page.set_input_files("#photo", files=[payload])
        self.page.wait_for_function("['done', 'error'].includes(document.body.dataset.state)", timeout=60_000)
        return self.visit()

    def visit(self) -> Visit:
        fields = self.page.eval_on_selector_all(
            "#fields dd", "items => Object.fromEntries(items.map(d => [d.dataset.field, d.textContent]))"
        )
        return Visit(
            state=self.page.evaluate("document.body.dataset.state"),
            problem=self.page.text_content("#problem-text") or "",
            code=self.page.text_content("#problem-code") or "",
            fields=fields,
            text=self.page.text_content("#ocr-text") or "",
            console=self.console,
            failed=self.failed,
            dialogs=self.dialogs,
        )

    def screenshot(self, name: str) -> None:
        self.page.screenshot(path=str(self.site.shots / f"{name}.png"), full_page=True)

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def browse(site: Site) -> Iterator[Any]:
    opened: list[Browse] = []

    def open_one(name: str) -> Browse:
        opened.append(Browse(site, name))
        return opened[-1]

    yield open_one
    for visitor in opened:
        visitor.close()


def uploaded(site: Site) -> dict[str, dict[str, Any]]:
    """The objects in the upload bucket, by key."""
    with site.server.client() as admin:
        listing = admin.get("/api/v1/storage/receipt-uploads")
    assert listing.status_code == 200, listing.text
    return {o["key"]: o for o in listing.json()["objects"]}


def shown_total(truth: dict[str, Any]) -> str:
    return f"{truth['total']:.2f} {truth['currency']}"


def test_the_platform_names_its_browser_client_to_any_origin(site: Site) -> None:
    answer = httpx.get(
        f"{site.server.url}/api/v1/auth/config", headers={"Origin": site.page.origin}, timeout=10
    )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"oidc": {"issuer": site.provider.issuer, "client_id": CLIENT_ID}}
    assert answer.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in answer.headers


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"oidc_client_id": CLIENT_ID},
        {"oidc_issuer": "https://sso.example.com/realms/x", "oidc_audience": "m"},
    ],
    ids=["no-oidc", "client-without-issuer", "issuer-without-client"],
)
def test_without_an_issuer_and_a_client_the_config_names_no_oidc(
    tmp_path: Path, settings: dict[str, Any]
) -> None:
    server = PlatformServer(Settings(data_dir=tmp_path, **settings), announce=lambda line: None)

    async def ask() -> httpx.Response:
        transport = httpx.ASGITransport(app=server.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://platform.test") as http:
            return await http.get("/api/v1/auth/config")

    try:
        # On a thread of its own: Playwright's synchronous API holds this thread's event loop.
        with ThreadPoolExecutor(1) as thread:
            answer = thread.submit(asyncio.run, ask()).result(30)
    finally:
        server.database.close()
    assert (answer.status_code, answer.json()) == (200, {"oidc": None})


def test_a_user_in_the_group_signs_in_and_reads_a_receipt(site: Site, browse: Any) -> None:
    truth = photo().truth
    carol = browse("carol")
    carol.sign_in("carol")
    before = uploaded(site)
    seen = carol.choose_photo()
    carol.screenshot("carol-read-a-receipt")
    carol.page.set_viewport_size({"width": 1280, "height": 900})
    carol.screenshot("carol-read-a-receipt-wide")
    assert seen.state == "done", seen
    assert seen.fields["total"] == shown_total(truth), seen
    assert seen.fields["date"] == truth["date"], seen
    assert seen.fields["inn"] == truth["inn"], seen
    assert set(seen.fields) == {
        "total",
        "date",
        "time",
        "merchant",
        "inn",
        "payment_method",
        "card_last4",
        "fiscal",
    }
    assert truth["inn"] in seen.text  # the OCR text, folded away
    assert carol.page.locator("#ocr").get_attribute("open") is None
    assert seen.failed == [] and seen.dialogs == [], seen

    # The photo went up grey, at most 1600 pixels on its longer side, as a JPEG, under a fresh key.
    (stored,) = [o for key, o in uploaded(site).items() if key not in before]
    assert re.fullmatch(r"[0-9a-f]{32}\.jpg", stored["key"]) and stored["content_type"] == "image/jpeg"
    with site.server.client() as admin:
        stored_photo = admin.get(f"/api/v1/storage/receipt-uploads/objects/{stored['key']}")
    with Image.open(BytesIO(stored_photo.content)) as sent:
        assert sent.format == "JPEG"
        assert max(photo().size) > 1600 and max(sent.size) == 1600
        assert sent.size == tuple(round(side * 1600 / max(photo().size)) for side in photo().size)
        pixels = np.asarray(sent.convert("RGB"), dtype=np.int16)
    assert np.abs(np.diff(pixels, axis=2)).max() <= 2  # grey, give or take the JPEG's rounding


def test_a_user_outside_the_group_is_told_the_service_is_not_for_them(site: Site, browse: Any) -> None:
    bob = browse("bob")
    bob.sign_in("bob")
    before = uploaded(site)
    seen = bob.choose_photo()
    bob.screenshot("bob-refused")
    assert seen.state == "error", seen
    assert seen.problem == "Your account may not use this service. Ask its administrators for access.", seen
    assert seen.code.startswith("Error code: bucket_not_found"), seen
    assert seen.fields == {}, seen
    assert uploaded(site).keys() == before.keys()  # nothing was stored
    assert not bob.page.is_visible("#details") and bob.page.is_visible("#preview")


def test_what_the_server_sends_is_shown_as_text_never_as_markup(site: Site, browse: Any) -> None:
    crafted = {
        "total": "<b id=bold>12</b>",
        "currency": "<svg onload=alert('currency')>",
        "date": "<script>window.pwned = 'date'</script>",
        "merchant": "<img src=x onerror=\"window.pwned = 'merchant'; alert('merchant')\">",
        "inn": "<iframe src=javascript:alert('inn')>",
        "payment_method": "<a href=javascript:alert(1)>pay</a>",
        "card_last4": None,
        "fiscal": {"fn": "<img src=y onerror=alert('fn')>"},
        "text": "</pre><img src=z onerror=\"alert('text')\">",
    }
    carol = browse("carol")
    carol.sign_in("carol")
    origin = site.page.origin

    def answer(route: Route) -> None:
        body = {"outputs": crafted, "pipeline": "receipt-payments", "steps": {}, "request_id": "0" * 32}
        headers = {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
        route.fulfill(status=200, json=body, headers=headers)

    carol.page.route(f"{site.server.url}{PREDICT}", answer)
    seen = carol.choose_photo()
    carol.screenshot("markup-shown-as-text")
    assert seen.state == "done", seen
    assert seen.fields["total"] == "<b id=bold>12</b> <svg onload=alert('currency')>"
    assert seen.fields["merchant"] == crafted["merchant"]
    assert seen.fields["inn"] == crafted["inn"]
    assert seen.fields["date"] == crafted["date"]
    assert seen.fields["payment_method"] == crafted["payment_method"]
    assert seen.fields["card_last4"] == "—"
    assert seen.fields["fiscal"] == "ФН <img src=y onerror=alert('fn')>", seen
    assert seen.text == crafted["text"]
    # No element came out of the data: the preview is the result's only image, and nothing ran.
    made = carol.page.evaluate(
        "[...document.querySelectorAll('#result *')].map(e => e.tagName.toLowerCase())"
    )
    assert [tag for tag in made if tag in {"b", "svg", "script", "iframe", "a"}] == []
    assert made.count("img") == 1 and carol.page.evaluate("window.pwned") is None
    assert seen.dialogs == [], seen


def test_without_oidc_the_page_asks_for_a_modelport_token(site: Site, browse: Any) -> None:
    dana = browse("dana")
    # The same platform, as one without an OIDC client answers.
    dana.page.route(
        f"{site.server.url}/api/v1/auth/config",
        lambda route: route.fulfill(json={"oidc": None}, headers={"Access-Control-Allow-Origin": "*"}),
    )
    dana.open()
    assert dana.page.is_visible("#token-form") and not dana.page.is_visible("#sign-in")
    assert dana.page.get_attribute("#token", "type") == "password"
    dana.page.fill("#token", "mp_not-a-real-token")
    dana.page.click("#token-form button[type=submit]")
    refused = dana.choose_photo()
    assert (refused.state, refused.problem) == (
        "error",
        "Your sign-in was not accepted or has expired: sign in again.",
    )
    assert refused.code.startswith("Error code: invalid_token"), refused
    assert dana.page.is_visible("#token-form")  # the refused token is forgotten

    dana.page.fill("#token", site.token)
    dana.page.keyboard.press("Enter")
    assert dana.page.text_content("#who") == "Signed in with a modelport token"
    assert dana.page.evaluate("sessionStorage.getItem('modelport-token')") == site.token
    seen = dana.choose_photo()
    dana.screenshot("token-read-a-receipt")
    assert seen.state == "done", seen
    assert seen.fields["total"] == shown_total(photo().truth), seen
    dana.page.click("#sign-out")
    assert dana.page.evaluate("sessionStorage.getItem('modelport-token')") is None
    assert dana.page.is_visible("#token-form") and not dana.page.is_visible("#photo-panel")
