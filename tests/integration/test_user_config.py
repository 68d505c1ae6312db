"""The issue's check of the user's config, through ``flask-stack --engine local``: a project with settings.yaml
(default, development, testing, production) is served with the development values by ``run``, the production ones
with ``STACK_PROFILE=production`` and under ``run --production``, the testing ones by ``flask-stack test``;
``FLASK_GREETING=x`` overrides the file."""

from __future__ import annotations

import subprocess

import pytest

from .conftest import flask_stack_cmd, serve

pytestmark = pytest.mark.slow

SETTINGS = """\
default:
  GREETING: hello default
development:
  GREETING: hello development
testing:
  GREETING: hello testing
production:
  GREETING: hello production
"""

GREET = '''

@blueprint.get("/greet")
def greet():
    """The greeting of the profile in force."""
    from flask import current_app

    return current_app.config["GREETING"]
'''


@pytest.fixture
def configured(project):
    (project / "settings.yaml").write_text(SETTINGS)
    (project / "__init__.py").write_text((project / "__init__.py").read_text() + GREET)
    (project / "tests" / "test_profile.py").write_text(
        "def test_the_testing_profile(client):\n    assert client.get('/greet').text == 'hello testing'\n")
    return project


@pytest.mark.timeout(600)
@pytest.mark.parametrize("extra, expected", [
    ((), "hello development"),
    (("-e", "STACK_PROFILE=production"), "hello production"),
    (("-e", "FLASK_GREETING=x"), "x"),
    (("--production",), "hello production"),
], ids=["run", "STACK_PROFILE", "FLASK_GREETING", "production"])
def test_run_serves_the_profile(cli_env, configured, tmp_path, extra, expected):
    with serve(cli_env, configured, tmp_path, "run", *extra) as app:
        assert app.wait_for("/greet", lambda r: r.status_code == 200, timeout=120).text == expected


@pytest.mark.timeout(360)
def test_test_command_runs_the_testing_profile(cli_env, configured):
    result = subprocess.run(flask_stack_cmd("test", "--engine", "local", "--project", str(configured)), env=cli_env,
                            capture_output=True, text=True, timeout=300)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    assert "test_profile.py ." in out, out[-3000:]
