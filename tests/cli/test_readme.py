"""README.md's first command, as written there, on a Python that refuses installs outside a virtual environment.

The command's steps run with ``python3`` resolving to Debian's system Python (which carries PEP 668's
``EXTERNALLY-MANAGED`` marker), ``HOME`` in a temporary directory (the command installs into ``~/.flask-stack``)
and the project directory and port replaced by temporary ones; the last step (``run``) is started in the
background until the template's ``/hello`` answers. The whole command runs twice: the second run must work too.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests
from testkit.net import free_port
from testkit.need import missing

from .conftest import REPO

pytestmark = pytest.mark.slow

SYSTEM_PYTHON = Path("/usr/bin/python3")


def readme_first_command() -> str:
    """The first command in README.md: the first `code` span of its first paragraph."""
    first_paragraph = REPO.joinpath("README.md").read_text().split("\n\n")[1]
    return re.search(r"`([^`]+)`", first_paragraph).group(1)


def externally_managed(python: Path) -> bool:
    """True when ``python`` refuses system-wide pip installs (PEP 668 marker in its stdlib directory)."""
    stdlib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('stdlib'))"],
                            capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    return (Path(stdlib) / "EXTERNALLY-MANAGED").is_file()


@pytest.fixture
def system_python(tmp_path) -> Path:
    """A directory to put first on PATH whose ``python3`` is the system's externally managed Python."""
    if not SYSTEM_PYTHON.is_file() or not externally_managed(SYSTEM_PYTHON):
        missing(f"no {SYSTEM_PYTHON} with the EXTERNALLY-MANAGED marker here (Debian's python3)")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(SYSTEM_PYTHON)
    return bin_dir


@pytest.mark.timeout(1500)  # two README runs of up to 600 s each, plus starts
def test_readme_first_command_works_twice_on_an_externally_managed_python(tmp_path, system_python):
    command = readme_first_command()
    steps = [step.strip() for step in command.split("&&")]
    assert steps[0].startswith("python3 -m venv "), command
    assert steps[-1].split()[1] == "run", command
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "STACK_ENGINE")}
    env.update(HOME=str(home), PATH=f"{system_python}{os.pathsep}{env['PATH']}", STACK_CACHE_DIR=str(tmp_path / "cache"),
               PYTHONUNBUFFERED="1")
    project = tmp_path / "demo"
    prepare = " && ".join(steps[:-1]).replace("/tmp/demo", shlex.quote(str(project)))

    refused = subprocess.run(["python3", "-m", "pip", "install", "--dry-run", "six"], env=env, capture_output=True,
                             text=True, timeout=120)
    assert refused.returncode != 0 and "externally-managed-environment" in refused.stderr  # the point of the test

    for attempt in (1, 2):
        result = subprocess.run(["bash", "-c", prepare], cwd=REPO, env=env, capture_output=True, text=True,
                                timeout=600)
        assert result.returncode == 0, f"attempt {attempt}:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
        if attempt == 2:
            assert "already is a python-flask stack project; nothing written" in result.stderr
        port = free_port()
        run = steps[-1].replace("/tmp/demo", shlex.quote(str(project))) + f" --port {port}"
        log = tmp_path / f"run-{attempt}.log"
        with open(log, "wb") as sink:
            proc = subprocess.Popen(["bash", "-c", f"exec {run}"], cwd=REPO, env=env, stdout=sink,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 300
            while True:
                assert proc.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                try:
                    hello = requests.get(f"http://127.0.0.1:{port}/hello", timeout=2)
                    if hello.status_code == 200:
                        break
                except requests.RequestException:
                    pass
                time.sleep(0.2)
            assert hello.text == "Hello from Appsody!"
            assert f"http://127.0.0.1:{port}/apidocs/" in log.read_text() or _soon(log, "/apidocs/")
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            assert proc.wait(timeout=60) == 0, log.read_text()[-3000:]


def _soon(log: Path, text: str, within: float = 2.0) -> bool:
    """True when ``text`` appears in ``log`` within ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if text in log.read_text():
            return True
        time.sleep(0.1)
    return False
