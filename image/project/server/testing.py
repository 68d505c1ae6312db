"""pytest plugin for testing a user's app as the stack serves it: ``pytest -p server.testing``.

Fixtures:
    app: ``create_app({"TESTING": True})`` for the user's package (one new app per test).
    client: ``app.test_client()``.
    runner: ``app.test_cli_runner()``.

The package is found as ``create_app`` finds it (STACK_USERAPP_DIR, else ``userapp`` on sys.path); when neither
works and pytest's rootdir (or else the directory pytest was started in) holds an ``__init__.py``, that is used, so ``pytest -p server.testing`` run in
the project directory just works. Override ``app_config`` (a fixture returning a dict) to pass more config.

pytest is a dev-package of the stack: present in the development image and the local engine, not in production.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any, Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner

from . import create_app
from .exceptions import UserAppImportError


def _default_userapp_dir(*candidates: Path) -> str | None:
    if os.environ.get("STACK_USERAPP_DIR"):
        return None
    name = os.environ.get("STACK_USERAPP", "userapp")
    try:
        if name and importlib.util.find_spec(name) is not None:
            return None
    except (ImportError, ValueError):
        pass
    for directory in candidates:
        if (directory / "__init__.py").is_file():
            return str(directory)
    return None


@pytest.fixture
def app_config() -> dict[str, Any]:
    """Extra config for ``create_app`` (override in your conftest.py); default: none."""
    return {}


@pytest.fixture
def app(request: pytest.FixtureRequest, app_config: dict[str, Any]) -> Iterator[Flask]:
    """The user's app built by the stack's ``create_app`` with ``TESTING=True``."""
    config: dict[str, Any] = {"TESTING": True}
    directory = _default_userapp_dir(Path(str(request.config.rootpath)), Path(request.config.invocation_params.dir))
    if directory:
        config["USERAPP_DIR"] = directory
    config.update(app_config)
    try:
        built = create_app(config)
    except UserAppImportError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield built


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """A test client for ``app`` (real WSGI calls, no network)."""
    return app.test_client()


@pytest.fixture
def runner(app: Flask) -> FlaskCliRunner:
    """A Click runner for ``app``'s CLI commands."""
    return app.test_cli_runner()
