"""The user's own configuration (``server.userconfig``): settings.yaml/settings.toml profiles merged by Dynaconf,
``FLASK_*`` overrides, secrets from files, a typed ``settings_model``, one-line errors, masked secrets."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from .support import write_userapp

BLUEPRINT = """
from flask import Blueprint, current_app
blueprint = Blueprint("userapp", __name__)
seen = {}

def init_app(app):
    seen["GREETING"] = app.config.get("GREETING")

@blueprint.get("/greet")
def greet():
    return {"greeting": current_app.config.get("GREETING"), "count": current_app.config.get("COUNT")}
"""

SETTINGS = """
default:
  GREETING: hello default
  COUNT: 3
  NESTED: {a: 1, b: 2}
development:
  GREETING: hello development
testing:
  GREETING: hello testing
production:
  GREETING: hello production
  NESTED: {a: 9}
  SECRET_KEY: null
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return write_userapp(tmp_path / "proj", BLUEPRINT, **{"settings.yaml": SETTINGS})


def build(project: Path, **config):
    from server import create_app

    config.setdefault("USERAPP_DIR", str(project))
    config.setdefault("USERAPP", "userapp_cfg_" + project.parent.name.replace("-", "_"))
    return create_app(config)


@pytest.mark.parametrize("profile", ["development", "testing", "production"])
def test_each_profile_over_default(project, monkeypatch, profile):
    monkeypatch.setenv("STACK_PROFILE", profile)
    app = build(project)
    assert app.config["GREETING"] == f"hello {profile}"
    assert app.config["COUNT"] == 3  # from default
    assert app.test_client().get("/greet").json == {"greeting": f"hello {profile}", "count": 3}
    assert app.config["NESTED"] == ({"a": 9} if profile == "production" else {"a": 1, "b": 2})


def test_values_are_there_before_init_app_runs(project, monkeypatch):
    monkeypatch.setenv("STACK_PROFILE", "production")
    import sys

    app = build(project)
    module = sys.modules[app.extensions["flask_stack"].module.__name__]
    assert module.seen == {"GREETING": "hello production"}


def test_profile_defaults_to_development(project):
    assert build(project).config["GREETING"] == "hello development"


def test_unknown_profile_uses_default_and_warns(project, monkeypatch, caplog):
    monkeypatch.setenv("STACK_PROFILE", "prodution")
    with caplog.at_level(logging.WARNING, logger="server"):
        app = build(project)
    assert app.config["GREETING"] == "hello default"
    assert "settings.yaml has no section 'prodution' (it has default, development, testing, production)" in caplog.text


def test_toml_file(tmp_path, monkeypatch):
    project = write_userapp(tmp_path / "proj", BLUEPRINT, **{"settings.toml": (
        '[default]\nGREETING = "toml default"\nCOUNT = 1\n[production]\nGREETING = "toml production"\n')})
    monkeypatch.setenv("STACK_PROFILE", "production")
    app = build(project)
    assert (app.config["GREETING"], app.config["COUNT"]) == ("toml production", 1)


def test_flask_variables_override_the_file_as_json(project, monkeypatch):
    monkeypatch.setenv("FLASK_GREETING", "x")
    monkeypatch.setenv("FLASK_COUNT", "7")
    monkeypatch.setenv("FLASK_NESTED__b", "5")
    monkeypatch.setenv("FLASK_RUN_PORT", "9999")  # Flask's CLI variable, not config
    app = build(project)
    assert (app.config["GREETING"], app.config["COUNT"], app.config["NESTED"]) == ("x", 7, {"a": 1, "b": 5})
    assert "RUN_PORT" not in app.config


def test_secret_from_file_variable_and_secrets_dir(project, tmp_path, monkeypatch, caplog):
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "SECRET_KEY").write_text("dir-secret-8d1f2a\n")
    (secrets / "API_TOKEN").write_text("token-secret-77c1")
    (secrets / "db-password").write_text("ignored-name")
    (secrets / "..data").mkdir()  # a mounted Kubernetes Secret's own entries are skipped
    monkeypatch.setenv("STACK_SECRETS_DIR", str(secrets))
    with caplog.at_level(logging.INFO, logger="server"):
        app = build(project)
    assert app.config["SECRET_KEY"] == "dir-secret-8d1f2a" and app.config["API_TOKEN"] == "token-secret-77c1"
    assert "db-password" in caplog.text and "ignored-name" not in caplog.text
    assert "secrets: API_TOKEN, SECRET_KEY" in caplog.text  # the startup summary names keys, never values
    assert "dir-secret-8d1f2a" not in repr(app.config)
    # <KEY>_FILE wins over the directory
    (tmp_path / "key").write_text("file-secret-0b9e4c\n")
    monkeypatch.setenv("SECRET_KEY_FILE", str(tmp_path / "key"))
    app = build(project, USERAPP="userapp_cfg_second")
    assert app.config["SECRET_KEY"] == "file-secret-0b9e4c"
    with app.test_request_context():  # Flask signs the session with it as with any str
        from flask import session

        session["x"] = 1
        assert app.session_interface.get_signing_serializer(app) is not None


