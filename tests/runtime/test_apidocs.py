"""API docs: a valid spec listing user and stack routes, the merged template, an offline Swagger UI."""

from __future__ import annotations

import re

import pytest
from openapi_spec_validator import validate

from .support import write_userapp


def test_spec_valid_and_lists_user_and_stack_routes(make_app):
    client = make_app("basic").test_client()
    spec = client.get("/apispec_1.json").get_json()
    validate(spec)  # raises on an invalid Swagger 2.0 document
    assert spec["swagger"] == "2.0"
    for path in ("/hello", "/users/{user_id}", "/echo", "/health", "/health/live", "/health/ready",
                 "/health/started", "/metrics"):
        assert path in spec["paths"], path
    assert spec["paths"]["/hello"]["get"]["summary"] == "Say hello"
    assert spec["paths"]["/health"]["get"]["tags"] == ["stack"]
    assert "Health" in spec["definitions"]


def test_health_commit_is_nullable_in_the_spec(make_app):
    # the runtime answers "commit": null when no commit is known; the spec must allow it (schemathesis ST108)
    client = make_app("basic").test_client()
    assert client.get("/health").get_json()["commit"] is None
    commit = client.get("/apispec_1.json").get_json()["definitions"]["Health"]["properties"]["commit"]
    assert commit["type"] == "string" and commit["x-nullable"] is True


def test_openapi3_health_schema_accepts_the_real_body(make_app, tmp_path):
    from jsonschema.exceptions import ValidationError
    from openapi_schema_validator import OAS30Validator

    write_userapp(tmp_path / "o3", "from flask import Blueprint\nblueprint = Blueprint('o3', __name__)\n"
                                   "swagger_template = {'openapi': '3.0.2'}\n")
    client = make_app(None, USERAPP="userapp", USERAPP_DIR=str(tmp_path / "o3")).test_client()
    spec = client.get("/apispec_1.json").get_json()
    validate(spec)
    schema = spec["components"]["schemas"]["Health"]
    assert schema["properties"]["commit"]["nullable"] is True and "x-nullable" not in schema["properties"]["commit"]
    body = client.get("/health").get_json()
    assert body["commit"] is None
    OAS30Validator(schema).validate(body)  # raises when null is not allowed
    with pytest.raises(ValidationError, match="is not of type"):
        OAS30Validator(schema).validate({**body, "commit": 5})  # the validator does check the field


def test_swagger_template_merged(make_app):
    spec = make_app("basic", APP_VERSION="2.5.0").test_client().get("/apispec_1.json").get_json()
    assert spec["info"]["title"] == "Basic test app"  # the user's value wins
    assert spec["info"]["description"] == "fixture"
    assert spec["info"]["version"] == "2.5.0"  # the stack's base value kept
    assert {t["name"] for t in spec["tags"]} == {"stack", "users"}


def test_openapi3_template(make_app, tmp_path):
    source = (
        "from flask import Blueprint\n"
        "blueprint = Blueprint('o3', __name__)\n"
        "swagger_template = {'openapi': '3.0.2', 'info': {'title': 'O3'}}\n"
        "@blueprint.route('/thing')\n"
        "def thing():\n"
        "    '''A thing\n    ---\n    responses:\n      200:\n        description: ok\n    '''\n"
        "    return 'thing'\n"
    )
    write_userapp(tmp_path / "o3", source)
    spec = make_app(None, USERAPP="userapp", USERAPP_DIR=str(tmp_path / "o3")).test_client().get(
        "/apispec_1.json").get_json()
    assert spec["openapi"] == "3.0.2"
    assert "swagger" not in spec
    assert "/thing" in spec["paths"]
    validate(spec)


def test_ui_served_without_external_urls(make_app):
    client = make_app("basic").test_client()
    page = client.get("/apidocs/")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "swagger-ui" in html
    assert "http://" not in html and "https://" not in html
    assert not re.search(r"""(?:src|href)\s*=\s*["']//""", html)  # no protocol-relative URLs either
    assets = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html)
    assert any(a.endswith("swagger-ui-bundle.js") for a in assets)
    for asset in assets:
        assert client.get(asset).status_code == 200, asset  # every asset is served locally
    assert "/apispec_1.json" in html


def test_root_redirects_to_docs(make_app):
    response = make_app("basic").test_client().get("/")
    assert response.status_code == 302
    assert response.headers["Location"] == "/apidocs/"


def test_user_root_route_wins(make_app, tmp_path):
    source = "from flask import Blueprint\nblueprint = Blueprint('r', __name__)\n" \
             "@blueprint.route('/')\ndef home():\n    return 'home page'\n"
    write_userapp(tmp_path / "root", source)
    client = make_app(None, USERAPP="userapp", USERAPP_DIR=str(tmp_path / "root")).test_client()
    assert client.get("/").get_data(as_text=True) == "home page"


def test_user_template_overrides_nothing_of_the_stack_ui(make_app, tmp_path):
    # a user templates/ folder without flasgger files still gets the stack's offline head/footer
    write_userapp(tmp_path / "t", "from flask import Blueprint\nblueprint = Blueprint('t', __name__)\n",
                  **{"templates/page.html": "<p>{{ x }}</p>"})
    client = make_app(None, USERAPP="userapp", USERAPP_DIR=str(tmp_path / "t")).test_client()
    assert "https://" not in client.get("/apidocs/").get_data(as_text=True)


@pytest.mark.parametrize("headers", [None, [["X-Docs", "yes"]]])
def test_flasgger_response_headers_only_when_configured(make_app, tmp_path, headers):
    """flasgger copies app.config["SWAGGER"]["headers"] onto every response; the stack drops that per-request hook
    only when there are none to copy."""
    source = (
        "from flask import Blueprint\n"
        "blueprint = Blueprint('h', __name__)\n"
        "@blueprint.route('/thing')\n"
        "def thing():\n"
        "    return 'thing'\n"
        "def init_app(app):\n"
        f"    if {headers!r} is not None:\n"
        f"        app.config['SWAGGER'] = {{'headers': {headers!r}}}\n"
    )
    write_userapp(tmp_path / "h", source)
    app = make_app(None, USERAPP="userapp", USERAPP_DIR=str(tmp_path / "h"))
    flasgger_hooks = [f for f in app.after_request_funcs.get(None, []) if f.__module__.startswith("flasgger")]
    response = app.test_client().get("/thing")
    assert response.status_code == 200
    if headers is None:
        assert flasgger_hooks == [] and "X-Docs" not in response.headers
    else:
        assert len(flasgger_hooks) == 1 and response.headers["X-Docs"] == "yes"
