"""Production configuration of gunicorn for the python-flask stack (``gunicorn -c gunicorn.conf.py server:app``).

``/project/serve`` runs gunicorn with this file; the granian launcher (``granian_app.py``) reads the same values
(``workers``, ``threads``, ``bind``, ``timeout``, ``graceful_timeout``, ``STACK_SHUTDOWN_DELAY``) from it, so both
servers behave alike. Every value comes from the environment, so the image never needs editing:

=========================  ===================================  ==============================================
Variable                   Default                              Meaning
=========================  ===================================  ==============================================
PORT                       8080                                 TCP port to listen on
STACK_HOST                 0.0.0.0                              address to listen on (tests use 127.0.0.1)
WEB_CONCURRENCY            usable CPUs + 1 (at least 2)         worker processes (see ``default_workers``)
STACK_THREADS              4                                    threads per worker (gthread worker class)
STACK_WORKER_TIMEOUT       30                                   seconds a silent worker lives before a restart
STACK_GRACEFUL_TIMEOUT     25                                   seconds from SIGTERM to SIGKILL of workers
STACK_SHUTDOWN_DELAY       5 in Kubernetes, else 0              seconds a worker keeps accepting after SIGTERM
                                                                with readiness already DOWN (endpoint removal)
STACK_CONTROL_SOCKET       (unset: control socket off)          path of gunicorn's control socket (gunicornc)
LOG_LEVEL                  INFO                                 gunicorn's own log level
LOG_FORMAT                 text                                 text or json, same line format as the runtime
GUNICORN_CMD_ARGS          (unset)                              any gunicorn option; overrides this file
=========================  ===================================  ==============================================

Shutdown (SIGTERM to the master, as ``podman stop`` and the kubelet send it): the master closes its copy of the
listening socket and sends SIGTERM to every worker. A worker marks readiness DOWN at once
(``server.health.begin_shutdown()``), keeps serving for ``STACK_SHUTDOWN_DELAY`` seconds so load balancers see
the DOWN and stop routing, then stops accepting and finishes the requests in flight. The master SIGKILLs workers
still running ``STACK_GRACEFUL_TIMEOUT`` seconds after the SIGTERM, so keep the delay plus the longest request
below it, and Kubernetes' ``terminationGracePeriodSeconds`` above it. SIGINT (Ctrl-C) and SIGQUIT stop at once.

Bad values (a port that is not a number, a negative timeout) stop gunicorn with a one-line message and exit 1.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import sys

from gunicorn import glogging

# --- environment parsing --------------------------------------------------------------------------------------


def _remove_temp_metrics_dir() -> None:
    """Remove PROMETHEUS_MULTIPROC_DIR when STACK_METRICS_DIR_TEMP=1 (set by ``serve`` for the dir it made)."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory and os.environ.get("STACK_METRICS_DIR_TEMP") == "1":
        import shutil

        shutil.rmtree(directory, ignore_errors=True)


def _fail(message: str) -> None:
    """Write one line to stderr and stop the server with exit status 1 (gunicorn reports no traceback)."""
    sys.stderr.write(f"gunicorn.conf.py: {message}\n")
    _remove_temp_metrics_dir()
    raise SystemExit(1)


def _env_number(name: str, default: float, *, minimum: float = 0, integer: bool = False) -> float:
    """Return env var ``name`` as a number (int when ``integer``), ``default`` when unset or empty.

    Exits with a one-line message when the value is not a number or is below ``minimum``.
    """
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        kind = "a whole number" if integer else "a number"
        _fail(f"{name}={raw!r} is not {kind}; unset it or give e.g. {name}={default}")
    if value < minimum:
        _fail(f"{name}={raw!r} must be at least {minimum}")
    return value


