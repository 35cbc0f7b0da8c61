"""The web explorer in a real browser: headless Chromium (Debian's) driven by Playwright.

Needs ``apt-get install -y chromium``; skipped, saying so, when /usr/bin/chromium is absent.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
playwright_api = pytest.importorskip("playwright.sync_api")

from browser_support import MARKS, launch, open_page

COFFEE = Path(__file__).resolve().parents[1] / "src/patchlens/data/examples/coffee.png"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
ESPRESSO = 967

pytestmark = [
    *MARKS,
    pytest.mark.slow,
]


def prob(page, index: int) -> float:
    text = page.locator(f'#preds li[data-index="{index}"] .prob').inner_text()
    return float(text.replace("%", "").strip()) / 100


@pytest.mark.slow
def test_upload_explain_compare_and_what_if(tmp_path: Path) -> None:
    import patchlens
    from patchlens.web import create_app
    from patchlens.web.server import BackgroundServer

    app = create_app(patchlens.load_model("default", device="cpu"))
    with BackgroundServer(app) as url, playwright_api.sync_playwright() as pw:
        browser = launch(pw)
        try:
            page, errors = open_page(browser, url + "/", 1100)
            # the method form is generated from the registry: every registered method appears
            page.wait_for_selector('fieldset[data-method="occlusion"]')
            assert page.locator("#methods-form fieldset").count() == len(patchlens.list_methods())

            page.set_input_files("#upload", str(COFFEE))
            page.wait_for_selector(f'#preds li[data-index="{ESPRESSO}"]')
            assert page.locator("#preds li").first.get_attribute("data-index") == str(ESPRESSO)
            before = prob(page, ESPRESSO)
            assert before > 0.5

            # two methods side by side, each with a small budget
            page.check('fieldset[data-method="occlusion"] legend input')
            page.fill("#p-occlusion-window", "56")
            page.fill("#p-occlusion-stride", "56")
            page.check('fieldset[data-method="rise"] legend input')
            page.fill("#p-rise-n_masks", "48")
            page.click("#run")
            # both methods run in one job (the 2-core test machine may be busy: allow time)
            page.wait_for_function("() => document.querySelectorAll('.card').length === 2", timeout=120_000)
            assert page.locator(".card .error").count() == 0, page.inner_text("#results")
            page.wait_for_function(
                "() => [...document.querySelectorAll('.card img')].every(i => i.complete && i.naturalWidth > 0)",
                timeout=60_000,
            )
            titles = page.locator(".card .title").all_inner_texts()
            assert any(t.startswith("occlusion: espresso") for t in titles), titles
            assert any(t.startswith("rise: espresso") for t in titles), titles

            # the opacity slider drives the overlay's opacity
            page.locator("#opacity").fill("0.9")
            opacity = page.eval_on_selector(".card img.heat", "i => getComputedStyle(i).opacity")
            assert float(opacity) == pytest.approx(0.9)

            # what-if: one patch hidden, the predictions are recomputed
            page.click('#grid .cell[data-patch="27"]')
            page.wait_for_function("() => document.querySelector('#pred-note').dataset.hidden === '1'")
            page.wait_for_function(
                f"() => document.querySelector('#preds li[data-index=\"{ESPRESSO}\"] .prob') === null || "
                f"document.querySelector('#preds li[data-index=\"{ESPRESSO}\"] .prob').textContent !== '{before * 100:.2f} %'"
            )
            assert page.locator('#grid .cell[data-patch="27"]').get_attribute("class") == "cell off"

            # hiding (blurring) the occlusion map's top patches takes the espresso away
            page.select_option("#baseline", "blur")
            page.select_option("#topk-map", label="occlusion: espresso")
            page.fill("#topk", "12")
            page.click("#hide-topk")
            page.wait_for_function("() => document.querySelectorAll('#grid .cell.off').length === 12")
            page.wait_for_function(
                f"() => {{ const p = document.querySelector('#preds li[data-index=\"{ESPRESSO}\"] .prob');"
                f" return p === null || parseFloat(p.textContent) < {before * 100 / 2}; }}"
            )
            ARTIFACTS.mkdir(exist_ok=True)
            shot = ARTIFACTS / "web.png"
            page.screenshot(path=str(shot), full_page=True)
            shutil.copy(shot, tmp_path / "web.png")
            assert shot.stat().st_size > 10_000
            assert not errors, errors
        finally:
            browser.close()
