"""The stack as a Flask extension: ``Stack(app)``, or ``stack = Stack()`` then ``stack.init_app(app)``.

What it adds to any Flask app (state at ``app.extensions["flask_stack"]``, a :class:`StackState`):

* ``/health``, ``/health/live``, ``/health/ready``, ``/health/started`` (``server.routes.health``) and
  ``/metrics`` (``server.routes.prometheus``), with the app's own metrics registry and health checks;
* request observation (request id, ``http_requests_total``, ``http_request_duration_seconds``, the access line)
  as WSGI middleware around ``app.wsgi_app``, and ``g.request_id`` (``server.apps.StackGlobals``) unless the app
  has a ``g`` class of its own;
* JSON errors for JSON clients (``server.error_pages``), unless the app registered its own ``HTTPException`` handler
  (handlers for one status code, such as ``@app.errorhandler(404)``, always win over the stack's);
* Swagger UI at ``/apidocs/`` and the spec at ``/apispec_1.json`` (``server.apidocs``), unless the app set up
  flasgger itself; a ``/`` that redirects there when the app has no ``/``;
* ``STACK_URL_PREFIX`` (every route under that path, through ``SCRIPT_NAME``) and ``STACK_PROXY_HOPS`` (trusted
  ``X-Forwarded-*`` headers) as WSGI middleware (``server.proxy``);
* logging (``server.logs``) and debug mode (``STACK_DEBUG=1`` turns Flask's debug on; 0 leaves the app's own).

Applying it twice is a no-op, so a user's factory may call ``Stack(app)`` itself and the runtime then leaves the
app as it is. ``/metrics`` and ``/health*`` are reserved: a route of the app's own there raises
``RouteConflictError`` naming its file and line.

The runtime applies it in two steps around the user's code: :meth:`Stack.prepare` before (on the apps it makes, so
the user's handlers and middleware come after the stack's) and :meth:`Stack.finish` after (the module's hooks:
``blueprint``/``blueprints`` on an app the stack made, ``init_app(app)``, ``swagger_template``, the health-check
mappings and decorators; then the API docs, the reserved-route check, ``/`` and readiness UP).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Mapping

from flask import Blueprint, Flask, redirect, request
from flask.ctx import _AppCtxGlobals  # Flask's default g class (documented in its API reference)
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response

from .apidocs import STACK_TEMPLATES, UI_URL, setup_apidocs
from .apps import StackGlobals
from .error_pages import register_error_handlers
from .exceptions import RouteConflictError, UserAppImportError
from .health import HealthChecks
from .logs import configure_logging
from .metrics import HttpMetrics
from .observe import install_observation
from .proxy import mount_at, trust_proxies, trusted_hosts
from .routes import health as health_routes
from .routes import prometheus as prometheus_routes
from .settings import Settings, load_settings, read_commit
from .version import __version__

log = logging.getLogger("server")
EXTENSION = "flask_stack"

#: Templates that replace flasgger's online UI parts; a blueprint's templates come after the app's own and
#: before those of blueprints registered later (flasgger's), as Flask's template loader searches them.
templates_blueprint = Blueprint("stack_templates", __name__, template_folder=STACK_TEMPLATES)


@dataclass
class StackState:
    """What the stack keeps per app, at ``app.extensions["flask_stack"]``.

    Attributes:
        settings (Settings): the resolved settings.
        health (HealthChecks): the app's health checks.
        metrics (HttpMetrics): the app's metrics (``metrics.registry`` takes the user's own metrics).
        commit (str | None): git commit shown by ``/health``.
        module (ModuleType | None): the user's module whose hooks were applied (None: none yet).
        stack_made (bool): the stack made this app (the Blueprint and Appsody shapes).
        finished (bool): ``finish`` ran (API docs, reserved routes, readiness UP).
    """

    settings: Settings
    health: HealthChecks
    metrics: HttpMetrics
    commit: str | None
    module: ModuleType | None = None
    stack_made: bool = False
    finished: bool = False


def state_of(app: Flask) -> StackState | None:
    """The stack's state of ``app``, or None when the stack was not applied to it."""
    return app.extensions.get(EXTENSION)


