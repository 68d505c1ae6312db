"""``pytest -p server.testing``: the app/client fixtures and the stack's checks, run as a user would."""

from __future__ import annotations

import shutil
import subprocess
import sys

from .support import USERAPPS, subprocess_env, write_userapp


def run_pytest(args, cwd, **env):
    env.setdefault("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")  # as in the dev image: no unrelated plugins
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "server.testing", "-p", "no:cacheprovider", *args],
                          cwd=cwd, env=subprocess_env(**env), capture_output=True, text=True, timeout=60)


def test_stack_checks_pass_for_good_apps(tmp_path):
    for fixture in ("basic", "appsody", "multi"):
        proc = run_pytest(["--pyargs", "server.checks", "-q"], tmp_path, STACK_USERAPP_DIR=str(USERAPPS / fixture))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "7 passed" in proc.stdout


def test_stack_checks_report_import_error_in_one_line(tmp_path):
    proc = run_pytest(["--pyargs", "server.checks", "-q"], tmp_path,
                      STACK_USERAPP_DIR=str(USERAPPS / "syntax_error"))
    assert proc.returncode == 1
    assert "syntax_error failed to import:" in proc.stdout and ":7: SyntaxError" in proc.stdout
    assert "Traceback" not in proc.stdout


def test_stack_checks_fail_when_health_is_down(tmp_path):
    app_dir = write_userapp(tmp_path / "down", "from flask import Flask\napp = Flask(__name__)\n"
                                               "readiness_checks = {'db': lambda: False}\n")
    proc = run_pytest(["--pyargs", "server.checks", "-q"], tmp_path, STACK_USERAPP_DIR=str(app_dir))
    assert proc.returncode == 1
    assert "/health is DOWN; failing checks:" in proc.stdout and "'db'" in proc.stdout


def test_user_tests_in_project_dir_use_fixtures(tmp_path):
    project = tmp_path / "project"
    shutil.copytree(USERAPPS / "basic", project)
    (project / "tests").mkdir()
    (project / "tests" / "test_user.py").write_text(
        "def test_hello(client):\n"
        "    assert client.get('/hello?name=me').get_data(as_text=True) == 'Hello, me!'\n\n"
        "def test_app_is_testing(app):\n"
        "    assert app.testing and app.config['BASIC_INIT']\n"
    )
    proc = run_pytest(["tests", "-q"], project)  # no STACK_USERAPP_DIR: the project directory is found
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 passed" in proc.stdout