def test_secret_values_are_masked_in_log_lines(project, tmp_path, monkeypatch, capsys):
    (tmp_path / "key").write_text("masked-secret-41e7aa")
    monkeypatch.setenv("SECRET_KEY_FILE", str(tmp_path / "key"))
    app = build(project)
    logger = logging.getLogger("server.test")
    logger.warning("the key is %s", app.config["SECRET_KEY"])
    try:
        raise RuntimeError(f"failed with {app.config['SECRET_KEY']}")
    except RuntimeError:
        logger.exception("boom")
    out = capsys.readouterr()
    text = out.out + out.err
    assert "the key is [secret]" in text and "failed with [secret]" in text
    assert "masked-secret-41e7aa" not in text


def test_file_variable_for_an_undeclared_key_is_not_read(project, tmp_path, monkeypatch):
    (tmp_path / "pem").write_text("certificate")
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "pem"))
    assert "SSL_CERT" not in build(project).config


def test_unreadable_secret_is_one_line(project, monkeypatch):
    from server.userconfig import ConfigError

    monkeypatch.setenv("SECRET_KEY_FILE", "/nonexistent/key")
    with pytest.raises(ConfigError) as err:
        build(project)
    assert str(err.value) == ("SECRET_KEY (profile 'development'): SECRET_KEY_FILE=/nonexistent/key cannot be read: "
                              "No such file or directory")


def test_malformed_yaml_is_one_line(tmp_path):
    from server.userconfig import ConfigError

    project = write_userapp(tmp_path / "proj", BLUEPRINT, **{"settings.yaml": 'default:\n  GREETING: "open\n'})
    with pytest.raises(ConfigError) as err:
        build(project)
    message = str(err.value)
    assert "\n" not in message and message == (
        f"{project / 'settings.yaml'}: malformed YAML at line 3, column 1: found unexpected end of stream (while "
        f"scanning a quoted scalar from line 2); expected a 'default' section and one per profile")


def test_top_level_value_is_one_line(tmp_path):
    from server.userconfig import ConfigError

    project = write_userapp(tmp_path / "proj", BLUEPRINT, **{"settings.yaml": "GREETING: hi\n"})
    with pytest.raises(ConfigError, match="top-level key 'GREETING' must be a section"):
        build(project)


MODEL_APP = """
from flask import Flask
from pydantic import BaseModel

class Settings(BaseModel):
    GREETING: str
    COUNT: int
    RATIO: float = 0.5

settings_model = Settings

def create_app():
    app = Flask(__name__)
    app.config["OWN"] = "mine"
    app.config["GREETING"] = "set by the factory"
    return app
"""


def test_typed_model_coerces_and_the_factory_keeps_its_own_values(tmp_path, monkeypatch):
    project = write_userapp(tmp_path / "proj", MODEL_APP, **{"settings.yaml": SETTINGS})
    monkeypatch.setenv("FLASK_COUNT", '"12"')
    app = build(project)
    assert app.config["COUNT"] == 12 and app.config["RATIO"] == 0.5
    assert app.config["GREETING"] == "set by the factory"  # the file's values lie under the app's own code
    assert app.config["OWN"] == "mine"


def test_typed_model_bad_value_is_one_line_naming_key_profile_file_type(tmp_path, monkeypatch):
    from server.userconfig import ConfigError

    project = write_userapp(tmp_path / "proj", MODEL_APP, **{"settings.yaml": SETTINGS.replace(
        "  GREETING: hello production\n", "  GREETING: hello production\n  COUNT: many\n")})
    monkeypatch.setenv("STACK_PROFILE", "production")
    with pytest.raises(ConfigError) as err:
        build(project)
    assert str(err.value).startswith("COUNT in profile 'production' from settings.yaml [production]: expected int: ")
    assert err.value.exit_status == 2


def test_typed_model_never_shows_a_secret_value(tmp_path, monkeypatch):
    from server.userconfig import ConfigError

    project = write_userapp(tmp_path / "proj", MODEL_APP, **{"settings.yaml": SETTINGS})
    (tmp_path / "count").write_text("not-a-number-3c2a")
    monkeypatch.setenv("COUNT_FILE", str(tmp_path / "count"))
    with pytest.raises(ConfigError) as err:
        build(project)
    assert str(err.value).startswith(f"COUNT in profile 'development' from COUNT_FILE={tmp_path / 'count'}: "
                                     f"expected int")
    assert "not-a-number" not in str(err.value)


def test_two_settings_files_is_one_line(tmp_path):
    from server.userconfig import ConfigError

    project = write_userapp(tmp_path / "proj", BLUEPRINT, **{"settings.yaml": SETTINGS,
                                                             "settings.toml": "[default]\n"})
    with pytest.raises(ConfigError, match="settings.yaml and settings.toml both exist; keep one"):
        build(project)


def test_secrets_dir_that_is_not_a_directory_is_one_line(project, tmp_path, monkeypatch):
    from server.userconfig import ConfigError

    monkeypatch.setenv("STACK_SECRETS_DIR", str(tmp_path / "missing"))
    with pytest.raises(ConfigError) as err:
        build(project)
    assert str(err.value) == (f"STACK_SECRETS_DIR={tmp_path / 'missing'} is not a directory (mount the Secret there, "
                              f"or unset it)")
