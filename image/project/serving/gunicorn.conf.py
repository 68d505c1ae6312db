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

import stacksettings
from gunicorn import glogging

from serving import supervisor
from serving.settings import KEEPALIVE_SECONDS
from serving import worker as serving_worker
from server.logs import make_formatter, printable_path
from server.mistakes import client_mistake

_settings = supervisor.settings_or_exit("gunicorn.conf.py")

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
        super().setup(cfg)
        for handler in self.error_log.handlers:
            handler.setFormatter(make_formatter(_settings.log_format))

    def warning(self, msg, *args, **kwargs) -> None:
        if isinstance(msg, str) and msg.startswith(_INVALID_REQUEST):
            error = msg.partition(": ")[2]
            client_mistake(self.error_log, "invalid request: " + error.split(":", 1)[0][:60], "%s",
                           printable_path(msg))
        else:
            super().warning(msg, *args, **kwargs)


_INVALID_REQUEST = "Invalid request from ip="  # gunicorn.workers.base.Worker.handle_error's line (gunicorn 23)


logger_class = StackLogger


def when_ready(server) -> None:
    """Log once, in the master, what is being served and how (the real listeners: ``-b`` may override)."""
    server.log.info(
        "flask-stack serving on %s with gunicorn, %d workers x %d threads (metrics dir %s)",
        ", ".join(str(listener) for listener in server.LISTENERS),
        server.num_workers,
        server.cfg.threads,
        stacksettings.value("PROMETHEUS_MULTIPROC_DIR") or "unset: single process",
    )


def post_worker_init(worker) -> None:
    """In each worker, once the app is loaded: SIGTERM goes through ``serving.Drain``; the graceful stop after the
    delay is gunicorn's own SIGTERM handler (``worker.handle_exit``), run in the main thread as it expects."""
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


# ``serve`` loads the app in a child while gunicorn starts (``supervisor.start_app_check``): gunicorn reads this
# file before its arbiter logs a line or starts a worker, so an app that fails to load stops it here, with the
# check's one line and exit status 4.
_app_check = supervisor.await_app_check()
if _app_check:
    supervisor.remove_temp_metrics_dir()
    raise SystemExit(_app_check)
