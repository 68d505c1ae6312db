"""The HTTP error responses the stack serves.

The stack's exception classes are in ``server.exceptions``.

HTTP error bodies (4xx/5xx raised as ``werkzeug.exceptions.HTTPException``, including unhandled exceptions, which
Flask turns into ``InternalServerError`` after logging the traceback): a client that asks for JSON (the request
body is JSON, or ``Accept`` prefers ``application/json`` over ``text/html``) gets::

    {"error": {"status": 404, "title": "Not Found", "detail": "The requested URL was not found ...",
               "request_id": "..."}}

with ``Content-Type: application/json``; everyone else gets a small HTML page. The detail is the exception's
description (werkzeug's standard text or the one passed to ``abort``), never a traceback. In debug or testing mode
Flask propagates unhandled exceptions instead (Werkzeug debugger, pytest tracebacks).

A request body the server cannot read (a broken chunked encoding or a body cut short: gunicorn's
``gunicorn.http.errors.ParseException`` family and ``NoMoreData`` when gunicorn is importable, werkzeug's
``ClientDisconnected``) is the client's fault: it becomes a 400 with the body above (through the app's 400
handler, so a user's ``@app.errorhandler(400)`` applies), one WARNING line without traceback
(``unreadable request body: POST /parse: InvalidChunkSize: Invalid chunk size: b'ZZ' id=...``), and is
counted as status 400 in the metrics. So is a body shorter than its Content-Length under the production servers
(``serving.worker.production_app`` raises ``ClientDisconnected`` for it), and JSON nested too deeply to parse
(``DepthLimitedJSONProvider``: a 400 like any malformed JSON, no traceback). A body over ``MAX_CONTENT_LENGTH``
(STACK_MAX_CONTENT_LENGTH, 16 MiB by default) is a 413 raised before it is read.

A malformed JSON body (``request.get_json()`` on a JSON request whose body does not parse) is a 400 whose detail
says why (``The request body is not valid JSON: Expecting value: line 1 column 2 (char 1).``) and one WARNING line
(``malformed JSON body: POST /items: Expecting value: line 1 column 2 (char 1) id=...``, at most once a minute per
process, ``server.mistakes``, the rest DEBUG): the app's request class
gets :class:`JSONWarningRequest`'s ``on_json_loading_failed`` (a public hook of Flask's ``Request``).
"""

from __future__ import annotations

import html
import json
import logging
import sys
from typing import Any

from flask import Flask, Request, Response, current_app, request
from flask.json.provider import DefaultJSONProvider
from oneline import LIMIT, first_line, reason
from werkzeug.exceptions import BadRequest, ClientDisconnected, HTTPException

from .logs import printable_path
from .mistakes import client_mistake
from .observe import current_request_id
from .userconfig import redact

log = logging.getLogger(__name__)


