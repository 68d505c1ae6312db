"""Per-request observation: request id, timing, Prometheus metrics and the access log line.

Hooks are installed before the user's package loads, so the stack's ``before_request`` runs first and its
``after_request`` last (Flask runs ``after_request`` functions in reverse order), seeing the final status.
An unhandled exception is recorded (status 500) from Flask's ``got_request_exception`` signal, which fires
before Flask renders the 500 page or, in debug/testing mode, propagates the exception; nothing runs per request
for it otherwise.
"""

from __future__ import annotations

import time

from flask import Flask, Response, g, got_request_exception, request

from .logs import REQUEST_ID_HEADER, log_access, request_id_from
from .metrics import HttpMetrics

_REQUEST_ID_ENVIRON = "HTTP_" + REQUEST_ID_HEADER.upper().replace("-", "_")  # the header's WSGI environ key


def _record(metrics: HttpMetrics, status: int) -> None:
    ctx_g = g._get_current_object()  # one context lookup each for g and request, not one per attribute
    if ctx_g.get("_stack_recorded"):
        return
    ctx_g._stack_recorded = True
    start = ctx_g.get("_stack_start")
    if start is not None:
        seconds = time.perf_counter() - start
        metrics.in_progress_dec()
    else:
        seconds = 0.0
    req = request._get_current_object()
    method = req.method
    rule = req.url_rule
    metrics.observe(method, rule.rule if rule is not None else None, status, seconds)
    log_access(method, req.path, status, seconds * 1000.0, ctx_g.get("request_id") or "-")


def install_request_hooks(app: Flask, metrics: HttpMetrics) -> None:
    """Register the request-id, metrics and access-log hooks on ``app``."""
    in_progress_inc = metrics.in_progress_inc

    @app.before_request
    def _stack_start() -> None:
        ctx_g = g._get_current_object()
        ctx_g._stack_start = time.perf_counter()
        in_progress_inc()
        ctx_g.request_id = request_id_from(request.environ.get(_REQUEST_ID_ENVIRON))  # = headers.get(X-Request-ID)

    @app.after_request
    def _stack_finish(response: Response) -> Response:
        ctx_g = g._get_current_object()
        request_id = ctx_g.get("request_id")
        if request_id is None:  # a before_request of an earlier-registered extension answered first
            request_id = ctx_g.request_id = request_id_from(request.environ.get(_REQUEST_ID_ENVIRON))
        response.headers[REQUEST_ID_HEADER] = request_id
        _record(metrics, response.status_code)
        return response

    def _stack_exception(sender: Flask, exception: BaseException, **extra: object) -> None:
        _record(metrics, 500)  # before Flask turns it into a 500 response or propagates it (debug, testing)

    # blinker holds receivers weakly; the app keeps this one alive exactly as long as itself
    app.extensions.setdefault("flask_stack_receivers", []).append(_stack_exception)
    got_request_exception.connect(_stack_exception, app)
