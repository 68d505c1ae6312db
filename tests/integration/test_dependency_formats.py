"""The project's own dependency declaration, end to end on the local engine: ``requirements.txt``, ``pyproject.toml``
(unlocked, then locked by uv), ``pyproject.toml`` + ``uv.lock``, ``Pipfile``; Flask's tutorial from Flask's sdist.

Every project imports a package the stack does not have (markdown), pins two the stack's lock has newer (PyYAML
6.0.2, mistune 3.3.3: the project's versions are served) and declares pytest-mock for development only. These tests
reach the package index.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile

import pytest

from testkit.depsapps import EXPECTED, FORMATS, make_project

from .conftest import flask_stack_cmd, free_port, serve

pytestmark = pytest.mark.slow

@pytest.mark.parametrize("kind", FORMATS)
@pytest.mark.timeout(720)  # its waits add up to 660 s (testkit.budget)
def test_declared_packages_are_served_and_tested_with_the_projects_versions(cli_env, tmp_path, kind):
    project = make_project(tmp_path / "demo", kind)
    with serve(cli_env, project, tmp_path) as app:
        versions = app.wait_for("/versions", lambda r: r.status_code == 200, timeout=60).json()
        assert versions == EXPECTED
        out = app.output()
    assert "[WARNING]" not in out and "the stack's version is used" not in out, out
    sys.stderr.write(f"\n[deps] {kind}: first start -> /health in {app.start_seconds:.2f} s\n")
    if kind == "pyproject.toml":  # locked once by uv into a lock the project keeps
        assert (project / "uv.lock").is_file() and 'name = "pyyaml"' in (project / "uv.lock").read_text().lower()
    tested = subprocess.run(flask_stack_cmd("test", "--engine", "local", "--project", str(project)), env=cli_env,
                            capture_output=True, text=True, timeout=600)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "test_app.py ." in tested.stdout


@pytest.mark.timeout(480)  # its waits add up to 420 s (testkit.budget)
def test_requirements_edit_while_serving_installs_reloads_and_a_bad_one_keeps_serving(cli_env, tmp_path):
    project = make_project(tmp_path / "demo", "requirements.txt")
    requirements = project / "requirements.txt"
    with serve(cli_env, project, tmp_path) as app:
        app.wait_for("/versions", lambda r: r.status_code == 200, timeout=60)
        requirements.write_text(requirements.read_text() + "inflection==0.5.1\n")
        served = app.wait_for("/versions", lambda r: r.status_code == 200 and "inflection" in r.json(), timeout=180)
        assert served.json()["inflection"] == "0.5.1"
        failed = [line for line in app.output().splitlines() if " 50" in line and "GET /versions" in line]
        assert not failed, failed
        requirements.write_text(requirements.read_text() + "flask-stack-no-such-package-zz==1.0\n")
        app.wait_for("/health", lambda r: "still serving the previous version" in app.output(), timeout=180)
        errors = [line for line in app.output().splitlines() if "[ERROR]" in line]
        assert len(errors) == 1 and "flask-stack-no-such-package-zz" in errors[0] and "requirements.txt" in errors[0]
        assert app.get("/versions").json()["inflection"] == "0.5.1"


@pytest.mark.timeout(660)  # its waits add up to 600 s (testkit.budget)
def test_a_true_conflict_with_the_stack_is_one_line_naming_both(cli_env, tmp_path):
    project = make_project(tmp_path / "demo", "requirements.txt")
    (project / "requirements.txt").write_text("werkzeug==2.3.8\n")
    argv = flask_stack_cmd("run", "--engine", "local", "--port", str(free_port()), "--project", str(project))
    done = subprocess.run(argv, env=cli_env, capture_output=True, text=True, timeout=600)
    errors = [line for line in (done.stdout + done.stderr).splitlines() if "[ERROR]" in line]
    assert done.returncode != 0 and len(errors) == 1, done.stdout + done.stderr
    assert "werkzeug==2.3.8" in errors[0] and "werkzeug>=3.1" in errors[0] and "Traceback" not in done.stderr


@pytest.mark.timeout(420)  # its waits add up to 360 s (testkit.budget)
def test_flask_tutorial_from_flasks_sdist_is_served_from_its_pyproject(cli_env, tmp_path):
    download = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                               "--disable-pip-version-check", "-q", "-d", str(tmp_path / "sdist"), "flask==3.1.3"],
                              capture_output=True, text=True, timeout=300)
    assert download.returncode == 0, download.stderr
    with tarfile.open(next((tmp_path / "sdist").glob("flask-*.tar.gz"))) as sdist:
        sdist.extractall(tmp_path / "src", filter="data")
    project = next((tmp_path / "src").glob("flask-*")) / "examples" / "tutorial"
    before = (project / "pyproject.toml").read_bytes()
    with serve(cli_env, project, tmp_path) as app:
        register = app.wait_for("/auth/register", lambda r: r.status_code == 200, timeout=60)
        assert "Register" in register.text
        assert "locking pyproject.toml (uv lock)" in app.output()
    assert (project / "pyproject.toml").read_bytes() == before and (project / "uv.lock").is_file()
