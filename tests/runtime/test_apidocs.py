"""API docs: a valid spec listing user and stack routes, the merged template, an offline Swagger UI."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
from openapi_spec_validator import validate

from .support import PYTHON, subprocess_env, write_userapp


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


DOCS_APP = (
    "from flask import Blueprint\n"
    "blueprint = Blueprint('d', __name__)\n"
    "@blueprint.route('/thing')\n"
    "def thing():\n"
    "    '''A thing\n    ---\n    responses:\n      200:\n        description: ok\n    '''\n"
    "    return 'thing'\n"
)


def _docs_apps(make_app, tmp_path):
    """The same user app twice: flasgger deferred (the default) and flasgger set up at once (``SWAGGER`` in its
    config, here empty: flasgger's defaults)."""
    write_userapp(tmp_path / "deferred", DOCS_APP)
    write_userapp(tmp_path / "eager", DOCS_APP + "def init_app(app):\n    app.config['SWAGGER'] = {}\n")
    deferred = make_app(None, USERAPP="userapp_deferred", USERAPP_DIR=str(tmp_path / "deferred"))
    eager = make_app(None, USERAPP="userapp_eager", USERAPP_DIR=str(tmp_path / "eager"))
    return deferred, eager


def _flasgger_layout(app):
    """The flasgger blueprint's rules (URL, endpoint, methods) and its template and static folders."""
    rules = sorted((r.rule, r.endpoint, tuple(sorted(r.methods))) for r in app.url_map.iter_rules()
                   if r.endpoint.startswith("flasgger."))
    blueprint = app.blueprints["flasgger"]
    return rules, blueprint.jinja_loader.searchpath, blueprint.static_folder, blueprint.static_url_path


def test_deferred_docs_have_flasggers_own_routes(make_app, tmp_path):
    """The deferred docs copy flasgger 0.9's route layout (``Swagger.register_views``): this fails when flasgger
    changes it, and the copy in ``server.apidocs.DeferredDocs`` must follow."""
    deferred, eager = _docs_apps(make_app, tmp_path)
    assert getattr(deferred, "swag", None) is None and eager.swag is not None
    layout = _flasgger_layout(deferred)
    assert layout == _flasgger_layout(eager)
    assert {rule for rule, _, _ in layout[0]} == {"/apidocs/", "/apispec_1.json", "/oauth2-redirect.html",
                                                  "/apidocs/index.html", "/flasgger_static/<path:filename>"}


@pytest.mark.parametrize("path", ["/apidocs/", "/apispec_1.json", "/oauth2-redirect.html", "/apidocs/index.html",
                                  "/apidocs/?json=1", "/flasgger_static/swagger-ui.css"])
def test_deferred_docs_answer_as_flasgger_does(make_app, tmp_path, path):
    """Every docs URL answers the same with flasgger deferred as with flasgger set up at once (the apps' names,
    their titles, aside)."""
    deferred, eager = _docs_apps(make_app, tmp_path)
    got, want = deferred.test_client().get(path), eager.test_client().get(path)
    assert got.status_code == want.status_code and got.status_code in (200, 302)
    assert got.headers.get("Location") == want.headers.get("Location")
    assert got.headers["Content-Type"] == want.headers["Content-Type"]
    assert got.data.replace(b"userapp_deferred", b"userapp_eager") == want.data
    if path == "/apispec_1.json":
        assert "/thing" in got.get_json()["paths"]


def test_flasgger_is_imported_on_the_first_docs_request(tmp_path):
    """A worker's start does not import flasgger (nor jsonschema, PyYAML, mistune); the first docs request does,
    once, even when many threads ask at the same time."""
    write_userapp(tmp_path / "lazy", DOCS_APP)
    script = """
import json, sys, threading
from server import create_app
app = create_app({"USERAPP_DIR": sys.argv[1], "USERAPP": "userapp", "TESTING": True})
before = sorted(m for m in ("flasgger", "jsonschema", "yaml", "mistune") if m in sys.modules)
statuses, swags = [], set()
def ask():
    statuses.append(app.test_client().get("/apispec_1.json").status_code)
    swags.add(id(app.swag))
threads = [threading.Thread(target=ask) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
page = app.test_client().get("/apidocs/")
print(json.dumps({"before": before, "after": "flasgger" in sys.modules, "statuses": statuses,
                  "swags": len(swags), "page": page.status_code}))
"""
    done = subprocess.run([PYTHON, "-c", script, str(tmp_path / "lazy")], env=subprocess_env(), capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"before": [], "after": True, "statuses": [200] * 8, "swags": 1, "page": 200}
