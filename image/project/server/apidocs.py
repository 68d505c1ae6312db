"""API docs with flasgger: Swagger UI at ``/apidocs/``, the spec at ``/apispec_1.json``.

The spec lists every route whose view docstring has flasgger YAML after a ``---`` line (the user's and the
stack's ``/health*`` and ``/metrics``). Its base template (``swagger: "2.0"``, ``info`` with the package name and
STACK_APP_VERSION, a ``stack`` tag) is deep-merged with the user's ``swagger_template`` dict: the user's values win,
nested dicts merge, ``tags`` lists are combined. A user template with ``openapi: 3.x`` switches the spec to
OpenAPI 3.

If the user's code already set up flasgger (``Swagger(app)``, which sets ``app.swag`` and registers the
``flasgger`` blueprint), the stack leaves it alone.

flasgger is imported when the docs are first asked for, not when the app is made: importing it (with jsonschema,
PyYAML and mistune) is about 60 ms of every worker's start, more than half of what the stack adds to bare Flask's.
``DeferredDocs`` registers the routes ``flasgger.Swagger.init_app`` would (the same blueprint name, endpoints, URLs
and static files, found with ``importlib.util.find_spec`` without importing flasgger) and makes the real
``server.swagger.StackSwagger`` on the first request to one of them. An app whose config has a ``SWAGGER`` key
(flasgger's own settings, which can move those routes) gets flasgger set up at once, as flasgger itself does it.
The route layout is flasgger 0.9's (``Swagger.register_views``); ``tests/runtime/test_apidocs.py`` compares it
with flasgger's own and fails when flasgger changes it.

The UI works offline: its JavaScript and CSS come from flasgger's bundled static files, and the stack's templates
``server/templates/flasgger/head.html`` and ``footer.html`` replace flasgger's, which load Google Fonts and link
to GitHub. They come from a blueprint (``server.stack.templates_blueprint``) registered before flasgger's, so
Flask's template loader finds them after the app's own templates and before flasgger's.
"""

from __future__ import annotations

import copy
import os
import threading
from importlib.util import find_spec
from typing import Any, Callable, Mapping

from flask import Blueprint, Flask, current_app, redirect, url_for
from werkzeug.routing import Rule

STACK_TEMPLATES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")
SPEC_URL = "/apispec_1.json"
UI_URL = "/apidocs/"
SPEC_ENDPOINT = "apispec_1"


def merge_template(base: Mapping[str, Any], extra: Mapping[str, Any] | None) -> dict[str, Any]:
    """Deep-merge ``extra`` into a copy of ``base``: ``extra`` wins, dicts merge recursively, ``tags`` lists are
    combined (by tag ``name``, ``extra``'s entry wins). Neither argument is modified."""
    merged = copy.deepcopy(dict(base))
    for key, value in (extra or {}).items():
        old = merged.get(key)
        if isinstance(old, dict) and isinstance(value, Mapping):
            merged[key] = merge_template(old, value)
        elif key == "tags" and isinstance(old, list) and isinstance(value, list):
            names = {t.get("name") for t in value if isinstance(t, Mapping)}
            merged[key] = [t for t in old if not (isinstance(t, Mapping) and t.get("name") in names)]
            merged[key] += copy.deepcopy(value)
        else:
            merged[key] = copy.deepcopy(value)
    if "openapi" in (extra or {}):
        merged.pop("swagger", None)
    return merged


def base_template(title: str, version: str | None) -> dict[str, Any]:
    """The stack's default template: Swagger 2.0 with ``info`` and the ``stack`` tag."""
    return {
        "swagger": "2.0",
        "info": {
            "title": title,
            "version": version or "0.0.0",
            "description": "Served by the python-flask stack.",
        },
        "tags": [{"name": "stack", "description": "Health probes and metrics added by the python-flask stack."}],
    }


def _has_view(rule: Rule) -> bool:
    """flasgger's ``rule_filter``: only rules with a view function (a rule added as
    ``app.add_url_rule("/", endpoint="index")`` for a blueprint's view has none, and flasgger would fail on it)."""
    return rule.endpoint in current_app.view_functions


def _all_models(tag: Any) -> bool:
    """flasgger's ``model_filter``: every definition model."""
    return True


