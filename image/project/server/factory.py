"""The app factory ``create_app``: the user's app, whatever its shape, with the stack applied.

Steps: load the project's ``.env`` and ``.flaskenv`` (when python-dotenv is installed, as ``flask run`` does; the
environment wins), resolve the settings (``server.settings``), find the user's module
(``server.discovery.locate``) and import it once per process, with ``server.app`` answering the app the stack
makes for it should the module ask (Appsody-style ``from server import app``). Then the app is:

* the user's own (``app``/``application``, the single Flask instance, or what ``create_app()``/``make_app()`` or
  ``FLASK_APP``'s ``name``/``factory(args)`` returns), kept as it is: its name, root path, templates, static and
  instance folders, config, endpoints and ``url_for`` names;
* else an app the stack makes (``server.apps.new_stack_app``) with the module's ``blueprint``/``blueprints``.

The project's own configuration (``server.userconfig``: ``settings.yaml``'s profile, ``FLASK_*`` variables,
secrets) is in its ``app.config`` before the module's hooks run (on an app the stack makes, before the module
sees it), checked through the module's ``settings_model`` when it has one. The stack is applied to it
(``server.stack.Stack``; a no-op where the user's factory did it) with the module's hooks (``init_app``,
``swagger_template``, health checks). An app object that lives in the module (``app =
Flask(...)``, Appsody's ``server.app``) is the same object on every call (its module is imported once); a factory
is called, and a Blueprint-shape app made, anew on every call.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import inspect
import logging
import os
import threading
from types import ModuleType
from typing import Any, Callable, Iterator, Mapping

from flask import Flask

import stacksettings

from .apps import new_stack_app
from .discovery import AppLocation, find_app, import_module, locate
from .exceptions import UserAppImportError
from .settings import STACK_KEYS, Settings, load_settings
from .stack import Stack, module_blueprints, state_of
from .userconfig import UserConfig, apply as apply_user_config, load as load_user_config
from .userconfig import validate as validate_user_config

log = logging.getLogger("server")
_local = threading.local()


class _Building:
    """The app ``server.app`` answers while the user's module is imported: made on first access."""

    def __init__(self, make: Callable[[], Flask]):
        self._make = make
        self.app: Flask | None = None

    def get(self) -> Flask:
        if self.app is None:
            self.app = self._make()
        return self.app


@contextlib.contextmanager
def building(make: Callable[[], Flask]) -> Iterator[_Building]:
    """Within this block (in this thread) ``server.app`` returns the app ``make()`` returns (made once, lazily)."""
    stack = _local.__dict__.setdefault("stack", [])
    frame = _Building(make)
    stack.append(frame)
    try:
        yield frame
    finally:
        stack.pop()


def app_under_construction() -> Flask | None:
    """The app ``create_app`` makes for the module being imported in this thread (made now if need be), or None."""
    stack = getattr(_local, "stack", None)
    return stack[-1].get() if stack else None


def load_project_dotenv(project_dir: str | None) -> None:
    """Set variables from ``project_dir``'s ``.env`` then ``.flaskenv`` (``flask.cli.load_dotenv``; a variable
    already set is kept) when python-dotenv is installed; nothing otherwise."""
    if importlib.util.find_spec("dotenv") is None:
        return
    from flask.cli import load_dotenv

    directory = os.path.abspath(project_dir or os.getcwd())
    for name in (".env", ".flaskenv"):
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            load_dotenv(path, load_defaults=False)


def _flask_config(config: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in STACK_KEYS}


def _settings(config: Mapping[str, Any]) -> tuple[Settings, Stack]:
    project_dir = next((config[k] for k in ("USERAPP_DIR", "STACK_USERAPP_DIR") if config.get(k)), None)
    load_project_dotenv(project_dir or stacksettings.value("STACK_USERAPP_DIR"))
    settings = load_settings(config)
    return settings, Stack(config=config)


def _user_config(settings: Settings) -> UserConfig:
    """The project's settings.yaml profile, FLASK_* variables and secrets (``server.userconfig``)."""
    return load_user_config(settings.userapp_dir or os.getcwd())


def _with_user_config(app: Flask, cfg: UserConfig, module: ModuleType, apply_first: bool) -> None:
    """The user's config in ``app.config`` (``apply_first``: put it there now) and checked through the module's
    ``settings_model`` when it has one, before the module's ``init_app`` runs."""
    if apply_first:
        apply_user_config(app, cfg, stack_made=False)
    model = getattr(module, "settings_model", None)
    if model is not None:
        validate_user_config(app, cfg, model, module.__name__)


def _maker(stack: Stack, location: AppLocation, config: Mapping[str, Any],
           cfg: UserConfig | None = None) -> Callable[[], Flask]:
    def make() -> Flask:
        made = new_stack_app(location)
        if cfg is not None:
            apply_user_config(made, cfg, stack_made=True)
        made.config.update(_flask_config(config))
        stack.prepare(made, stack_made=True)
        return made

    return make


def import_user_module(config: Mapping[str, Any] | None = None) -> tuple[AppLocation, ModuleType] | None:
    """Import the user's module as ``create_app`` would (nothing is called, no app is finished), so that other
    importers (pytest's conftest files) find it in ``sys.modules`` under its one name; return where it is and the
    module (None: no user app configured).

    Raises:
        server.exceptions.StackError: as ``create_app``.
    """
    config = dict(config or {})
    settings, stack = _settings(config)
    if settings.userapp == "":
        return None
    location = locate(settings.app, settings.userapp_dir, settings.userapp or None)
    with building(_maker(stack, location, config, _user_config(settings))):
        return location, import_module(location)


