"""What the dev loop serves when the user's code fails: the app that stands in while the code cannot be loaded,
and the traceback page of an exception in a view.

While the user's code cannot be loaded (:func:`make_error_app`) every path answers ``500`` with the one-line
reason and, for a syntax error, the source line with a caret under the fault: an HTML page for a browser (``Accept``
preferring ``text/html``), JSON for a client preferring ``application/json`` (``{"error", "hint", "file", "line",
"source"}``), plain text otherwise; ``/health`` and its sub-paths answer ``503`` with ``{"status": "DOWN", ...}``
so probes and scripts see the app as not ready.

Under ``run`` (never in production: only the dev loop's app process uses this module), an exception a view raises
is logged by Flask with its traceback, and :func:`with_traceback_pages` answers the 500 with that traceback: an HTML
page, JSON (``"traceback"``) or text by the same ``Accept`` rule. ``debug`` serves Werkzeug's debugger instead.

It imports nothing of the user's and nothing heavier than the standard library and Werkzeug, so it always starts.
A value the user's config read from a secret (``server.userconfig``, when the app process loaded it) is shown as
``[secret]`` on every page.
"""

from __future__ import annotations

import html
import json
import sys
import traceback
from typing import Callable, Iterable

from werkzeug.datastructures import MIMEAccept
from werkzeug.http import parse_accept_header

