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


BOOM = """

@blueprint.get("/boom")
def boom():
    raise RuntimeError("kaboom in a view")
"""


def test_syntax_error_and_view_traceback_pages_in_chromium(browser, cli_env, project, tmp_path, record_property):
    """Under `flask-stack run`: a syntax error's page shows the source line and the caret; a view that raises
    shows its traceback; both in the terminal too. Screenshots: paths printed and recorded as properties."""
    init = project / "__init__.py"
    good = init.read_text()
    with serve(cli_env, project, tmp_path) as app:
        app.wait_for("/hello", lambda r: r.status_code == 200)
        init.write_text(good + "\ndef broken(:\n")
        app.wait_for("/hello", lambda r: r.status_code == 500, timeout=30)
        page = browser.new_page()
        try:
            response = page.goto(f"{app.base}/hello", wait_until="load", timeout=30_000)
            assert response.status == 500
            assert page.locator("pre").inner_text() == "def broken(:\n           ^"
            assert "SyntaxError" in page.locator("body").inner_text()
            shot = tmp_path / "syntax-error.png"
            page.screenshot(path=str(shot), full_page=True)
            record_property("syntax_error_screenshot", str(shot))
            print(f"\nscreenshot of the syntax error page: {shot}")

            init.write_text(good + BOOM)
            app.wait_for("/boom", lambda r: r.status_code == 500 and "kaboom" in r.text, timeout=30)
            response = page.goto(f"{app.base}/boom", wait_until="load", timeout=30_000)
            assert response.status == 500
            trace = page.locator("pre").inner_text()
            assert trace.startswith("Traceback (most recent call last):")
            assert 'raise RuntimeError("kaboom in a view")' in trace and trace.endswith("RuntimeError: kaboom in a view")
            shot = tmp_path / "view-traceback.png"
            page.screenshot(path=str(shot), full_page=True)
            record_property("view_traceback_screenshot", str(shot))
            print(f"screenshot of the view traceback page: {shot}")
        finally:
            page.close()
        out = app.output()
        assert "    def broken(:\n               ^" in out
        assert "Exception on /boom [GET]" in out and 'raise RuntimeError("kaboom in a view")' in out
