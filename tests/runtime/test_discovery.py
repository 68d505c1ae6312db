"""Finding the user's app as ``flask run`` does, and the stack applied to apps it did not make (``server.Stack``)."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from server import Stack, create_app
from server.exceptions import RouteConflictError, UserAppImportError


def project(root: Path, **files: str) -> Path:
    """Write ``files`` (relative path -> dedented text) below ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))
    return root


@pytest.fixture(autouse=True)
def forget_modules():
    """Each test's user modules are new: drop the names the tests here use from sys.modules afterwards."""
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if not name.startswith(("server", "flask", "werkzeug", "jinja2", "prometheus", "flasgger", "dotenv")):
            del sys.modules[name]
    sys.path[:] = [p for p in sys.path if "pytest-of" not in p]


APP_PY = """
    from flask import Flask
    app = Flask(__name__)

    @app.get("/which")
    def which():
        return "{name}"
"""


def test_wsgi_py_wins_over_app_py_and_packages(tmp_path):
    root = project(tmp_path / "p", **{"wsgi.py": APP_PY.format(name="wsgi"), "app.py": APP_PY.format(name="app"),
                                      "pkg/__init__.py": APP_PY.format(name="pkg")})
    app = create_app({"USERAPP_DIR": str(root), "TESTING": True})
    assert app.test_client().get("/which").text == "wsgi" and app.name == "wsgi"


def test_app_py_then_the_one_package_below(tmp_path):
    root = project(tmp_path / "p", **{"pkg/__init__.py": APP_PY.format(name="pkg"), "tests/__init__.py": ""})
    app = create_app({"USERAPP_DIR": str(root), "TESTING": True})
    assert app.test_client().get("/which").text == "pkg" and app.name == "pkg"
    assert str(root) in sys.path  # absolute imports of the project's own package work


def test_several_packages_need_an_app_option(tmp_path):
    root = project(tmp_path / "p", **{"one/__init__.py": APP_PY.format(name="one"),
                                      "two/__init__.py": APP_PY.format(name="two")})
    with pytest.raises(UserAppImportError, match=r"several packages \(one, two\); say which is the app with --app"):
        create_app({"USERAPP_DIR": str(root)})
    app = create_app({"USERAPP_DIR": str(root), "APP": "two", "TESTING": True})
    assert app.test_client().get("/which").text == "two"


@pytest.mark.parametrize("spec", ["factory:make(prefix='/v2')", "factory.py:make(prefix='/v2')"])
def test_flask_app_with_a_factory_call(tmp_path, spec):
    root = project(tmp_path / "p", **{"factory.py": """
        from flask import Flask, url_for

        def make(prefix="/v1"):
            app = Flask(__name__)
            app.add_url_rule(prefix + "/here", "here", lambda: url_for("here"))
            return app
    """})
    app = create_app({"USERAPP_DIR": str(root), "APP": spec, "TESTING": True})
    assert app.test_client().get("/v2/here").text == "/v2/here"


def test_flask_app_errors_are_one_line(tmp_path):
    root = project(tmp_path / "p", **{"factory.py": "def make(required):\n    pass\n", "other.py": "x = 1\n"})
    with pytest.raises(UserAppImportError) as info:
        create_app({"USERAPP_DIR": str(root), "APP": "factory:make"})
    assert "\n" not in info.value.summary and info.value.summary.startswith("factory:make: ")
    with pytest.raises(UserAppImportError, match="other:nothing: Failed to find attribute 'nothing'"):
        create_app({"USERAPP_DIR": str(root), "APP": "other:nothing"})


def test_factory_that_raises_names_its_line(tmp_path):
    root = project(tmp_path / "p", **{"app.py": """
        def create_app():
            raise RuntimeError("DATABASE_URL is not set")
    """})
    with pytest.raises(UserAppImportError) as info:
        create_app({"USERAPP_DIR": str(root)})
    assert info.value.summary == (f"app: the app factory failed: {root / 'app.py'}:2: RuntimeError: "
                                  f"DATABASE_URL is not set")


def test_flaskenv_says_where_the_app_is(tmp_path, monkeypatch):
    root = project(tmp_path / "p", **{".flaskenv": "FLASK_APP=site_app:build\n", "site_app.py": """
        from flask import Flask

        def build():
            app = Flask(__name__)
            app.add_url_rule("/", "index", lambda: "from .flaskenv")
            return app
    """})
    monkeypatch.delenv("FLASK_APP", raising=False)
    try:
        app = create_app({"USERAPP_DIR": str(root), "TESTING": True})
        assert os.environ["FLASK_APP"] == "site_app:build"  # set from the file, as `flask run` sets it
    finally:
        os.environ.pop("FLASK_APP", None)
    assert app.test_client().get("/").text == "from .flaskenv"


