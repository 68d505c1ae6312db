"""The ORIGINAL Appsody python-flask user code runs unchanged (``from server import app``, own Swagger)."""

from __future__ import annotations

import sys

from flasgger import Swagger
from openapi_spec_validator import validate

from .test_metrics import requests_total, scrape


def test_appsody_package_served(make_app):
    app = make_app("appsody")
    client = app.test_client()
    hello = client.get("/hello")
    assert hello.status_code == 200 and hello.get_data(as_text=True) == "Hello from Appsody!"
    root = client.get("/")
    assert root.status_code == 302 and root.headers["Location"] == "/apidocs"  # the user's own "/" route
    docs = client.get("/apidocs", follow_redirects=True)
    assert docs.status_code == 200 and "swagger-ui" in docs.get_data(as_text=True)
    assert "https://" not in docs.get_data(as_text=True)  # the user's Swagger UI is offline too
    assert client.get("/health").status_code == 200


def test_user_app_is_the_app_under_construction(make_app):
    app = make_app("appsody")
    module = sys.modules["userapp"]
    assert module.app is app
    assert app.view_functions["HelloWorld"].__module__ == "userapp"


def test_flasgger_set_up_once_by_the_user(make_app):
    app = make_app("appsody")
    module = sys.modules["userapp"]
    assert isinstance(app.swag, Swagger) and app.swag is module.swagger
    assert [bp for bp in app.blueprints if bp.startswith("flasgger")] == ["flasgger"]
    assert [r.rule for r in app.url_map.iter_rules()].count("/apidocs/") == 1
    spec = app.test_client().get("/apispec_1.json").get_json()
    validate(spec)
    assert spec["info"]["title"] == "Python Flask Appsody Stack"
    assert {"/hello", "/health", "/metrics"} <= set(spec["paths"])


def test_track_requests_and_automatic_counting(make_app):
    client = make_app("appsody").test_client()  # the module's one app: earlier tests' requests count too
    before = requests_total(scrape(client), endpoint="/hello", status="200") or 0
    for _ in range(3):
        client.get("/hello")
    assert requests_total(scrape(client), endpoint="/hello", status="200") == before + 3


def test_old_style_module_is_imported_once(make_app):
    """The module holds its app (``from server import app``): a second create_app gives that same app, and the
    module is not imported again (its import-time side effects, flasgger and metrics, happen once)."""
    first = make_app("appsody")
    module = sys.modules["userapp"]
    second = make_app("appsody")
    assert sys.modules["userapp"] is module and second is first and module.app is first
    assert second.test_client().get("/hello").get_data(as_text=True) == "Hello from Appsody!"


def test_modern_package_not_reimported(make_app):
    make_app("basic")
    module = sys.modules["userapp"]
    make_app("basic")
    assert sys.modules["userapp"] is module