HINT = "fix the code and save; the dev loop reloads it"
#: The environ key under which the app process leaves the exception a view raised (see :func:`with_traceback_pages`).
EXCEPTION_KEY = "devloop.exception"

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;margin:2em}}pre{{background:#f4f4f4;padding:1em;overflow:auto}}</style></head>
<body><h1>{title}</h1><p><strong>{line}</strong></p>{source}<p>{note}</p></body></html>
"""


def _redact(text: str) -> str:
    """``text`` with the secrets of the user's config masked (``server.userconfig.redact``, when it was loaded in
    this process: only then can a secret have been read)."""
    userconfig = sys.modules.get("server.userconfig")
    return userconfig.redact(text) if userconfig is not None else text


def _kind(environ: dict) -> str:
    """``html``, ``json`` or ``text``: what the client prefers (``text`` when it does not say)."""
    accept = parse_accept_header(environ.get("HTTP_ACCEPT", ""), MIMEAccept)
    best = accept.best_match(["text/plain", "text/html", "application/json"], default="text/plain")
    return {"text/html": "html", "application/json": "json"}.get(best, "text")


def source_excerpt(exc: BaseException | None) -> list[str]:
    """The source lines Python shows for a SyntaxError (the line, then a caret line under the fault), dedented
    together; [] for another exception or when the source is not available."""
    while exc is not None and not isinstance(exc, SyntaxError):
        exc = exc.__cause__
    if exc is None:
        return []
    lines = "".join(traceback.format_exception_only(type(exc), exc)).splitlines()
    body = [line for line in lines[:-1] if not line.lstrip().startswith('File "')]
    body = [line for line in body if line.strip()]
    if not body:
        return []
    indent = min(len(line) - len(line.lstrip()) for line in body)
    return [line[indent:] for line in body]


def _respond(start_response: Callable, status: str, body: bytes, ctype: str) -> list[bytes]:
    start_response(status, [("Content-Type", ctype), ("Content-Length", str(len(body))),
                            ("Cache-Control", "no-store"), ("X-Devloop-Error", "1")])
    return [body]


def make_error_app(message: str, excerpt: list[str] | None = None,
                   filename: str | None = None, lineno: int | None = None) -> Callable[[dict, Callable], Iterable[bytes]]:
    """Return a WSGI app reporting ``message`` (one line, e.g. ``demo failed to import: /p/__init__.py:3:
    SyntaxError: invalid syntax``) and ``excerpt`` (:func:`source_excerpt`; the source line and its caret)."""
    line = _redact(" ".join(message.split()))
    excerpt = [_redact(text) for text in excerpt or []]

    def error_app(environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "") or "/"
        kind = _kind(environ)
        if path == "/health" or path.startswith("/health/"):
            doc = {"status": "DOWN", "error": line, "hint": HINT}
            return _respond(start_response, "503 Service Unavailable", json.dumps(doc).encode(), "application/json")
        status = "500 Internal Server Error"
        if kind == "json":
            doc = {"error": line, "hint": HINT}
            if excerpt:
                doc.update(file=filename, line=lineno, source=excerpt)
            return _respond(start_response, status, json.dumps(doc).encode(), "application/json")
        if kind == "html":
            source = f"<pre>{html.escape(chr(10).join(excerpt))}</pre>" if excerpt else ""
            page = _PAGE.format(title="The app failed to load", line=html.escape(line), source=source,
                                note=html.escape(HINT))
            return _respond(start_response, status, page.encode(), "text/html; charset=utf-8")
        text = "\n".join([line, *excerpt]) + "\n"
        return _respond(start_response, status, text.encode(), "text/plain; charset=utf-8")

    return error_app


def with_traceback_pages(app) -> Callable[[dict, Callable], Iterable[bytes]]:
    """Return a WSGI app serving the Flask ``app`` whose 500 answers to an exception in a view carry its traceback
    (see the module docstring). The exception is taken from Flask's ``got_request_exception`` signal (public API);
    Flask itself logs it with its traceback and makes the 500, whose body is replaced here."""
    from flask import got_request_exception, request

    def remember(_sender, exception: BaseException, **_extra) -> None:
        request.environ[EXCEPTION_KEY] = exception

    got_request_exception.connect(remember, app, weak=False)

    def traced(environ: dict, start_response: Callable) -> Iterable[bytes]:
        answer: dict = {}

        def hold(status: str, headers: list, exc_info=None):
            answer.update(status=status, headers=headers, exc_info=exc_info)
            return lambda _data: None  # Flask never calls write()

        body = app(environ, hold)
        exc = environ.get(EXCEPTION_KEY)
        if exc is None or not answer.get("status", "").startswith("500"):
            start_response(answer["status"], answer["headers"], answer.get("exc_info"))
            return body
        if hasattr(body, "close"):
            body.close()
        return _traceback_page(environ, start_response, exc, answer["headers"])

    return traced


def _traceback_page(environ: dict, start_response: Callable, exc: BaseException, headers: list) -> list[bytes]:
    """The 500 answer to ``exc`` with its traceback; the request id header of the original answer is kept."""
    trace = _redact("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip())
    first = _redact(" ".join(f"{type(exc).__name__}: {exc}".split()))
    kind = _kind(environ)
    note = "flask-stack run shows this page; the production server answers a plain 500"
    if kind == "json":
        body = json.dumps({"error": {"status": 500, "title": "Internal Server Error", "detail": first},
                           "traceback": trace.splitlines(), "note": note}).encode()
        ctype = "application/json"
    elif kind == "html":
        body = _PAGE.format(title="500 Internal Server Error", line=html.escape(first),
                            source=f"<pre>{html.escape(trace)}</pre>", note=html.escape(note)).encode()
        ctype = "text/html; charset=utf-8"
    else:
        body = f"{trace}\n".encode()
        ctype = "text/plain; charset=utf-8"
    kept = [(k, v) for k, v in headers if k.lower() == "x-request-id"]
    start_response("500 Internal Server Error", [("Content-Type", ctype), ("Content-Length", str(len(body))),
                                                 ("Cache-Control", "no-store"), *kept])
    return [body]


def redacting_500s(app: Callable[[dict, Callable], Iterable[bytes]]) -> Callable[[dict, Callable], Iterable[bytes]]:
    """``app`` (Werkzeug's debugger under ``debug``) whose 500 answers have the user's secrets masked, as they are
    and HTML-escaped (the debugger's traceback page shows exception messages and source lines), and whose
    ``wsgi.errors`` (where the debugger writes the traceback) masks them too."""
    def masked(environ: dict, start_response: Callable) -> Iterable[bytes]:
        answer: dict = {}
        if "server.userconfig" in sys.modules:
            environ["wsgi.errors"] = _MaskedStream(environ.get("wsgi.errors") or sys.stderr)

        def hold(status: str, headers: list, exc_info=None):
            answer.update(status=status, headers=headers, exc_info=exc_info)
            return lambda _data: None

        body = app(environ, hold)
        chunks = iter(body)
        first = next(chunks, None)  # the debugger answers from a generator: start_response comes with its first chunk
        if not answer.get("status", "").startswith("500") or "server.userconfig" not in sys.modules:
            start_response(answer["status"], answer["headers"], answer.get("exc_info"))
            return _rest(first, chunks, body)
        try:
            data = b"".join([first or b"", *chunks]).decode("utf-8", "replace")
        finally:
            if hasattr(body, "close"):
                body.close()
        userconfig = sys.modules["server.userconfig"]
        from markupsafe import escape  # Werkzeug's, as its debugger escapes

        data = userconfig.redact(userconfig.redact(data), escape=lambda v: str(escape(v))).encode()
        headers = [(k, v) for k, v in answer["headers"] if k.lower() != "content-length"]
        start_response(answer["status"], headers + [("Content-Length", str(len(data)))], answer.get("exc_info"))
        return [data]

    return masked


def _rest(first: bytes | None, chunks: Iterable[bytes], body: Iterable[bytes]) -> Iterable[bytes]:
    """The answer's chunks, ``first`` (already taken) included; the original body closed at the end."""
    try:
        if first is not None:
            yield first
        yield from chunks
    finally:
        if hasattr(body, "close"):
            body.close()


class _MaskedStream:
    """A text stream whose written text has the user's secrets masked (``server.userconfig.redact``)."""

    def __init__(self, stream) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        return self._stream.write(sys.modules["server.userconfig"].redact(text))

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)
