"""The page with a multi-label model, in a real browser: it lists the present labels, explains each, and any one.

Headless Debian Chromium driven by Playwright; skipped when it is absent. The planted tagger of
docs/multilabel.py keeps every map instant.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
playwright_api = pytest.importorskip("playwright.sync_api")

from browser_support import MARKS, launch, open_page

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "docs"))
from multilabel import LABELS, SIZE, QuadrantTagger, scene  # noqa: E402

pytestmark = MARKS


@pytest.mark.slow
def test_present_labels_are_listed_and_each_explained(tmp_path: Path) -> None:
    import patchlens
    from patchlens.web import create_app
    from patchlens.web.server import BackgroundServer

    tagger = patchlens.load_model(QuadrantTagger(), input_size=SIZE, mean=(0, 0, 0), std=(1, 1, 1), labels=LABELS,
                                  activation="sigmoid")
    photo, blank = tmp_path / "scene.png", tmp_path / "blank.png"
    Image.fromarray(scene()).save(photo)
    Image.fromarray(np.full((SIZE, SIZE, 3), 128, np.uint8)).save(blank)
    with BackgroundServer(create_app(tagger)) as url, playwright_api.sync_playwright() as pw:
        browser = launch(pw)
        try:
            page, errors = open_page(browser, url + "/", 800)
            page.wait_for_selector('fieldset[data-method="occlusion"]')
            page.wait_for_function("() => document.querySelector('#target').value === 'present'")  # the default here
            page.set_input_files("#upload", str(photo))
            page.wait_for_selector("#preds li.present")
            assert sorted(page.locator("#preds li.present .label").all_inner_texts()) == ["boat", "sun"]
            note = page.locator("#present-note").inner_text()
            assert note.startswith("Present (p ≥ 0.5): ") and "sun" in note and "boat" in note and "tree" not in note
            page.check('fieldset[data-method="occlusion"] legend input')
            page.click("#run")
            page.wait_for_function("() => document.querySelectorAll('.card .title').length === 2")
            titles = sorted(page.locator(".card .title").all_inner_texts())
            assert titles[0].startswith("occlusion: boat (label 1), p = 0.9") and titles[1].startswith("occlusion: sun (label 0), p = 0.9")
            # any label can be explained: a click on it makes it the target
            page.click("#preds li:has-text('tree')")
            assert page.locator("#target").input_value() == "tree"
            page.click("#run")
            page.wait_for_function("() => [...document.querySelectorAll('.card .title')].some(t => t.textContent.startsWith('occlusion: tree'))")
            # an image with no label present: the page says so, and the job says so instead of failing
            page.set_input_files("#upload", str(blank))
            page.wait_for_function("() => document.querySelector('#present-note').textContent.startsWith('No label is present')")
            page.fill("#target", "present")
            page.click("#run")
            page.wait_for_selector(".card.note")
            assert "no label present" in page.locator(".card.note").inner_text()
            page.wait_for_function("() => document.querySelector('#job-status').textContent.startsWith('done')")
            assert not errors, errors
        finally:
            browser.close()
