"""API docs with flasgger: Swagger UI at ``/apidocs/``, the spec at ``/apispec_1.json``.

The spec lists every route whose view docstring has flasgger YAML after a ``---`` line (the user's and the
stack's ``/health*`` and ``/metrics``). Its base template (``swagger: "2.0"``, ``info`` with the package name and
STACK_APP_VERSION, a ``stack`` tag) is deep-merged with the user's ``swagger_template`` dict: the user's values win,
nested dicts merge, ``tags`` lists are combined. A user template with ``openapi: 3.x`` switches the spec to
OpenAPI 3.

If the user's code already set up flasgger (``Swagger(app)``, which sets ``app.swag``), the stack leaves it alone.

The UI works offline: its JavaScript and CSS come from flasgger's bundled static files, and the stack's templates
``server/templates/flasgger/head.html`` and ``footer.html`` replace flasgger's, which load Google Fonts and link
to GitHub. They are found through a loader that the app's own (user's) template folder precedes.
"""

from __future__ import annotations

import copy
import os
from typing import Any, Mapping

from flasgger import Swagger
from flask import Flask, jsonify
from jinja2 import ChoiceLoader, FileSystemLoader

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


def install_template_loader(app: Flask) -> None:
    """Make the app's templates come from its own folder first, then the stack's (offline flasgger UI parts)."""
    loaders = []
    if app.template_folder:
        loaders.append(FileSystemLoader(os.path.join(app.root_path, app.template_folder)))
    loaders.append(FileSystemLoader(STACK_TEMPLATES))
    app.jinja_loader = ChoiceLoader(loaders)  # type: ignore[assignment,misc] # replaces Flask's cached property


def setup_apidocs(app: Flask, title: str, version: str | None, user_template: Mapping[str, Any] | None) -> None:
    """Set up flasgger on ``app`` unless the user's code did already.

    Raises:
        TypeError: ``user_template`` is not a dict.
    """
    if user_template is not None and not isinstance(user_template, Mapping):
        raise TypeError(f"swagger_template must be a dict, not {type(user_template).__name__}")
    if getattr(app, "swag", None) is not None:
        return
    template = merge_template(base_template(title, version), user_template)
    config: dict[str, Any] = {"title": f"{title} API", "specs_route": UI_URL, "hide_top_bar": False}
    if "openapi" in template:  # flasgger reads the OpenAPI version from its config, not from the template
        config["openapi"] = template["openapi"]
    swagger = Swagger(app, template=template, config=config, merge=True)
    if not swagger.config.get("headers"):
        _drop_flasgger_header_hook(app)
    if str(template.get("openapi", "")).startswith("3"):
        endpoint = config.get("specs", Swagger.DEFAULT_CONFIG["specs"])[0]["endpoint"]

        def openapi3_spec() -> Any:
            spec = swagger.get_apispecs(endpoint)
            spec.setdefault("components", {}).setdefault("schemas", {}).setdefault("Health", HEALTH_SCHEMA)
            return jsonify(swagger2_responses_to_openapi3(spec))

        app.view_functions[f"flasgger.{endpoint}"] = openapi3_spec


def _drop_flasgger_header_hook(app: Flask) -> None:
    """Remove flasgger's ``after_request`` that copies its config's ``headers`` (app.config["SWAGGER"]) onto every
    response: with none configured it only costs a hook call per request."""
    funcs = app.after_request_funcs.get(None)
    if funcs:
        app.after_request_funcs[None] = [
            f for f in funcs if not (getattr(f, "__module__", "").startswith("flasgger")
                                     and getattr(f, "__qualname__", "") == "Swagger.add_headers.<locals>.after_request")]


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
