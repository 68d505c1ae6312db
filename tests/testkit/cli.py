"""Running ``flask-stack`` (this checkout's ``src/``) as a real process: its environment, argv, and runners."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def flask_stack_env(**extra: str | None) -> dict[str, str]:
    """Environment of a ``flask-stack`` process: this checkout importable, output unbuffered, none of the caller's
    ``VIRTUAL_ENV``/``STACK_ENGINE``/``PORT``; then ``extra`` (a None value removes the variable)."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "STACK_ENGINE", "PORT")}
    env["PYTHONPATH"] = str(REPO / "src")
    env["PYTHONUNBUFFERED"] = "1"
    for name, value in extra.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def flask_stack_cmd(*args: str) -> list[str]:
    """The argv of ``flask-stack ARGS`` run from this checkout."""
    return [sys.executable, "-m", "flask_stack", *args]


def run_flask_stack(*args: str, env: dict[str, str], cwd: Path | None = None,
                    timeout: float = 120.0) -> subprocess.CompletedProcess:
    """Run ``flask-stack ARGS`` to completion (``timeout`` seconds at most: TimeoutExpired); text output."""
    return subprocess.run(flask_stack_cmd(*args), cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def start_flask_stack(*args: str, env: dict[str, str], cwd: Path | None, log: Path) -> subprocess.Popen:
    """Start ``flask-stack ARGS`` in the background, stdout and stderr into ``log``; the caller stops it."""
    with open(log, "wb") as handle:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(flask_stack_cmd(*args), cwd=cwd, env=env, stdout=handle, stderr=subprocess.STDOUT)