def test_the_users_own_app_keeps_everything_of_its_own(tmp_path):
    root = project(tmp_path / "p", **{"shop/__init__.py": """
        from flask import Flask, render_template, url_for
        from werkzeug.middleware.proxy_fix import ProxyFix

        def create_app():
            app = Flask(__name__, instance_relative_config=True)
            app.config["GREETING"] = "hi"
            app.wsgi_app = ProxyFix(app.wsgi_app)

            @app.route("/")
            def index():
                return render_template("page.html", link=url_for("index"), greeting=app.config["GREETING"])

            @app.errorhandler(404)
            def not_found(error):
                return "my own 404", 404

            return app
    """, "shop/templates/page.html": "{{ greeting }} at {{ link }}"})
    app = create_app({"USERAPP_DIR": str(root), "TESTING": True})
    assert app.name == "shop" and app.root_path == str(root / "shop")
    assert app.instance_path == str(root / "instance")
    client = app.test_client()
    assert client.get("/").text == "hi at /"
    assert client.get("/nope", headers={"Accept": "application/json"}).text == "my own 404"  # its handler wins
    assert client.get("/health").status_code == 200 and client.get("/apidocs/").status_code == 200
    assert "X-Request-ID" in client.get("/").headers


def test_json_errors_unless_the_app_handles_http_errors(tmp_path):
    root = project(tmp_path / "p", **{"app.py": """
        from flask import Flask
        from werkzeug.exceptions import HTTPException

        app = Flask(__name__)

        @app.errorhandler(HTTPException)
        def mine(error):
            return f"mine: {error.code}", error.code
    """, "other/app.py": "from flask import Flask\napp = Flask(__name__)\n"})
    app = create_app({"USERAPP_DIR": str(root), "TESTING": True})
    assert app.test_client().get("/nope", headers={"Accept": "application/json"}).text == "mine: 404"
    other = create_app({"USERAPP_DIR": str(root / "other"), "TESTING": True})
    body = other.test_client().get("/nope", headers={"Accept": "application/json"}).get_json()
    assert body["error"]["status"] == 404 and body["error"]["request_id"]


def test_stack_applied_by_the_users_factory_is_not_applied_twice(tmp_path):
    root = project(tmp_path / "p", **{"app.py": """
        from flask import Flask
        from server import Stack

        def create_app():
            app = Flask(__name__)
            Stack(app)
            app.add_url_rule("/mine", "mine", lambda: "mine")
            return app
    """})
    app = create_app({"USERAPP_DIR": str(root), "TESTING": True})
    rules = [r.rule for r in app.url_map.iter_rules()]
    assert rules.count("/metrics") == 1 and rules.count("/apidocs/") == 1 and rules.count("/health") == 1
    assert list(app.blueprints).count("flasgger") == 1
    assert app.test_client().get("/mine").text == "mine"
    assert app.test_client().get("/health/ready").status_code == 200


def test_explicit_stack_on_a_plain_app():
    from flask import Flask

    app = Flask("plain")
    state = Stack(app, config={"HEALTH_TIMEOUT": "2.5"}).init_app(app)  # a second init_app is a no-op
    assert app.extensions["flask_stack"] is state and state.settings.health_timeout == 2.5
    client = app.test_client()
    assert client.get("/health").get_json()["status"] == "UP"
    assert client.get("/").headers["Location"].endswith("/apidocs/")


def test_reserved_route_on_the_users_own_app(tmp_path):
    root = project(tmp_path / "p", **{"app.py": """
        from flask import Flask
        app = Flask(__name__)

        @app.get("/health")
        def health():
            return "mine"
    """})
    with pytest.raises(RouteConflictError) as info:
        create_app({"USERAPP_DIR": str(root)})
    assert f"{root / 'app.py'}:4: route /health" in info.value.summary


def test_module_level_metrics_of_the_default_registry_on_metrics(tmp_path):
    root = project(tmp_path / "p", **{"app.py": """
        from flask import Flask
        from prometheus_client import Counter

        ORDERS = Counter("discovery_test_orders", "Orders taken.")
        app = Flask(__name__)

        @app.post("/order")
        def order():
            ORDERS.inc()
            return "ok"
    """})
    app = create_app({"USERAPP_DIR": str(root), "TESTING": True})
    client = app.test_client()
    client.post("/order")
    client.post("/order")
    text = client.get("/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["discovery_test_orders"].samples[0].value == 2.0
    assert text.count("# TYPE process_cpu_seconds_total") == 1  # the default registry's own collectors: once
    assert text.count("# TYPE python_info") == 1
    from prometheus_client import REGISTRY

    REGISTRY.unregister(sys.modules["app"].ORDERS)


def test_missing_own_package_has_its_own_hint(tmp_path):
    root = project(tmp_path / "myproj", **{"__init__.py": "from myproj.models import User\n", "models.py": ""})
    with pytest.raises(UserAppImportError) as info:
        create_app({"USERAPP_DIR": str(root), "USERAPP": "userapp"})
    assert "'myproj' is your project's own code, imported by the stack as 'userapp'" in info.value.summary
    assert "add the package to your project's" not in info.value.summary


def test_root_package_is_named_after_its_directory(tmp_path):
    root = project(tmp_path / "corner_shop", **{"__init__.py": """
        from flask import Blueprint
        blueprint = Blueprint("shop", __name__)
        blueprint.add_url_rule("/", "index", lambda: __name__)
    """})
    app = create_app({"USERAPP_DIR": str(root), "TESTING": True})
    assert app.test_client().get("/").text == "corner_shop" and "corner_shop" in sys.modules
    dashed = project(tmp_path / "corner-shop", **{"__init__.py": "from flask import Flask\napp = Flask(__name__)\n"})
    sys.modules.pop("userapp", None)
    assert create_app({"USERAPP_DIR": str(dashed)}).name == "userapp"  # no identifier: the original stack's name
