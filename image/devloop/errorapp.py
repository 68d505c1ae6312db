"""The WSGI app served while the user's code cannot be loaded.

Every path answers ``500`` with the one-line reason (``text/plain``, or ``application/json`` for
clients that prefer JSON); ``/health`` and its sub-paths answer ``503`` with
``{"status": "DOWN", ...}`` so probes and scripts see the app as not ready. It imports nothing of
the user's and nothing heavier than the standard library and Werkzeug, so it always starts.
"""

from __future__ import annotations

import json
from typing import Callable, Iterable

from werkzeug.datastructures import MIMEAccept
from werkzeug.http import parse_accept_header

HINT = "fix the code and save; the dev loop reloads it"


def _wants_json(environ: dict) -> bool:
    accept = parse_accept_header(environ.get("HTTP_ACCEPT", ""), MIMEAccept)
    return accept.best_match(["text/plain", "text/html", "application/json"], default="text/plain") == "application/json"


def make_error_app(message: str) -> Callable[[dict, Callable], Iterable[bytes]]:
    """Return a WSGI app reporting ``message`` (one line, e.g. ``SyntaxError: ... (__init__.py, line 3)``)."""
    line = " ".join(message.split())

    def error_app(environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "") or "/"
        health = path == "/health" or path.startswith("/health/")
        if health or _wants_json(environ):
            status = "503 Service Unavailable" if health else "500 Internal Server Error"
            doc = {"status": "DOWN", "error": line, "hint": HINT} if health else {"error": line, "hint": HINT}
            body = json.dumps(doc).encode()
            ctype = "application/json"
        else:
            status = "500 Internal Server Error"
            body = f"{line}\n".encode()
            ctype = "text/plain; charset=utf-8"
        start_response(status, [("Content-Type", ctype), ("Content-Length", str(len(body))),
                                ("Cache-Control", "no-store"), ("X-Devloop-Error", "1")])
        return [body]

    return error_app
