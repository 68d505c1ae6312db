"""Per-request observation: request id, timing, Prometheus metrics and the access log line.

``install_observation`` wraps the app's WSGI callable (``app.wsgi_app = ObservedWSGI(app.wsgi_app, metrics)``,
Flask's documented way to add WSGI middleware). ``create_app`` installs it before the user's code runs, so a
middleware the user adds (``ProxyFix``, say) wraps it and its changes to the environ are seen here. Per request:

* the request id: the incoming ``X-Request-ID`` when usable (``server.requestid.is_safe_request_id``), else a new one,
  kept in the WSGI environ under ``REQUEST_ID_ENVIRON`` (``request.environ["flask_stack.request_id"]``) and
  readable as ``g.request_id`` (``server.apps.StackGlobals``); echoed in the response's ``X-Request-ID`` header unless the app
  set that header itself;
* when Flask calls ``start_response`` (after every ``after_request`` function, with the final status, still inside
  the request context): the duration (seconds, from entering the app), the method, the matched URL rule, the path
  as the client asked it (``SCRIPT_NAME`` then ``PATH_INFO``, so a ``STACK_URL_PREFIX`` is in it), the request id
  and the client's address go into one ``server.request_batch.RequestRecord``, which becomes
  ``http_requests_total`` and ``http_request_duration_seconds`` labelled with the URL rule, and the access line:
  in a batch written by a thread of the worker when the logs are buffered (``serve``), else at once;
* a redirect (3xx) whose ``Location`` points at the request's own ``Host`` is made relative (``/apidocs/``, not
  ``http://<whatever Host the client sent>/apidocs/``);
* an exception that leaves the app (debug and testing propagate them) is recorded as a 500, then re-raised.

No Flask hook and no ``flask.g`` write runs per request: the request object comes from the WSGI environ (Werkzeug's
``Request`` puts itself at ``environ["werkzeug.request"]``, its documented ``populate_request``), which keeps the
stack's own work per request small (see the README's benchmarks).
"""

from __future__ import annotations

import time
import weakref
from typing import Any, Callable, Iterable
from urllib.parse import urlsplit, urlunsplit

from flask import Flask, Request, got_request_exception, request

from .access_log import log_access_records
from .logs import buffering
from .metrics import HttpMetrics
from .request_batch import RequestBatch
from .requestid import REQUEST_ID_HEADER, is_safe_request_id, new_request_id, next_ready_id as _next_ready_id

#: WSGI environ key holding the request id of the request being served.
REQUEST_ID_ENVIRON = "flask_stack.request_id"
_HEADER_ENVIRON = "HTTP_" + REQUEST_ID_HEADER.upper().replace("-", "_")  # the request header's environ key
_HEADER_LOWER = REQUEST_ID_HEADER.lower()
_HEADER_LENGTH = len(REQUEST_ID_HEADER)
_FAILED_REQUEST_ENVIRON = "flask_stack.failed_request"  # (method, path, URL rule) saved when an exception escapes
_WERKZEUG_REQUEST = "werkzeug.request"  # where Werkzeug's Request puts itself (populate_request=True)

StartResponse = Callable[..., Any]
_clock = time.perf_counter


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
        #: Records of requests not yet counted and logged; ``metrics.render`` writes them before a scrape.
        self.batch = metrics.batch = RequestBatch(_writer(metrics), buffering)
        #: True: every response says ``Connection: close`` (set by ``close_connections``).
        self.closing = False
        _OBSERVED.add(self)

    def __call__(self, environ: dict, start_response: StartResponse) -> Iterable[bytes]:
        # Every line here runs once per request: see the module docstring and benchmarks/instructions.py.
        started = _clock()
        request_id = environ.get(_HEADER_ENVIRON)
        if request_id is None or not is_safe_request_id(request_id):
            try:
                request_id = _next_ready_id()  # requestid.new_request_id's common case, without its call
            except IndexError:
                request_id = new_request_id()
        environ[REQUEST_ID_ENVIRON] = request_id
        observed = self
        batch = self.batch
        recorded = False

        def observed_start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            nonlocal recorded
            if not recorded:
                recorded = True
                req = environ.get(_WERKZEUG_REQUEST)
                if isinstance(req, Request):
                    rule = req.url_rule
                    batch.append((started, _clock(), status, req.method, rule.rule if rule is not None else None,
                                  req.root_path + req.path, request_id, environ.get("REMOTE_ADDR")))
                else:  # a Request of the app's own replaced Flask's there
                    batch.append(_record(environ, started, status, request_id))
                if not batch.armed:
                    batch.arm()
            for name, _ in headers:
                if len(name) == _HEADER_LENGTH and name.lower() == _HEADER_LOWER:
                    break
            else:
                headers.append((REQUEST_ID_HEADER, request_id))
            if status[0] == "3":
                _relative_location(headers, environ)
            if observed.closing:
                headers.append(("Connection", "close"))
            return start_response(status, headers, exc_info)

        try:
            return self.app(environ, observed_start_response)
        except BaseException:
            if not recorded:
                recorded = True
                batch.append(_record(environ, started, "500 INTERNAL SERVER ERROR", request_id))
                if not batch.armed:
                    batch.arm()
            raise


class ObservedWSGIInProgress(ObservedWSGI):
    """``ObservedWSGI`` that also keeps the ``http_requests_in_progress`` gauge (STACK_METRICS_IN_PROGRESS=1)."""

    def __call__(self, environ: dict, start_response: StartResponse) -> Iterable[bytes]:
        gauge = self.metrics.in_progress
        gauge.inc()
        try:
            return super().__call__(environ, start_response)
        finally:
            gauge.dec()


_OBSERVED: "weakref.WeakSet[ObservedWSGI]" = weakref.WeakSet()


def close_connections() -> None:
    """From now on every response of every app this process observes says ``Connection: close`` (decided when the
    answer starts, so a request already in flight gets it too): the serving layer's drain calls it on SIGTERM
    (``serving.worker.Drain``), so no client reuses a connection the server is about to close."""
    for observed in list(_OBSERVED):
        observed.closing = True


def _writer(metrics: HttpMetrics) -> Callable[[list], None]:
    """What a batch of records becomes: counts in ``metrics``, then access lines."""
    def write(records: list) -> None:
        try:
            metrics.record(records)
        finally:
            log_access_records(records)
    return write


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


def _record(environ: dict, started: float, status: str, request_id: str) -> tuple:
    """A ``RequestRecord`` made the slow way: the method, path and URL rule from the request context when one is
    active, else from what ``_save_failed_request`` kept, else from the environ (no rule)."""
    ended = time.perf_counter()
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
    return (started, ended, status, method, rule.rule if rule is not None else None, path, request_id,
            environ.get("REMOTE_ADDR"))


def _save_failed_request(sender: Flask, exception: BaseException, **extra: object) -> None:
    """``got_request_exception`` receiver (inside the request context): keep what ``_record`` needs in case the
    exception propagates out of the app (debug, testing) and the context is gone when it is recorded."""
    req = request._get_current_object()
    req.environ[_FAILED_REQUEST_ENVIRON] = (req.method, req.script_root + req.path, req.url_rule)


def install_observation(app: Flask, metrics: HttpMetrics) -> None:
    """Observe every request of ``app`` (request id, metrics, access line) by wrapping ``app.wsgi_app``."""
    middleware = ObservedWSGI if metrics.in_progress is None else ObservedWSGIInProgress
    app.wsgi_app = middleware(app.wsgi_app, metrics)  # type: ignore[method-assign]
    got_request_exception.connect(_save_failed_request, app)  # a module function: blinker's weak ref stays valid
