"""The page behaves, in a real browser: what it offers, what it resets, what its status says, what it shows large.

Headless Debian Chromium driven by Playwright (``apt-get install -y chromium``); skipped when it is absent.
A tiny 32x32 model keeps every explanation instant, so the test is about the page, not the maps.
"""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
playwright_api = pytest.importorskip("playwright.sync_api")

from browser_support import MARKS, launch
from web_fixtures import tiny_classifier

pytestmark = MARKS


@pytest.mark.slow
def test_page_offers_resets_reports_and_enlarges() -> None:
    from patchlens.web import create_app
    from patchlens.web.server import BackgroundServer

    with BackgroundServer(create_app(tiny_classifier())) as url, playwright_api.sync_playwright() as pw:
        browser = launch(pw)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            errors: list[str] = []
            missing: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("response", lambda r: missing.append(r.url) if r.status == 404 else None)
            page.goto(url + "/")
            page.wait_for_selector('fieldset[data-method="occlusion"]')

            # a CNN: attention rollout is greyed with the reason, token masking is not offered
            rollout = page.locator('fieldset[data-method="attention_rollout"]')
            assert "unavailable" in rollout.get_attribute("class")
            assert rollout.locator("legend input").is_disabled()
            assert "not a timm Vision Transformer" in rollout.inner_text()
            assert page.locator('#p-rise-masking option[value="tokens"]').is_disabled()
            assert not page.locator('fieldset[data-method="occlusion"] legend input').is_disabled()

            # the target picker searches the model's classes
            page.wait_for_function("() => document.querySelectorAll('#class-list option').length === 8")
            assert page.locator('#class-list option[value="class4"]').count() == 1

            page.click('img[data-example="coffee"]')
            page.wait_for_selector("#preds li")
            page.check('fieldset[data-method="occlusion"] legend input')
            page.fill("#p-occlusion-window", "16")
            page.fill("#p-occlusion-stride", "16")
            page.fill("#target", "class4")
            # below the fold of the page itself (filling #target may already have scrolled the window a little)
            assert page.evaluate("() => document.querySelector('#result-panel').getBoundingClientRect().top + scrollY > innerHeight")
            page.click("#run")
            page.wait_for_selector(".card .title")
            assert page.locator(".card .title").inner_text().startswith("occlusion: class4")
            page.wait_for_function("() => document.querySelector('#job-status').textContent.startsWith('done')")
            # the results were scrolled into view (they start below the fold of an 800 px window)
            page.wait_for_function(
                "() => { const r = document.querySelector('.card').getBoundingClientRect(); return r.top >= 0 && r.top < innerHeight; }"
            )

            # a large view of the map: the overlay with its colour bar, in a dialog
            page.click(".card .overlay")
            page.wait_for_function("() => document.querySelector('#viewer').open && document.querySelector('#viewer-img').naturalWidth > 0")
            assert page.eval_on_selector("#viewer-img", "i => i.naturalWidth") >= 256
            page.click("#viewer button")
            assert not page.eval_on_selector("#viewer", "d => d.open")

            # a class that does not exist: the status says so (it used to keep the last 'done')
            page.fill("#target", "class44")
            page.click("#run")
            page.wait_for_function("() => document.querySelector('#job-status').classList.contains('error')")
            assert "class44" in page.inner_text("#job-status")

            # what-if: each class's change from the original prediction
            page.click('#grid .cell[data-patch="0"]')
            page.wait_for_selector("#preds li .change")
            assert "was" in page.locator("#preds li .change").first.inner_text()

            # a new image: the previous image's cards and status are gone
            page.click('img[data-example="chelsea"]')
            page.wait_for_function("() => document.querySelector('#pred-note').textContent.includes('chelsea')")
            assert page.locator(".card").count() == 0 and page.inner_text("#job-status") == ""

            assert not errors, errors
            assert not missing, missing  # no favicon 404, nothing else missing
        finally:
            browser.close()
