"""Make docs/report.png: the audit of the planted-shortcut dataset (tests/report_fixtures.py), shot in headless Chromium.

    python docs/report_screenshot.py

The store, page and findings.json are written to a temporary folder; only the picture is kept.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

import patchlens
from patchlens.batch import run_batch
from report_fixtures import OCCLUSION, planted_dataset, tag_classifier, write_csv


def main() -> None:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        source = write_csv(root / "photos.csv", planted_dataset(root))
        run_batch(str(source), str(root / "run.store"), model=tag_classifier(), progress=False, **OCCLUSION)
        page_path = root / "audit.html"
        findings = patchlens.report(root / "run.store", page_path)
        print(f"{page_path}: {len(findings.flagged)} flag(s)")
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path="/usr/bin/chromium",
                args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
            )
            page = browser.new_page(viewport={"width": 1200, "height": 900}, device_scale_factor=1)
            page.goto(page_path.as_uri())
            page.select_option("#f-flag", "any")  # what a reader does first: only the flagged classes
            card = page.locator('.card[data-class="cat"] h4').first.bounding_box()
            assert card
            page.screenshot(path=str(HERE / "report.png"), full_page=True,
                            clip={"x": 0, "y": 0, "width": 1200, "height": card["y"] + 260})
            browser.close()
    print(HERE / "report.png")


if __name__ == "__main__":
    main()
