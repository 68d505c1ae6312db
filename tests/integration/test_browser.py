"""Swagger UI of a project served by ``flask-stack run --engine local``, in headless Debian Chromium.

The page must render the template's ``/hello`` operation with no request leaving 127.0.0.1 (the stack
serves the UI's assets itself: no CDN).
"""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from testkit.browser import chromium

from .conftest import serve

pytestmark = [pytest.mark.slow, pytest.mark.browser]


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium driven by playwright; skipped locally (never in CI) when Chromium is missing."""
    with chromium() as launched:
        yield launched


def test_swagger_ui_renders_hello_from_localhost_only(browser, cli_env, project, tmp_path):
    with serve(cli_env, project, tmp_path) as app:
        page = browser.new_page()
        requested: list[str] = []
        page.on("request", lambda request: requested.append(request.url))
        try:
            page.goto(f"{app.base}/apidocs/", wait_until="load", timeout=30_000)
            operation = page.locator(".opblock-summary-path", has_text="/hello").first
            operation.wait_for(state="visible", timeout=30_000)
            assert operation.inner_text().replace("\u200b", "").strip() == "/hello"  # Swagger UI adds zero-width spaces
            page.locator(".opblock-summary", has_text="/hello").first.click()
            page.get_by_text("Hello from Appsody!").first.wait_for(state="visible", timeout=15_000)
            page.screenshot(path=str(tmp_path / "apidocs.png"))
        finally:
            page.close()
        assert requested, "the page made no request"
        outside = [url for url in requested
                   if urlsplit(url).scheme not in ("data", "blob") and urlsplit(url).hostname != "127.0.0.1"]
        assert outside == [], outside
        assert any(url.endswith("/apispec_1.json") for url in requested)