def apply_on_import(config: Mapping[str, Any] | None = None) -> tuple[AppLocation, ModuleType] | None:
    """Import the user's module (as :func:`import_user_module`) and apply the stack to its apps at once, for
    test runners (``server.testing``): whoever reaches the app afterwards (a project's own ``app`` fixture doing
    ``from app import app`` or ``create_app({...})``) gets the app as ``run`` and ``serve`` serve it.

    * An app object living in the module (``app = Flask(...)``, Appsody's ``server.app``) is finished now, with
      ``config`` (``create_app(config)``), before any request reaches it;
    * the module's factories (``create_app``/``make_app``, and ``FLASK_APP``'s factory) are replaced in the module
      by wrappers that apply the stack to each app they return, whatever arguments they are called with.

    Returns where the module is and the module (None: no user app configured).

    Raises:
        server.exceptions.StackError: as ``create_app``.
    """
    loaded = import_user_module(config)
    if loaded is None:
        return None
    location, module = loaded
    settings, stack = _settings(dict(config or {}))
    cfg = _user_config(settings)
    names = {"create_app", "make_app"}
    if location.attr:
        names.add(location.attr.split("(", 1)[0].strip())
    for name in names:
        factory = getattr(module, name, None)
        if inspect.isfunction(factory) and not getattr(factory, "__flask_stack_factory__", None):
            setattr(module, name, _applying(factory, stack, module, location.file, cfg))
    if any(isinstance(value, Flask) for value in list(vars(module).values())):
        create_app(config)
    return loaded


def _applying(factory: Callable[..., Any], stack: Stack, module: ModuleType,
              file: str | None, cfg: UserConfig) -> Callable[..., Any]:
    """``factory`` with the stack (and the user's config) applied to the app it returns (anything else is
    returned as it is)."""
    @functools.wraps(factory)
    def factory_with_stack(*args: Any, **kwargs: Any) -> Any:
        app = factory(*args, **kwargs)
        if isinstance(app, Flask):
            state = state_of(app)
            if state is None or not state.finished or state.module is not module:
                _with_user_config(app, cfg, module, apply_first=state is None or not state.stack_made)
                stack.finish(app, module, file)
        return app

    factory_with_stack.__flask_stack_factory__ = factory  # type: ignore[attr-defined]
    return factory_with_stack


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """The user's app with the stack applied (see the module docstring).

    Args:
        config: Flask config values (``TESTING``, ``SECRET_KEY``...) set on the app, and stack settings
            overriding the environment (``APP``, ``USERAPP_DIR``, ``USERAPP``, ``DEBUG``, ``HEALTH_TIMEOUT``...;
            see ``server.settings``). ``USERAPP=""`` builds the stack's endpoints only.

    Returns:
        flask.Flask: the app, with ``app.extensions["flask_stack"]`` (``server.stack.StackState``).

    Raises:
        UserAppImportError: no app found, or the user's module failed to import or initialise (one line,
            file:line).
        RouteConflictError: the user's app has a route on ``/metrics`` or ``/health*``.
        server.exceptions.SettingsError: a setting has an unusable value.
        server.userconfig.ConfigError: the project's settings file, a secret or a value its ``settings_model``
            checks is unusable (one line; ``exit_status`` 2).
    """
    config = dict(config or {})
    settings, stack = _settings(config)
    cfg = _user_config(settings)
    if settings.userapp == "":
        app = new_stack_app(None)
        apply_user_config(app, cfg, stack_made=True)
        app.config.update(_flask_config(config))
        stack.prepare(app, stack_made=True)
        stack.finish(app)
        return app
    location = locate(settings.app, settings.userapp_dir, settings.userapp or None)
    with building(_maker(stack, location, config, cfg)) as frame:
        module = import_module(location)
        app = find_app(module, location)
        if app is None:
            if not module_blueprints(module, location.file):
                raise UserAppImportError(
                    f"{location.describe()} ({location.file}): no Flask app found: define app = Flask(__name__), "
                    f"create_app(), or blueprint = Blueprint(...)", location.file)
            app = frame.get()
    state = state_of(app)
    if state is not None and state.finished and state.module is module:
        app.config.update(_flask_config(config))  # the module's own app, already served by the stack
        return app
    if app is not frame.app:
        apply_user_config(app, cfg, stack_made=False)
        app.config.update(_flask_config(config))
    _with_user_config(app, cfg, module, apply_first=False)
    stack.finish(app, module, location.file)
    _log_loaded(app, location, settings)
    if cfg.file or cfg.overrides:
        log.info("%s", cfg.summary())
    return app


def _log_loaded(app: Flask, location: AppLocation, settings: Settings) -> None:
    routes = sum(1 for r in app.url_map.iter_rules() if not r.endpoint.startswith(("stack_", "flasgger", "static")))
    state = state_of(app)
    shape = "app made by the stack" if state is not None and state.stack_made else f"app {app.name!r}"
    log.info("%s loaded from %s (%s): %d routes", location.describe(), location.package_dir or location.file,
             shape, routes)