def usable_cpus() -> int:
    """Return how many CPUs this process may really use: the CPU affinity mask, further limited by a cgroup v2
    quota (``/sys/fs/cgroup/cpu.max``, e.g. ``200000 100000`` = 2 CPUs, set by ``--cpus`` or Kubernetes
    ``resources.limits.cpu``), rounded up, at least 1."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    try:
        with open("/sys/fs/cgroup/cpu.max", encoding="ascii") as fh:
            quota, period = fh.read().split()[:2]
        if quota != "max":
            cpus = min(cpus, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


def default_workers(cpus: int) -> int:
    """Return the worker count used when WEB_CONCURRENCY is unset: ``max(2, cpus + 1)``.

    Each worker runs Python code on one CPU at a time (the GIL), so one worker per usable CPU keeps every CPU
    busy; the extra worker covers the time workers spend blocked, and each worker's ``STACK_THREADS`` threads
    overlap I/O waits. Two at least, so one crashed or busy worker never leaves the service unanswered. Unlike
    gunicorn's classic ``2 * cpus + 1`` (sync workers with one request each), this keeps memory per CPU low.
    """
    return max(2, cpus + 1)


def _bind_address(host: str, port: int) -> str:
    """Return gunicorn's ``HOST:PORT`` bind string, bracketing IPv6 literals."""
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def _shutdown_delay_default() -> float:
    """5 seconds inside Kubernetes (the kubelet sets KUBERNETES_SERVICE_HOST in every pod), else 0."""
    return 5.0 if os.environ.get("KUBERNETES_SERVICE_HOST") else 0.0


# --- settings (gunicorn reads these module globals) ---------------------------------------------------------

port = int(_env_number("PORT", 8080, minimum=1, integer=True))
if port > 65535:
    _fail(f"PORT={port} is not a TCP port (1-65535)")
host = os.environ.get("STACK_HOST", "").strip() or "0.0.0.0"
bind = [_bind_address(host, port)]

workers = int(_env_number("WEB_CONCURRENCY", 0, minimum=1, integer=True)) or default_workers(usable_cpus())
threads = int(_env_number("STACK_THREADS", 4, minimum=1, integer=True))
worker_class = "gthread"

timeout = int(_env_number("STACK_WORKER_TIMEOUT", 30, minimum=1, integer=True))
graceful_timeout = int(_env_number("STACK_GRACEFUL_TIMEOUT", 25, minimum=1, integer=True))
shutdown_delay = _env_number("STACK_SHUTDOWN_DELAY", _shutdown_delay_default())
if shutdown_delay >= graceful_timeout:
    _fail(
        f"STACK_SHUTDOWN_DELAY={shutdown_delay:g} must be below STACK_GRACEFUL_TIMEOUT={graceful_timeout} "
        "(workers still running at the graceful timeout are killed)"
    )
keepalive = 5  # seconds; above the usual 2-4 s of health probes, below load balancers' idle timeouts (60 s)

