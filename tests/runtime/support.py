"""Helpers shared by the runtime tests (paths, free ports, child-process environment)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from testkit.net import free_port, http_fetch, wait_until  # noqa: F401  (free_port: re-exported to the tests here)

REPO = Path(__file__).resolve().parents[2]
PROJECT = REPO / "image" / "project"
USERAPPS = REPO / "tests" / "fixtures" / "userapps"
STACK_ENV = ("STACK_", "LOG_LEVEL", "LOG_FORMAT", "PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir")
PYTHON = sys.executable


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for a child Python process that can import ``server``; STACK_* removed unless given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(STACK_ENV)}
    env["PYTHONPATH"] = os.pathsep.join([str(PROJECT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["STACK_COMMIT_FILE"] = "/nonexistent/.commit"
    env.update(extra)
    return env


def write_userapp(directory: Path, source: str, **files: str) -> Path:
    """Write a user package (``__init__.py`` = ``source``, plus ``files`` by relative name) into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "__init__.py").write_text(source)
    for name, text in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return directory


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """GET ``url`` (``testkit.net.http_fetch``, redirects not followed): (status, body), error statuses included.
    Raises OSError when nothing answers."""
    return http_fetch(url, timeout)[:2]


def wait_ready(base: str, proc: subprocess.Popen, timeout: float = 60.0) -> bool:
    """Poll ``base``/health/ready until it answers 200 (True), ``proc`` exits or ``timeout`` seconds pass (False)."""
    try:
        return wait_until(lambda: http_get(base + "/health/ready")[0] == 200 or None, timeout, interval=0.2,
                          running=lambda: proc.poll() is None)
    except (TimeoutError, ChildProcessError):
        return False


def stop_group(proc: subprocess.Popen) -> str:
    """SIGTERM the process group of ``proc`` (started with ``start_new_session=True``), SIGKILL after 30 s;
    return its captured stdout (text) when it was piped."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    return proc.stdout.read() if proc.stdout else ""
