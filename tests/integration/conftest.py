"""Fixtures for end-to-end tests of ``flask-stack`` with the local engine: real processes, real HTTP.

One project path is used for the whole session so that ONE local-engine venv (made by the session
fixture ``local_env`` under a temporary cache dir) serves every test; the ``project`` fixture lays a
fresh ``flask-stack init`` project at that path before each test.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from collections.abc import Iterator

import pytest
import requests
from testkit.procs import descendants, still_running  # noqa: F401  (used by the tests here)
from testkit.budget import extend_for_fixtures
from testkit.cli import flask_stack_cmd, flask_stack_env  # noqa: F401  (flask_stack_cmd: used by the tests here)
from testkit.net import free_port, wait_until  # noqa: F401  (free_port: re-exported to the tests here)

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 90.0  # seconds for a server to answer after `flask-stack run` (venv already made)


@pytest.fixture(scope="session")
def cli_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment of every flask-stack process here: the source tree importable, the cache under tmp."""
    return flask_stack_env(STACK_CACHE_DIR=str(tmp_path_factory.mktemp("flask-stack-cache")))


@pytest.fixture(scope="session")
def project_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The one project path of the session (its venv is made once)."""
    return tmp_path_factory.mktemp("projects") / "hello-app"


@pytest.fixture(scope="session")
def local_env(cli_env, project_path) -> dict[str, float]:
    """Make the stack's shared environment once (under the session's cache dir); return {'venv_seconds': time it
    took}."""
    project_path.mkdir(parents=True, exist_ok=True)
    (project_path / "__init__.py").touch()
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", "from flask_stack.localenv import ensure_stack_env; ensure_stack_env(print)"],
        env=cli_env, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    seconds = time.monotonic() - started
    sys.stderr.write(f"\n[integration] the stack's environment made in {seconds:.1f} s\n")
    return {"venv_seconds": seconds}


@pytest.fixture
def project(local_env, cli_env, project_path) -> Path:
    """A fresh ``flask-stack init`` project at the session's project path (its venv already made)."""
    for child in project_path.iterdir():
        shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    result = subprocess.run(flask_stack_cmd("init", str(project_path)), env=cli_env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return project_path


class Served:
    """A running ``flask-stack run|debug`` process: its port, log and pid, with HTTP helpers."""

    def __init__(self, proc: subprocess.Popen, port: int, log: Path):
        self.proc = proc
        self.port = port
        self.log = log
        self.base = f"http://127.0.0.1:{port}"

    def output(self) -> str:
        """Everything the process wrote so far (stdout and stderr)."""
        return self.log.read_text(errors="replace")

    def get(self, path: str, **kwargs) -> requests.Response:
        """GET ``path`` with a 10 s timeout."""
        kwargs.setdefault("timeout", 10)
        return requests.get(self.base + path, **kwargs)

    def wait_for(self, path: str, predicate, timeout: float = 30.0) -> requests.Response:
        """Poll ``path`` until ``predicate(response)`` holds; fail with the log after ``timeout`` seconds."""
        last: object = None

        def attempt() -> requests.Response | None:
            nonlocal last
            response = self.get(path, timeout=5)
            last = (response.status_code, response.text[:300])
            return response if predicate(response) else None

        try:
            return wait_until(attempt, timeout, running=lambda: self.proc.poll() is None,
                              errors=(requests.RequestException,))
        except ChildProcessError:
            pytest.fail(f"flask-stack exited with {self.proc.returncode}:\n{self.output()[-4000:]}")
        except TimeoutError as exc:
            pytest.fail(f"{path} never matched within {timeout} s (last: {last!r}; {exc}):\n{self.output()[-4000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Send ``sig`` to flask-stack, wait (bounded) for it to exit and return its status."""
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)


@contextlib.contextmanager
def serve(cli_env, project: Path, tmp_path: Path, command: str = "run", *extra: str,
          health: str | None = "/health") -> Iterator[Served]:
    """Start ``flask-stack COMMAND --engine local --port <free> --project PROJECT EXTRA`` and wait until
    ``health`` answers (None: do not wait); always kill it (and its process group) afterwards."""
    port = free_port()
    log = tmp_path / f"flask-stack-{command}-{port}.log"
    with open(log, "wb") as sink:
        proc = subprocess.Popen(
            flask_stack_cmd(command, "--engine", "local", "--port", str(port), "--project", str(project), *extra),
            env=cli_env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True,
        )
    served = Served(proc, port, log)
    started = time.monotonic()
    try:
        if health is not None:
            served.wait_for(health, lambda r: r.status_code in (200, 503), timeout=START_TIMEOUT)
        served.start_seconds = time.monotonic() - started
        yield served
    finally:
        if proc.poll() is None:
            leftovers = descendants(proc.pid)
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
            for pid in still_running(leftovers):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The session's builds count in the budget of the tests that use them (testkit.budget)."""
    extend_for_fixtures(items, {"local_env": 900, "flaskr_source": 300})
