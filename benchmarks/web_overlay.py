"""Web explorer: time to the first drawn map and to the final one, measured in a real browser.

The default model (runtime auto), the bundled coffee photo, RISE with the page's defaults (as a
user would run it: nothing typed in). Headless Debian Chromium through Playwright; the clock
starts at the click on Explain and stops when the running map, then the final card, is visible.

    python benchmarks/web_overlay.py --rounds 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

import patchlens
from patchlens.web import create_app
from patchlens.web.server import BackgroundServer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from browser_support import launch  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    model = patchlens.load_model("default")
    firsts, finals = [], []
    with BackgroundServer(create_app(model)) as url, sync_playwright() as pw:
        browser = launch(pw)
        try:
            for _ in range(args.rounds):
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.goto(url + "/")
                page.wait_for_selector('fieldset[data-method="rise"]')
                page.click('img[data-example="coffee"]')
                page.wait_for_selector("#preds li")
                page.check('fieldset[data-method="rise"] legend input')
                start = time.monotonic()
                page.click("#run")
                page.wait_for_selector("#preview:not([hidden])", timeout=120_000)
                firsts.append(time.monotonic() - start)
                page.wait_for_selector("figure.card[data-result]", timeout=300_000)
                finals.append(time.monotonic() - start)
                page.close()
        finally:
            browser.close()
    load = os.getloadavg()[0]
    print(f"model {model.model_id} ({getattr(model, 'runtime', 'torch')}), {os.cpu_count()} cores, load average {load:.1f}")
    print(f"first map drawn: median {statistics.median(firsts):.2f} s  ({', '.join(f'{t:.2f}' for t in firsts)})")
    print(f"final map:       median {statistics.median(finals):.2f} s  ({', '.join(f'{t:.2f}' for t in finals)})")


if __name__ == "__main__":
    main()
