"""The audit page in a real browser: headless Chromium (Debian's) via Playwright, opened from disk with no network.

Skipped, saying so, when /usr/bin/chromium is absent (``apt-get install -y chromium``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

playwright_api = pytest.importorskip("playwright.sync_api")

from browser_support import MARKS, launch

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"

pytestmark = MARKS

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report_fixtures import OCCLUSION, planted_dataset, tag_classifier, write_csv


@pytest.mark.slow
def test_filter_to_the_flagged_class_and_open_an_example(tmp_path: Path) -> None:
    import patchlens
    from patchlens.batch import run_batch

    torch.set_num_threads(1)
    rows = planted_dataset(tmp_path)
    run_batch(str(write_csv(tmp_path / "list.csv", rows)), str(tmp_path / "store"), model=tag_classifier(), progress=False,
              **OCCLUSION)
    page_path = tmp_path / "audit.html"
    patchlens.report(tmp_path / "store", page_path)

    with playwright_api.sync_playwright() as pw:
        browser = launch(pw)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            errors: list[str] = []
            fetched: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("request", lambda req: fetched.append(req.url))
            page.goto(page_path.as_uri())
            assert page.locator(".card").count() == 2
            assert page.locator('.card[data-class="cat"]').get_attribute("data-flags")

            page.select_option("#f-flag", "outside_object")
            assert page.locator('.card[data-class="cat"]').is_visible()
            assert not page.locator('.card[data-class="coffee"]').is_visible()
            assert page.locator("#image-count").inner_text() == "8"
            assert page.locator('#image-table tbody tr[data-class="coffee"]:visible').count() == 0

            page.locator('.card[data-class="cat"] button.ex').first.click()
            viewer = page.locator("#viewer")
            assert viewer.is_visible()
            caption = page.locator("#viewer figcaption").inner_text()
            assert "explained as 'cat'" in caption and "outside the object" in caption
            assert page.locator("#viewer img").evaluate("img => img.complete && img.naturalWidth > 0")
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "report_example.png"))
            page.keyboard.press("Escape")
            assert not viewer.is_visible()

            # sorting the image table by score puts the highest first
            page.select_option("#f-flag", "")
            page.locator("#image-table th", has_text="score").click()
            page.locator("#image-table th", has_text="score").click()
            scores = [float(t) for t in page.locator("#image-table tbody tr td:nth-child(4)").all_inner_texts()]
            assert scores == sorted(scores, reverse=True) and len(scores) == 16

            # a row of the table that has an example opens the same overlay
            page.locator("#image-table tbody tr.pic").first.click()
            assert viewer.is_visible() and "explained as" in page.locator("#viewer figcaption").inner_text()
            page.keyboard.press("Escape")
            page.fill("#f-text", "coffee_03")
            assert page.locator("#image-table tbody tr").count() == 1 and page.locator("#image-count").inner_text() == "1"

            # a group's link shows exactly its rows in the table, and the group filter can be cleared again
            page.fill("#f-text", "")
            link = page.locator('.card[data-class="coffee"] a.group-link').first
            size = int(link.inner_text().split()[2])
            link.click()
            option = link.get_attribute("data-option")
            assert page.locator("#f-group").input_value() == option
            assert page.locator("#image-count").inner_text() == str(size)
            groups = page.locator("#image-table tbody tr td:nth-child(10)").all_inner_texts()
            assert len(groups) == size and set(groups) == {str(int(option.split("-")[1]) + 1)}
            assert not page.locator('.card[data-class="cat"]').is_visible()
            page.select_option("#f-group", "")
            assert page.locator("#image-count").inner_text() == "16"

            page.emulate_media(media="print")
            assert not page.locator("nav#controls").is_visible()
            pdf = page.pdf(path=str(ARTIFACTS / "report.pdf"))  # "print to PDF", as a reader would
            assert pdf.startswith(b"%PDF") and pdf.count(b"/Type /Page") >= 2
            assert errors == []
            assert all(url.startswith(("file:", "data:")) for url in fetched), fetched
        finally:
            browser.close()
