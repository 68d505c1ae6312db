"""Expected failures are one line ``flask-stack: ...`` on stderr with a non-zero exit, never a traceback."""

from __future__ import annotations

import socket

import pytest

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


@pytest.mark.parametrize("command", ["run", "debug", "test", "stop", "build", "deploy"])
def test_not_a_project(flask_stack, tmp_path, command):
    line = one_line_error(flask_stack(command, "--project", str(tmp_path)))
    assert line == f"flask-stack: not a python-flask stack project: {tmp_path.resolve()} has no __init__.py"


def test_not_a_project_in_the_current_directory(flask_stack, tmp_path):
    line = one_line_error(flask_stack("run", "--engine", "local", cwd=tmp_path))
    assert line.endswith(f"{tmp_path.resolve()} has no __init__.py")


def test_missing_project_directory(flask_stack, tmp_path):
    line = one_line_error(flask_stack("run", "--project", str(tmp_path / "nope")))
    assert "is not a directory" in line


def test_port_in_use(flask_stack, project, busy_port):
    result = flask_stack("run", "--engine", "local", "--port", str(busy_port), cwd=project)
    lines = result.stderr.splitlines()
    assert lines[0] == "flask-stack: engine: local"
    assert lines[-1] == f"flask-stack: port {busy_port} is in use; stop the other server or pass --port N"
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert not any("virtual environment" in line for line in lines)  # checked before any install


def test_debug_port_in_use(flask_stack, project, busy_port):
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    result = flask_stack("debug", "--engine", "local", "--port", str(port), "--debug-port", str(busy_port),
                         cwd=project)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        f"flask-stack: port {busy_port} is in use; stop the other server or pass --debug-port N")


def test_unknown_engine(flask_stack, project):
    result = flask_stack("run", "--engine", "kubernetes", cwd=project)
    line = one_line_error(result)
    assert result.returncode == 2
    assert "'kubernetes' is not one of 'auto', 'local', 'docker', 'podman'" in line


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


def test_build_needs_a_container_engine(flask_stack, project):
    result = flask_stack("build", "--engine", "local", cwd=project)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1].startswith("flask-stack: `build` needs a container engine")


def test_stop_with_nothing_running_is_fine(flask_stack, project):
    result = flask_stack("stop", "--engine", "local", cwd=project)
    assert result.returncode == 0, result.stderr
    assert f"no local server of {project.resolve()} is running" in result.stderr


def test_production_without_devloop_needs_no_debug(flask_stack, project):
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
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
