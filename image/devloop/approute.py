"""Which URL to show for the user's app once it serves: the one choice shared by the dev loop and ``flask-stack``.

When the app has no ``/`` of its own, the stack's ``/`` redirects to the API docs; the URL worth showing is then a
route of the user's app (``/hello``): the first GET path without parameters in the API spec (``/apispec_1.json``)
that is not the stack's own. The dev loop's URL line (``devloop.child``, ``appsody run``) and ``flask-stack run``'s
(``flask_stack.launch``) both ask a serving app this way, over HTTP, and say it the same way (:func:`app_url`).

Standard library only, no package-relative import: the development image has no ``flask_stack`` package, so the
CLI loads this very file from the stack's ``image/devloop`` (``flask_stack.paths.load_devloop_module``).
"""

from __future__ import annotations

import http.client
import json

#: Paths of the stack's own (never the user's app's URL to show).
STACK_PATHS = ("/health", "/metrics", "/apidocs", "/apispec", "/flasgger")
#: Where the stack's API spec answers, under the app's STACK_URL_PREFIX.
SPEC_PATH = "/apispec_1.json"
#: Seconds one request to the app may take before the choice gives up (the plain ``/`` is shown then).
TIMEOUT = 5.0
_REDIRECTS = (301, 302, 303, 307, 308)


def fetch(host: str, port: int, path: str, timeout: float = TIMEOUT) -> tuple[int, dict[str, str], bytes] | None:
    """``GET path`` on ``host``:``port`` (no redirect followed, ``Accept: application/json``, at most 4 MiB of
    body read): (status, headers with lower-case names, body); None when it fails (refused, reset, ``timeout``
    seconds without an answer). Raises nothing."""
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("GET", path, headers={"Accept": "application/json"})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read(1 << 22)
    except (OSError, http.client.HTTPException):
        return None
    finally:
        connection.close()


def choose(root_status: int | None, root_location: str, spec: bytes | None, prefix: str = "") -> str | None:
    """The route to show, from what the app answered: ``root_status``/``root_location`` for ``GET {prefix}/``
    (None: no answer), ``spec`` the body of a 200 ``GET {prefix}/apispec_1.json`` (None: none). Returns the first
    documented GET path without ``{parameters}`` that is not ``/`` nor the stack's own, without ``prefix``; None
    when ``/`` is the app's own (not a redirect to the API docs) or no such path is documented."""
    if root_status not in _REDIRECTS or "/apidocs" not in root_location or spec is None:
        return None
    try:
        paths = json.loads(spec)["paths"]
        items = list(paths.items())
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    for path, operations in items:
        if not isinstance(path, str):
            continue
        path = path.removeprefix(prefix) if prefix and path.startswith(prefix + "/") else path
        if (isinstance(operations, dict) and "get" in operations and "{" not in path and path != "/"
                and not path.startswith(STACK_PATHS)):
            return path
    return None


def app_route(port: int, prefix: str = "", host: str = "127.0.0.1") -> str | None:
    """Ask the app serving on ``host``:``port`` (``prefix``: its STACK_URL_PREFIX, ``/your/path`` or "") which
    route to show (:func:`choose`): ``GET {prefix}/``, then, when that is the stack's redirect to the API docs,
    ``GET {prefix}/apispec_1.json``. Both requests run through the app (its access log shows them). Returns None
    when ``/`` is to be shown. Raises nothing."""
    root = fetch(host, port, f"{prefix}/")
    if root is None:
        return None
    spec = None
    if root[0] in _REDIRECTS and "/apidocs" in root[1].get("location", ""):
        answer = fetch(host, port, f"{prefix}{SPEC_PATH}")
        spec = answer[2] if answer is not None and answer[0] == 200 else None
    return choose(root[0], root[1].get("location", ""), spec, prefix)


def app_url(base: str, route: str | None) -> str:
    """How the app's URL is said: ``{base}/`` when ``route`` is None, else ``{base}{route}  ({base}/ redirects
    to the API docs)``; ``base`` is ``http://host:port`` plus the app's URL prefix."""
    if route:
        return f"{base}{route}  ({base}/ redirects to the API docs)"
    return f"{base}/"
