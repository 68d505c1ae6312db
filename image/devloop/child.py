"""The app process: forked from the warm dev loop, builds the app and serves it on the shared socket.

Runs in its own process group (so a stop also ends helpers it started, like debugpy's adapter)
and dies with the loop (Linux ``PR_SET_PDEATHSIG``). It never returns into the loop's code: every
path ends in ``os._exit``. Sequence: reset signals, start the debugger (debug mode), call
``server.create_app()``; when the user's code fails to import, log the one-line reason and serve
:mod:`devloop.errorapp` instead; then serve with Werkzeug's threaded server on the inherited
listening socket (``make_server(fd=...)``), on a thread, while the main thread waits for SIGTERM. SIGTERM
stops accepting (Werkzeug's ``shutdown``: the socket stays open in the loop, so connections wait in its
backlog for the next app process), lets the connections in flight finish (at most ``DRAIN_SECONDS``), and
exits 0. Werkzeug's server closes every connection after its response, so "in flight" ends with the response.

A second after it starts serving, and again when it stops, the process lists the third-party modules it
imported beyond the loop's (:func:`third_party_modules`) in ``spec.preload_path`` and writes one byte to
``spec.preload_fd``: the loop imports them too, so the next app process starts with them loaded.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from oneline import first_line

from . import approute, preload
from .errorapp import make_error_app, redacting_500s, source_excerpt, with_traceback_pages
from .logs import get_logger

#: Seconds a stopping app process waits for requests in flight.
DRAIN_SECONDS = 2.5
#: Seconds between two checks of the serving thread for a shutdown request (Werkzeug's ``poll_interval``).
POLL_SECONDS = 0.05
PR_SET_PDEATHSIG = 1

log = get_logger()


@dataclass
class ChildSpec:
    """What one app process needs (copied into it by fork).

    Attributes:
        sock_fd (int): the listening socket's file descriptor.
        host (str), port (int): where it listens (for messages only).
        project (Path): the user's project directory.
        debug (bool): Flask debug mode, the Werkzeug debugger and the DAP debugger.
        debug_port (int), debug_wait (bool), debugger (str): for ``server.debug.start_debugger``.
        debug_host (str): the debugger's interface ("" = ``host``; ``STACK_DEBUG_HOST``); in debug mode the loop's
            debug gate listens there and the app process's debugger on 127.0.0.1 and a port of its own
            (:mod:`devloop.debuggate`).
        failure (str | None): serve the error app with this message instead of the user's app.
        started (float): ``time.monotonic()`` when the (re)start was triggered, for the ready message.
        close_fds (list[int]): the loop's own descriptors to close in the app process.
        preload_path (Path | None): where to list the third-party modules the app imported (JSON list).
        preload_fd (int | None): the pipe end to write one byte to once that list is written.
        userapp (str): the module name the user's package is imported as (never preloaded).
        show_urls (bool): say the app's, health, metrics and API docs URLs once this process answers (the loop
            sets it for its first app process; :func:`say_urls`).
        base_url (str): ``http://host:port`` plus ``url_prefix``, for those URLs.
        url_prefix (str): the app's STACK_URL_PREFIX (``/your/path``, or "").
        verdict_fd (int | None): after a save, the pipe end to write one byte to once the app is built: ``+`` (this
            process serves, the loop retires the previous one) or ``!`` (a stack or configuration setting has a bad
            value: this process exits without serving and the loop keeps the previous one).
    """

    sock_fd: int
    host: str
    port: int
    project: Path
    debug: bool = False
    debug_port: int = 5678
    debug_wait: bool = False
    debugger: str = "debugpy"
    debug_host: str = ""
    failure: str | None = None
    started: float = 0.0
    close_fds: list[int] = field(default_factory=list)
    preload_path: Path | None = None
    preload_fd: int | None = None
    userapp: str = "userapp"
    show_urls: bool = False
    verdict_fd: int | None = None
    base_url: str = ""
    url_prefix: str = ""


class _Stop(BaseException):
    """Raised by the app process's SIGTERM handler while it builds the app (before it serves)."""


