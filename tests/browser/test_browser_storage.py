"""A real browser uploads a receipt image through a presigned URL and calls a module with `{"object": ...}`.

`upload.html` is served from two loopback origins: one that both the `receipts` bucket's `Storage` manifest
and the `mirror` module's `Api` list in their CORS `allowOrigin`, one that neither lists. Chromium (Debian's,
driven by Playwright) runs the page with the modelport API token of `web-user` (in `/web`, which may use
both): from the listed origin it presigns an upload, PUTs a canvas's PNG to the URL with no token, calls
`mirror` with the stored object and shows the mirrored image it gets back; from the other origin the browser
refuses the very first call, and nothing is stored. A presigned URL does not upload under another key.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from pages import CHROMIUM, WAIT_MS, PageServer, console_line, failure_line
from platform_server import ADMIN_TOKEN, ServerProcess
from playwright.sync_api import Browser, sync_playwright

# The helpers that drive a platform server live in tests/server, which pytest puts on sys.path for its own
# tests only.
sys.path.insert(0, str(Path(__file__).parents[1] / "server"))
from drive import deploy, push, wait_built, wait_deployment

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

PAGE = Path(__file__).with_name("upload.html")
FILES = Path(__file__).parents[1] / "fixtures" / "modules" / "files"
BUCKET = "receipts"
MODULE = "mirror"
GROUP = "/web"


@dataclass
class Site:
    server: ServerProcess
    token: str
    allowed: PageServer
    unlisted: PageServer
    browser: Browser

    def admin(self) -> httpx.Client:
        return self.server.client()


@dataclass
class Run:
    """What one click did: the page's verdict and summary, what it shows, and the browser's complaints."""

    outcome: str
    summary: dict[str, Any]
    image: dict[str, Any]
    console: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def __str__(self) -> str:  # for assertion messages, whole: pytest shortens a repr
        return json.dumps(
            {"outcome": self.outcome, "summary": self.summary, "image": self.image}
            | {"console": self.console, "failed": self.failed},
            indent=2,
        )


def build_world(server: ServerProcess, root: Path, origin: str) -> str:
    """`/web`, `web-user` in it with a token (returned), the `mirror` module, the bucket and the `Api`."""
    directory = root / MODULE
    shutil.copytree(FILES, directory, ignore=shutil.ignore_patterns("__pycache__"))
    (directory / "modelport.yaml").write_text(
        f"apiVersion: modelport/v1\nkind: Module\nmetadata: {{name: {MODULE}}}\n"
    )
    (directory / "requirements.txt").write_text("pillow\n")
    cors = {"enabled": True, "allowOrigin": [origin]}
    documents = [
        {
            "apiVersion": "modelport/v1",
            "kind": "Storage",
            "metadata": {"name": BUCKET},
            "spec": {"access": {"groups": [GROUP]}, "cors": cors},
        },
        {
            "apiVersion": "modelport/v1",
            "kind": "Api",
            "metadata": {"name": MODULE},
            "spec": {"module": MODULE, "access": {"groups": [GROUP]}, "restfulApi": {"cors": cors}},
        },
    ]
    with server.client() as admin:
        assert admin.post("/api/v1/groups", json={"path": GROUP}).status_code == 201
        made = admin.post("/api/v1/users", json={"name": "web-user", "role": "user", "groups": [GROUP]})
        assert made.status_code == 201, made.text
        issued = admin.post("/api/v1/tokens", json={"name": "web", "user": made.json()["id"]})
        assert issued.status_code == 201, issued.text
        token: str = issued.json()["token"]
        assert token.startswith("mp_")
        pushed = push(admin, directory, version="v1")
        assert pushed.status_code == 201, pushed.text
        built = wait_built(admin, MODULE, "v1", timeout=60)
        assert built["build_status"] == "ready", built["build_error"]
        deployment = wait_deployment(admin, MODULE, deploy(admin, MODULE, "v1")["generation"], timeout=30)
        assert deployment["status"] == "ready", deployment
        applied = admin.post("/api/v1/apply", json={"documents": documents})
        assert applied.status_code == 200, applied.text
    return token


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    assert CHROMIUM.exists(), "Debian's chromium is not installed: run scripts/install-system-deps.sh"
    root = tmp_path_factory.mktemp("browser-storage")
    with ExitStack() as stack:
        server = ServerProcess(root / "server", token=ADMIN_TOKEN)  # the default, local object store
        stack.callback(server.stop)
        server.start()
        config: dict[str, str] = {"modelport": server.url, "bucket": BUCKET, "module": MODULE, "token": ""}
        # The origins are known only once the page servers listen, the token only once the world is built.
        allowed = PageServer(PAGE, config)
        stack.callback(allowed.close)
        unlisted = PageServer(PAGE, config)
        stack.callback(unlisted.close)
        token = build_world(server, root, allowed.origin)
        config["token"] = token
        playwright = stack.enter_context(sync_playwright())
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        stack.callback(browser.close)
        yield Site(server, token, allowed, unlisted, browser)


def click(browser: Browser, origin: str, button: str) -> Run:
    """Open the page on `origin` in a fresh profile, click `button` and wait for the page's summary."""
    context = browser.new_context()
    context.set_default_timeout(WAIT_MS)
    try:
        page = context.new_page()
        console: list[str] = []
        failed: list[str] = []
        page.on("console", lambda message: console.append(console_line(message)))
        page.on("requestfailed", lambda request: failed.append(failure_line(request)))
        page.goto(f"{origin}/")
        page.wait_for_function("document.body.dataset.ready === 'true'", timeout=WAIT_MS)
        page.click(f"#{button}")
        page.wait_for_function("document.getElementById('summary') !== null", timeout=WAIT_MS)
        summary = page.locator("#summary")
        image = page.evaluate(
            """() => {
                const img = document.getElementById('mirrored');
                return {src: img.getAttribute('src') ?? '', complete: img.complete,
                        width: img.naturalWidth, height: img.naturalHeight};
            }"""
        )
        return Run(
            outcome=summary.get_attribute("data-outcome") or "",
            summary=json.loads(summary.text_content() or "{}"),
            image=image,
            console=console,
            failed=failed,
        )
    finally:
        context.close()


