"""Progressive maps in a real browser: while RISE runs, the page shows the map formed so far, then the final card.

Headless Debian Chromium driven by Playwright; skipped when it is absent. A black box that sleeps a
little per image keeps the job running long enough for several rounds to be drawn.
"""

from __future__ import annotations

import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
playwright_api = pytest.importorskip("playwright.sync_api")

from browser_support import MARKS, launch, open_page
from web_fixtures import slow_classifier

pytestmark = MARKS


@pytest.mark.slow
def test_the_map_is_drawn_while_it_forms_then_replaced_by_the_card() -> None:
    from patchlens.web import create_app
    from patchlens.web.server import BackgroundServer

    with BackgroundServer(create_app(slow_classifier(0.004))) as url, playwright_api.sync_playwright() as pw:
        browser = launch(pw)
        try:
            page, errors = open_page(browser, url + "/", 900)
            page.wait_for_selector('fieldset[data-method="rise"]')
            page.click('img[data-example="coffee"]')
            page.wait_for_selector("#preds li")
            page.check('fieldset[data-method="rise"] legend input')
            page.fill("#p-rise-n_masks", "800")
            page.fill("#p-rise-round_size", "80")
            page.fill("#p-rise-converge", "0")
            start = time.monotonic()
            page.click("#run")
            page.wait_for_selector("#preview:not([hidden])", timeout=30_000)
            first = time.monotonic() - start
            text = page.locator("#preview-text").inner_text()
            assert "rise: the map so far, from" in text
            seen = {page.locator("#preview-map").get_attribute("src")}
            deadline = time.monotonic() + 30
            while len(seen) < 2 and time.monotonic() < deadline:  # a later round replaces the picture
                src = page.locator("#preview-map").get_attribute("src")
                if page.locator("#preview").is_hidden():
                    break
                seen.add(src)
                time.sleep(0.05)
            assert len(seen) >= 2, "the running map was drawn once only"
            page.wait_for_selector("figure.card[data-result]", timeout=60_000)
            assert page.locator("#preview").is_hidden()  # the final card replaces the running map
            assert first < time.monotonic() - start and not errors
        finally:
            browser.close()
