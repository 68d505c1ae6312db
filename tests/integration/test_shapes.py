"""Flask apps of every shape, unchanged, through ``flask-stack run`` (real HTTP) and ``flask-stack test``.

Shapes: an app factory in a sub-package with its own tests and conftest.py; an ``app = Flask(__name__)`` module
with templates and static files; a ``wsgi.py`` project; the original Appsody style with a test file and a
module-level Prometheus Counter; ``--app`` naming the app. Each keeps its own endpoint names (``url_for``) and gets
``/health``, ``/metrics`` labelled by URL rule and ``/apidocs/``. Every project is laid out at the session's one
project path, so the local engine's environment is made once.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from testkit.apps import FACTORY, lay_out

from .conftest import flask_stack_cmd, serve

pytestmark = pytest.mark.slow

MODULE_APP = {
    "app.py": """
        from flask import Flask, render_template, url_for

        app = Flask(__name__)

        @app.route("/")
        def index():
            return render_template("index.html", me=url_for("index"))
    """,
    "templates/index.html": "<html><head><link rel=stylesheet href=\"{{ url_for('static', filename='site.css') }}\">"
                            "</head><body>version one, at {{ me }}</body></html>\n",
    "static/site.css": "body { color: teal; }\n",
    "tests/test_pages.py": """
        def test_index_through_the_stacks_client(client):
            response = client.get("/")
            assert b"version" in response.data and response.headers["X-Request-ID"]
    """,
}

WSGI = {
    "wsgi.py": """
        from site_pkg import make_app

        application = make_app()
    """,
    "site_pkg/__init__.py": """
        from flask import Flask, url_for

        def make_app():
            app = Flask(__name__)

            @app.get("/where")
            def where():
                return url_for("where", _external=True)

            return app
    """,
}

APPSODY = {
    "__init__.py": """
        from flask import redirect
        from prometheus_client import Counter

        from server import app
        from server.routes.prometheus import track_requests

        HELLOS = Counter("appsody_hellos", "Hellos said.")

        @app.route("/hello")
        @track_requests
        def HelloWorld():
            \"\"\"Say hello.
            ---
            responses:
              200: {description: a greeting}
            \"\"\"
            HELLOS.inc()
            return "Hello from Appsody!"

        @app.route("/")
        def index():
            return redirect("/apidocs")
    """,
    "tests/test_hello.py": """
        def test_hello(client):
            assert client.get("/hello").data == b"Hello from Appsody!"
    """,
}


@pytest.fixture
def shaped(local_env, project_path):
    """``shaped(FILES)``: the session's project path laid out with FILES (its venv already made)."""
    return lambda files: lay_out(project_path, files)