def obj(key: str) -> str:
    return f"/api/v1/storage/{BUCKET}/objects/{quote(key, safe='/')}"


def stored_under_web(site: Site) -> list[dict[str, Any]]:
    with site.admin() as admin:
        listing = admin.get(f"/api/v1/storage/{BUCKET}", params={"prefix": "web/"})
        assert listing.status_code == 200, listing.text
        objects: list[dict[str, Any]] = listing.json()["objects"]
        assert listing.json()["next_cursor"] is None
        return objects


def test_a_page_on_a_listed_origin_uploads_through_a_presigned_url_and_calls_the_module(site: Site) -> None:
    seen = click(site.browser, site.allowed.origin, "upload")
    assert (seen.outcome, seen.summary.get("step")) == ("ok", "done"), str(seen)
    summary = seen.summary
    assert summary["statuses"] == {"presign": 200, "put": 201, "predict": 200, "mirrored": 200}, str(seen)
    assert summary["presigned"].startswith(f"{site.server.url}{obj(summary['key'])}?"), summary
    uploaded = summary["uploaded"]
    assert uploaded["content_type"] == "image/png" and uploaded["size"] > 0, summary
    assert summary["stored"]["key"] == summary["key"] and summary["stored"]["size"] == uploaded["size"]
    assert summary["stored"]["sha256"] == uploaded["sha256"], summary

    # The module read the stored object: the canvas's width, the uploaded size and type.
    assert summary["width"] == summary["canvas"]["width"] == 96, summary
    assert summary["info"]["image"]["content_type"] == "image/png", summary
    assert summary["info"]["image"]["size"] == uploaded["size"], summary
    assert summary["info"]["image"]["bytes_match"] is True, summary

    # The mirrored image came back as image/png and the page shows it.
    mirrored, shown = summary["mirrored"], summary["shown"]
    assert mirrored["content_type"] == "image/png" and mirrored["size"] > 0, summary
    assert shown["content_type"] == "image/png" and shown["size"] == mirrored["size"], summary
    assert (shown["natural_width"], shown["natural_height"]) == (96, 48), summary
    assert seen.image["src"].startswith("blob:") and seen.image["complete"], seen.image
    assert (seen.image["width"], seen.image["height"]) == (96, 48), seen.image
    assert seen.failed == [], str(seen)
    assert [line for line in seen.console if line.startswith("error")] == [], seen.console

    # Outside the browser, the admin finds the very bytes the page uploaded.
    with site.admin() as admin:
        head = admin.head(obj(summary["key"]))
        assert head.status_code == 200, head.headers
        assert head.headers["x-checksum-sha256"] == uploaded["sha256"]
        assert int(head.headers["content-length"]) == uploaded["size"]
        got = admin.get(obj(summary["key"]))
        assert got.status_code == 200 and got.headers["content-type"] == "image/png"
        assert hashlib.sha256(got.content).hexdigest() == uploaded["sha256"]
        assert got.content.startswith(b"\x89PNG\r\n\x1a\n")
    listed = {o["key"]: o for o in stored_under_web(site)}
    assert listed[summary["key"]]["size"] == uploaded["size"]
    assert listed[summary["key"]]["sha256"] == uploaded["sha256"]


