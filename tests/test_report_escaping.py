"""The report page: a file name or label holding ``<!--<script>`` does not swallow the report page's own script.

Inside a ``<script>`` element, ``<!--`` followed by ``<script`` puts the HTML
parser in its "double escaped" state, where ``</script>`` no longer ends the
element: the page's own script after it becomes part of the data and never runs.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import patchlens
from patchlens.batch import run_batch
from patchlens.models import CallableClassifier

sys.path.insert(0, str(Path(__file__).resolve().parent))
from browser_support import CHROMIUM, launch  # noqa: E402

HOSTILE = "<!--<script>"


def brightness(x: torch.Tensor) -> torch.Tensor:
    m = x.mean((1, 2, 3))
    return torch.stack([m, 1 - m], 1)


def hostile_report(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    for name in (f"a{HOSTILE}b.png", "plain.png"):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(src / name)
    model = CallableClassifier(brightness, input_size=32, labels=[f"bright {HOSTILE}", "dark"], model_id="hostile")
    run_batch(str(src), str(tmp_path / "store"), model=model, method="occlusion", window=8, stride=8, progress=False)
    page = tmp_path / "audit.html"
    patchlens.report(tmp_path / "store", page)
    return page


def test_embedded_json_holds_no_markup_and_reads_back(tmp_path):
    html = hostile_report(tmp_path).read_text(encoding="utf-8")
    data = re.search(r'<script id="image-data" type="application/json">(.*?)</script>', html, re.S)
    assert data is not None
    assert "<!--" not in data.group(1) and "<script" not in data.group(1).lower()
    rows = json.loads(data.group(1))["rows"]
    assert any(HOSTILE in r["path"] for r in rows)  # the name itself survives, as data


@pytest.mark.browser
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM} (apt-get install -y chromium)")
def test_the_page_script_runs_in_a_browser(tmp_path):
    playwright_api = pytest.importorskip("playwright.sync_api")
    page_path = hostile_report(tmp_path)
    with playwright_api.sync_playwright() as pw:
        browser = launch(pw)
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(page_path.as_uri())
            rows = page.locator("#image-table tbody tr")  # drawn by the page's own script
            assert rows.count() == 2, "the page's script did not run"
            assert HOSTILE in rows.all_inner_texts()[0] + rows.all_inner_texts()[1]
            assert not errors
        finally:
            browser.close()
