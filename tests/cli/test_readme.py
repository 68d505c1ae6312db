"""README.md's first command, as written there, then every ``next:`` line ``init`` printed, as printed, each in a
login shell (``bash -l``) of a new user: a fresh ``HOME`` made from ``/etc/skel`` (as ``useradd -m`` makes it), on
Debian's system Python (which refuses installs outside a virtual environment: PEP 668's ``EXTERNALLY-MANAGED``).

Each must succeed with nothing else set up: no engine chosen (the local engine, even where podman is installed
and no registry answers), ``flask-stack`` found on the login shell's PATH (the link the first command makes in
``~/.local/bin``). Only the project directory (``/tmp/demo``) is replaced by a temporary one, and the port comes
from ``FLASK_RUN_PORT`` (the commands stay as printed); a command that serves runs until ``/hello`` answers and is
then stopped with SIGTERM. The whole first command runs twice: the second run must work too.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests
from testkit.net import free_port, wait_until
from testkit.procs import descendants, proc_stats
from testkit.need import missing

from .conftest import REPO

pytestmark = pytest.mark.slow

SYSTEM_PYTHON = Path("/usr/bin/python3")
SKEL = Path("/etc/skel")


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
def new_user_home(tmp_path) -> Path:
    """A fresh HOME as ``useradd -m`` makes it (a copy of /etc/skel), on a machine whose python3 is Debian's."""
    if not SYSTEM_PYTHON.is_file() or not externally_managed(SYSTEM_PYTHON) or not (SKEL / ".profile").is_file():
        missing(f"no {SYSTEM_PYTHON} with the EXTERNALLY-MANAGED marker or no {SKEL}/.profile here (Debian)")
    home = tmp_path / "home"
    shutil.copytree(SKEL, home)
    return home


def login_env(home: Path, cache: Path, port: int) -> dict[str, str]:
    """The environment a login shell of the new user starts from (its PATH is set by /etc/profile and ~/.profile)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "STACK_ENGINE", "FLASK_APP", "PORT")}
    env.update(HOME=str(home), STACK_CACHE_DIR=str(cache), PYTHONUNBUFFERED="1", FLASK_RUN_PORT=str(port))
    return env


def serve_until_hello(command: str, env: dict[str, str], port: int, log: Path, said: str | None = None) -> str:
    """Run ``command`` in a login shell until ``/hello`` answers 200 on ``port`` and (``said``) its output has that
    text (the dev loop says the app's URLs from a thread once it serves, a moment after the first answer; up to
    30 s), then SIGTERM the flask-stack process: it must exit 0, and nothing it started may be left. Return its
    output."""
    with open(log, "wb") as sink:
        shell = subprocess.Popen(["bash", "-l", "-c", command], cwd=env["HOME"], env=env, stdout=sink,
                                 stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while True:
            assert shell.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            try:
                hello = requests.get(f"http://127.0.0.1:{port}/hello", timeout=2)
                if hello.status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.2)
        assert hello.text == "Hello from Appsody!"
        if said is not None:
            try:
                wait_until(lambda: True if said in log.read_text() else None, 30, running=lambda: shell.poll() is None)
            except (TimeoutError, ChildProcessError) as exc:
                raise AssertionError(f"{said!r} not said ({exc}):\n{log.read_text()[-3000:]}") from None
        table = proc_stats()
        cli = [pid for pid in [shell.pid, *descendants(shell.pid)] if pid in table and _is_flask_stack(pid)]
        assert cli, log.read_text()[-3000:]
        os.kill(cli[0], signal.SIGTERM)
        assert shell.wait(timeout=60) == 0, log.read_text()[-3000:]
    finally:
        if shell.poll() is None:
            os.killpg(shell.pid, signal.SIGKILL)
            shell.wait(timeout=30)
    return log.read_text()


def _is_flask_stack(pid: int) -> bool:
    """True when process ``pid`` runs the flask-stack CLI."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(arg.endswith(b"/flask-stack") for arg in argv[:2])


@pytest.mark.timeout(1980)  # README's first command (up to 600 s), then each next: line as printed
def test_readme_first_command_then_every_next_line_in_a_login_shell(tmp_path, new_user_home):
    command = readme_first_command()
    steps = [step.strip() for step in command.split("&&")]
    assert steps[0].startswith("python3 -m venv "), command
    assert steps[-1].split()[1] == "run", command
    project = tmp_path / "demo"
    port = free_port()
    env = login_env(new_user_home, tmp_path / "cache", port)
    prepare = " && ".join(steps[:-1]).replace("/tmp/demo", shlex.quote(str(project)))
    serve = steps[-1].replace("/tmp/demo", shlex.quote(str(project)))

    refused = subprocess.run(["bash", "-l", "-c", "python3 -m pip install --dry-run six"], env=env,
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "externally-managed-environment" in refused.stderr  # the point of the test
    assert subprocess.run(["bash", "-l", "-c", "command -v flask-stack"], env=env).returncode != 0

    next_lines: list[str] = []
    for attempt in (1, 2):
        started = time.monotonic()
        result = subprocess.run(["bash", "-l", "-c", f"cd {shlex.quote(str(REPO))} && {prepare}"], env=env,
                                capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, f"attempt {attempt}:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
        if attempt == 2:
            assert "already is a python-flask stack project; nothing written" in result.stderr
        printed = [line.removeprefix("flask-stack: next: ") for line in result.stderr.splitlines()
                   if line.startswith("flask-stack: next: ")]
        assert len(printed) >= 2, result.stderr
        assert attempt == 1 or printed == next_lines
        next_lines = printed
        docs = f"http://127.0.0.1:{port}/apidocs/"
        out = serve_until_hello(f"cd {shlex.quote(str(REPO))} && {serve}", env, port, tmp_path / f"run-{attempt}.log",
                                said=docs)
        print(f"attempt {attempt}: README's first command served /hello in {time.monotonic() - started:.1f} s")
        assert docs in out
        assert "flask-stack: engine: local (the default" in out

    assert subprocess.run(["bash", "-l", "-c", "command -v flask-stack"], env=env, capture_output=True, text=True
                          ).stdout.strip() == str(new_user_home / ".local" / "bin" / "flask-stack")
    for line in next_lines:  # as printed: `cd <project> && flask-stack run`, `cd <project> && flask-stack test`
        assert "flask-stack " in line and "/tmp/demo" not in line, line
        if line.split()[-1] == "run":
            out = serve_until_hello(line, env, port, tmp_path / "next-run.log")
            assert "flask-stack: engine: local" in out
        else:
            result = subprocess.run(["bash", "-l", "-c", line], env=env, capture_output=True, text=True, timeout=900)
            assert result.returncode == 0, f"{line}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            assert "flask-stack: engine: local" in result.stderr