def flask_stack_test(cli_env, project: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(flask_stack_cmd("test", "--engine", "local", "--project", str(project), *args),
                          env=cli_env, capture_output=True, text=True, timeout=180)


def passed(output: str) -> int:
    match = re.search(r"(\d+) passed", output)
    return int(match.group(1)) if match else 0


def assert_stack_endpoints(served, rule: str) -> None:
    """``/health`` UP, ``/metrics`` counting ``rule`` by its URL rule, Swagger UI and the spec listing ``rule``."""
    assert served.get("/health").json()["status"] == "UP"
    assert served.get("/health/ready").status_code == 200
    metrics = served.get("/metrics").text
    assert re.search(r'http_requests_total\{[^}]*endpoint="' + re.escape(rule) + '"', metrics), metrics[-2000:]
    assert "swagger-ui" in served.get("/apidocs/").text


def test_factory_in_a_sub_package(shaped, cli_env, tmp_path):
    project = shaped(FACTORY)
    with serve(cli_env, project, tmp_path) as served:
        body = served.get("/items/7").json()
        # its own endpoint name, config and module name
        assert body == {"id": 7, "url": "/items/7", "shop": "corner shop", "module": "shop.views"}
        assert_stack_endpoints(served, "/items/<int:item_id>")
        assert "/items/{item_id}" in served.get("/apispec_1.json").json()["paths"]
        assert "shop loaded from" in served.output()
    result = flask_stack_test(cli_env, project, "-q")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    # its 2 tests and the stack's checks (6; the one on blueprints the stack registered skips: the app is its own)
    assert passed(result.stdout) == 2 + 6, result.stdout[-2000:]


@pytest.mark.timeout(600)  # three `flask-stack test` of up to 180 s
def test_test_passes_pytest_arguments(shaped, cli_env):
    project = shaped(FACTORY)
    for args in (("-k", "hello"), ("--", "-k", "hello")):
        result = flask_stack_test(cli_env, project, "-q", *args)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
        assert passed(result.stdout) == 1 and "deselected" in result.stdout, result.stdout[-2000:]
    failing = flask_stack_test(cli_env, project, "-q", "tests/test_items.py", "-k", "no_such_test")
    assert failing.returncode == 5, failing.stdout[-2000:]  # pytest's "no tests collected", passed through


def test_module_app_with_templates_and_static(shaped, cli_env, tmp_path):
    project = shaped(MODULE_APP)
    with serve(cli_env, project, tmp_path) as served:
        page = served.get("/")
        assert "version one, at /" in page.text and "/static/site.css" in page.text
        assert served.get("/static/site.css").text == "body { color: teal; }\n"
        assert_stack_endpoints(served, "/")
        # a template edit is served on the next request, with no restart (no .py file saved)
        (project / "templates" / "index.html").write_text("<html><body>version two</body></html>\n")
        served.wait_for("/", lambda r: "version two" in r.text, timeout=10)
        assert "reloading" not in served.output().lower()
    result = flask_stack_test(cli_env, project, "-q")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert passed(result.stdout) == 1 + 6


def test_wsgi_py_project(shaped, cli_env, tmp_path):
    project = shaped(WSGI)
    with serve(cli_env, project, tmp_path) as served:
        assert served.get("/where").text == f"http://127.0.0.1:{served.port}/where"
        assert_stack_endpoints(served, "/where")


def test_app_named_with_app_option(shaped, cli_env, tmp_path):
    files = dict(WSGI)
    files["wsgi.py"] = "raise SystemExit('wsgi.py must not be imported when --app names another module')\n"
    project = shaped(files)
    with serve(cli_env, project, tmp_path, "run", "--app", "site_pkg:make_app()") as served:
        assert served.get("/where").status_code == 200
        assert "site_pkg:make_app() loaded from" in served.output()


def test_appsody_style_with_tests_and_a_module_level_counter(shaped, cli_env, tmp_path):
    project = shaped(APPSODY)
    with serve(cli_env, project, tmp_path) as served:
        for _ in range(3):
            assert served.get("/hello").text == "Hello from Appsody!"
        assert_stack_endpoints(served, "/hello")
        assert "appsody_hellos_total 3.0" in served.get("/metrics").text  # prometheus_client's default registry
    with serve(cli_env, project, tmp_path, "run", "--production") as served:
        for _ in range(4):
            assert served.get("/hello").text == "Hello from Appsody!"
        metrics = served.get("/metrics").text
        samples = [line for line in metrics.splitlines() if line.startswith("appsody_hellos_total")]
        assert samples == ["appsody_hellos_total 4.0"], metrics[-3000:]  # over the workers, once
    result = flask_stack_test(cli_env, project, "-q")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert passed(result.stdout) == 1 + 7


@pytest.mark.timeout(400)  # `flask-stack flask` of up to 300 s
def test_flask_command_runs_the_apps_own_cli(shaped, cli_env):
    project = shaped(FACTORY)
    result = subprocess.run(flask_stack_cmd("flask", "--engine", "local", "--project", str(project),
                                            "count-items", "5"), env=cli_env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "5 items in shop"
    assert "[INFO]" not in result.stdout  # only the command's own output


def test_dev_packages_are_installed_for_tests(shaped, cli_env):
    files = dict(FACTORY)
    files["Pipfile"] = """
        [[source]]
        url = "https://pypi.org/simple"
        verify_ssl = true
        name = "pypi"

        [packages]

        [dev-packages]
        pytest-mock = "*"
    """
    files["tests/test_mocked.py"] = """
        def test_mocker_fixture_from_a_dev_package(mocker, client):
            fake = mocker.patch("shop.views.url_for", return_value="/mocked")
            assert client.get("/items/1").get_json()["url"] == "/mocked" and fake.called
    """
    project = shaped(files)
    result = flask_stack_test(cli_env, project, "-q", "-k", "mocker")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert passed(result.stdout) == 1, result.stdout[-2000:]


@pytest.fixture(scope="session")
def flaskr_source(tmp_path_factory) -> Path:
    """Flask's tutorial app (flaskr) with its tests, from the sdist of the Flask the stack pins (downloaded here)."""
    import flask
    import importlib.metadata
    import tarfile

    version = importlib.metadata.version("flask")
    where = tmp_path_factory.mktemp("flask-sdist")
    subprocess.run(["python3", "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                    f"flask=={version}", "-d", str(where)], check=True, timeout=300, capture_output=True)
    (archive,) = where.glob("flask-*.tar.gz")
    with tarfile.open(archive) as tar:
        tar.extractall(where, filter="data")
    source = where / f"flask-{version}" / "examples" / "tutorial"
    assert (source / "flaskr" / "__init__.py").is_file() and (source / "tests" / "conftest.py").is_file()
    del flask
    return source


@pytest.mark.timeout(700)  # `init-db` up to 300 s, `flask-stack test` up to 180 s, a start
def test_flask_tutorial_flaskr_unchanged(local_env, project_path, flaskr_source, cli_env, tmp_path):
    for child in project_path.iterdir():
        shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    shutil.copytree(flaskr_source, project_path, dirs_exist_ok=True)
    init_db = subprocess.run(flask_stack_cmd("flask", "--engine", "local", "--project", str(project_path),
                                             "init-db"), env=cli_env, capture_output=True, text=True, timeout=300)
    assert init_db.returncode == 0, init_db.stdout[-2000:] + init_db.stderr[-2000:]
    assert "Initialized the database." in init_db.stdout
    assert (project_path / "instance" / "flaskr.sqlite").is_file()
    with serve(cli_env, project_path, tmp_path) as served:
        register = served.get("/auth/register")
        assert register.status_code == 200 and "Register" in register.text
        page = served.get("/")
        assert page.status_code == 200 and "Posts" in page.text and 'href="/auth/login"' in page.text
        assert_stack_endpoints(served, "/auth/register")
    result = flask_stack_test(cli_env, project_path, "-q", "-rs")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    # flaskr's own 24 tests and the stack's 7 checks, of which the blueprint check skips on an app of flaskr's own
    assert re.search(r"^30 passed, 1 skipped in [\d.]+s$", result.stdout, re.M), result.stdout[-2000:]
    assert "the app is the user's own: its blueprints are its business" in result.stdout