class _Connections:
    """How many connections the server's handler threads are answering (guarded by a lock)."""

    def __init__(self) -> None:
        self.count = 0
        self.lock = threading.Lock()

    def handler(self):
        """Return a Werkzeug request handler class that counts its connections here."""
        from werkzeug.serving import WSGIRequestHandler

        connections = self

        class CountingHandler(WSGIRequestHandler):
            def handle(self) -> None:
                with connections.lock:
                    connections.count += 1
                try:
                    super().handle()
                finally:
                    with connections.lock:
                        connections.count -= 1

        return CountingHandler

    def wait_idle(self, timeout: float) -> None:
        """Return once no connection is being answered, or after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while self.count > 0 and time.monotonic() < deadline:
            time.sleep(0.005)


def _set_pdeathsig() -> None:
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def describe_exception(exc: BaseException, project: Path) -> str:
    """Return one line for an exception raised while building the app: type, message, and the
    innermost traceback location inside ``project`` (``file.py:LINE``) when there is one."""
    summary = getattr(exc, "summary", None)
    if summary:
        text = str(summary)
        filename, lineno = getattr(exc, "filename", None), getattr(exc, "lineno", None)
        if filename and lineno and f"{lineno}" not in text:
            text += f" ({Path(filename).name}:{lineno})"
        return " ".join(text.split())
    where = ""
    root = str(project.resolve())
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if frame.filename.startswith(root):
            where = f" ({os.path.relpath(frame.filename, root)}:{frame.lineno})"
            break
    message = first_line(exc)
    return " ".join(f"{type(exc).__name__}: {message}{where}".split())


def _write_verdict(fd: int, verdict: bytes) -> None:
    try:
        os.write(fd, verdict)
        os.close(fd)
    except OSError:
        pass  # the loop is gone: the parent-death signal ends this process


def _build_app(spec: ChildSpec):
    """Return (wsgi app, failure message or None); (None, message) when a setting has a bad value and the loop
    keeps the previous app process (``spec.verdict_fd``)."""
    if spec.failure:
        return make_error_app(spec.failure), spec.failure
    try:
        import server
        from server.exceptions import SettingsError, UserAppImportError
    except ImportError as exc:
        return make_error_app(f"the stack's runtime cannot be imported: {exc}"), str(exc)
    try:
        app = server.create_app()
    except UserAppImportError as exc:
        message, failed = describe_exception(exc, spec.project), exc
    except Exception as exc:  # any failure building the user's app must keep the loop serving
        message, failed = describe_exception(exc, spec.project), exc
    else:
        # Jinja template edits are served on the next request, no restart (Flask's TEMPLATES_AUTO_RELOAD; set on
        # the environment too, which Flask may have made already with its default)
        app.config["TEMPLATES_AUTO_RELOAD"] = True
        app.jinja_env.auto_reload = True
        if spec.debug:
            app.debug = True
            from werkzeug.debug import DebuggedApplication

            debugged = DebuggedApplication(app, evalex=True)
            log.info("Werkzeug debugger active; its PIN is %s", debugged.pin)
            return redacting_500s(debugged), None
        return with_traceback_pages(app), None
    if isinstance(failed, SettingsError) and spec.verdict_fd is not None:
        log.error("%s; still serving the previous version until the next save", message)
        return None, message
    excerpt = source_excerpt(failed)
    cause = failed.__cause__ if isinstance(failed.__cause__, SyntaxError) else failed
    log.error("%s; answering 500 with it until the next save%s", message,
              "".join(f"\n    {line}" for line in excerpt))
    return make_error_app(message, excerpt, getattr(cause, "filename", None), getattr(cause, "lineno", None)), message


def _start_debugger(spec: ChildSpec) -> None:
    try:
        from server.debug import start_debugger

        start_debugger(spec.debug_port, wait=spec.debug_wait, kind=spec.debugger, host=spec.debug_host or spec.host)
    except Exception as exc:  # the app still serves without a debugger
        log.error("debugger not started on port %d: %s", spec.debug_port,
                  " ".join(f"{type(exc).__name__}: {exc}".split()))
        return


def _probe_host(host: str) -> str:
    """The address this process's own requests go to: loopback for a wildcard ``host``, else ``host``."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    return "::1" if host == "::" else host


def say_urls(spec: ChildSpec, failed: bool) -> None:
    """Log the app's, health, metrics and API docs URLs in one line. The app's is the route
    :func:`devloop.approute.app_route` picks (as ``flask-stack run`` does), asked over HTTP on the shared socket,
    so call this while this process serves (from a thread); ``failed`` (the error app is served): ``/``, nothing
    asked."""
    route = None if failed else approute.app_route(spec.port, spec.url_prefix, _probe_host(spec.host))
    base = spec.base_url
    log.info("app %s  health %s/health  metrics %s/metrics  API docs %s/apidocs/",
             approute.app_url(base, route), base, base, base)


def _serve(spec: ChildSpec, app) -> None:
    """Serve ``app`` on the shared socket until SIGTERM, then stop accepting and drain (see the module docstring).
    SIGTERM must be blocked in this thread already (the serving thread inherits the mask)."""
    from werkzeug.serving import make_server

    connections = _Connections()
    srv = make_server(spec.host, spec.port, app, threaded=True, fd=spec.sock_fd,
                      request_handler=connections.handler())
    serving = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": POLL_SECONDS},
                               name="devloop-serve", daemon=True)
    serving.start()
    signal.sigwait({signal.SIGTERM})
    srv.shutdown()  # returns once serve_forever has stopped accepting (and closed this process's copy)
    connections.wait_idle(DRAIN_SECONDS)


def child_main(spec: ChildSpec) -> None:
    """Body of the forked app process; never returns (``os._exit``)."""
    status = 0
    try:
        os.setpgid(0, 0)
    except OSError:
        pass
    try:
        _set_pdeathsig()
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGINT, signal.SIGCHLD, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)

        def on_term(signum, frame):
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            raise _Stop()

        signal.signal(signal.SIGTERM, on_term)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        for fd in spec.close_fds:
            try:
                os.close(fd)
            except OSError:
                pass
        if spec.debug and not spec.failure:
            _start_debugger(spec)
        app, failure = _build_app(spec)
        if spec.verdict_fd is not None:
            keep_previous = app is None
            _write_verdict(spec.verdict_fd, b"!" if keep_previous else b"+")
            if keep_previous:
                raise _Stop()
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # from here on, _serve waits for it
        if not failure and spec.started:
            log.info("app ready in %.2f s", time.monotonic() - spec.started)
        if spec.show_urls:  # asked once this process serves: its requests wait in the socket's backlog until then
            threading.Thread(target=say_urls, args=(spec, failure is not None), name="devloop-urls",
                             daemon=True).start()
        report = None
        if not failure:  # once the first requests have imported what they import lazily, and when stopping
            report = threading.Timer(preload.REPORT_AFTER_SECONDS, preload.report,
                                     (spec.project, spec.userapp, spec.preload_path, spec.preload_fd))
            report.daemon = True
            report.start()
        _serve(spec, app)
        if report is not None:
            report.cancel()
            preload.report(spec.project, spec.userapp, spec.preload_path, spec.preload_fd)
    except _Stop:
        pass
    except BaseException:  # an unexpected bug here: say where, never fall back into the loop's code
        log.error("app process failed:\n%s", traceback.format_exc().rstrip())
        status = 70
    finally:
        try:
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(status)
