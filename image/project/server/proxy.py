"""Where the app is mounted (``STACK_URL_PREFIX``), which proxies it trusts (``STACK_PROXY_HOPS``) and which
``Host`` values (``STACK_TRUSTED_HOSTS``: ``trusted_hosts``).

Both are WSGI middleware around ``app.wsgi_app`` (Flask's documented way), applied by ``server.stack.Stack`` when
it applies itself to an app, so they hold on every server (gunicorn, granian, Flask's development server in the
dev loop) and in Flask's test client. From the outside in:

1. Werkzeug's ``ProxyFix`` (when ``STACK_PROXY_HOPS`` > 0) takes the client's address, scheme, host and prefix
   from the ``X-Forwarded-For``/``-Proto``/``-Host``/``-Prefix`` values the last ``hops`` proxies added; with 0
   those headers change nothing.
2. The stack's observation (request id, metrics, access line: ``server.observe``) sees the fixed environ, so the
   access line shows the client's address.
3. Werkzeug's ``DispatcherMiddleware`` (when ``STACK_URL_PREFIX`` is set) mounts the app at the prefix: a request
   for ``/your/path/hello`` reaches the app with ``SCRIPT_NAME=/your/path`` and ``PATH_INFO=/hello``, so its routes
   match and ``url_for``, redirects and the API docs carry the prefix. A request whose ``SCRIPT_NAME`` already
   ends with the prefix (Flask's test client, which sends ``APPLICATION_ROOT`` there; a proxy's
   ``X-Forwarded-Prefix``) is passed as it is; any other path outside the prefix is a 404 (counted and logged).
"""

from __future__ import annotations

import socket
from typing import Any, Callable, Iterable

from werkzeug.exceptions import NotFound
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.middleware.proxy_fix import ProxyFix

WSGIApp = Callable[[dict, Callable[..., Any]], Iterable[bytes]]


def mount_at(wsgi_app: WSGIApp, prefix: str) -> WSGIApp:
    """``wsgi_app`` mounted at ``prefix`` (``/your/path``, no trailing slash; see the module docstring).

    Args:
        wsgi_app: the WSGI callable to mount (``flask_app.wsgi_app``).
        prefix: a path from ``server.settings.parse_url_prefix``; "" returns ``wsgi_app`` itself.
    """
    if not prefix:
        return wsgi_app

    def outside(environ: dict, start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("SCRIPT_NAME", "").rstrip("/").endswith(prefix):  # mounted there already
            return wsgi_app(environ, start_response)
        return NotFound()(environ, start_response)

    return DispatcherMiddleware(outside, {prefix: wsgi_app})


def trust_proxies(wsgi_app: WSGIApp, hops: int) -> WSGIApp:
    """``wsgi_app`` behind Werkzeug's ``ProxyFix`` trusting ``hops`` proxies for the client's address, scheme, host
    and prefix; 0 returns ``wsgi_app`` itself (every ``X-Forwarded-*`` header is ignored)."""
    if hops <= 0:
        return wsgi_app
    return ProxyFix(wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_prefix=hops)


def trusted_hosts(configured: tuple[str, ...]) -> list[str]:
    """Return the value for Flask's ``TRUSTED_HOSTS``: the ``configured`` names plus this machine's own ("localhost",
    127.0.0.1, its host name and that name's IPv4 addresses), which orchestrators' probes and the image's
    HEALTHCHECK send as ``Host`` (a Kubernetes httpGet probe sends the pod's IP). Resolving the host name may
    consult /etc/hosts or DNS once; a failure leaves its addresses out (never raises)."""
    own = {"localhost", "127.0.0.1"}
    try:
        name = socket.gethostname().lower()
        own.add(name)
        own.update(str(info[4][0]) for info in socket.getaddrinfo(name, None, socket.AF_INET))
    except OSError:
        pass
    return [*configured, *sorted(own - set(configured))]