def wants_json() -> bool:
    """True when the current request's client asks for JSON (JSON body, or Accept prefers application/json)."""
    if request.is_json:
        return True
    accept = request.accept_mimetypes
    return accept.best_match(("text/html", "application/json"), default="text/html") == "application/json"


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{code} {title}</title></head>
<body><h1>{code} {title}</h1><p>{detail}</p></body></html>
"""


def error_response(exc: HTTPException) -> Response | HTTPException:
    """Flask error handler for every ``HTTPException``: JSON or HTML body as described in the module docstring.

    Redirects, exceptions without a status and exceptions carrying their own response are returned unchanged.
    """
    if exc.code is None or exc.code < 400 or exc.response is not None:
        return exc
    response = exc.get_response()  # keeps headers such as Allow and WWW-Authenticate
    title = exc.name
    detail = redact(exc.description or title)  # a secret of the user's config never shows (server.userconfig)
    request_id = current_request_id()
    if wants_json():
        body = {"error": {"status": exc.code, "title": title, "detail": detail}}
        if request_id:
            body["error"]["request_id"] = request_id
        response.set_data(json.dumps(body) + "\n")
        response.mimetype = "application/json"
    else:
        response.set_data(_PAGE.format(code=exc.code, title=html.escape(title), detail=html.escape(detail)))
        response.mimetype = "text/html"
    return response


def unreadable_body_errors() -> tuple[type[BaseException], ...]:
    """The exception classes meaning "the request body could not be read": werkzeug's ``ClientDisconnected`` and,
    when gunicorn serves this process (it is imported), ``gunicorn.http.errors.ParseException`` (InvalidChunkSize,
    ChunkMissingTerminator, ...) and ``gunicorn.http.errors.NoMoreData`` (body cut short; an ``IOError``); under
    another server they cannot be raised, so gunicorn is not imported for them (a worker's start time)."""
    if "gunicorn" not in sys.modules:
        return (ClientDisconnected,)
    try:
        from gunicorn.http.errors import NoMoreData, ParseException
    except ImportError:
        return (ClientDisconnected,)
    return (ClientDisconnected, ParseException, NoMoreData)


def _reason(exc: BaseException) -> str:
    underlying = exc.__cause__ or exc.__context__  # werkzeug's LimitedStream turns the server's error into this
    if isinstance(exc, ClientDisconnected) and isinstance(underlying, unreadable_body_errors()):
        exc = underlying
    if isinstance(exc, ClientDisconnected):
        return "ClientDisconnected: the client closed the connection before sending the whole body"
    return reason(exc)


def unreadable_body(exc: BaseException) -> Any:
    """Flask error handler for ``unreadable_body_errors()``: log one line (no traceback; the client's mistake:
    WARNING at most once per kind of error per minute, ``server.mistakes``) and answer 400 through the app's
    handler for ``BadRequest`` (normally ``error_response``)."""
    reason = _reason(exc)
    request_id = current_request_id() or "-"
    client_mistake(log, "unreadable body: " + reason.split(":", 1)[0], "unreadable request body: %s %s: %s id=%s",
                   request.method, printable_path(request.path), reason, request_id, extra={"request_id": request_id})
    return current_app.handle_http_exception(BadRequest(f"The request body could not be read ({reason})."))


class JSONWarningRequest(Request):
    """Mixed into the app's request class: a malformed JSON body is a 400 saying why, with one WARNING line (at most
    once a minute per process: a client's mistake, ``server.mistakes``)."""

    def on_json_loading_failed(self, e: ValueError | None) -> Any:
        """Raise 415 when the body is not JSON (Flask's own answer); for a body that does not parse, log one
        WARNING line (``client_mistake``) and raise ``BadRequest`` whose description is the parser's first line.

        Raises:
            werkzeug.exceptions.BadRequest: the body is not valid JSON.
            werkzeug.exceptions.UnsupportedMediaType: the request's Content-Type is not JSON.
        """
        if e is None:
            return super().on_json_loading_failed(e)
        parser_says = first_line(e, type(e).__name__)[:LIMIT]
        request_id = current_request_id() or "-"
        client_mistake(log, "malformed JSON body", "malformed JSON body: %s %s: %s id=%s", self.method,
                       printable_path(self.path), parser_says, request_id, extra={"request_id": request_id})
        raise BadRequest(f"The request body is not valid JSON: {parser_says}.") from e


def _with_json_warning(request_class: type[Request]) -> type[Request]:
    """Return ``request_class`` with :class:`JSONWarningRequest`'s hook (itself when it has it already)."""
    if issubclass(request_class, JSONWarningRequest):
        return request_class
    try:
        return type(request_class.__name__, (JSONWarningRequest, request_class), {})
    except TypeError:  # a request class that cannot be combined with Flask's (no common layout): left as it is
        return request_class


class DepthLimitedJSONProvider(DefaultJSONProvider):
    """Flask's JSON provider, except that a document nested too deeply for the parser (Python's recursion limit,
    about 1000 levels) is a ``ValueError``, so ``request.get_json()`` answers 400 like any other malformed JSON
    instead of a 500 with a RecursionError traceback."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        """``json.loads``; raises ValueError for malformed or too deeply nested JSON."""
        try:
            return super().loads(s, **kwargs)
        except RecursionError:
            raise ValueError("JSON nested too deeply") from None


def register_error_handlers(app: Flask) -> None:
    """Install ``error_response`` for all HTTP errors of ``app``, ``unreadable_body`` for unreadable bodies,
    ``DepthLimitedJSONProvider`` (unless the app has a JSON provider of its own) and the malformed-JSON warning
    (:class:`JSONWarningRequest`, mixed into the app's request class).

    Called before the user's package loads, so the user's own ``@app.errorhandler`` / blueprint handlers replace it.
    """
    app.register_error_handler(HTTPException, error_response)
    for kind in unreadable_body_errors():
        app.register_error_handler(kind, unreadable_body)
    if type(app.json) is DefaultJSONProvider:
        app.json = DepthLimitedJSONProvider(app)
    app.request_class = _with_json_warning(app.request_class)
