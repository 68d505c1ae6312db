"""Fixtures for the dev loop's tests: real ``python -m devloop`` processes on free 127.0.0.1 ports.

Every process started here is stopped in a ``finally`` (SIGTERM, then SIGKILL of it and of every
descendant it had), and every wait is bounded.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest
import requests
from testkit.procs import alive, descendants  # noqa: F401  (alive: used by the tests here)
from testkit.net import free_port, wait_until  # noqa: F401  (free_port: re-exported to the tests here)

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "templates" / "simple"
START_TIMEOUT = 60.0  # seconds until a fresh loop answers (no network install involved)
INSTALL_TIMEOUT = 240.0  # seconds when the loop must lock and install from the package index
HELLO = "Hello from Appsody!"


def loop_env(**extra: str) -> dict[str, str]:
    """Environment for a dev loop process: the stack's runtime and devloop importable."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("STACK_", "APPSODY_")) and k not in ("PORT", "VIRTUAL_ENV", "PYTHONPATH")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "image" / "project"), str(REPO / "image")])
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


class DevLoop:
    """One ``python -m devloop`` process; output goes to ``log_path``."""

    def __init__(self, mode: str, project: Path, log_path: Path, *args: str, port: int | None = None,
                 env: dict[str, str] | None = None, wrapper: tuple[str, ...] = (), python: str | None = None):
        self.project = project
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "wb")
        argv = [*wrapper, python or sys.executable, "-m", "devloop", mode, "--project", str(project)]
        if mode in ("run", "debug"):
            argv += ["--host", "127.0.0.1", "--port", str(self.port)]
        self.proc = subprocess.Popen(argv + list(args), env=loop_env(**(env or {})), stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        self.seen: set[int] = set()

    def output(self) -> str:
        """Everything the loop printed so far."""
        return self.log_path.read_text(errors="replace")

    def remember_children(self) -> list[int]:
        """Record (for cleanup) and return the loop's live descendants."""
        kids = list(descendants(self.proc.pid))
        self.seen.update(kids)
        return kids

    def get(self, path: str, timeout: float = 5.0, **kw) -> requests.Response:
        """One GET on a fresh connection."""
        return requests.get(self.url + path, timeout=timeout, **kw)

    def wait_for(self, predicate: Callable[[requests.Response], bool], path: str = "/hello",
                 timeout: float = START_TIMEOUT, interval: float = 0.005) -> requests.Response:
        """Poll ``path`` until ``predicate(response)``; fail with the loop's output after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        last: object = None

        def attempt() -> requests.Response | None:
            nonlocal last
            response = self.get(path, timeout=max(0.5, min(5.0, deadline - time.monotonic())))
            last = (response.status_code, response.text[:300])
            return response if predicate(response) else None

        try:
            response = wait_until(attempt, timeout, interval=interval, running=lambda: self.proc.poll() is None,
                                  errors=(requests.RequestException,))
        except ChildProcessError:
            pytest.fail(f"dev loop exited with {self.proc.returncode}:\n{self.output()}")
        except TimeoutError as exc:
            pytest.fail(f"no matching answer from {self.url}{path} within {timeout} s (last: {last}; {exc}):\n"
                        f"{self.output()}")
        self.remember_children()
        return response

    def wait_text(self, text: str, path: str = "/hello", timeout: float = START_TIMEOUT) -> requests.Response:
        """Poll until ``path`` answers 200 with body ``text``."""
        return self.wait_for(lambda r: r.status_code == 200 and r.text == text, path, timeout)

    def wait_watching(self, text: str = HELLO, timeout: float = START_TIMEOUT) -> None:
        """Wait until /hello answers ``text`` and the loop watches for saves."""
        self.wait_text(text, timeout=timeout)
        self.wait_log("watching ", timeout=timeout)

    def wait_exit(self, timeout: float = 30.0) -> int:
        """Wait for the loop to exit; return its status (fails after ``timeout`` s)."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"dev loop still running after {timeout} s:\n{self.output()}")

    def wait_log(self, text: str, timeout: float = START_TIMEOUT) -> None:
        """Wait until the loop has printed ``text``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        pytest.fail(f"dev loop did not print {text!r} within {timeout} s:\n{self.output()}")

    def close(self) -> None:
        """Stop the loop and anything it started (always called by the fixture)."""
        try:
            if self.proc.poll() is None:
                self.remember_children()
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(10)
        finally:
            for pid in self.seen:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            self._log.close()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A fresh copy of templates/simple."""
    dest = tmp_path / "proj"
    shutil.copytree(TEMPLATE, dest)
    return dest


@pytest.fixture
def devloop(tmp_path: Path) -> Iterator[Callable[..., DevLoop]]:
    """Factory ``devloop(mode, project, *args, port=None, env=None, wrapper=(), python=None) -> DevLoop``
    (``wrapper``: a command the loop runs under, e.g. ``unshare ...``; ``python``: the interpreter, default
    this one); all are closed at teardown."""
    started: list[DevLoop] = []

    def start(mode: str, project: Path, *args: str, port: int | None = None, env: dict[str, str] | None = None,
              wrapper: tuple[str, ...] = (), python: str | None = None) -> DevLoop:
        loop = DevLoop(mode, project, tmp_path / f"devloop-{len(started)}.log", *args, port=port, env=env,
                       wrapper=wrapper, python=python)
        started.append(loop)
        return loop

    try:
        yield start
    finally:
        for loop in started:
            loop.close()


def write_source(path: Path, text: str) -> None:
    """Write a file the way an editor saves it (new content, then rename over the old file)."""
    tmp = path.with_name(f".{path.name}.saving")
    tmp.write_text(text)
    os.replace(tmp, path)


#: A dev loop line in the runtime's text format: ``2024-05-01 12:00:00 [INFO] message``.
LOG_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \[(DEBUG|INFO|WARNING|ERROR|CRITICAL)\] \S")
