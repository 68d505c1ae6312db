"""Helpers shared by the runtime tests (paths, free ports, child-process environment)."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PROJECT = REPO / "image" / "project"
USERAPPS = REPO / "tests" / "fixtures" / "userapps"
STACK_ENV = ("STACK_", "LOG_LEVEL", "LOG_FORMAT", "PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir")
PYTHON = sys.executable


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (bind to port 0, read it, release it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