class Stack:
    """The python-flask stack as a Flask extension (see the module docstring).

    Args:
        app: apply to this app at once (``Stack(app)``), or None to call ``init_app`` later.
        config: stack settings overriding the environment (``HEALTH_TIMEOUT``, ``LOG_FORMAT``...; see
            ``server.settings``); None: the environment only.

    Raises:
        server.exceptions.SettingsError: a setting has an unusable value.
        RouteConflictError: the app has a route on ``/metrics`` or ``/health*``.
    """

    def __init__(self, app: Flask | None = None, config: Mapping[str, Any] | None = None,
                 settings: Settings | None = None):
        self.settings = settings if settings is not None else load_settings(config)
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> StackState:
        """Apply the whole stack to ``app`` (both steps); a no-op returning the state when already applied."""
        state = self.prepare(app)
        if not state.finished:
            self.finish(app)
        return state

    def prepare(self, app: Flask, stack_made: bool = False) -> StackState:
        """First step: state, error handlers, observation, ``g`` class, the stack's endpoints and templates."""
        state = state_of(app)
        if state is not None:
            return state
        settings = self.settings
        configure_logging(settings.log_level, settings.log_format, settings.log_flush_seconds)
        state = StackState(
            settings=settings,
            health=HealthChecks(app, settings.health_timeout, settings.health_threads),
            metrics=HttpMetrics(__version__, settings.app_version, settings.metrics_in_progress),
            commit=read_commit(settings),
            stack_made=stack_made,
        )
        app.extensions[EXTENSION] = state
        if settings.debug:
            app.debug = True
        if app.app_ctx_globals_class is _AppCtxGlobals:
            app.app_ctx_globals_class = StackGlobals
        if app.config.get("MAX_CONTENT_LENGTH") is None:  # 413 before a larger body is read; the app's own wins
            app.config["MAX_CONTENT_LENGTH"] = settings.max_content_length
        if settings.trusted_hosts and app.config.get("TRUSTED_HOSTS") is None:  # another Host: 400; the app's own wins
            app.config["TRUSTED_HOSTS"] = trusted_hosts(settings.trusted_hosts)
        app.config.setdefault("STACK_HEALTH_TIMEOUT", settings.health_timeout)
        app.config.setdefault("STACK_APP_VERSION", settings.app_version)
        if not _has_own_handler(app, HTTPException):
            register_error_handlers(app)
        if settings.url_prefix:  # mounted there (server.proxy); Flask's test client sends APPLICATION_ROOT
            app.wsgi_app = mount_at(app.wsgi_app, settings.url_prefix)  # type: ignore[method-assign]
            if app.config.get("APPLICATION_ROOT", "/") == "/":
                app.config["APPLICATION_ROOT"] = settings.url_prefix
        install_observation(app, state.metrics)
        app.wsgi_app = trust_proxies(app.wsgi_app, settings.proxy_hops)  # type: ignore[method-assign]
        app.register_blueprint(templates_blueprint)
        app.register_blueprint(health_routes.blueprint)
        app.register_blueprint(prometheus_routes.blueprint)
        return state

    def finish(self, app: Flask, module: ModuleType | None = None, file: str | None = None) -> StackState:
        """Second step: the user module's hooks (when given and not applied yet), API docs, reserved routes,
        ``/``, readiness UP.

        Args:
            app: an app ``prepare`` ran on.
            module: the user's module, or None.
            file: the module's file, for error messages.

        Raises:
            UserAppImportError: a hook failed (``init_app``), or a hook's value has the wrong type.
            RouteConflictError: the app has a route on ``/metrics`` or ``/health*``.
        """
        state = self.prepare(app)
        template = None
        if module is not None and state.module is None:
            state.module = module
            template = _apply_module(app, state, module, file)
        setup_apidocs(app, app.name if state.stack_made or not module else module.__name__,
                      self.settings.app_version, template)
        check_reserved(app, file)
        if not any(rule.rule == "/" for rule in app.url_map.iter_rules()):
            app.add_url_rule("/", "stack_index", _redirect_to_docs)
        state.health.started = True
        state.finished = True
        return state


