"""Per-request observation: request id, timing, Prometheus metrics and the access log line.

The stack's apps are ``StackFlask`` (a ``Flask`` subclass): its ``preprocess_request`` starts the observation
before any ``before_request`` function (and URL value preprocessor) runs, and its ``process_response`` finishes
it after every ``after_request`` function, seeing the final status, without Flask's per-hook dispatch
(``ensure_sync`` and friends cost a few microseconds per hook and request). For another ``Flask`` app,
``install_request_hooks`` registers the same work as ordinary ``before_request`` / ``after_request`` hooks, which
run first and last when installed before the user's code.
An unhandled exception is recorded (status 500) from Flask's ``got_request_exception`` signal, which fires
before Flask renders the 500 page or, in debug/testing mode, propagates the exception; nothing runs per request
for it otherwise.
"""

from __future__ import annotations

import time

from flask import Flask, Request, Response, g, got_request_exception, request

from .logs import REQUEST_ID_HEADER, log_access, request_id_from
from .metrics import HttpMetrics

_REQUEST_ID_ENVIRON = "HTTP_" + REQUEST_ID_HEADER.upper().replace("-", "_")  # the header's WSGI environ key


#: Attribute of the request object holding the observation: ``[start (time.perf_counter seconds), request id]``
#: while the request is being served, ``None`` once it has been recorded.
_STATE = "_flask_stack_observation"


def _record(metrics: HttpMetrics, req: Request, status: int) -> None:
    state = getattr(req, _STATE, _NOT_STARTED)
    if state is None:  # already recorded (the exception signal, then the 500 response)
        return
    setattr(req, _STATE, None)
    if state is _NOT_STARTED:  # an error before the observation started (e.g. opening the session failed)
        seconds, request_id = 0.0, g.get("request_id") or "-"
    else:
        seconds = time.perf_counter() - state[0]
        request_id = state[1]
        if metrics.in_progress is not None:
            metrics.in_progress.dec()
    method = req.method
    rule = req.url_rule
    metrics.observe(method, rule.rule if rule is not None else None, status, seconds)
    log_access(method, req.path, status, seconds * 1000.0, request_id)


_NOT_STARTED: list = []  # sentinel: no observation on this request object


def _start(metrics: HttpMetrics) -> None:
    req = request._get_current_object()  # one context lookup each for request and g, not one per attribute
    request_id = request_id_from(req.environ.get(_REQUEST_ID_ENVIRON))  # = headers.get(X-Request-ID)
    g._get_current_object().request_id = request_id
    if metrics.in_progress is not None:
        metrics.in_progress.inc()
    setattr(req, _STATE, [time.perf_counter(), request_id])


def _finish(metrics: HttpMetrics, response: Response) -> Response:
    req = request._get_current_object()
    state = getattr(req, _STATE, None)
    if state:
        request_id = state[1]
    else:  # a before_request of an earlier-registered extension answered first, or an error came first
        request_id = g.get("request_id")
        if request_id is None:
            request_id = g.request_id = request_id_from(req.environ.get(_REQUEST_ID_ENVIRON))
    response.headers[REQUEST_ID_HEADER] = request_id
    _record(metrics, req, response.status_code)
    return response


class StackFlask(Flask):
    """``Flask`` with the stack's request observation built in (see the module docstring); behaves as ``Flask``
    until ``install_request_hooks`` gives it the app's metrics."""

    stack_metrics: HttpMetrics | None = None

    def preprocess_request(self) -> Response | None:  # type: ignore[override]
        """Start the observation, then Flask's own (URL value preprocessors, ``before_request`` functions)."""
        if self.stack_metrics is not None:
            _start(self.stack_metrics)
        return super().preprocess_request()

    def process_response(self, response: Response) -> Response:  # type: ignore[override]
        """Flask's own (``after_request`` functions, session), then finish the observation."""
        response = super().process_response(response)
        if self.stack_metrics is not None:
            response = _finish(self.stack_metrics, response)
        return response


def install_request_hooks(app: Flask, metrics: HttpMetrics) -> None:
    """Observe every request of ``app`` (request id, metrics, access line): built in for a ``StackFlask``,
    otherwise as ``before_request`` / ``after_request`` hooks."""
    if isinstance(app, StackFlask):
        app.stack_metrics = metrics
    else:
        app.before_request(lambda: _start(metrics))
        app.after_request(lambda response: _finish(metrics, response))

    def _stack_exception(sender: Flask, exception: BaseException, **extra: object) -> None:
        _record(metrics, request._get_current_object(), 500)  # before Flask turns it into a 500 response or propagates it (debug, testing)

    # blinker holds receivers weakly; the app keeps this one alive exactly as long as itself
    app.extensions.setdefault("flask_stack_receivers", []).append(_stack_exception)
    got_request_exception.connect(_stack_exception, app)
