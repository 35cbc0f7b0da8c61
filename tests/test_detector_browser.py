"""The web page with a detector, in a real browser: its detections are drawn over the photo, and clicking one explains it."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from browser_support import MARKS, launch, open_page

pytestmark = MARKS
playwright_api = pytest.importorskip("playwright.sync_api")
pytest.importorskip("uvicorn")


@pytest.mark.slow
def test_clicking_a_detection_explains_it(tmp_path: Path) -> None:
    import patchlens
    from conftest import SIZE
    from detector_fixtures import LABELS, PlantedDetector, planted_scene
    from patchlens.web import create_app
    from patchlens.web.server import BackgroundServer

    photo = tmp_path / "scene.png"
    Image.fromarray(planted_scene()).resize((256, 256), Image.Resampling.NEAREST).save(photo)
    model = patchlens.load_model(PlantedDetector(), input_size=SIZE, mean=(0, 0, 0), std=(1, 1, 1), labels=LABELS, min_score=0.2)
    with BackgroundServer(create_app(model)) as url, playwright_api.sync_playwright() as pw:
        browser = launch(pw)
        try:
            page, errors = open_page(browser, url + "/", 1100)
            page.wait_for_selector('fieldset[data-method="drise"].on')  # a detector's own method, ticked
            page.set_input_files("#upload", str(photo))
            page.wait_for_selector('#boxes .det[data-detection="1"]')
            square = page.locator('#boxes .det[data-detection="0"]').bounding_box()
            stage = page.locator("#photo").bounding_box()
            assert square is not None and stage is not None
            # the square is at x 32..56, y 8..32 of 64: its box sits there on the photo as shown
            assert square["x"] - stage["x"] == pytest.approx(stage["width"] * 32 / 64, abs=3)
            assert square["width"] == pytest.approx(stage["width"] * 24 / 64, abs=4)
            assert "square · detection 0" in page.inner_text("#preds")
            page.fill('fieldset[data-method="drise"] [data-param="n_masks"]', "200")
            page.fill('fieldset[data-method="drise"] [data-param="grid"]', "8")
            page.locator('#boxes .det[data-detection="1"] .tag').click()
            page.wait_for_function("() => document.querySelectorAll('.card').length === 1", timeout=120_000)
            assert page.input_value("#target") == "1"
            assert page.inner_text(".card .title").startswith("drise: decoy (detection 1)")
            assert page.locator(".card .det.shown").count() == 1  # the explained box over its map
            assert not errors, errors
        finally:
            browser.close()
