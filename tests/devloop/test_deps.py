"""The project's Pipfile: locked with pipenv, installed with pip, stamped, reinstalled on change.

These tests reach the package index (PyPI) for one small real package, ``inflection``, which neither
the stack nor the test environment has.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from .conftest import HELLO, INSTALL_TIMEOUT, loop_env

pytestmark = pytest.mark.slow

PACKAGE = "inflection"
VERSION = "0.5.1"
DEP_ROUTE = (
    "\n\n@blueprint.get('/dep')\n"
    "def dep():\n"
    "    import inflection\n"
    "    return inflection.__file__ + ' ' + inflection.camelize('hello_world')\n"
)


def with_package(project: Path, spec: str) -> None:
    """Put ``inflection = spec`` in the project's [packages] and drop its lock."""
    pipfile = project / "Pipfile"
    pipfile.write_text(pipfile.read_text().replace("[packages]\n", f'[packages]\n{PACKAGE} = "{spec}"\n'))
    (project / "Pipfile.lock").unlink(missing_ok=True)


def add_route(project: Path) -> None:
    init = project / "__init__.py"
    init.write_text(init.read_text() + DEP_ROUTE)


def test_unresolvable_package_is_one_line_at_startup(devloop, project, tmp_path):
    with_package(project, "==999.0")
    loop = devloop("run", project, "--deps-dir", str(tmp_path / "deps"))
    assert loop.wait_exit(INSTALL_TIMEOUT) == 1
    out = loop.output()
    assert "Traceback" not in out
    errors = [line for line in out.splitlines() if "[ERROR]" in line]
    assert len(errors) == 1, out
    assert "Pipfile does not resolve" in errors[0] and f"{PACKAGE}==999.0" in errors[0]
    assert not (project / "Pipfile.lock").exists()  # nothing half-written
    assert not any(p.name.startswith("site-") for p in (tmp_path / "deps").glob("*"))


@pytest.mark.parametrize("installer", ["uv", "pip"])
def test_package_is_locked_installed_in_deps_dir_and_stamped(devloop, project, tmp_path, installer):
    from uv import find_uv_bin

    deps_dir = tmp_path / "deps"
    with_package(project, f"=={VERSION}")
    add_route(project)
    env = {"STACK_UV": find_uv_bin() if installer == "uv" else "pip"}
    loop = devloop("run", project, "--deps-dir", str(deps_dir), env=env)
    response = loop.wait_for(lambda r: r.status_code == 200, path="/dep", timeout=INSTALL_TIMEOUT)
    where, camel = response.text.split()
    assert camel == "HelloWorld"
    assert Path(where).resolve().is_relative_to(deps_dir.resolve())
    lock = json.loads((project / "Pipfile.lock").read_text())
    assert lock["default"][PACKAGE]["version"] == f"=={VERSION}"
    out = loop.output()
    assert "locking" in out and "installing 1 package" in out
    assert {"uv": "uv: Installed 1 package", "pip": "pip: Successfully installed"}[installer] in out
    loop.close()
    again = devloop("run", project, "--deps-dir", str(deps_dir), env=env)
    again.wait_for(lambda r: r.status_code == 200, path="/dep")
    assert "locking" not in again.output() and "installing" not in again.output()


def test_pipfile_change_while_running_installs_and_restarts(devloop, project, tmp_path):
    loop = devloop("run", project, "--deps-dir", str(tmp_path / "deps"))
    loop.wait_watching()
    pid = loop.proc.pid
    add_route(project)
    loop.wait_for(lambda r: r.status_code == 500, path="/dep", timeout=30)  # not installed yet
    pipfile = project / "Pipfile"
    original = pipfile.read_text()
    pipfile.write_text(original.replace("[packages]\n", f'[packages]\n{PACKAGE} = "=={VERSION}"\n'))
    loop.wait_for(lambda r: r.status_code == 200, path="/dep", timeout=INSTALL_TIMEOUT)
    assert loop.proc.pid == pid and loop.proc.poll() is None
    assert "restarting the dev loop" in loop.output()
    # A Pipfile that does not resolve: the previous version keeps serving.
    loop.wait_log("watching ", timeout=60)
    pipfile.write_text(original.replace("[packages]\n", f'[packages]\n{PACKAGE} = "==999.0"\n'))
    loop.wait_log("still serving the previous version", timeout=INSTALL_TIMEOUT)
    assert loop.get("/dep").status_code == 200
    assert loop.get("/hello").text == HELLO


@pytest.fixture(scope="module")
def runtime_venv(tmp_path_factory) -> Path:
    """A fresh venv (with pip) that sees the test environment's packages through a .pth file,
    standing in for the local engine's per-project venv."""
    venv = tmp_path_factory.mktemp("venv") / "env"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120, capture_output=True)
    purelib = Path(subprocess.run([str(venv / "bin" / "python"), "-c",
                                   "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  check=True, capture_output=True, text=True, timeout=60).stdout.strip())
    (purelib / "zz-test-env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


def test_without_deps_dir_installs_into_the_running_environment(project, runtime_venv, tmp_path):
    with_package(project, f"=={VERSION}")
    add_route(project)
    python = runtime_venv / "bin" / "python"
    log_path = tmp_path / "test.log"
    # `test` mode: installs, then runs the template's tests plus one that imports the package.
    (project / "tests" / "test_dep.py").write_text(
        "def test_dep(client):\n"
        "    response = client.get('/dep')\n"
        "    assert response.status_code == 200\n"
        f"    assert {str(runtime_venv)!r} in response.get_data(as_text=True)\n")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([str(python), "-m", "devloop", "test", "--project", str(project)], env=loop_env(),
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            status = proc.wait(INSTALL_TIMEOUT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    out = log_path.read_text()
    assert status == 0, out
    assert "installing 1 package" in out and "test_dep.py ." in out, out
    stamps = list((runtime_venv / "flask-stack-deps").glob("*.json"))
    assert len(stamps) == 1
    assert os.path.isfile(stamps[0])


@pytest.mark.parametrize("edit", ["none", "comment", "package", "source"])
def test_lock_freshness_is_read_without_pipenv_as_pipenv_reads_it(project, edit):
    pipfile = project / "Pipfile"
    text = pipfile.read_text()
    if edit == "comment":
        pipfile.write_text("# a comment\n" + text)
    elif edit == "package":
        pipfile.write_text(text.replace("[packages]\n", f'[packages]\n{PACKAGE} = "=={VERSION}"\n'))
    elif edit == "source":
        pipfile.write_text(text.replace("verify_ssl = true", "verify_ssl = false"))
    code = ("import sys, pathlib; from devloop.locking import lock_matches, pipenv; p = pathlib.Path(sys.argv[1]); "
            "print(lock_matches(p), pipenv(p, 'verify')[0] == 0)")
    result = subprocess.run([sys.executable, "-c", code, str(project)], env=loop_env(), capture_output=True,
                            text=True, timeout=120)
    ours, pipenvs = result.stdout.split()
    assert ours == pipenvs == str(edit in ("none", "comment")), result.stderr
