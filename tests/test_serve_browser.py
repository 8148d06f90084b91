"""The serve page in headless Chromium: type a prompt, click Generate, watch two columns fill in.

Needs Debian's ``chromium`` at /usr/bin/chromium and the ``playwright`` package (its bundled driver
only; no browser download): ``apt-get install -y chromium`` (``.ci/run`` does it where apt-get works)
and ``pip install -e ".[dev]"`` (which brings playwright). Skipped without them.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from test_serve import build_model_dir, serve_model_dir, start, stop  # noqa: F401 - serve_model_dir is a fixture

pytestmark = pytest.mark.slow  # a headless browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


@pytest.fixture
def chromium_page():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright)")
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install -y chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser.new_page(viewport={"width": 1280, "height": 760})
        finally:
            browser.close()


def test_page_streams_two_models_side_by_side(tmp_path, tiny_tokenizer_dir, serve_model_dir, chromium_page):
    teacher = build_model_dir(tmp_path / "llama", tiny_tokenizer_dir, name="llama", role="teacher", seed=1, val_ppl=98.7)
    server = start([teacher, serve_model_dir], max_tokens=128)
    page = chromium_page
    try:
        page.goto(server.url)
        page.wait_for_selector("body[data-ready='1']", timeout=10_000)
        cards = page.locator("#models .model")
        assert cards.count() == 2
        assert "98.70" in cards.nth(0).inner_text() and "teacher" in cards.nth(0).inner_text()
        assert page.locator("#max_new_tokens").get_attribute("max") == "128"
        page.eval_on_selector("#max_new_tokens", "e => { e.value = 24; e.dispatchEvent(new Event('input')); }")
        assert page.inner_text("#max_new_tokens-value") == "24"
        page.fill("#prompt", "The river")
        page.click("#generate")
        page.wait_for_function("document.querySelectorAll('#outputs .column.done').length === 2", timeout=20_000)
        columns = page.locator("#outputs .column")
        assert columns.count() == 2
        for i in range(2):
            assert columns.nth(i).locator(".prompt").inner_text() == "The river"
            assert columns.nth(i).locator(".generated").inner_text().strip()
            assert "done in" in columns.nth(i).locator(".status").inner_text()
        assert page.is_enabled("#generate") and not page.is_enabled("#stop")
        shot = tmp_path / "serve.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
    finally:
        stop(server)
