"""``/metrics`` (Prometheus exposition format) and ``track_requests``.

``track_requests`` exists for user code written for the Appsody python-flask stack
(``from server.routes.prometheus import track_requests``): every request is counted automatically now, so the
decorator returns the function unchanged in behaviour.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, TypeVar

from flask import Blueprint, Response, current_app, request

blueprint = Blueprint("stack_metrics", __name__)

#: URL rules the stack owns; a user route on one of them is an error.
RESERVED_RULES = frozenset({"/metrics"})

F = TypeVar("F", bound=Callable[..., Any])


def track_requests(fn: F) -> F:
    """Decorator kept for Appsody-era code; requests are counted for every route without it."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


@blueprint.route("/metrics", methods=["GET"])
def metrics() -> Response:
    """Prometheus metrics of this app (all workers when multiprocess).
    ---
    tags:
      - stack
    produces:
      - text/plain
      - application/openmetrics-text
    responses:
      200:
        description: Metrics in the Prometheus text format (OpenMetrics when the Accept header asks for it).
        schema:
          type: string
    """
    body, content_type = current_app.extensions["flask_stack"].metrics.render(request.headers.get("Accept"))
    response = Response(body, content_type=content_type)
    response.headers["Cache-Control"] = "no-store"
    return response
