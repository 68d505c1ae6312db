"""gunicorn's mapping of the stack's serving settings (``serving``) onto gunicorn's options and hooks.

``/project/serve`` runs gunicorn with this file and the app ``serving.worker:app`` (``gunicorn -c gunicorn.conf.py
serving.worker:app`` works too). The
settings, their defaults and their validation live in ``serving.settings.load_serving_settings`` (README.md,
"Environment variables"); SIGTERM handling in ``serving.worker.Drain``. Extra ``serve`` arguments and
GUNICORN_CMD_ARGS are gunicorn options and win over this file.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

import stacksettings
from gunicorn import glogging

from serving import appcheck, supervisor
from serving.settings import KEEPALIVE_SECONDS
from serving import worker as serving_worker
from server.logs import make_formatter, printable_path
from server.mistakes import client_mistake

_settings = supervisor.settings_or_exit("gunicorn.conf.py")

# ``serve``'s app load check (``serving.appcheck``) runs beside gunicorn: the workers load the app at once (their
# failure waits for the check's verdict, ``serving.worker._load_app``), the master's lines wait for it
# (``StackLogger``), and when the app fails to load the master stops with the check's one line and its status.
_check = appcheck.take()
serving_worker.app_check = _check
_held: appcheck.HeldLines | None = None  # the master's lines while the check is out
_failed = 0  # the check's exit status once it failed

bind = [_settings.bind]
workers = _settings.workers
threads = _settings.threads
worker_class = "gthread"
timeout = _settings.worker_timeout
graceful_timeout = _settings.graceful_timeout
keepalive = KEEPALIVE_SECONDS  # seconds; above health probes' 2-4 s, below load balancers' idle timeouts (60 s)
# Methods outside gunicorn's convention (lower case: ``get``) reach the app, which answers them (405 unless a route
# takes them) and so counts and logs them, instead of gunicorn's own uncounted HTML 400.
permit_unconventional_http_method = True

# The runtime writes one access line per request in the stack's format, so gunicorn's own access log stays off.
accesslog = None
errorlog = "-"
loglevel = _settings.log_level.lower()
capture_output = False

# Forwarded headers are the runtime's business (STACK_PROXY_HOPS, Werkzeug's ProxyFix), the same on every server:
# gunicorn would otherwise take the scheme (X-Forwarded-Proto...) and SCRIPT_NAME/PATH_INFO headers from any peer
# on 127.0.0.1, whatever STACK_PROXY_HOPS says (tests/proxy/test_nginx.py).
secure_scheme_headers = {}
forwarder_headers = ""

# The control socket (for ``gunicornc``) defaults to a path under $HOME, read-only in the deployable image.
if _settings.control_socket:
    control_socket = _settings.control_socket
else:
    control_socket_disable = True

# Workers touch a heartbeat file every few seconds; on tmpfs that never waits on a disk.
if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
    worker_tmp_dir = "/dev/shm"

proc_name = "flask-stack"


class StackLogger(glogging.Logger):
    """gunicorn's logger writing the stack's log lines (``server.logs.make_formatter``: text or JSON). gunicorn's
    line for a malformed request ("Invalid request from ip=...: <error>") is a client's mistake: WARNING at most once
    per kind of error per minute (``server.mistakes``)."""

    def setup(self, cfg) -> None:
        global _held
        super().setup(cfg)
        for handler in self.error_log.handlers:
            handler.setFormatter(make_formatter(_settings.log_format))
        if _check is not None and _held is None:
            _held = appcheck.HeldLines(self.error_log)
            self.error_log.addFilter(_held)

    def warning(self, msg, *args, **kwargs) -> None:
        if isinstance(msg, str) and msg.startswith(_INVALID_REQUEST):
            error = msg.partition(": ")[2]
            client_mistake(self.error_log, "invalid request: " + error.split(":", 1)[0][:60], "%s",
                           printable_path(msg))
        else:
            super().warning(msg, *args, **kwargs)


_INVALID_REQUEST = "Invalid request from ip="  # gunicorn.workers.base.Worker.handle_error's line (gunicorn 23)


logger_class = StackLogger


def _await_check() -> None:
    """In a thread of the master: the check's verdict releases the held lines, or drops them and stops gunicorn
    (``on_exit`` then exits with the check's status)."""
    global _failed
    status = appcheck.verdict(_check)
    _held.settle(not status)
    if status:
        _failed = status
        os.kill(os.getpid(), signal.SIGINT)  # gunicorn's quick stop, in its main loop


def when_ready(server) -> None:
    """Log once, in the master, what is being served and how (the real listeners: ``-b`` may override); wait for
    ``serve``'s app check in a thread."""
    if _check is not None and _held is not None and _held.state == "pending":
        threading.Thread(target=_await_check, name="app-check", daemon=True).start()
    server.log.info(
        "flask-stack serving on %s with gunicorn, %d workers x %d threads (metrics dir %s)",
        ", ".join(str(listener) for listener in server.LISTENERS),
        server.num_workers,
        server.cfg.threads,
        stacksettings.value("PROMETHEUS_MULTIPROC_DIR") or "unset: single process",
    )


_held_at_fork = 0  # how many lines the master held when it forked the worker being started


def pre_fork(server, worker) -> None:
    """In the master, before it forks a worker: note how many of its lines are held (the worker's own come after)."""
    global _held_at_fork
    _held_at_fork = len(_held.held) if _held is not None else 0


def post_fork(server, worker) -> None:
    """In each worker, as it starts: the master's held lines are not its own; while the check is out, the worker's
    gunicorn lines ("Booting worker...") wait until its app loaded (``post_worker_init``) and go unwritten when it
    failed to load."""
    if _held is None:
        return
    worker.log.error_log.removeFilter(_held)
    if _held.state != "ok":  # the check is out, or failed (the worker's lines then go unwritten)
        worker_held = appcheck.HeldLines(worker.log.error_log)
        worker_held.held = _held.held[_held_at_fork:]
        if _held.state == "failed":
            worker_held.settle(False)
        worker.log.error_log.addFilter(worker_held)
        worker._stack_held = worker_held


def post_worker_init(worker) -> None:
    """In each worker, once the app is loaded: its held lines are written; SIGTERM goes through ``serving.Drain``;
    the graceful stop after the delay is gunicorn's own SIGTERM handler (``worker.handle_exit``), run in the main
    thread as it expects."""
    worker_held = getattr(worker, "_stack_held", None)
    if worker_held is not None:
        worker.log.error_log.removeFilter(worker_held)
        worker_held.settle(True)
    graceful_stop = signal.getsignal(signal.SIGTERM)
    serving_worker.drain = drain = serving_worker.Drain(_settings.shutdown_delay, lambda: os.kill(os.getpid(), signal.SIGUSR2),
                                          worker.log)

    def on_sigusr2(signum, frame):  # the delay is over: gunicorn's graceful stop, in the main thread as it expects
        graceful_stop(signal.SIGTERM, frame)

    signal.signal(signal.SIGTERM, lambda signum, frame: drain.begin())
    signal.signal(signal.SIGUSR2, on_sigusr2)
    signal.siginterrupt(signal.SIGTERM, False)


def pre_request(worker, req) -> None:
    """While the worker drains, every response says ``Connection: close`` and its connection closes after it
    (gunicorn drops a Connection header set by the app; a request marked to close is its own way)."""
    drain = serving_worker.drain
    if drain is not None and drain.draining:
        req.must_close = True


def child_exit(server, worker) -> None:
    """In the master, after a worker exited: drop its live-gauge metric files."""
    supervisor.worker_exited(worker.pid)


def on_exit(server) -> None:
    """In the master, at exit (also when it halts): remove the metrics dir when ``serve`` made it as a temporary
    one."""
    supervisor.remove_temp_metrics_dir()
    if _failed:  # the app failed to load: the check's status, not gunicorn's 0 after its quick stop
        sys.stderr.flush()
        os._exit(_failed)
