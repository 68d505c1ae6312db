"""The user's settings.yaml profiles, FLASK_* overrides and secrets under the real dev loop (``run``, ``debug``,
``test``): real processes, real HTTP; a secret's value is searched for in every log line and every answer."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import write_source

SECRET = "s3cr3t-devloop-4b1e9f"

SETTINGS = """\
default:
  GREETING: hello default
  COUNT: 3
development:
  GREETING: hello development
testing:
  GREETING: hello testing
production:
  GREETING: hello production
  SECRET_KEY: null
"""

ROUTES = '''

from flask import current_app


@blueprint.get("/greet")
def greet():
    """The greeting of the profile in force."""
    return {"greeting": current_app.config["GREETING"], "count": current_app.config["COUNT"]}


@blueprint.get("/boom")
def boom():
    raise RuntimeError("cannot connect with key " + current_app.config.get("SECRET_KEY", "none"))
'''

MODEL = '''

from pydantic import BaseModel


class Settings(BaseModel):
    GREETING: str
    COUNT: int


settings_model = Settings
'''


@pytest.fixture
def configured(project: Path) -> Path:
    """templates/simple with settings.yaml, /greet and /boom."""
    (project / "settings.yaml").write_text(SETTINGS)
    init = project / "__init__.py"
    init.write_text(init.read_text() + ROUTES)
    return project


def greeting(loop) -> str:
    return loop.wait_for(lambda r: r.status_code == 200, "/greet").json()["greeting"]


def test_run_serves_the_development_profile_and_reloads_settings_on_save(devloop, configured):
    loop = devloop("run", configured)
    assert greeting(loop) == "hello development"
    loop.wait_log("watching ")
    write_source(configured / "settings.yaml", SETTINGS.replace("hello development", "hello again"))
    loop.wait_for(lambda r: r.status_code == 200 and r.json()["greeting"] == "hello again", "/greet", timeout=20)
    assert "config: profile 'development' (settings.yaml)" in loop.output()


@pytest.mark.parametrize("env, expected", [({"STACK_PROFILE": "production"}, "hello production"),
                                           ({"FLASK_GREETING": "x"}, "x")], ids=["STACK_PROFILE", "FLASK_GREETING"])
def test_run_takes_the_profile_and_flask_variables(devloop, configured, env, expected):
    assert greeting(devloop("run", configured, env=env)) == expected


def _assert_nowhere(loop, secret: str) -> None:
    """The secret is in no answer of the stack's endpoints, no error page, no log line."""
    answers = {path: loop.get(path) for path in ("/health", "/health/ready", "/metrics", "/apidocs/",
                                                   "/apispec_1.json", "/greet", "/nope")}
    for kind in ("text/html", "application/json", "text/plain"):
        answers[f"/boom {kind}"] = loop.get("/boom", headers={"Accept": kind})
    assert answers["/boom text/html"].status_code == 500
    assert "cannot connect with key [secret]" in answers["/boom application/json"].text  # the page is there, masked
    for where, response in answers.items():
        assert secret not in response.text, where
    loop.wait_log("cannot connect with key")
    assert secret not in loop.output()


@pytest.mark.timeout(180)
@pytest.mark.parametrize("mode", ["run", "debug"])
def test_secrets_from_a_file_variable_and_the_secrets_dir_show_nowhere(devloop, configured, tmp_path, mode):
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "API_TOKEN").write_text(SECRET + "-token\n")
    (tmp_path / "key").write_text(SECRET + "\n")
    env = {"SECRET_KEY_FILE": str(tmp_path / "key"), "STACK_SECRETS_DIR": str(secrets),
           "STACK_DEBUG_PORT": "0"}
    init = configured / "__init__.py"
    init.write_text(init.read_text() + '''

@blueprint.get("/keys")
def keys():
    import logging
    logging.getLogger("userapp").warning("config is %r, key %s", current_app.config, current_app.config["SECRET_KEY"])
    return {"key": current_app.config["SECRET_KEY"] == "''' + SECRET + '''", "token": len(current_app.config["API_TOKEN"])}
''')
    loop = devloop(mode, configured, env=env)
    assert loop.wait_for(lambda r: r.status_code == 200, "/keys").json() == {"key": True, "token": len(SECRET) + 6}
    loop.wait_log("config is <Config")
    assert "'SECRET_KEY': '[secret]'" in loop.output() and "key [secret]" in loop.output()
    assert "secrets: API_TOKEN, SECRET_KEY" in loop.output()
    _assert_nowhere(loop, SECRET)


BAD_COUNT = ("ConfigError: COUNT in profile 'development' from settings.yaml [default]: expected int: "
             "Input should be a valid integer")


@pytest.mark.timeout(180)
def test_bad_typed_value_keeps_the_previous_version_until_fixed(devloop, configured):
    """A save that gives a setting a bad value: one line, and the previous version keeps serving (issue 17); the
    next good save is served."""
    init = configured / "__init__.py"
    init.write_text(init.read_text() + MODEL)
    loop = devloop("run", configured)
    assert greeting(loop) == "hello development"
    loop.wait_log("watching ")
    write_source(configured / "settings.yaml", SETTINGS.replace("COUNT: 3", "COUNT: many"))
    loop.wait_log("still serving the previous version")
    said = [ln for ln in loop.output().splitlines() if "still serving the previous version" in ln]
    assert len(said) == 1 and BAD_COUNT in said[0], loop.output()
    for _ in range(5):  # the process that served before the save answers, with the values it had
        assert loop.get("/greet").json() == {"greeting": "hello development", "count": 3}
    assert "Traceback" not in loop.output()
    write_source(configured / "settings.yaml", SETTINGS.replace("hello development", "hello again"))
    loop.wait_for(lambda r: r.status_code == 200 and r.json()["greeting"] == "hello again", "/greet", timeout=20)


@pytest.mark.timeout(180)
def test_bad_typed_value_at_start_serves_one_line_until_fixed(devloop, configured):
    """With no previous version to keep (the first start), the bad value is the error page's one line."""
    init = configured / "__init__.py"
    init.write_text(init.read_text() + MODEL)
    (configured / "settings.yaml").write_text(SETTINGS.replace("COUNT: 3", "COUNT: many"))
    loop = devloop("run", configured)
    response = loop.wait_for(lambda r: r.status_code == 500, "/greet", timeout=60)
    assert response.text.strip().splitlines()[0].startswith(BAD_COUNT), response.text
    loop.wait_log("watching ")
    write_source(configured / "settings.yaml", SETTINGS)
    loop.wait_for(lambda r: r.status_code == 200 and r.json()["count"] == 3, "/greet", timeout=20)


def test_test_command_runs_the_testing_profile(devloop, configured):
    (configured / "tests" / "test_profile.py").write_text(
        "def test_testing_profile(client):\n"
        "    assert client.get('/greet').json == {'greeting': 'hello testing', 'count': 3}\n")
    loop = devloop("test", configured, "--", "tests")
    assert loop.wait_exit(120) == 0, loop.output()
    assert "test_profile.py ." in loop.output() or "2 passed" in loop.output(), loop.output()
