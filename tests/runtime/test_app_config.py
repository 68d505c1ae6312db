"""The extension reads app.config (``Stack.init_app``): ``Stack(app, config=...)``, then ``app.config["STACK_..."]``,
then the environment, then the default; an unknown ``STACK_*`` key is one warning naming the closest known one.
Logging is configured once per process, by its entry, and an app's own logging setup stays."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap

import pytest
from flask import Flask

from testkit.serve import ProductionServer, copy_project, get

from .support import PROJECT, USERAPPS


def _app(**config) -> Flask:
    app = Flask("configured_here")
    app.config.update(config)

    @app.get("/hello")
    def hello():
        return "hello"

    return app


def test_app_config_wins_over_the_environment(monkeypatch):
    from server import Stack
    from server.stack import state_of

    monkeypatch.setenv("STACK_URL_PREFIX", "/from-env")
    monkeypatch.setenv("STACK_HEALTH_TIMEOUT", "5")
    app = _app(STACK_URL_PREFIX="/x", STACK_HEALTH_TIMEOUT="0.3")
    Stack(app)
    settings = state_of(app).settings
    assert (settings.url_prefix, settings.health_timeout) == ("/x", 0.3)
    # what the app runs with, under the keys it set, parsed
    assert (app.config["STACK_URL_PREFIX"], app.config["STACK_HEALTH_TIMEOUT"]) == ("/x", 0.3)
    assert app.config["STACK_PROXY_HOPS"] == 0 and app.config["STACK_APP_VERSION"] is None
    client = app.test_client()
    assert client.get("/x/hello", environ_base={"SCRIPT_NAME": ""}).status_code == 200
    assert client.get("/from-env/hello").status_code == 404


def test_environment_then_default_when_the_app_sets_nothing(monkeypatch):
    from server import Stack
    from server.stack import state_of

    monkeypatch.setenv("STACK_HEALTH_TIMEOUT", "2.5")
    app = _app()
    Stack(app)
    assert state_of(app).settings.health_timeout == 2.5 and app.config["STACK_HEALTH_TIMEOUT"] == 2.5
    assert state_of(app).settings.url_prefix == "" and app.config["STACK_URL_PREFIX"] == ""


def test_stack_config_wins_over_app_config():
    from server import Stack
    from server.stack import state_of

    app = _app(STACK_URL_PREFIX="/x", STACK_HEALTH_THREADS=2)
    Stack(app, config={"URL_PREFIX": "/y"})
    assert state_of(app).settings.url_prefix == "/y" and state_of(app).settings.health_threads == 2


def test_bad_app_config_value_is_one_line_naming_the_key():
    from server import Stack
    from server.exceptions import SettingsError

    with pytest.raises(SettingsError) as info:
        Stack(_app(STACK_URL_PREFIX="shop"))
    assert str(info.value) == "STACK_URL_PREFIX='shop' must start with a slash, e.g. STACK_URL_PREFIX=/shop"


def test_unknown_stack_key_is_one_warning_naming_the_closest(caplog):
    from server import Stack

    with caplog.at_level(logging.WARNING):
        Stack(_app(STACK_URL_PREFX="/x", STACK_HEALTH_TIMEOUT=1, STACK_NOTHING_LIKE_IT=1))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["app.config['STACK_URL_PREFX'] is not a stack setting; did you mean STACK_URL_PREFIX?",
                        "app.config['STACK_NOTHING_LIKE_IT'] is not a stack setting (see README.md, "
                        "\"Environment variables\")"]


def test_factory_app_config_served_under_the_prefix_with_its_timeout(tmp_path):
    """``serve`` (real HTTP, gunicorn): the factory's app.config puts the app under /x with a 0.3 s health timeout."""
    project = copy_project(USERAPPS / "configured", tmp_path / "project")
    srv = ProductionServer(project=project, workdir=tmp_path, server="gunicorn", workers=1,
                           env={"FLASK_APP": "app"}).start(ready_path="/x/health/ready")
    try:
        assert get(srv.port, "/x/hello")[::2] == (200, b"hello from /x")
        assert get(srv.port, "/hello")[0] == 404
        status, _, body = get(srv.port, "/x/health/live")
        assert status == 503 and json.loads(body)["checks"]["hung"] == {"status": "DOWN",
                                                                        "detail": "timed out after 0.3s"}, body
    finally:
        srv.stop()


def _python(code: str, tmp_path, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("STACK_", "LOG_", "FLASK_"))}
    env.update(PYTHONPATH=str(PROJECT), STACK_COMMIT_FILE="/nonexistent", **(env_extra or {}))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)


def test_an_apps_own_logging_setup_stays(tmp_path):
    """An app that configured logging itself (a handler of its own on the root logger) keeps it: create_app
    (twice) adds no handler of the stack's, and the stack's access line goes through the app's format."""
    (tmp_path / "own").mkdir()
    (tmp_path / "own" / "__init__.py").write_text(textwrap.dedent('''
        import logging, sys
        from flask import Flask
        logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="OWN %(name)s %(message)s")
        app = Flask(__name__)

        @app.get("/hello")
        def hello():
            return "hi"
        '''))
    result = _python('''
        import logging
        from server import create_app
        first = create_app({"USERAPP_DIR": "own"})
        second = create_app({"USERAPP_DIR": "own"})
        root = logging.getLogger()
        print("HANDLERS", len(root.handlers), any(getattr(h, "_flask_stack", False) for h in root.handlers))
        first.test_client().get("/hello")
        ''', tmp_path)
    assert result.returncode == 0, result.stderr
    assert "HANDLERS 1 False" in result.stdout
    assert any(line.startswith("OWN server.access GET /hello 200") for line in result.stdout.splitlines()), \
        result.stdout


def test_logging_is_configured_once_per_process(tmp_path):
    """The process's entry (``server.app``) configures logging once; building apps again does not touch the root
    or werkzeug loggers (a level the app's code changed stays)."""
    result = _python('''
        import logging
        import server.logs as logs
        calls = []
        real = logs.configure_logging
        logs.configure_logging = lambda *a, **k: calls.append(a) or real(*a, **k)
        import server
        server.app                                   # the entry: a server's worker, `flask --app server`
        logging.getLogger().setLevel(logging.ERROR)  # the app's code changes the level afterwards
        server.create_app()
        server.create_app({"USERAPP": ""})
        root = logging.getLogger()
        print("CALLS", len(calls), "LEVEL", logging.getLevelName(root.level), "HANDLERS", len(root.handlers),
              "FILTERS", len(logging.getLogger("werkzeug").filters))
        ''', tmp_path, {"STACK_USERAPP": ""})
    assert result.returncode == 0, result.stderr
    assert "CALLS 1 LEVEL ERROR HANDLERS 1 FILTERS 1" in result.stdout, result.stdout + result.stderr
