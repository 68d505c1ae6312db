"""The user's config under the real production server (``serve``): the production profile, secrets from a
``_FILE`` variable and a mounted secrets directory found in no log line and no answer, and a bad typed value
stopping ``serve`` with one line and exit status 2."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from testkit.serve import SERVE, VENV_BIN, ProductionServer, get

from .support import free_port, subprocess_env, write_userapp

SECRET = "s3cr3t-serve-9a7c21"

APP = '''
from flask import Blueprint, abort, current_app
from pydantic import BaseModel

blueprint = Blueprint("userapp", __name__)


class Settings(BaseModel):
    GREETING: str
    COUNT: int


settings_model = Settings


@blueprint.get("/greet")
def greet():
    """The greeting of the profile in force."""
    return {"greeting": current_app.config["GREETING"], "count": current_app.config["COUNT"],
            "key": current_app.config["SECRET_KEY"] == "''' + SECRET + '''",
            "token": current_app.config["API_TOKEN"] == "''' + SECRET + '''-token"}


@blueprint.get("/boom")
def boom():
    current_app.logger.warning("about to fail with %s", current_app.config["SECRET_KEY"])
    raise RuntimeError("cannot connect with key " + current_app.config["SECRET_KEY"])


@blueprint.get("/denied")
def denied():
    abort(403, "denied for " + current_app.config["API_TOKEN"])
'''

SETTINGS = """\
default:
  GREETING: hello default
  COUNT: 3
development:
  GREETING: hello development
production:
  GREETING: hello production
  SECRET_KEY: null
"""


@pytest.mark.timeout(120)
def test_production_profile_and_secrets_show_nowhere(tmp_path: Path):
    project = write_userapp(tmp_path / "proj", APP, **{"settings.yaml": SETTINGS})
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "API_TOKEN").write_text(SECRET + "-token\n")
    (tmp_path / "key").write_text(SECRET + "\n")
    srv = ProductionServer(project=project, workdir=tmp_path, env={
        "SECRET_KEY_FILE": str(tmp_path / "key"), "STACK_SECRETS_DIR": str(secrets), "LOG_LEVEL": "DEBUG"})
    srv.start()
    try:
        status, _, body = get(srv.port, "/greet")
        assert status == 200, body
        assert body == b'{"count":3,"greeting":"hello production","key":true,"token":true}\n'
        answers = {}
        for path in ("/health", "/health/live", "/health/ready", "/health/started", "/metrics", "/apidocs/",
                     "/apispec_1.json", "/nope", "/boom", "/denied"):
            for accept in ("text/html", "application/json"):
                answers[(path, accept)] = get(srv.port, path, headers={"Accept": accept})
        assert answers[("/boom", "application/json")][0] == 500
        assert b"denied for [secret]" in answers[("/denied", "application/json")][2]  # the page is there, masked
        for where, (_, headers, body) in answers.items():
            assert SECRET.encode() not in body, where
            assert not any(SECRET in value for value in headers.values()), where
        srv.wait_for_log(r"cannot connect with key \[secret\]")
        srv.wait_for_log(r"about to fail with \[secret\]")
        assert "secrets: API_TOKEN, SECRET_KEY" in srv.log_text()
    finally:
        srv.stop()
    assert SECRET not in srv.log_text()


def serve_env(project: Path) -> dict[str, str]:
    env = subprocess_env(STACK_USERAPP_DIR=str(project), PORT=str(free_port()), STACK_HOST="127.0.0.1")
    env["PATH"] = f"{VENV_BIN}:{env.get('PATH', '/usr/bin:/bin')}"
    env.pop("PYTHONPATH", None)
    return env


@pytest.mark.timeout(60)
def test_bad_typed_value_stops_serve_with_one_line_and_status_2(tmp_path: Path):
    project = write_userapp(tmp_path / "proj", APP, **{"settings.yaml": SETTINGS.replace(
        "  GREETING: hello production\n", "  GREETING: hello production\n  COUNT: many\n")})
    env = serve_env(project)
    result = subprocess.run([str(SERVE)], env=env, capture_output=True, text=True, timeout=45, cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].endswith("COUNT in profile 'production' from settings.yaml [production]: expected int: "
                             "Input should be a valid integer, unable to parse string as an integer"), lines


@pytest.mark.timeout(60)
def test_malformed_settings_stops_serve_with_one_line_and_status_2(tmp_path: Path):
    project = write_userapp(tmp_path / "proj", APP, **{"settings.yaml": "default:\n  GREETING: [unclosed\n"})
    env = serve_env(project)
    result = subprocess.run([str(SERVE)], env=env, capture_output=True, text=True, timeout=45, cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and "settings.yaml: malformed YAML at line 3" in lines[0], lines
