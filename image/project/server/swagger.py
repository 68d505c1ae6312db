"""flasgger's ``Swagger`` as the stack runs it (``StackSwagger``), and the OpenAPI 3 rewrite of the stack's
Swagger-2-style parts. Importing it imports flasgger (with jsonschema, PyYAML and mistune: about 60 ms), so
``server.apidocs`` imports it only when the API docs are first asked for, or at setup when the app configures
flasgger itself.

Only flasgger's public API is used: ``StackSwagger`` overrides two public methods of ``flasgger.Swagger``,
``add_headers`` (no per-request hook when no ``SWAGGER["headers"]`` are configured) and ``get_apispecs`` (an
OpenAPI 3 spec gets the stack's Swagger-2-style parts rewritten, see ``swagger2_responses_to_openapi3``; under a
URL prefix, the spec gets ``basePath`` (Swagger 2) or ``servers`` (OpenAPI 3) set to the request's
``SCRIPT_NAME``, unless the user's template sets them, so "Try it out" calls the prefixed URLs).
"""

from __future__ import annotations

from typing import Any

from flasgger import Swagger
from flask import Flask, has_request_context, request

from .routes.health import HEALTH_SCHEMA


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
