"""The app factory ``create_app``: builds one Flask app around the user's package.

Steps: resolve settings (``server.settings``), configure logging, locate the user's package, create the Flask app
(the package directory's ``templates/`` and ``static/`` are the app's template and static folders), install the
error handlers, request hooks and the stack's endpoints, import the user's package (during which
``from server import app`` returns this app), register its ``blueprint`` / ``blueprints``, call its
``init_app(app)``, collect its health checks, set up the API docs (unless the user did), check reserved routes,
add the ``/`` redirect to ``/apidocs/`` when the user has no ``/``, and mark the app started (readiness UP).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Iterator, Mapping

from flask import Blueprint, Flask, redirect, request
from werkzeug.wrappers import Response

from .apidocs import UI_URL, install_template_loader, setup_apidocs
from .errors import register_error_handlers
from .exceptions import RouteConflictError, UserAppImportError
from .health import HealthChecks
from .loader import UserPackage, import_package, locate
from .logs import configure_logging
from .metrics import HttpMetrics
from .observe import StackFlask, install_observation
from .routes import health as health_routes
from .routes import prometheus as prometheus_routes
from .version import __version__
from .settings import STACK_KEYS, Settings, load_settings, read_commit

log = logging.getLogger("server")
SERVER_DIR = os.path.dirname(os.path.abspath(__file__))
_local = threading.local()


@dataclass
class StackState:
    """What the stack keeps per app, at ``app.extensions["flask_stack"]``.

    Attributes:
        settings (Settings): the resolved settings.
        package (UserPackage | None): where the user's package is (None: no user package configured).
        module (ModuleType | None): the user's imported package.
        health (HealthChecks): the app's health checks.
        metrics (HttpMetrics): the app's metrics.
        commit (str | None): git commit shown by ``/health``.
    """

    settings: Settings
    package: UserPackage | None
    health: HealthChecks
    metrics: HttpMetrics
    commit: str | None
    module: ModuleType | None = None


@contextlib.contextmanager
def building(app: Flask) -> Iterator[Flask]:
    """Within this block (in this thread) ``server.app`` returns ``app`` (Appsody-style ``from server import app``)."""
    stack = _local.__dict__.setdefault("stack", [])
    stack.append(app)
    try:
        yield app
    finally:
        stack.pop()


def app_under_construction() -> Flask | None:
    """The app ``create_app`` is building in this thread, or None."""
    stack = getattr(_local, "stack", None)
    return stack[-1] if stack else None


def _new_flask(package: UserPackage | None) -> Flask:
    if package is None:
        return StackFlask("server", root_path=SERVER_DIR, static_folder=None, template_folder=None,
                     instance_path=os.path.join(SERVER_DIR, "instance"))
    root = package.directory
    static = "static" if os.path.isdir(os.path.join(root, "static")) else None
    return StackFlask(package.name, root_path=root, static_folder=static, template_folder="templates",
                 instance_path=os.path.join(root, "instance"))


def _user_blueprints(package: UserPackage, namespace: Mapping[str, Any]) -> list[Blueprint]:
    found: list[Any] = []
    if namespace.get("blueprint") is not None:
        found.append(namespace["blueprint"])
    many = namespace.get("blueprints")
    if many is not None:
        if not isinstance(many, (list, tuple)):
            raise UserAppImportError(f"{package.name}.blueprints must be a list of flask.Blueprint, "
                                     f"not {type(many).__name__}", package.init_file, None)
        found.extend(many)
    for bp in found:
        if not isinstance(bp, Blueprint):
            raise UserAppImportError(f"{package.name}: blueprint {bp!r} is a {type(bp).__name__}, "
                                     f"not a flask.Blueprint", package.init_file, None)
    return found


def _load_user_code(app: Flask, state: StackState) -> None:
    package = state.package
    assert package is not None
    with building(app):
        module = import_package(package, app)
        state.module = module
        namespace = vars(module)
        for bp in _user_blueprints(package, namespace):
            if app.blueprints.get(bp.name) is bp:
                continue  # registered by the user's own code
            try:
                app.register_blueprint(bp)
            except Exception as exc:  # noqa: BLE001
                raise UserAppImportError.from_exception(
                    f"{package.name}: registering blueprint {bp.name!r} failed", exc, package.directory, package.name
                ) from exc
        init_app = namespace.get("init_app")
        if callable(init_app):
            try:
                init_app(app)
            except Exception as exc:  # noqa: BLE001
                raise UserAppImportError.from_exception(
                    f"{package.name}.init_app(app) failed", exc, package.directory, package.name
                ) from exc
    for attr, value in list(namespace.items()):
        if isinstance(value, Flask) and value is not app:
            log.warning("%s.%s is a Flask app of its own; the stack does not serve its routes. Put them on a "
                        "Blueprint (blueprint = Blueprint(...)) or use `from server import app`", package.name, attr)
    try:
        state.health.collect(namespace)
    except ValueError as exc:
        raise UserAppImportError(f"{package.name}: {exc}", package.init_file, None) from None


def _check_reserved(app: Flask, package: UserPackage | None) -> None:
    reserved = health_routes.RESERVED_RULES | prometheus_routes.RESERVED_RULES
    for rule in app.url_map.iter_rules():
        if rule.rule in reserved and not rule.endpoint.startswith("stack_"):
            view = app.view_functions.get(rule.endpoint)
            code = getattr(view, "__code__", None)
            filename = code.co_filename if code else (package.init_file if package else None)
            lineno = code.co_firstlineno if code else None
            where = f"{filename}:{lineno}: " if filename and lineno else ""
            raise RouteConflictError(
                f"{package.name if package else 'app'}: {where}route {rule.rule} (endpoint {rule.endpoint!r}) is "
                f"reserved by the stack; use another URL", filename, lineno)


def _redirect_to_docs() -> Response:
    return redirect(request.script_root + UI_URL)


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the Flask app for the user's package (see the module docstring for the steps).

    Args:
        config: Flask config values (``TESTING``, ``SECRET_KEY``...) and stack settings overriding the
            environment (``USERAPP``, ``USERAPP_DIR``, ``DEBUG``, ``HEALTH_TIMEOUT``, ``HEALTH_THREADS``,
            ``COMMIT``, ``COMMIT_FILE``, ``APP_VERSION``, ``LOG_LEVEL``, ``LOG_FORMAT``, ``LOG_FLUSH_SECONDS``,
            ``METRICS_IN_PROGRESS``; see ``server.settings``).
            ``USERAPP=""`` builds the stack's endpoints only.

    Returns:
        flask.Flask: a new app with its own metrics registry and health checks.

    Raises:
        UserAppImportError: the user's package is missing or failed to import/initialise (one line, file:line).
        RouteConflictError: the user's package defines ``/metrics`` or a ``/health`` route.
        server.settings.SettingsError: a setting has an unusable value.
    """
    config = dict(config or {})
    settings = load_settings(config)
    configure_logging(settings.log_level, settings.log_format, settings.log_flush_seconds)
    package = locate(settings.userapp, settings.userapp_dir) if settings.userapp else None
    app = _new_flask(package)
    app.config.update({k: v for k, v in config.items() if k not in STACK_KEYS})
    app.debug = settings.debug
    app.config["MAX_CONTENT_LENGTH"] = settings.max_content_length  # 413 before a larger body is read (issue 9)
    app.config.update({
        "STACK_USERAPP": settings.userapp, "STACK_USERAPP_DIR": package.directory if package else None,
        "STACK_HEALTH_TIMEOUT": settings.health_timeout, "STACK_APP_VERSION": settings.app_version,
    })
    state = StackState(
        settings=settings,
        package=package,
        health=HealthChecks(app, settings.health_timeout, settings.health_threads),
        metrics=HttpMetrics(__version__, settings.app_version, settings.metrics_in_progress),
        commit=read_commit(settings),
    )
    app.extensions["flask_stack"] = state
    install_template_loader(app)
    register_error_handlers(app)
    install_observation(app, state.metrics)
    app.register_blueprint(health_routes.blueprint)
    app.register_blueprint(prometheus_routes.blueprint)
    namespace: Mapping[str, Any] = {}
    if package is not None:
        _load_user_code(app, state)
        namespace = vars(state.module)
    try:
        setup_apidocs(app, package.name if package else "python-flask stack", settings.app_version,
                      namespace.get("swagger_template"))
    except TypeError as exc:
        raise UserAppImportError(f"{package.name if package else 'app'}: {exc}",
                                 package.init_file if package else None, None) from None
    _check_reserved(app, package)
    if not any(rule.rule == "/" for rule in app.url_map.iter_rules()):
        app.add_url_rule("/", "stack_index", _redirect_to_docs)
    state.health.started = True
    if package is not None:
        routes = sum(1 for r in app.url_map.iter_rules() if not r.endpoint.startswith(("stack_", "flasgger", "static")))
        log.info("%s loaded from %s: %d routes", package.name, package.directory, routes)
    return app
