"""``/health`` and the Kubernetes probe views ``/health/live``, ``/health/ready``, ``/health/started``.

Body (all four): ``{"status": "UP"|"DOWN", "commit": "<git sha>"|null, "checks": {name: {"status", "detail"}}}``;
HTTP 200 when UP, 503 when DOWN; never cached. ``/health`` runs every check; the others only their group's.
"""

from __future__ import annotations

import json

from flask import Blueprint, Response, current_app, jsonify

from ..health import GROUPS, LIVENESS, READINESS, STARTUP

blueprint = Blueprint("stack_health", __name__)

_SCHEMA = """
    responses:
      200:
        description: UP
        schema:
          $ref: '#/definitions/Health'
      503:
        description: DOWN (a check failed, timed out, or the app is starting or shutting down)
        schema:
          $ref: '#/definitions/Health'
"""


def _answer(groups: tuple[str, ...]) -> Response:
    state = current_app.extensions["flask_stack"]
    result = state.health.run(groups)
    body = {"status": result["status"], "commit": state.commit, "checks": result["checks"]}
    response = jsonify(body)
    response.status_code = 200 if result["status"] == "UP" else 503
    response.headers["Cache-Control"] = "no-store"
    return response


#: JSON schema of the health body (the ``Health`` definition in the API spec).
HEALTH_SCHEMA = {
    "type": "object",
    "required": ["status", "checks"],
    "properties": {
        "status": {"type": "string", "enum": ["UP", "DOWN"]},
        # x-nullable: Swagger 2.0's way to allow null (flasgger passes it through; the OpenAPI 3 spec gets nullable)
        "commit": {"type": "string", "x-nullable": True,
                   "description": "git commit of the running code, null when unknown"},
        "checks": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "properties": {"status": {"type": "string", "enum": ["UP", "DOWN"]}, "detail": {}},
            },
        },
    },
}


def _doc(summary: str) -> str:
    # flasgger YAML; JSON is valid YAML, so the schema is embedded as a flow mapping
    return f"""{summary}
    ---
    tags:
      - stack
    produces:
      - application/json
    definitions:
      Health: {json.dumps(HEALTH_SCHEMA)}
{_SCHEMA}"""


@blueprint.route("/health", methods=["GET"])
def health() -> Response:
    return _answer(GROUPS)


@blueprint.route("/health/live", methods=["GET"])
def live() -> Response:
    return _answer((LIVENESS,))


@blueprint.route("/health/ready", methods=["GET"])
def ready() -> Response:
    return _answer((READINESS,))


@blueprint.route("/health/started", methods=["GET"])
def started() -> Response:
    return _answer((STARTUP,))


health.__doc__ = _doc("Overall health: every liveness, readiness and startup check.")
live.__doc__ = _doc("Liveness probe: DOWN means the process should be restarted.")
ready.__doc__ = _doc("Readiness probe: DOWN means send no traffic (starting, shutting down, or a dependency is down).")
started.__doc__ = _doc("Startup probe: UP once the app has been built and its startup checks pass.")

#: URL rules the stack owns; a user route on one of them is an error.
RESERVED_RULES = frozenset({"/health", "/health/live", "/health/ready", "/health/started"})
