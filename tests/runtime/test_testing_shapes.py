"""``flask-stack test`` on every shape README lists, each with the project's own fixtures: the stack is applied when
the plugin imports the app, so the project's tests see ``/health`` (the app as ``run``/``serve`` serve it), and the
stack's checks, with fixtures of their own, pass after them (issue 20)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .support import PROJECT, subprocess_env



def pytest_argv(project: Path, extra: list[str]) -> list[str]:
    """The command line `flask-stack test` runs (``devloop.testcmd.pytest_argv``; asked in a child process, since
    ``devloop`` here is the tests' own package)."""
    code = ("import json, sys; from pathlib import Path; from devloop.testcmd import pytest_argv; "
            "print(json.dumps(pytest_argv(Path(sys.argv[1]), None, sys.argv[2:])))")
    env = subprocess_env(PYTHONPATH=os.pathsep.join([str(PROJECT.parent), str(PROJECT)]))
    done = subprocess.run([sys.executable, "-c", code, str(project), *extra], env=env, capture_output=True,
                          text=True, timeout=60, check=True)
    return json.loads(done.stdout)

HEALTH_TEST = (
    "def test_health(client):\n"
    "    response = client.get('/health')\n"
    "    assert response.status_code == 200 and response.get_json()['status'] == 'UP'\n\n"
    "def test_hello(client):\n"
    "    assert client.get('/hello').get_data(as_text=True) == 'hi'\n\n"
    "def test_metrics(client):\n"
    "    client.get('/hello')\n"
    "    assert 'http_requests_total{' in client.get('/metrics').get_data(as_text=True)\n"
)
HELLO = "@{obj}.get('/hello')\ndef hello():\n    return 'hi'\n"
OWN_CLIENT = "\n@pytest.fixture\ndef client(app):\n    return app.test_client()\n"

#: name -> (project files, env, stack checks' summary): each project's conftest has its own ``app`` fixture where
#: the shape has an app of its own (Flask's examples' shape), else uses the plugin's.
SHAPES = {
    "module app, own fixtures (the issue's shape)": ({
        "app.py": "from flask import Flask\napp = Flask(__name__)\n" + HELLO.format(obj="app"),
        "tests/conftest.py": "import pytest\nfrom app import app as flask_app\n\n@pytest.fixture\ndef app():\n"
                             "    flask_app.config.update(TESTING=True)\n    yield flask_app\n" + OWN_CLIENT,
    }, {}, "own"),
    "wsgi.py application": ({
        "wsgi.py": "from flask import Flask\napplication = Flask(__name__)\n" + HELLO.format(obj="application"),
        "tests/conftest.py": "import pytest\nimport wsgi\n\n@pytest.fixture\ndef app():\n"
                             "    return wsgi.application\n" + OWN_CLIENT,
    }, {}, "own"),
    "app.py factory": ({
        "app.py": "from flask import Flask\n\ndef create_app(test_config=None):\n    app = Flask(__name__)\n"
                  "    app.config.update(test_config or {})\n    " + HELLO.format(obj="app").replace("\n", "\n    ")
                  + "return app\n",
        "tests/conftest.py": "import pytest\nfrom app import create_app\n\n@pytest.fixture\ndef app():\n"
                             "    return create_app({'TESTING': True})\n" + OWN_CLIENT,
    }, {}, "own"),
    "package below the root (flaskr)": ({
        "pyproject.toml": "[project]\nname = 'flaskr'\nversion = '1.0'\n",
        "flaskr/__init__.py": "from flask import Flask\n\ndef create_app(test_config=None):\n"
                              "    app = Flask(__name__, instance_relative_config=True)\n"
                              "    app.config.update(test_config or {})\n    from flaskr import views\n"
                              "    app.register_blueprint(views.bp)\n    return app\n",
        "flaskr/views.py": "from flask import Blueprint\nbp = Blueprint('views', __name__)\n" + HELLO.format(obj="bp"),
        "tests/conftest.py": "import pytest\nfrom flaskr import create_app\n\n@pytest.fixture\ndef app():\n"
                             "    return create_app({'TESTING': True})\n" + OWN_CLIENT,
    }, {}, "own"),
    "Blueprint in __init__.py": ({
        "__init__.py": "from flask import Blueprint\nblueprint = Blueprint('userapp', __name__)\n"
                       + HELLO.format(obj="blueprint"),
    }, {}, "made"),
    "original Appsody __init__.py": ({
        "__init__.py": "from server import app\n\n@app.route('/hello')\ndef hello():\n    return 'hi'\n",
        "tests/conftest.py": "import pytest\nfrom userapp import app as flask_app\n\n@pytest.fixture\ndef app():\n"
                             "    return flask_app\n" + OWN_CLIENT,
    }, {}, "made"),
    "FLASK_APP factory call": ({
        "service.py": "from flask import Flask\n\ndef build(mode):\n    app = Flask(__name__)\n"
                      "    app.config['MODE'] = mode\n    " + HELLO.format(obj="app").replace("\n", "\n    ")
                      + "return app\n",
        "tests/conftest.py": "import pytest\nfrom service import build\n\n@pytest.fixture\ndef app():\n"
                             "    return build('test')\n" + OWN_CLIENT,
    }, {"FLASK_APP": "service:build('prod')"}, "own"),
}
#: the stack's checks: 7, of which the blueprint check skips on an app of the user's own
CHECKS = {"own": (6, 1), "made": (7, 0)}


def _summary(output: str) -> tuple[int, int, int]:
    line = output.strip().splitlines()[-1]
    counts = {word: int(n) for n, word in re.findall(r"(\d+) (passed|skipped|failed|errors?)", line)}
    return (counts.get("passed", 0), counts.get("skipped", 0),
            counts.get("failed", 0) + counts.get("error", 0) + counts.get("errors", 0))


@pytest.mark.parametrize("shape", SHAPES)
def test_project_tests_and_stack_checks_see_the_served_app(tmp_path, shape):
    files, env, kind = SHAPES[shape]
    project = tmp_path / "userapp"
    for name, text in {**files, "tests/test_served.py": HEALTH_TEST}.items():
        path = project / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    argv = pytest_argv(project, ["-q", "-p", "no:cacheprovider", "-rs"])
    proc = subprocess.run(argv, cwd=project, capture_output=True, text=True, timeout=120,
                          env=subprocess_env(STACK_USERAPP_DIR=str(project), PYTEST_DISABLE_PLUGIN_AUTOLOAD="1",
                                             **env))
    passed, skipped = CHECKS[kind]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _summary(proc.stdout) == (passed + 3, skipped, 0), proc.stdout
    if skipped:
        assert "the app is the user's own" in proc.stdout
