"""The dev server's try-it page in a real browser: the same form, script and styles as the console's "Try it"
tab (`gateway/templates/_try_form.html`, `gateway/static/try.js`), here without a session or CSRF token, with
the `curl` command of the form kept up to date."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from dev_process import DevProcess
from pages import CHROMIUM, WAIT_MS, console_line
from playwright.sync_api import expect, sync_playwright

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "modules"
pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[DevProcess]:
    directory = tmp_path / "echo"
    shutil.copytree(FIXTURES / "echo", directory, ignore=shutil.ignore_patterns("__pycache__"))
    process = DevProcess(directory)
    try:
        yield process
    finally:
        process.stop()


def test_the_dev_page_calls_its_module_and_shows_the_curl_command(dev: DevProcess) -> None:
    assert CHROMIUM.exists(), "Debian's chromium is not installed: run scripts/install-system-deps.sh"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            page = browser.new_page()
            page.set_default_timeout(WAIT_MS)
            log: list[str] = []
            page.on("console", lambda message: log.append(console_line(message)))
            page.on("pageerror", lambda error: log.append(f"pageerror: {error}"))
            page.goto(f"{dev.url}/")
            page.fill("#field-inputs\\.text", "hi <b>there</b>")
            page.fill("#field-parameters\\.suffix", "!")
            curl = page.locator("#try-curl")
            expect(curl).to_contain_text(f"curl -X POST '{dev.url}/api/v1/modules/echo/predict'")
            expect(curl).to_contain_text('"inputs":{"text":"hi <b>there</b>"},"parameters":{"suffix":"!"}')
            page.click("#try-run")
            expect(page.locator("#try-status .try-badge-ok")).to_contain_text("200")
            expect(page.locator("#try-view .try-text").first).to_have_text("hi <b>there</b>!")
            expect(page.locator("#try-view .try-scalar")).to_have_text("15")  # `length` of the text sent
            assert page.locator("#try-view b").count() == 0
            assert not [line for line in log if line.startswith(("error", "pageerror"))], log
        finally:
            browser.close()