def _has_own_handler(app: Flask, kind: type[BaseException]) -> bool:
    """True when ``app`` has an app-wide handler for exactly ``kind`` (``app.error_handler_spec``, read only)."""
    return kind in app.error_handler_spec.get(None, {}).get(None, {})


def _apply_module(app: Flask, state: StackState, module: ModuleType, file: str | None) -> Any:
    """Apply the module's hooks; return its ``swagger_template`` (or None)."""
    name = module.__name__
    namespace = vars(module)
    if state.stack_made:
        for bp in module_blueprints(module, file):
            if app.blueprints.get(bp.name) is not bp:  # the user's code may have registered it already
                try:
                    app.register_blueprint(bp)
                except Exception as exc:  # noqa: BLE001
                    raise UserAppImportError.from_exception(f"{name}: registering blueprint {bp.name!r} failed",
                                                            exc, app.root_path, name) from exc
    init_app = namespace.get("init_app")
    # on a user's own app, only an init_app written in the module itself (not one imported from an extension)
    if callable(init_app) and (state.stack_made or getattr(init_app, "__module__", None) == name):
        try:
            init_app(app)
        except Exception as exc:  # noqa: BLE001
            raise UserAppImportError.from_exception(f"{name}.init_app(app) failed", exc, app.root_path,
                                                    name) from exc
    try:
        state.health.collect(namespace)
    except ValueError as exc:
        raise UserAppImportError(f"{name}: {exc}", file) from None
    template = namespace.get("swagger_template")
    if template is not None and not isinstance(template, Mapping):
        raise UserAppImportError(f"{name}: swagger_template must be a dict, not {type(template).__name__}", file)
    return template


def module_blueprints(module: ModuleType, file: str | None = None) -> list[Blueprint]:
    """The module's ``blueprint`` and ``blueprints`` (a list), checked.

    Raises:
        UserAppImportError: ``blueprints`` is not a list, or an entry is not a ``flask.Blueprint``.
    """
    namespace = vars(module)
    found: list[Any] = []
    if namespace.get("blueprint") is not None:
        found.append(namespace["blueprint"])
    many = namespace.get("blueprints")
    if many is not None:
        if not isinstance(many, (list, tuple)):
            raise UserAppImportError(f"{module.__name__}.blueprints must be a list of flask.Blueprint, "
                                     f"not {type(many).__name__}", file)
        found.extend(many)
    for bp in found:
        if not isinstance(bp, Blueprint):
            raise UserAppImportError(f"{module.__name__}: blueprint {bp!r} is a {type(bp).__name__}, "
                                     f"not a flask.Blueprint", file)
    return found


def check_reserved(app: Flask, file: str | None = None) -> None:
    """Raise ``RouteConflictError`` when a route not of the stack's is on ``/metrics`` or ``/health*``."""
    reserved = health_routes.RESERVED_RULES | prometheus_routes.RESERVED_RULES
    for rule in app.url_map.iter_rules():
        if rule.rule in reserved and not rule.endpoint.startswith("stack_"):
            view = app.view_functions.get(rule.endpoint)
            code = getattr(view, "__code__", None)
            filename = code.co_filename if code else file
            lineno = code.co_firstlineno if code else None
            where = f"{filename}:{lineno}: " if filename and lineno else ""
            raise RouteConflictError(f"{app.name}: {where}route {rule.rule} (endpoint {rule.endpoint!r}) is "
                                     f"reserved by the stack; use another URL", filename, lineno)


def _redirect_to_docs() -> Response:
    return redirect(request.script_root + UI_URL)
