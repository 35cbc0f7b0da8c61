"""What every browser test shares: which Chromium, how it is started here, and when the test is skipped.

Debian's Chromium (``apt-get install -y chromium``), driven by Playwright; Playwright cannot
download a browser of its own on these machines. Without background networking Chromium makes
no connections of its own, which this closed network would refuse.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("PATCHLENS_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

#: ``pytestmark`` of a browser test module
MARKS = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM} (apt-get install -y chromium)"),
]


def launch(pw: object) -> object:
    """Headless Chromium as these machines can run it."""
    return pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)  # type: ignore[attr-defined]


def open_page(browser: object, url: str, height: int) -> tuple[object, list[str]]:
    """A 1280-wide page of ``browser`` at ``url``, and the list its JavaScript errors are collected in."""
    page = browser.new_page(viewport={"width": 1280, "height": height})  # type: ignore[attr-defined]
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url)
    return page, errors
