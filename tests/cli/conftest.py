"""Helpers for the CLI tests: run ``flask-stack`` as a real process with an isolated cache dir."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from testkit.cli import REPO, flask_stack_env, run_flask_stack  # noqa: F401  (REPO: used by the tests here)


@pytest.fixture
def cli_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment for a flask-stack process: the source tree importable, caches under tmp."""
    return flask_stack_env(STACK_CACHE_DIR=str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def flask_stack(cli_env: dict[str, str]):
    """Return ``run(*args, cwd=...) -> CompletedProcess`` running ``python -m flask_stack`` (60 s bound)."""

    def run(*args: str, cwd: Path | None = None, timeout: float = 60, **env: str) -> subprocess.CompletedProcess:
        return run_flask_stack(*args, env={**cli_env, **env}, cwd=cwd, timeout=timeout)

    return run


def one_line_error(result: subprocess.CompletedProcess) -> str:
    """Assert ``result`` failed with exactly one stderr line ``flask-stack: ...`` and no traceback; return it."""
    assert result.returncode != 0, result
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("flask-stack: "), lines[0]
    return lines[0]
