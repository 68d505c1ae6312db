"""Per-request observation: request id, timing, Prometheus metrics and the access log line.

``install_observation`` wraps the app's WSGI callable (``app.wsgi_app = ObservedWSGI(app.wsgi_app, metrics)``,
Flask's documented way to add WSGI middleware). ``create_app`` installs it before the user's code runs, so a
middleware the user adds (``ProxyFix``, say) wraps it and its changes to the environ are seen here. Per request:

* the request id: the incoming ``X-Request-ID`` when usable, else a new one (``server.requestid.request_id_from``),
  kept in the WSGI environ under ``REQUEST_ID_ENVIRON`` (``request.environ["flask_stack.request_id"]``) and
  readable as ``g.request_id`` (``server.apps.StackGlobals``); echoed in the response's ``X-Request-ID`` header unless the app
  set that header itself;
* when Flask calls ``start_response`` (after every ``after_request`` function, with the final status, still inside
  the request context): the duration (seconds, from entering the app), ``http_requests_total`` and
  ``http_request_duration_seconds`` labelled with the matched URL rule, and the access line (the path as the
  client asked it: ``SCRIPT_NAME`` then ``PATH_INFO``, so a ``STACK_URL_PREFIX`` is in it);
* a redirect (3xx) whose ``Location`` points at the request's own ``Host`` is made relative (``/apidocs/``, not
  ``http://<whatever Host the client sent>/apidocs/``);
* an exception that leaves the app (debug and testing propagate them) is recorded as a 500, then re-raised.

No Flask hook and no ``flask.g`` write runs per request: the middleware needs one context lookup (for the URL
rule), which keeps the stack's own work per request small (see the README's benchmarks).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable
from urllib.parse import urlsplit, urlunsplit

from flask import Flask, got_request_exception, request

from .access_log import log_access
from .metrics import HttpMetrics
from .requestid import REQUEST_ID_HEADER, request_id_from

#: WSGI environ key holding the request id of the request being served.
REQUEST_ID_ENVIRON = "flask_stack.request_id"
_HEADER_ENVIRON = "HTTP_" + REQUEST_ID_HEADER.upper().replace("-", "_")  # the request header's environ key
_HEADER_LOWER = REQUEST_ID_HEADER.lower()
_HEADER_LENGTH = len(REQUEST_ID_HEADER)
_FAILED_REQUEST_ENVIRON = "flask_stack.failed_request"  # (method, path, URL rule) saved when an exception escapes

StartResponse = Callable[..., Any]


def current_request_id() -> str | None:
    """The request id of the request being served, or None outside a request (or outside the stack's apps)."""
    return request.environ.get(REQUEST_ID_ENVIRON) if request else None


class ObservedWSGI:
    """WSGI middleware observing every request of the wrapped app (see the module docstring).

    Args:
        app: the WSGI callable to wrap (``flask_app.wsgi_app``).
        metrics: where requests are counted and timed.
    """

    def __init__(self, app: Callable[[dict, StartResponse], Iterable[bytes]], metrics: HttpMetrics):
        self.app = app
        self.metrics = metrics

    def __call__(self, environ: dict, start_response: StartResponse) -> Iterable[bytes]:
        started = time.perf_counter()
        request_id = environ[REQUEST_ID_ENVIRON] = request_id_from(environ.get(_HEADER_ENVIRON))
        metrics = self.metrics
        in_progress = metrics.in_progress
        if in_progress is not None:
            in_progress.inc()
        recorded = False

        def observed_start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            nonlocal recorded
            if not recorded:
                recorded = True
                _record(metrics, environ, int(status[:3]), time.perf_counter() - started, request_id)
            for name, _ in headers:
                if len(name) == _HEADER_LENGTH and name.lower() == _HEADER_LOWER:
                    break
            else:
                headers.append((REQUEST_ID_HEADER, request_id))
            if status[0] == "3":
                _relative_location(headers, environ)
            return start_response(status, headers, exc_info)

        try:
            return self.app(environ, observed_start_response)
        except BaseException:
            if not recorded:
                recorded = True
                _record(metrics, environ, 500, time.perf_counter() - started, request_id)
            raise
        finally:
            if in_progress is not None:
                in_progress.dec()


def _relative_location(headers: list[tuple[str, str]], environ: dict) -> None:
    """Make a redirect's ``Location`` relative (path, query, fragment) when it points at the request's own scheme
    and ``Host``: Werkzeug builds the URLs of its redirects (a missing trailing slash, merged slashes,
    ``url_for(_external=True)``) from the ``Host`` header, which the client chose (``Host: evil.example`` would
    come back as ``Location: http://evil.example/...``). A path starting with ``//`` gets ``/.`` in front, so it
    never reads as another host."""
    for index, (name, value) in enumerate(headers):
        if len(name) == 8 and name.lower() == "location" and "://" in value:
            parts, scheme = urlsplit(value), environ.get("wsgi.url_scheme", "http")
            if parts.scheme.lower() == scheme and _authority(parts.netloc, scheme) in (
                    _authority(environ.get("HTTP_HOST", ""), scheme), ""):
                path = parts.path or "/"
                if path.startswith("//"):
                    path = "/." + path
                headers[index] = (name, urlunsplit(("", "", path, parts.query, parts.fragment)))


def _authority(netloc: str, scheme: str) -> str:
    """``host[:port]`` lower-case, without the scheme's default port (Werkzeug leaves it out of the URLs it builds)."""
    netloc = netloc.lower()
    default = ":443" if scheme == "https" else ":80"
    return netloc[:-len(default)] if netloc.endswith(default) else netloc


def _record(metrics: HttpMetrics, environ: dict, status: int, seconds: float, request_id: str) -> None:
    """Count and time one request and write its access line. The URL rule and the decoded path come from the
    request context when one is active (it is while Flask calls ``start_response``), else from the environ."""
    try:
        req = request._get_current_object()
    except RuntimeError:  # no request context
        req = None
    if req is not None:
        method, path, rule = req.method, req.script_root + req.path, req.url_rule
    elif _FAILED_REQUEST_ENVIRON in environ:  # the exception left the app after the context was popped
        method, path, rule = environ[_FAILED_REQUEST_ENVIRON]
    else:
        method, rule = environ.get("REQUEST_METHOD", "GET").upper(), None
        path = environ.get("SCRIPT_NAME", "") + (environ.get("PATH_INFO") or "/")
    endpoint = rule.rule if rule is not None else None
    metrics.observe(method, endpoint, status, seconds)
    log_access(method, path, status, seconds * 1000.0, request_id, environ.get("REMOTE_ADDR"))


def _save_failed_request(sender: Flask, exception: BaseException, **extra: object) -> None:
    """``got_request_exception`` receiver (inside the request context): keep what ``_record`` needs in case the
    exception propagates out of the app (debug, testing) and the context is gone when it is recorded."""
    req = request._get_current_object()
    req.environ[_FAILED_REQUEST_ENVIRON] = (req.method, req.script_root + req.path, req.url_rule)


def install_observation(app: Flask, metrics: HttpMetrics) -> None:
    """Observe every request of ``app`` (request id, metrics, access line) by wrapping ``app.wsgi_app``."""
    app.wsgi_app = ObservedWSGI(app.wsgi_app, metrics)  # type: ignore[method-assign]
    got_request_exception.connect(_save_failed_request, app)  # a module function: blinker's weak ref stays valid
