"""Fixtures for the runtime tests: the runtime package on sys.path, a clean environment, sample user apps."""

from __future__ import annotations

import os
import sys

import pytest

from .support import PROJECT, STACK_ENV, USERAPPS

if str(PROJECT) not in sys.path:
    sys.path.insert(0, str(PROJECT))


@pytest.fixture(autouse=True)
def process_logging():
    """Each test starts as a fresh process whose entry configured logging with the defaults (as the dev loop,
    ``server.app`` and ``flask-stack test`` do for theirs; ``Stack.init_app`` leaves the process's logging alone)."""
    from server.logs import configure_logging, mark_process_configured

    configure_logging()
    mark_process_configured()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """No STACK_*/LOG_* settings leak in from the developer's shell; no commit file is found."""
    for key in list(os.environ):
        if key.startswith(STACK_ENV):
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("STACK_COMMIT_FILE", "/nonexistent/.commit")


@pytest.fixture
def make_app():
    """``make_app("basic", KEY=value)``: create_app for a fixture package (TESTING on unless given), imported
    under the module name ``userapp`` (the original stack's) unless ``USERAPP`` is given."""
    from server import create_app

    def make(name: str | None = "basic", **config):
        if name is None:
            config.setdefault("USERAPP", "")
        else:
            config.setdefault("USERAPP_DIR", str(USERAPPS / name))
            config.setdefault("USERAPP", "userapp")
        config.setdefault("TESTING", True)
        return create_app(config)

    return make
