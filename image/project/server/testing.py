"""pytest plugin for testing a user's app as the stack serves it: ``pytest -p server.testing``.

Fixtures (a project's own ``conftest.py`` fixtures of the same names take precedence, as pytest's always do):
    app: ``stack_app``.
    client: ``app.test_client()``.
    runner: ``app.test_cli_runner()``.
    app_config: extra config for ``create_app`` (override it in your conftest.py); default none.
    stack_app: ``create_app({"TESTING": True, **app_config})``: the user's app, whatever its shape, with the stack
        applied (a factory is called and a Blueprint-shape app made anew per test; an app object living in the
        user's module is the same object in every test). The stack's checks use ``stack_app`` and
        ``stack_client``, names of their own, so a project's ``app``/``client`` fixtures never replace them.
    stack_client: ``stack_app.test_client()``.

The project is found as ``create_app`` finds it (``STACK_USERAPP_DIR``, ``FLASK_APP``); with neither set, and no
module ``userapp`` on ``sys.path``, pytest's rootdir is the project directory, so ``pytest -p server.testing`` run
in a project just works.

Hooks:
    * ``STACK_PROFILE`` is ``testing`` unless set: the project's ``settings.yaml`` profile (``server.userconfig``).
    * Before pytest imports any ``conftest.py``, the user's module is imported through the stack, so it has one
      name in ``sys.modules`` and is never imported twice (a second import would register its routes, flasgger
      or Prometheus metrics again), and the stack is applied to it (``server.factory.apply_on_import``): an app
      object in the module is finished then, its factories return apps with the stack applied. So every test,
      the project's own with its own fixtures included, sees the app as ``run`` and ``serve`` serve it. An
      import error is reported by the fixtures, in one line.
    * ``--stack-checks`` (``flask-stack test`` passes it): when no test path was given on the command line, the
      stack's checks (``server/checks``) are collected with the project's own tests (``testpaths`` or the
      project directory, as pytest would choose them).

pytest is a dev-package of the stack: present in the development image and the local engine, not in production.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner

import stacksettings

from .exceptions import StackError
from .factory import apply_on_import, create_app
from .logs import configure_process_logging

CHECKS_DIR = Path(__file__).resolve().parent / "checks"


def _project_config(rootpath: Path) -> dict[str, Any]:
    """``{"USERAPP_DIR": rootdir}`` unless the environment says where the app is (see the module docstring)."""
    if any(stacksettings.raw(name) for name in ("STACK_USERAPP_DIR", "FLASK_APP", "STACK_USERAPP")):
        return {}
    try:
        if importlib.util.find_spec("userapp") is not None:
            return {}
    except (ImportError, ValueError):
        pass
    return {"USERAPP_DIR": str(rootpath)}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--stack-checks", action="store_true", default=False,
                     help="also run the python-flask stack's checks when no test path is given")


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser, args: list[str]) -> None:
    configure_process_logging(environ=True)  # `flask-stack test` owns this process: logging once, before the app
    stacksettings.set_default("STACK_PROFILE", "testing")  # the project's settings.yaml profile, as flask-stack test
    try:
        loaded = apply_on_import(_project_config(early_config.rootpath))
    except StackError:
        return  # the app fixture reports it, with its one-line message
    if loaded is not None:
        location, module = loaded
        if location.root_package and not os.path.basename(location.project_dir or "").isidentifier():
            # pytest imports the __init__.py of a package directory whose name is no identifier (hello-app) as the
            # top-level module "__init__" (_pytest.pathlib.resolve_pkg_root_and_module_name); that is this module
            sys.modules.setdefault("__init__", module)


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("stack_checks") and config.args_source != pytest.Config.ArgsSource.ARGS:
        config.args.append(str(CHECKS_DIR))
        config.stash[_CHECKS_ADDED] = True


_CHECKS_ADDED = pytest.StashKey[bool]()


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Say where the stack's checks come from when ``--stack-checks`` added them (they are not the project's)."""
    if not config.stash.get(_CHECKS_ADDED, False):
        return []
    return [f"stack checks: {', '.join(sorted(p.name for p in CHECKS_DIR.glob('test_*.py')))} is the python-flask "
            f"stack's ({CHECKS_DIR}), not your project's; they check that your app works with the stack "
            f"(health, metrics, API docs); a test path (`flask-stack test tests/`) runs only yours"]


@pytest.fixture
def app_config() -> dict[str, Any]:
    """Extra config for ``create_app`` (override in your conftest.py); default: none."""
    return {}


@pytest.fixture
def stack_app(request: pytest.FixtureRequest, app_config: dict[str, Any]) -> Iterator[Flask]:
    """The user's app with the stack applied, ``TESTING=True`` (the stack's checks use this name)."""
    config: dict[str, Any] = {"TESTING": True, **_project_config(request.config.rootpath)}
    config.update(app_config)
    try:
        built = create_app(config)
    except StackError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield built


@pytest.fixture
def stack_client(stack_app: Flask) -> FlaskClient:
    """A test client for ``stack_app`` (the stack's checks use this name)."""
    return stack_app.test_client()


@pytest.fixture
def app(stack_app: Flask) -> Flask:
    """The user's app with the stack applied, ``TESTING=True`` (``stack_app``)."""
    return stack_app


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """A test client for ``app`` (real WSGI calls, no network)."""
    return app.test_client()


@pytest.fixture
def runner(app: Flask) -> FlaskCliRunner:
    """A Click runner for ``app``'s CLI commands."""
    return app.test_cli_runner()
