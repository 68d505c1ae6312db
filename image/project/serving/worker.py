"""The worker side of production serving, the same on every server: SIGTERM handling (``Drain``) and the WSGI app
every server's workers serve (``production_app``; ``serving.worker:app`` is what gunicorn loads).

Importing it loads nothing but the standard library: the runtime ``server`` (Flask, Werkzeug) is imported when a
worker makes its app or drains, never in the supervising process.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Callable

log = logging.getLogger("serving.worker")


# --- SIGTERM in a worker -------------------------------------------------------------------------------------


class Drain:
    """What a worker does from SIGTERM on, the same on every server.

    ``begin()`` (the first SIGTERM): readiness DOWN (``server.health.begin_shutdown``), ``draining`` True (the
    server's mapping then answers every request with ``Connection: close``: ``on_drain`` callbacks run now),
    and ``stop()`` (the server's own graceful stop: no new connections, finish those in flight) runs after
    ``delay`` seconds, from a daemon thread. A second SIGTERM stops at once. ``linger`` (seconds) is the least time
    between ``begin`` and ``stop`` even with ``delay`` 0, for a server that would otherwise cut its kept-alive
    connections at once (a request already sent on one would be lost): in that time each of them gets its
    ``Connection: close`` answer.
    """

    def __init__(self, delay: float, stop: Callable[[], None], logger: logging.Logger | None = None,
                 linger: float = 0.0):
        self.delay = max(delay, linger)
        self.stop = stop
        self.draining = False
        self.on_drain: list[Callable[[], None]] = []
        self._log = logger or log
        self._stopped = False
        self._lock = threading.Lock()

    def begin(self) -> None:
        """Handle one SIGTERM (see the class docstring). Safe from any thread."""
        with self._lock:
            first = not self.draining
            self.draining = True
        if first:
            from server import health, observe

            health.begin_shutdown()
            observe.close_connections()
            for callback in self.on_drain:
                callback()
        if not first or self.delay <= 0:
            self._stop_once()
            return
        self._log.info("worker %s: readiness DOWN; stops accepting in %gs", os.getpid(), self.delay)
        timer = threading.Timer(self.delay, self._stop_once)
        timer.daemon = True
        timer.start()

    def _stop_once(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self.stop()


# --- the app every production server serves ----------------------------------------------------------------


drain: Drain | None = None  # this worker's (set by the server's mapping once it installed its SIGTERM handling)
# ``serve``'s app check (``serving.appcheck.parse``'s descriptors) when it was still out as this worker started: set
# in gunicorn's master (gunicorn.conf.py), whose workers load the app beside the check
app_check: tuple[int, ...] | None = None


def _wait_to_be_stopped() -> None:
    """Sleep until the master stops this worker: SIGTERM, SIGQUIT or SIGINT ends it at once, status 0."""
    import signal
    import time

    for signum in (signal.SIGTERM, signal.SIGQUIT, signal.SIGINT):
        signal.signal(signum, lambda *_: os._exit(0))
    while True:
        time.sleep(60)


def _load_app():
    """``server.app``, loaded now. While ``serve``'s app check is out (``app_check``), this load's outcome is
    reported to it (``appcheck.report``: the first worker's decides whether the check loads the app too) and the
    runtime's log lines wait for it: when this load fails, this worker waits for the check's verdict, and if the
    check failed too (it wrote the one line, and the master stops the server with its status) waits, silent, to be
    stopped (its exit would make the master log and race the stop); otherwise its own lines are written and the
    error raised as without a check."""
    import server

    if app_check is None:
        return server.app
    from . import appcheck

    logger = logging.getLogger("server")
    held = appcheck.HeldLines(logger)
    logger.addFilter(held)
    try:
        app = server.app
    except BaseException:
        appcheck.report(app_check, loaded=False)
        logger.removeFilter(held)
        status = appcheck.verdict(app_check)
        held.settle(not status)
        if status:
            _wait_to_be_stopped()
        raise
    appcheck.report(app_check, loaded=True)
    logger.removeFilter(held)
    held.settle(True)
    return app


def production_app():
    """The WSGI app every production server serves: ``server.app`` (loaded now: ``SystemExit(4)`` with one line
    when it fails) with two things every server lacks:

    * a body shorter than its Content-Length is a 400 with one warning line (``ClientDisconnected`` on read,
      handled by the runtime's error handler, so counted and logged), not a short body taken as complete;
    * a chunked body (``Transfer-Encoding: chunked``, the server de-chunking it: ``wsgi.input_terminated``) past the
      app's ``MAX_CONTENT_LENGTH`` (STACK_MAX_CONTENT_LENGTH) is a 413 when the app reads it, not its first bytes
      taken as the whole body;
    * while this worker drains (``Drain.begin`` calls ``server.observe.close_connections``: decided when the app calls
      ``start_response``, so a request already in flight at SIGTERM is answered with it too), every response says
      ``Connection: close`` (gunicorn drops the
      header and closes by its own keep-alive setting; granian and uWSGI's http router pass it on and close). A
      response that said keep-alive could have its client's next request sent after the server's stop closed the
      connection: a failed request on a reused connection.
    """
    from server.bodies import CappedInput, CheckedInput  # werkzeug: in the workers only, not the supervisor

    app = _load_app()
    config = getattr(app, "config", {})

    def serve(environ, start_response):
        length = environ.get("CONTENT_LENGTH")
        if length and length != "0" and length.isdigit():
            environ["wsgi.input"] = CheckedInput(environ["wsgi.input"], int(length))
        elif "HTTP_TRANSFER_ENCODING" in environ and environ.get("wsgi.input_terminated"):
            limit = config.get("MAX_CONTENT_LENGTH")
            if limit:
                environ["wsgi.input"] = CappedInput(environ["wsgi.input"], limit)
        return app(environ, start_response)

    return serve


def __getattr__(name: str):
    """``serving.worker:app`` (what gunicorn loads) is ``production_app()``, made on first access."""
    if name == "app":
        global app
        app = production_app()
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