def test_a_page_on_an_unlisted_origin_is_blocked_at_the_presign_and_stores_nothing(site: Site) -> None:
    before = stored_under_web(site)
    seen = click(site.browser, site.unlisted.origin, "upload")
    assert (seen.outcome, seen.summary.get("step")) == ("blocked", "presign"), str(seen)
    assert seen.summary["error"].startswith("TypeError: Failed to fetch"), str(seen)
    assert seen.summary["statuses"] == {} and "presigned" not in seen.summary, str(seen)
    presign_url = f"{site.server.url}/api/v1/storage/{BUCKET}/presign"
    refusals = [line for line in seen.console if "blocked by CORS policy" in line]
    assert [line for line in refusals if f"from origin '{site.unlisted.origin}'" in line], seen.console
    assert [line for line in seen.failed if line.startswith(f"POST {presign_url}")], seen.failed
    assert seen.image["src"] == "", seen.image
    assert stored_under_web(site) == before

    # The token is good: outside a browser, where no origin is enforced, the same call succeeds.
    answer = httpx.post(
        presign_url,
        json={"key": f"{seen.summary['key']}", "method": "PUT", "expires_in": 300, "size": 100},
        headers={"Authorization": f"Bearer {site.token}"},
        timeout=20,
    )
    assert answer.status_code == 200, answer.text
    assert stored_under_web(site) == before  # presigning stores nothing


def test_a_presigned_upload_url_does_not_upload_under_another_key(site: Site) -> None:
    before = stored_under_web(site)
    seen = click(site.browser, site.allowed.origin, "replay")
    assert (seen.outcome, seen.summary.get("step")) == ("ok", "done"), str(seen)
    summary = seen.summary
    # The refusal is readable from the page: the bucket's CORS applies to presigned URLs too.
    assert summary["statuses"] == {"presign": 200, "put": 403}, str(seen)
    assert summary["answer"]["error"]["code"] == "forbidden", summary
    assert quote(summary["other"], safe="/") in summary["changed"], summary
    assert seen.failed == [], str(seen)
    assert stored_under_web(site) == before
    with site.admin() as admin:
        assert admin.head(obj(summary["other"])).status_code == 404
        assert admin.head(obj(summary["key"])).status_code == 404
