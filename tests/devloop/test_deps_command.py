"""``python -m devloop deps`` (the image's APPSODY_PREP) and projects the dev loop cannot write to.

A project the loop cannot write is made two real ways: the loop runs as another uid than the project's
owner (``setpriv`` to uid 65534 when the tests run as root, as the dev container runs as uid 1001 over a
root-owned mount; a ``chmod a-w`` project otherwise), and a read-only bind mount of the project in a
private mount namespace (``unshare``). The locking cases reach PyPI for ``inflection`` (see test_deps).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sysconfig
import tempfile
from pathlib import Path
from typing import Iterator

import pytest
from testkit.need import missing

from .conftest import INSTALL_TIMEOUT, LOG_LINE, TEMPLATE
from .test_deps import PACKAGE, VERSION, add_route, with_package

NOBODY = 65534


def lines_of(loop) -> list[str]:
    return [line for line in loop.output().splitlines() if line.strip()]


def test_deps_is_quiet_and_exits_0_when_up_to_date(devloop, project, tmp_path):
    loop = devloop("deps", project, "--deps-dir", str(tmp_path / "deps"))
    assert loop.wait_exit(120) == 0, loop.output()
    lines = lines_of(loop)
    assert len(lines) == 1 and LOG_LINE.match(lines[0]) and "up to date" in lines[0], lines
    (project / "Pipfile").unlink()
    (project / "Pipfile.lock").unlink()
    again = devloop("deps", project)
    assert again.wait_exit(60) == 0
    assert "no uv.lock, Pipfile, pyproject.toml or requirements.txt in" in again.output()


@pytest.mark.slow
def test_deps_installs_once_then_says_up_to_date(devloop, project, tmp_path):
    deps_dir = tmp_path / "deps"
    with_package(project, f"=={VERSION}")
    first = devloop("deps", project, "--deps-dir", str(deps_dir))
    assert first.wait_exit(INSTALL_TIMEOUT) == 0, first.output()
    assert "installing 1 package" in first.output()
    assert list(deps_dir.glob(f"site-*/{PACKAGE}*"))
    assert PACKAGE in json.loads((project / "Pipfile.lock").read_text())["default"]
    second = devloop("deps", project, "--deps-dir", str(deps_dir))
    assert second.wait_exit(60) == 0
    assert "installing" not in second.output() and "up to date" in second.output()


@pytest.mark.slow
def test_deps_unresolvable_is_one_error_line(devloop, project, tmp_path):
    with_package(project, "==999.0")
    loop = devloop("deps", project, "--deps-dir", str(tmp_path / "deps"))
    assert loop.wait_exit(INSTALL_TIMEOUT) == 1
    out = loop.output()
    errors = [line for line in lines_of(loop) if "[ERROR]" in line]
    assert "Traceback" not in out and len(errors) == 1, out
    assert f"Pipfile does not resolve: no version of '{PACKAGE}==999.0'" in errors[0]


# --- a project the dev loop cannot write ---------------------------------------------------------------------
@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory every uid can traverse (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="devloop-ro-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def other_uid(shared_dir: Path) -> dict:
    """How to run the loop as a uid that does not own the project: ``python``, ``wrapper``, ``env``, and
    ``owned(path)`` making a directory that uid's. As root: uid 65534 through setpriv, with a venv from
    /usr/bin/python3 (this interpreter may live under root's private home) seeing this environment's
    packages; otherwise: ourselves, with the project made read-only by ``chmod``."""
    if os.geteuid() != 0:
        return {"python": None, "wrapper": (), "env": {}, "owned": lambda p: p.mkdir(parents=True) or p,
                "root": False}
    setpriv = shutil.which("setpriv")
    base = Path("/usr/bin/python3")
    if setpriv is None or not base.is_file():
        missing("setpriv or /usr/bin/python3 is missing (needed to run as another uid)")
    venv = shared_dir / "venv"
    subprocess.run([str(base), "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120,
                   capture_output=True)
    purelib = Path(subprocess.run([str(venv / "bin" / "python"), "-c",
                                   "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  check=True, capture_output=True, text=True, timeout=60).stdout.strip())
    (purelib / "zz-test-env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    probe = subprocess.run([setpriv, "--reuid", str(NOBODY), "--regid", str(NOBODY), "--clear-groups",
                            str(venv / "bin" / "python"), "-c", "import flask, pipenv, watchfiles"],
                           capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        missing(f"cannot run this environment as uid {NOBODY}: {probe.stderr.strip()[-300:]}")

    def owned(path: Path) -> Path:
        path.mkdir(parents=True)
        os.chown(path, NOBODY, NOBODY)
        return path

    home = owned(shared_dir / "home")
    return {"python": str(venv / "bin" / "python"), "owned": owned, "root": True,
            "wrapper": (setpriv, "--reuid", str(NOBODY), "--regid", str(NOBODY), "--clear-groups"),
            "env": {"HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache")}}


def _shared_project(shared_dir: Path) -> Path:
    project = shared_dir / "proj"
    shutil.copytree(TEMPLATE, project)
    with_package(project, f"=={VERSION}")
    add_route(project)
    for path in [project, *project.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return project


@pytest.mark.slow
def test_project_owned_by_another_uid_is_locked_in_the_deps_dir(devloop, shared_dir, other_uid):
    project = _shared_project(shared_dir)
    if not other_uid["root"]:
        project.chmod(0o555)
    deps_dir = other_uid["owned"](shared_dir / "deps")
    kw = {"python": other_uid["python"], "wrapper": other_uid["wrapper"], "env": other_uid["env"]}
    try:
        prep = devloop("deps", project, "--deps-dir", str(deps_dir), **kw)
        assert prep.wait_exit(INSTALL_TIMEOUT) == 0, prep.output()
        out = prep.output()
        assert "does not resolve" not in out and "PermissionError" not in out and "Traceback" not in out, out
        notes = [line for line in lines_of(prep) if "could not write Pipfile.lock back to" in line]
        assert len(notes) == 1 and "[WARNING]" in notes[0] and str(project) in notes[0], out
        assert "permission denied" in notes[0] and str(deps_dir / "lock") in notes[0]
        assert not (project / "Pipfile.lock").exists()
        assert PACKAGE in json.loads((deps_dir / "lock" / "Pipfile.lock").read_text())["default"]

        # The loop then starts from the stamp: no second lock, and the app imports the package.
        loop = devloop("run", project, "--deps-dir", str(deps_dir), **kw)
        response = loop.wait_for(lambda r: r.status_code == 200, path="/dep", timeout=120)
        assert Path(response.text.split()[0]).resolve().is_relative_to(deps_dir.resolve())
        assert "locking" not in loop.output() and "installing" not in loop.output()
    finally:
        project.chmod(0o755)


def _read_only_mount_wrapper(project: Path) -> tuple[str, ...]:
    """A command prefix running the rest of its argv with ``project`` bind-mounted read-only (its own mount
    namespace; ``unshare -r`` maps us to root in a user namespace when we are not root)."""
    unshare = shutil.which("unshare")
    if unshare is None:
        missing("unshare is missing (needed for a read-only bind mount)")
    ns = [unshare, "--mount", "--propagation", "private"] + ([] if os.geteuid() == 0 else ["--map-root-user"])
    script = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'
    probe = subprocess.run([*ns, "sh", "-c", script + " 2>&1", str(project), "sh", "-c",
                            'touch "$0/.probe" 2>/dev/null && echo writable || echo read-only', str(project)],
                           capture_output=True, text=True, timeout=60)
    if probe.stdout.strip() != "read-only":
        missing(f"cannot make a read-only bind mount here: {(probe.stdout + probe.stderr).strip()[-300:]}")
    return (*ns, "sh", "-c", script, str(project))


@pytest.mark.slow
def test_read_only_project_mount_is_locked_in_the_deps_dir(devloop, project, tmp_path):
    with_package(project, f"=={VERSION}")
    add_route(project)
    deps_dir = tmp_path / "deps"
    loop = devloop("run", project, "--deps-dir", str(deps_dir), wrapper=_read_only_mount_wrapper(project))
    response = loop.wait_for(lambda r: r.status_code == 200, path="/dep", timeout=INSTALL_TIMEOUT)
    assert response.text.split()[1] == "HelloWorld"
    out = loop.output()
    notes = [line for line in lines_of(loop) if "could not write Pipfile.lock back to" in line]
    assert len(notes) == 1 and "read-only file system" in notes[0], out
    assert "does not resolve" not in out and "Traceback" not in out
    assert not (project / "Pipfile.lock").exists() and not (project / ".probe").exists()
    assert loop.get("/hello").status_code == 200


def test_unwritable_deps_dir_is_one_error_line(devloop, shared_dir, other_uid):
    project = _shared_project(shared_dir)
    for name in ("Pipfile", "Pipfile.lock"):  # a current lock, nothing to resolve: no network
        shutil.copy(TEMPLATE / name, project / name)
    deps_dir = shared_dir / "deps"
    deps_dir.mkdir()
    if not other_uid["root"]:
        deps_dir.chmod(0o555)
    loop = devloop("deps", project, "--deps-dir", str(deps_dir), python=other_uid["python"],
                   wrapper=other_uid["wrapper"], env=other_uid["env"])
    try:
        assert loop.wait_exit(120) == 1
    finally:
        deps_dir.chmod(0o755)
    lines = lines_of(loop)
    assert len(lines) == 1 and "[ERROR] cannot write " in lines[0] and str(deps_dir) in lines[0], lines
    assert "Permission denied" in lines[0] and "--deps-dir" in lines[0]


def test_dev_image_prep_uses_the_deps_command():
    dockerfile = (Path(__file__).resolve().parents[2] / "image" / "Dockerfile-stack").read_text()
    prep = [line for line in dockerfile.splitlines() if "APPSODY_PREP=" in line]
    assert prep == ['ENV APPSODY_PREP="as-worker python -m devloop deps"'], prep


@pytest.mark.slow
@pytest.mark.parametrize("declaration", ["requirements.txt", "pyproject.toml"])
def test_deps_installs_a_requirements_or_pyproject_project_as_appsody_prep_does(devloop, project, tmp_path,
                                                                                 declaration):
    """APPSODY_PREP (`python -m devloop deps`) on a project with only requirements.txt or pyproject.toml."""
    (project / "Pipfile").unlink()
    (project / "Pipfile.lock").unlink()
    if declaration == "requirements.txt":
        (project / "requirements.txt").write_text(f"{PACKAGE}=={VERSION}\n")
    else:
        (project / "pyproject.toml").write_text(f'[project]\nname = "demo"\nversion = "1"\n'
                                                f'dependencies = ["{PACKAGE}=={VERSION}"]\n')
    deps_dir = tmp_path / "deps"
    first = devloop("deps", project, "--deps-dir", str(deps_dir))
    assert first.wait_exit(INSTALL_TIMEOUT) == 0, first.output()
    assert f"installing 1 package from {declaration}" in first.output()
    assert list(deps_dir.glob(f"site-*/{PACKAGE}*"))
    assert (project / "uv.lock").is_file() == (declaration == "pyproject.toml")  # the lock the project keeps
    second = devloop("deps", project, "--deps-dir", str(deps_dir))
    assert second.wait_exit(60) == 0 and "up to date" in second.output()