def setup_apidocs(app: Flask, title: str, version: str | None, user_template: Mapping[str, Any] | None) -> None:
    """Set up the API docs on ``app`` unless they are already (the user's ``Swagger(app)`` set ``app.swag``, or
    an earlier call registered the ``flasgger`` blueprint):
    flasgger at once when ``app.config`` has a ``SWAGGER`` key, otherwise its routes now and flasgger on their
    first request (``DeferredDocs``).

    Raises:
        TypeError: ``user_template`` is not a dict.
    """
    if user_template is not None and not isinstance(user_template, Mapping):
        raise TypeError(f"swagger_template must be a dict, not {type(user_template).__name__}")
    if getattr(app, "swag", None) is not None or "flasgger" in app.blueprints:  # set up already (by the user)
        return
    template = merge_template(base_template(title, version), user_template)
    config: dict[str, Any] = {
        "title": f"{title} API", "specs_route": UI_URL, "hide_top_bar": False,
        "specs": [{"endpoint": SPEC_ENDPOINT, "route": SPEC_URL, "rule_filter": _has_view,
                   "model_filter": _all_models}],
    }
    if "openapi" in template:  # flasgger reads the OpenAPI version from its config, not from the template
        config["openapi"] = template["openapi"]
    if "SWAGGER" in app.config:
        from .swagger import StackSwagger

        StackSwagger(app, template=template, config=config, merge=True)
    else:
        DeferredDocs(app, template, config)


class DeferredDocs:
    """flasgger's routes on ``app`` (Swagger UI 3's layout, flasgger's defaults with the stack's ``config``), served
    by flasgger's own views once the first request to one of them made ``server.swagger.StackSwagger`` (which then
    is ``app.swag``, as ``Swagger.init_app`` sets it). Thread-safe: concurrent first requests make one.

    Raises:
        ModuleNotFoundError: flasgger is not installed (a dependency of the stack).
    """

    def __init__(self, app: Flask, template: dict[str, Any], config: dict[str, Any]):
        self._app = app
        self._template = template
        self._config = config
        self._views: dict[str, Callable[..., Any]] | None = None
        self._lock = threading.Lock()
        spec = find_spec("flasgger")
        if spec is None or not spec.submodule_search_locations:
            raise ModuleNotFoundError("flasgger is not installed", name="flasgger")
        blueprint = Blueprint("flasgger", "flasgger", root_path=list(spec.submodule_search_locations)[0],
                              template_folder="ui3/templates", static_folder="ui3/static",
                              static_url_path="/flasgger_static")
        # flasgger's MethodViews define get only: GET (HEAD and OPTIONS added by Flask), as flasgger's rules
        blueprint.add_url_rule(UI_URL, "apidocs", self._view("apidocs"), methods=["GET"])
        blueprint.add_url_rule("/oauth2-redirect.html", "oauth_redirect", self._view("oauth_redirect"), methods=["GET"])
        blueprint.add_url_rule("/apidocs/index.html", "<lambda>", _index_html)
        blueprint.add_url_rule(SPEC_URL, SPEC_ENDPOINT, self._view(SPEC_ENDPOINT), methods=["GET"])
        app.register_blueprint(blueprint)

    def _view(self, endpoint: str) -> Callable[..., Any]:
        """A view for ``endpoint`` that calls flasgger's own, made on the first call."""

        def view(**kwargs: Any) -> Any:
            return self.flasgger_views()[endpoint](**kwargs)

        view.__name__ = endpoint  # no ``methods`` attribute: flasgger's spec builder reads it as a MethodView's
        return view

    def flasgger_views(self) -> dict[str, Callable[..., Any]]:
        """flasgger's view functions by endpoint, made (with ``StackSwagger``, importing flasgger) on first use."""
        if self._views is None:
            with self._lock:
                if self._views is None:
                    self._views = self._make_views()
        return self._views

    def _make_views(self) -> dict[str, Callable[..., Any]]:
        from flasgger.base import APIDocsView, APISpecsView, OAuthRedirect  # the views Swagger.register_views uses

        from .swagger import StackSwagger

        swagger = StackSwagger(template=self._template, config=self._config, merge=True)
        swagger.load_config(self._app)
        swagger.app = self._app
        swagger.endpoints.append(SPEC_ENDPOINT)
        self._app.swag = swagger
        return {
            "apidocs": APIDocsView.as_view("apidocs", view_args={"config": swagger.config}),
            "oauth_redirect": OAuthRedirect.as_view("oauth_redirect"),
            SPEC_ENDPOINT: APISpecsView.as_view(SPEC_ENDPOINT,
                                                loader=lambda: swagger.get_apispecs(endpoint=SPEC_ENDPOINT)),
        }


def _index_html() -> Any:
    """flasgger's old URL ``/apidocs/index.html``: a redirect to the UI."""
    return redirect(url_for("flasgger.apidocs"))
