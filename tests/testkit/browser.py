"""Headless Debian Chromium driven by playwright, for the browser tests (Swagger UI)."""

from __future__ import annotations

import contextlib
import os
import shutil
from typing import Iterator


from .need import missing

CHROMIUM = "/usr/bin/chromium"


@contextlib.contextmanager
def chromium() -> Iterator[object]:
    """A launched headless Chromium (playwright ``Browser``), closed at the end; the test is skipped locally (never
    in CI, where it fails) when Chromium is missing."""
    if not (os.path.exists(CHROMIUM) and shutil.which(CHROMIUM)):
        missing(f"{CHROMIUM} is missing (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"],
        )
        try:
            yield browser
        finally:
            browser.close()