# The runtime writes one access line per request in the stack's format, so gunicorn's own access log stays off.
accesslog = None
errorlog = "-"
loglevel = (os.environ.get("LOG_LEVEL", "").strip() or "info").lower()
if loglevel not in ("debug", "info", "warning", "error", "critical"):
    _fail(f"LOG_LEVEL={loglevel!r} is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
capture_output = False

# The control socket (gunicorn >= 25.1, for ``gunicornc``) defaults to a path under $HOME, which is read-only
# in the deployable image; it is off unless STACK_CONTROL_SOCKET names a writable path.
_control = os.environ.get("STACK_CONTROL_SOCKET", "").strip()
if _control:
    control_socket = _control
else:
    control_socket_disable = True

# Workers touch a heartbeat file every few seconds; on tmpfs that never waits on a disk (docker/podman give a
# 64 MB /dev/shm). Without /dev/shm gunicorn's default (the system temp dir) is kept.
if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
    worker_tmp_dir = "/dev/shm"

proc_name = "flask-stack"

# Production never runs Flask's debugger or debugpy, whatever the environment says. Set before any worker is
# forked, so every worker (and the runtime's create_app) sees it.
if os.environ.get("STACK_DEBUG", "0").strip() not in ("", "0"):
    sys.stderr.write("gunicorn.conf.py: STACK_DEBUG is ignored in production; the debugger stays off\n")
os.environ["STACK_DEBUG"] = "0"
os.environ["FLASK_DEBUG"] = "0"


def _log_format() -> str:
    """``text`` or ``json`` from LOG_FORMAT; exits with a one-line message on anything else."""
    value = (os.environ.get("LOG_FORMAT", "").strip() or "text").lower()
    if value not in ("text", "json"):
        _fail(f"LOG_FORMAT={value!r} is not text or json")
    return value


# gunicorn's own messages (boot, worker exits) in the runtime's line format: ``YYYY-MM-DD HH:MM:SS [LEVEL] msg``,
# or one JSON object per line when LOG_FORMAT=json. A logger class rather than ``logconfig_dict``: that one would
# also switch gunicorn's access logging on (formatted, then dropped, on every request) and reconfigure the root logger.
_json_logs = _log_format() == "json"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (``YYYY-MM-DDTHH:MM:SS``), ``level``, ``logger``, ``message``."""

    def format(self, record: logging.LogRecord) -> str:
        import json

        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(entry)


class StackLogger(glogging.Logger):
    """gunicorn's logger with the stack's error-log line format; access logging stays off (``accesslog = None``)."""

    error_fmt = "%(asctime)s [%(levelname)s] %(message)s"
    datefmt = "%Y-%m-%d %H:%M:%S"

    def setup(self, cfg) -> None:
        super().setup(cfg)
        if _json_logs:
            for handler in self.error_log.handlers:
                handler.setFormatter(JsonFormatter())


logger_class = StackLogger

# --- server hooks -------------------------------------------------------------------------------------------

def when_ready(server) -> None:
    """Log once, in the master, what is being served and how (the real listeners: ``-b`` may override)."""
    server.log.info(
        "flask-stack serving on %s with %d workers x %d threads (metrics dir %s)",
        ", ".join(str(listener) for listener in server.LISTENERS),
        server.num_workers,
        server.cfg.threads,
        os.environ.get("PROMETHEUS_MULTIPROC_DIR") or "unset: single process",
    )


def post_worker_init(worker) -> None:
    """In each worker, once the app is loaded: chain SIGTERM so readiness turns DOWN before gunicorn's graceful
    stop, which starts ``shutdown_delay`` seconds later (a second SIGTERM skips the rest of the delay)."""
    from server import health

    graceful_stop = signal.getsignal(signal.SIGTERM)  # gunicorn's worker.handle_exit
    state = {"draining": False}

    def on_sigterm(signum, frame):
        if state["draining"] or shutdown_delay <= 0:
            health.begin_shutdown()
            graceful_stop(signum, frame)
            return
        state["draining"] = True
        health.begin_shutdown()
        worker.log.info("worker %s: readiness DOWN; stops accepting in %gs", os.getpid(), shutdown_delay)
        _resignal_later(shutdown_delay)

    signal.signal(signal.SIGTERM, on_sigterm)
    signal.siginterrupt(signal.SIGTERM, False)


def _resignal_later(delay: float) -> None:
    """Send SIGTERM to this process again after ``delay`` seconds (from a daemon thread), so gunicorn's own
    handler then runs in the main thread as it expects."""
    import threading

    pid = os.getpid()
    timer = threading.Timer(delay, os.kill, args=(pid, signal.SIGTERM))
    timer.daemon = True
    timer.start()


def child_exit(server, worker) -> None:
    """In the master, after a worker exited (normally, crashed or killed): drop the dead worker's live-gauge files
    from PROMETHEUS_MULTIPROC_DIR (prometheus_client multiprocess protocol); counters keep their totals."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    try:
        from server.metrics import mark_process_dead

        mark_process_dead(worker.pid)
    except Exception as exc:  # never let metrics bookkeeping take the master down
        server.log.warning("could not clean metrics of worker %s: %s", worker.pid, exc)


def on_exit(server) -> None:
    """In the master, at exit: remove the metrics dir when ``serve`` made it as a temporary one."""
    _remove_temp_metrics_dir()
