"""Serving a project in the foreground for ``flask-stack run``/``debug``: the checks made before anything is said
(already served, ports free), the record ``flask-stack stop`` reads, and the URLs printed once the server answers.
"""

from __future__ import annotations

import http.client
import os
import shlex
import threading
import time
from pathlib import Path
from typing import Callable

from .engine import Engine, RunOptions
from .errors import CliError
from .paths import stacksettings
from .localenv import cache_root, project_dir
from .paths import load_devloop_module
from .procs import ServerRecord, read_record, remove_record, require_free_port, write_record

#: Seconds between two checks whether a started server answers (for printing its URLs).
READY_POLL = 0.1


def announce(say: Callable[[str], None], port: int, debug_port: int | None = None, prefix: str = "",
             app_path: str | None = None) -> None:
    """Say where the app, its health, metrics and API docs (and the debugger) answer; ``prefix`` is the app's
    STACK_URL_PREFIX (``/your/path``); ``app_path`` a route of the user's app to show when its ``/`` is the stack's
    redirect to the API docs (None: ``/`` is the app's own).

    The dev loop would say it again (with the container's ports): the CLI sets STACK_SHOW_URLS=0 for it.
    """
    base = f"http://127.0.0.1:{port}{prefix}"
    say(f"app       {load_devloop_module('approute').app_url(base, app_path)}")
    say(f"health    {base}/health  (/health/live, /health/ready, /health/started)")
    say(f"metrics   {base}/metrics")
    say(f"API docs  {base}/apidocs/")
    if debug_port is not None:
        say(f"debugger  127.0.0.1:{debug_port}  (DAP: VS Code \"Attach\")")


def _answers(port: int) -> bool:
    """Return True when an HTTP server answers ``GET /health/live`` on 127.0.0.1:``port`` (any status)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        connection.request("GET", "/health/live")
        connection.getresponse().read()
        return True
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


def app_route(port: int, prefix: str = "") -> str | None:
    """A route of the user's app to show, when its ``/`` is the stack's redirect to the API docs (``/hello``); None
    when ``/`` is the app's own or no such route is documented. The choice is the dev loop's own
    (``image/devloop/approute.py``), so both say the same URL.

    Raises:
        CliError: the stack's files are missing.
    """
    return load_devloop_module("approute").app_route(port, prefix)


def _url_prefix(opts: RunOptions, local: bool) -> str:
    """The STACK_URL_PREFIX the app gets, without its trailing slash, for the URLs said at start: ``-e``, else (local
    engine) this environment's, else the project's ``.env`` then ``.flaskenv`` (read by the runtime as ``flask run``
    reads them; python-dotenv's parser here too), else none; checked by the registry's ``parse_url_prefix`` ("" when
    unusable: the app process says why)."""
    value = opts.env.get("STACK_URL_PREFIX")
    if value is None and local:
        value = stacksettings().raw("STACK_URL_PREFIX")
    if value is None:
        value = _dotenv_value(opts.project, "STACK_URL_PREFIX")
    registry = stacksettings()
    try:
        return registry.parse_url_prefix("STACK_URL_PREFIX", value or "")
    except registry.SettingsError:  # the app process says what is wrong with it
        return ""


def _dotenv_value(project: Path, name: str) -> str | None:
    """``name``'s value in ``project``'s ``.env``, else in its ``.flaskenv`` (the first wins, as in Flask's
    ``load_dotenv``); None when neither sets it or python-dotenv is missing."""
    try:
        from dotenv import dotenv_values
    except ImportError:
        return None
    for filename in (".env", ".flaskenv"):
        path = project / filename
        if path.is_file():
            value = dotenv_values(path).get(name)
            if value is not None:
                return value
    return None


def _announce_when_ready(say: Callable[[str], None], port: int, debug_port: int | None = None,
                         prefix: str = "") -> threading.Thread:
    """Start a daemon thread that prints the URLs (:func:`announce`) once the server answers on ``port``,
    with the seconds it took; it polls every ``READY_POLL`` seconds until then (or until flask-stack exits)."""
    started = time.monotonic()

    def wait() -> None:
        while not _answers(port):
            time.sleep(READY_POLL)
        seconds = time.monotonic() - started
        shown = app_route(port, prefix)
        say(f"serving in {seconds:.1f} s:")
        announce(say, port, debug_port, prefix, shown)

    thread = threading.Thread(target=wait, name="flask-stack-ready", daemon=True)
    thread.start()
    return thread


def record_path_of(project: Path) -> Path:
    """Return the file recording the project's running server (see :class:`flask_stack.procs.ServerRecord`)."""
    return project_dir(project) / "server.json"


def server_on_port(port: int) -> ServerRecord | None:
    """Return the record of a flask-stack server (of any project on this machine's cache) serving on ``port``."""
    try:
        paths = sorted((cache_root() / "projects").glob("*/server.json"))
    except OSError:
        return None
    for path in paths:
        record = read_record(path)
        if record is not None and record.port == port:
            return record
    return None


def _require_free_port(port: int, option: str = "--port") -> None:
    """``require_free_port``, whose line names the project of ours holding the port when it is one.

    Raises:
        CliError: the port is out of range or in use.
    """
    try:
        require_free_port(port, option)
    except CliError:
        holder = server_on_port(port)
        if holder is None or not holder.project:
            raise
        raise CliError(f"port {port} is in use by flask-stack serving {holder.project} (pid {holder.pid}, "
                         f"{holder.engine} engine); `flask-stack stop --project {shlex.quote(holder.project)}` stops it, or pass "
                         f"{option} N") from None


def serve(opts: RunOptions, choose: Callable[[], Engine], say: Callable[[str], None],
          debug_port: int | None = None) -> int:
    """Check that the project is not served and its ports are free (one line each, before anything else is
    said), then serve it with the engine ``choose()`` returns, print the URLs once it answers, and record it for
    ``flask-stack stop`` meanwhile; return the server's exit status.

    Raises:
        CliError: the project is already served, a port is in use, or the engine fails.
    """
    record_path = record_path_of(opts.project)
    running = read_record(record_path)
    if running is not None:
        raise CliError(f"{opts.project} is already being served (pid {running.pid}, port {running.port}); "
                         f"`flask-stack stop` stops it")
    _require_free_port(opts.port)
    if debug_port is not None:
        _require_free_port(debug_port, "--debug-port")
        if debug_port == opts.port:
            raise CliError("--debug-port must differ from --port")
    chosen = choose()
    write_record(record_path, opts.port, chosen.name, opts.project)
    try:
        _announce_when_ready(say, opts.port, debug_port, _url_prefix(opts, chosen.name == "local"))
        return chosen.run(opts)
    finally:
        remove_record(record_path)
