"""Expected failures are one line ``flask-stack: ...`` on stderr with a non-zero exit, never a traceback."""

from __future__ import annotations

import socket

import pytest
from testkit.net import free_port

from flask_stack.scaffold import available_templates

from .conftest import one_line_error


@pytest.fixture
def project(tmp_path):
    """A minimal hand-made project: a directory holding __init__.py (no .appsody-config.yaml)."""
    (tmp_path / "__init__.py").write_text("from flask import Blueprint\nblueprint = Blueprint('u', __name__)\n")
    return tmp_path


@pytest.fixture
def busy_port():
    """A 127.0.0.1 port with a listening socket on it (closed after the test)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


NO_APP = ("has no Flask app (no app.py, wsgi.py, __init__.py or package); pass --app, or create one with "
          "`flask-stack init`")


@pytest.mark.parametrize("command", ["run", "debug", "test", "stop", "build", "deploy", "flask"])
def test_not_a_project(flask_stack, tmp_path, command):
    (tmp_path / "notes.txt").write_text("no app here\n")
    line = one_line_error(flask_stack(command, "--project", str(tmp_path)))
    assert line == f"flask-stack: not a python-flask stack project: {tmp_path.resolve()} {NO_APP}"


def test_not_a_project_in_the_current_directory(flask_stack, tmp_path):
    line = one_line_error(flask_stack("run", "--engine", "local", cwd=tmp_path))
    assert line.endswith(f"{tmp_path.resolve()} {NO_APP}")


def test_missing_project_directory(flask_stack, tmp_path):
    line = one_line_error(flask_stack("run", "--project", str(tmp_path / "nope")))
    assert "is not a directory" in line


@pytest.mark.parametrize("engine", [["--engine", "local"], []], ids=["local", "default"])
def test_port_in_use_is_one_line(flask_stack, project, busy_port, engine):
    result = flask_stack("run", *engine, "--port", str(busy_port), cwd=project)
    line = one_line_error(result)  # no engine line, no URLs, no install before it
    assert line == f"flask-stack: port {busy_port} is in use; stop the other server or pass --port N"
    assert result.returncode == 1 and result.stdout == ""


def test_debug_port_in_use_is_one_line(flask_stack, project, busy_port):
    port = free_port()
    result = flask_stack("debug", "--engine", "local", "--port", str(port), "--debug-port", str(busy_port),
                         cwd=project)
    assert one_line_error(result) == (
        f"flask-stack: port {busy_port} is in use; stop the other server or pass --debug-port N")
    result = flask_stack("debug", "--engine", "local", "--port", str(port), "--debug-port", str(port), cwd=project)
    assert one_line_error(result) == "flask-stack: --debug-port must differ from --port"


def test_unknown_engine(flask_stack, project):
    result = flask_stack("run", "--engine", "kubernetes", cwd=project)
    line = one_line_error(result)
    assert result.returncode == 2
    assert "'kubernetes' is not one of 'local', 'docker', 'podman'" in line


def test_unknown_engine_from_the_environment(flask_stack, project):
    result = flask_stack("run", cwd=project, STACK_ENGINE="vagrant")
    assert "'vagrant' is not one of" in one_line_error(result)


def test_unknown_command_and_option(flask_stack, project):
    assert "No such command 'serve'" in one_line_error(flask_stack("serve", cwd=project))
    assert "No such option '--prot'" in one_line_error(flask_stack("run", "--prot", "1", cwd=project))


def test_bad_port_value(flask_stack, project):
    assert "'--port'" in one_line_error(flask_stack("run", "--port", "70000", cwd=project))


def test_bad_env_pair(flask_stack, project):
    line = one_line_error(flask_stack("run", "--engine", "local", "-e", "NOEQUALS", cwd=project))
    assert line == "flask-stack: --env 'NOEQUALS': expected KEY=VALUE"


def test_build_offers_only_engines_that_build(flask_stack, project):
    result = flask_stack("build", "--engine", "local", cwd=project)
    assert result.returncode == 2
    assert "'local' is not one of 'docker', 'podman'" in one_line_error(result)
    assert "[docker|podman]" in flask_stack("build", "--help").stdout


def test_stop_with_nothing_running_is_one_line(flask_stack, project):
    result = flask_stack("stop", "--engine", "local", cwd=project)
    assert result.returncode == 0, result.stderr
    assert result.stderr == f"flask-stack: nothing of {project.resolve()} is running\n"


def _help(flask_stack, *command: str) -> str:
    """The help text of ``flask-stack COMMAND``, wrapped lines joined (so phrases are found whole)."""
    result = flask_stack(*command, "--help")
    assert result.returncode == 0, result.stderr
    return " ".join(result.stdout.split())


def test_help_texts_are_exact(flask_stack):
    for command in ("run", "debug", "test", "stop"):
        text = _help(flask_stack, command)
        assert "--engine [local|docker|podman]" in text, command
        assert "[env var: STACK_ENGINE; default: (the project's `init --engine`, else local)]" in text, command
        assert "--project DIR" in text, command
    assert "--port PORT" in _help(flask_stack, "run") and "--debug-port PORT" in _help(flask_stack, "debug")
    assert "--junitxml FILE" in _help(flask_stack, "test") and "JUnit XML report to FILE" in _help(flask_stack, "test")
    build = _help(flask_stack, "build")
    assert "--engine [docker|podman]" in build and "STACK_ENGINE" in build
    assert "-t, --tag TAG" in build and "--base-image IMAGE" in build
    init = _help(flask_stack, "init")
    assert f"--template [{'|'.join(available_templates())}]" in init
    assert "--list" in init
    deploy = _help(flask_stack, "deploy")
    assert "--output DIR" in deploy and "--image IMAGE" in deploy


def test_production_without_devloop_needs_no_debug(flask_stack, project):
    port = free_port()
    result = flask_stack("run", "--engine", "local", "--production", "--port", str(port), "-e", "A=1", cwd=project,
                         STACK_PYTHON="/nonexistent/python3")
    assert result.stderr.splitlines()[-1] == (
        "flask-stack: cannot run the Python interpreter /nonexistent/python3; set STACK_PYTHON to a Python 3.11+")
    assert result.returncode == 1 and "Traceback" not in result.stderr


def test_help_and_version(flask_stack):
    result = flask_stack()
    assert result.returncode == 0 and "Commands:" in result.stdout
    for command in ("init", "run", "debug", "test", "stop", "build", "deploy"):
        assert f"  {command} " in result.stdout
    result = flask_stack("--version")
    assert result.returncode == 0 and result.stdout.strip() == "flask-stack, version 0.4.0"
