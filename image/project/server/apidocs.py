"""API docs with flasgger: Swagger UI at ``/apidocs/``, the spec at ``/apispec_1.json``.

The spec lists every route whose view docstring has flasgger YAML after a ``---`` line (the user's and the
stack's ``/health*`` and ``/metrics``). Its base template (``swagger: "2.0"``, ``info`` with the package name and
STACK_APP_VERSION, a ``stack`` tag) is deep-merged with the user's ``swagger_template`` dict: the user's values win,
nested dicts merge, ``tags`` lists are combined. A user template with ``openapi: 3.x`` switches the spec to
OpenAPI 3.

If the user's code already set up flasgger (``Swagger(app)``, which sets ``app.swag``), the stack leaves it alone.

The UI works offline: its JavaScript and CSS come from flasgger's bundled static files, and the stack's templates
``server/templates/flasgger/head.html`` and ``footer.html`` replace flasgger's, which load Google Fonts and link
to GitHub. They come from a blueprint (``server.stack.templates_blueprint``) registered before flasgger's, so
Flask's template loader finds them after the app's own templates and before flasgger's.

Only flasgger's public API is used: ``StackSwagger`` overrides two public methods of ``flasgger.Swagger``,
``add_headers`` (no per-request hook when no ``SWAGGER["headers"]`` are configured) and ``get_apispecs`` (an
OpenAPI 3 spec gets the stack's Swagger-2-style parts rewritten, see ``swagger2_responses_to_openapi3``; under a
URL prefix, the spec gets ``basePath`` (Swagger 2) or ``servers`` (OpenAPI 3) set to the request's
``SCRIPT_NAME``, unless the user's template sets them, so "Try it out" calls the prefixed URLs).
"""

from __future__ import annotations

import copy
import os
from typing import Any, Mapping

from flasgger import Swagger
from flask import Flask, current_app, has_request_context, request
from werkzeug.routing import Rule

from .routes.health import HEALTH_SCHEMA

STACK_TEMPLATES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")
SPEC_URL = "/apispec_1.json"
UI_URL = "/apidocs/"


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


class StackSwagger(Swagger):
    """``flasgger.Swagger`` with two of its public methods overridden (see the module docstring)."""

    def add_headers(self, app: Flask) -> None:
        """Install flasgger's header hook only when ``SWAGGER["headers"]`` configures some."""
        if self.config.get("headers"):
            super().add_headers(app)

    def get_apispecs(self, endpoint: str = "apispec_1") -> dict[str, Any]:
        """flasgger's spec; for OpenAPI 3, with the Health schema and Swagger-2-style parts rewritten."""
        spec = super().get_apispecs(endpoint)
        openapi3 = str(self.config.get("openapi", "")).startswith("3")
        if openapi3:
            spec.setdefault("components", {}).setdefault("schemas", {}).setdefault("Health", HEALTH_SCHEMA)
            spec = swagger2_responses_to_openapi3(spec)
        root = request.script_root if has_request_context() else ""
        if root:  # mounted under a prefix (STACK_URL_PREFIX, X-Forwarded-Prefix): the operations' URLs carry it
            if openapi3 and "servers" not in spec:
                spec = {**spec, "servers": [{"url": root}]}  # a copy: flasgger caches the spec it returned
            elif not openapi3 and "basePath" not in spec:
                spec = {**spec, "basePath": root}
        return spec


def setup_apidocs(app: Flask, title: str, version: str | None, user_template: Mapping[str, Any] | None) -> None:
    """Set up flasgger on ``app`` unless the user's code did already (``app.swag`` is set).

    Raises:
        TypeError: ``user_template`` is not a dict.
    """
    if user_template is not None and not isinstance(user_template, Mapping):
        raise TypeError(f"swagger_template must be a dict, not {type(user_template).__name__}")
    if getattr(app, "swag", None) is not None:
        return
    template = merge_template(base_template(title, version), user_template)
    config: dict[str, Any] = {
        "title": f"{title} API", "specs_route": UI_URL, "hide_top_bar": False,
        "specs": [{"endpoint": "apispec_1", "route": SPEC_URL, "rule_filter": _has_view,
                   "model_filter": lambda tag: True}],
    }
    if "openapi" in template:  # flasgger reads the OpenAPI version from its config, not from the template
        config["openapi"] = template["openapi"]
    StackSwagger(app, template=template, config=config, merge=True)


def swagger2_responses_to_openapi3(spec: dict[str, Any]) -> dict[str, Any]:
    """Rewrite Swagger-2-style parts (``produces``, response ``schema``, ``#/definitions/`` refs, ``x-nullable``)
    of an OpenAPI 3 spec into OpenAPI 3 form (``content`` by media type, ``#/components/schemas/``,
    ``nullable``), in place; returns ``spec``.

    The stack's own endpoints are documented Swagger-2-style; this keeps an OpenAPI 3 spec valid with them.
    """

    def fix_refs(node: Any) -> Any:
        if isinstance(node, dict):
            fixed = {}
            for key, value in node.items():
                if key == "$ref" and isinstance(value, str):
                    fixed[key] = value.replace("#/definitions/", "#/components/schemas/")
                elif key == "x-nullable":
                    fixed["nullable"] = bool(value)
                else:
                    fixed[key] = fix_refs(value)
            return fixed
        if isinstance(node, list):
            return [fix_refs(v) for v in node]
        return node

    schemas = (spec.get("components") or {}).get("schemas")
    if isinstance(schemas, dict):
        spec["components"]["schemas"] = fix_refs(schemas)

    for item in (spec.get("paths") or {}).values():
        for operation in item.values():
            if not isinstance(operation, dict):
                continue
            media = operation.pop("produces", None) or ["application/json"]
            for response in (operation.get("responses") or {}).values():
                if isinstance(response, dict) and "schema" in response:
                    schema = fix_refs(response.pop("schema"))
                    response["content"] = {m: {"schema": schema} for m in media}
    return spec
