"""Loading the user's package: blueprints, hooks, templates/static, relative imports, and failures."""

from __future__ import annotations

import sys

import pytest

from server.exceptions import RouteConflictError, UserAppImportError

from .support import USERAPPS


def test_blueprint_routes_served_with_relative_import(make_app):
    client = make_app("basic").test_client()
    response = client.get("/hello?name=Ada")
    assert response.status_code == 200
    assert response.text == "Hello, Ada!"  # helpers.greeting, imported relatively


def test_init_app_called_once_per_app(make_app):
    app = make_app("basic")
    assert app.config["BASIC_INIT"] is True
    module = app.extensions["flask_stack"].module
    before = module.STATE["init_app_calls"]
    make_app("basic")
    assert sys.modules["userapp"].STATE["init_app_calls"] == before + 1


def test_blueprints_list_registered(make_app):
    app = make_app("multi")
    assert {"api", "admin"} <= set(app.blueprints)
    client = app.test_client()
    assert client.get("/api/items").json == {"items": [1, 2]}
    assert client.get("/admin/stats").json == {"ok": True}


def test_templates_and_static_from_user_dir(make_app):
    client = make_app("basic").test_client()
    page = client.get("/page")
    assert page.status_code == 200
    assert "<h1>Basic page</h1>" in page.text
    assert 'href="/static/style.css"' in page.text
    css = client.get("/static/style.css")
    assert css.status_code == 200
    assert b"color: teal" in css.data


def test_syntax_error_names_file_and_line(make_app):
    with pytest.raises(UserAppImportError) as info:
        make_app("syntax_error")
    err = info.value
    init = str(USERAPPS / "syntax_error" / "__init__.py")
    assert err.filename == init
    assert err.lineno == 7
    assert err.summary == str(err)
    assert err.summary.startswith(f"userapp failed to import: {init}:7: SyntaxError: ")
    assert "\n" not in err.summary
    assert "userapp" not in sys.modules


def test_runtime_error_points_at_user_line(make_app):
    with pytest.raises(UserAppImportError) as info:
        make_app("raising")
    err = info.value
    assert (err.filename, err.lineno) == (str(USERAPPS / "raising" / "__init__.py"), 7)
    assert "KeyError: 'port'" in err.summary


def test_missing_dependency_has_hint(make_app):
    with pytest.raises(UserAppImportError) as info:
        make_app("missing_dep")
    assert "ModuleNotFoundError: No module named 'no_such_dependency_xyz'" in info.value.summary
    # no declaration in the project: the hint names the most common file to start one (stackdeps.detect.hint)
    assert info.value.summary.endswith("(add the package to your project's requirements.txt)")
    assert info.value.lineno == 2


def test_no_app_found_is_one_line(make_app):
    with pytest.raises(UserAppImportError) as info:
        make_app("no_init")  # app.py, Flask's default module, holds no app
    assert "app (" in info.value.summary and "no Flask app found" in info.value.summary
    assert "\n" not in info.value.summary
    assert info.value.filename == str(USERAPPS / "no_init" / "app.py")
    with pytest.raises(UserAppImportError, match="does not exist"):
        make_app("no_such_dir_at_all")


def test_missing_module_by_name(make_app):
    from server import create_app

    with pytest.raises(UserAppImportError, match="no module named 'userapp_that_does_not_exist'"):
        create_app({"USERAPP": "userapp_that_does_not_exist"})


def test_init_app_failure_is_one_line(make_app):
    with pytest.raises(UserAppImportError) as info:
        make_app("badinit")
    assert info.value.summary.startswith("userapp.init_app(app) failed: ")
    assert "ValueError: DATABASE_URL is not set" in info.value.summary
    assert info.value.lineno == 7


def test_user_metrics_route_is_rejected(make_app):
    with pytest.raises(RouteConflictError) as info:
        make_app("reserved_metrics")
    assert "route /metrics" in info.value.summary
    assert "reserved by the stack" in info.value.summary
    assert info.value.filename == str(USERAPPS / "reserved_metrics" / "__init__.py")


def test_import_by_name_from_sys_path(monkeypatch, make_app):
    from server import create_app

    monkeypatch.syspath_prepend(str(USERAPPS / "multi"))  # a dir containing nothing named userapp
    monkeypatch.syspath_prepend(str(USERAPPS))
    sys.modules.pop("multi", None)
    app = create_app({"USERAPP": "multi", "TESTING": True})
    assert app.test_client().get("/api/items").status_code == 200
    sys.modules.pop("multi", None)


def test_no_user_package(make_app):
    app = make_app(None)
    client = app.test_client()
    assert client.get("/health").status_code == 200
    assert client.get("/").status_code == 302


_BP = "from flask import Blueprint\nblueprint = Blueprint('b', __name__)\n"


@pytest.mark.parametrize("source, message", [
    ("blueprint = 'not a blueprint'\n", "blueprint 'not a blueprint' is a str, not a flask.Blueprint"),
    ("blueprints = 'api'\n", "userapp.blueprints must be a list of flask.Blueprint, not str"),
    (_BP + "swagger_template = ['x']\n", "swagger_template must be a dict, not list"),
    (_BP + "readiness_checks = {'db': 42}\n", "health check 'db' is not callable"),
    (_BP + "liveness_checks = [lambda: True]\n", "liveness_checks must be a dict of name -> function, not list"),
], ids=["blueprint", "blueprints", "swagger_template", "check-not-callable", "checks-not-dict"])
def test_wrong_hook_types_are_one_line_errors(make_app, tmp_path, source, message):
    from .support import write_userapp

    write_userapp(tmp_path / "wrong", source)
    with pytest.raises(UserAppImportError) as info:
        make_app(None, USERAPP="userapp", USERAPP_DIR=str(tmp_path / "wrong"))
    assert message in info.value.summary
    assert info.value.filename == str(tmp_path / "wrong" / "__init__.py")


def test_own_flask_app_is_served_as_it_is(make_app, tmp_path):
    from .support import write_userapp

    write_userapp(tmp_path / "own", "from flask import Flask, url_for\napp = Flask(__name__)\n\n@app.route('/mine')\n"
                                    "def mine():\n    return url_for('mine')\n")
    app = make_app(None, USERAPP="userapp", USERAPP_DIR=str(tmp_path / "own"))
    assert app is sys.modules["userapp"].app and app.name == "userapp"
    client = app.test_client()
    assert client.get("/mine").get_data(as_text=True) == "/mine"  # its own endpoint name
    assert client.get("/health").status_code == 200 and client.get("/metrics").status_code == 200
