"""granian's mapping of the stack's serving settings (``serving``) onto granian's options and hooks.

``/project/serve`` with STACK_SERVER=granian runs ``python3 granian_app.py`` (``main``), which calls ``run_granian``: granian's WSGI interface, WEB_CONCURRENCY worker
processes with STACK_THREADS blocking threads each, STACK_GRACEFUL_TIMEOUT as the workers' kill timeout, the
stack's log format. What granian has no option or hook for is added here:

* Each worker's SIGTERM goes through ``serving.worker.Drain`` (readiness DOWN, ``Connection: close`` while
  draining, granian's own graceful stop after STACK_SHUTDOWN_DELAY); see ``_patch_worker_signals``.
* Each worker serves ``serving.worker.production_app()``, as gunicorn's do.
* Buffered log lines are written when a worker ends; crashed workers are respawned, and a watcher thread in the
  main process drops the live-gauge metric files of every worker that is gone (gunicorn's ``child_exit`` job).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from pathlib import Path

import stacksettings
from serving import appcheck, reaper, supervisor
from serving import worker as serving_worker

# Seconds a worker keeps serving after SIGTERM even with STACK_SHUTDOWN_DELAY=0: granian's stop closes idle
# kept-alive connections at once, so each gets its ``Connection: close`` answer first (gunicorn lingers 2 s itself).
STOP_LINGER = 1.0


# --- worker side ------------------------------------------------------------------------------------------------


def _load_target():
    """granian's target loader, in each worker: the production app (``serving.worker.production_app``), loaded
    now."""
    return serving_worker.production_app()


def _patch_worker_signals() -> None:
    """Chain each worker's SIGTERM to ``serving.Drain``.

    granian 2.x has no public worker hook: a WSGI worker calls ``granian._signals.set_sync_signals()`` (private)
    right before serving and stops at once on SIGTERM. So that function is wrapped (once per process, before the
    workers fork) to install ours after granian's; tests/reliability/test_granian_hooks.py fails when granian no
    longer calls it this way (pin granian's version).
    """
    from granian import _signals

    original = _signals.set_sync_signals
    if getattr(original, "_stack_chained", False):
        return

    def set_sync_signals():
        event = original()
        _chain_sigterm()
        _flush_logs_at_worker_exit()
        return event

    set_sync_signals._stack_chained = True
    _signals.set_sync_signals = set_sync_signals


def _chain_sigterm() -> None:
    """Take over the SIGTERM/SIGINT handling granian just set up in this worker: SIGTERM -> ``Drain.begin``
    (granian's stop after the delay), SIGINT -> granian's stop at once.

    Python runs signal handlers in the main thread only, and a granian worker's main thread sleeps on a lock while
    Rust threads serve; so the C-level handler's wakeup fd (``signal.set_wakeup_fd``) is read by a daemon thread
    instead, which acts at once."""
    granian_stop = signal.getsignal(signal.SIGTERM)
    settings = supervisor.serving_settings()
    drain = serving_worker.drain = serving_worker.Drain(settings.shutdown_delay, lambda: granian_stop(signal.SIGTERM, None),
                                          logging.getLogger("_granian"), linger=STOP_LINGER)

    def on_signal(signum: int) -> None:
        if signum == signal.SIGINT:
            granian_stop(signum, None)
        elif signum == signal.SIGTERM:
            drain.begin()

    _start_signal_watcher(on_signal, "sigterm-watcher")
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: None)  # the watcher thread does the work


def _start_signal_watcher(on_signal, name: str) -> None:
    """Route every signal with a Python handler through ``signal.set_wakeup_fd`` to a daemon thread that calls
    ``on_signal(signum)`` at once."""
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)

    def watch() -> None:
        while True:
            try:
                data = os.read(read_fd, 64)
            except InterruptedError:
                continue
            if not data:
                return
            for signum in data:
                on_signal(signum)

    threading.Thread(target=watch, name=name, daemon=True).start()


def _flush_logs_at_worker_exit() -> None:
    """Write the worker's batched request metrics and buffered log lines when it ends: a granian worker is a
    ``multiprocessing`` process, which ends with ``os._exit`` and so skips ``atexit``; its exit finalizers still run
    (the higher ``exitpriority`` first)."""
    from multiprocessing import util

    from server.logs import flush_pending_lines
    from server.request_batch import flush_pending_requests

    util.Finalize(None, flush_pending_requests, exitpriority=1)
    util.Finalize(None, flush_pending_lines, exitpriority=0)


# --- main process ------------------------------------------------------------------------------------------------


def _watch_main_signals(server) -> None:
    """granian ``on_startup`` hook, in the main process: act on SIGTERM/SIGINT/SIGHUP from a wakeup-fd thread
    (granian's main thread sleeps on an Event and would run its Python handlers late; meanwhile a worker that got
    the same signal exits and granian would respawn it mid-shutdown). Forked workers drop the inherited wakeup fd
    and start with default SIGTERM/SIGINT until granian sets theirs."""
    os.register_at_fork(after_in_child=_reset_inherited_signals)

    def on_signal(signum: int) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT):
            server.signal_handler_interrupt()
        elif signum == signal.SIGHUP:
            server.signal_handler_reload()

    _start_signal_watcher(on_signal, "signal-watcher")


def _reset_inherited_signals() -> None:
    """In a freshly forked worker: no wakeup fd of the main process, default SIGTERM/SIGINT (until granian's)."""
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)


# granian warns when its workers outnumber the host's CPUs (``multiprocessing.cpu_count``); the stack's default,
# one per usable CPU plus one and at least two (``serving.settings.default_workers``, which says why), always
# does, so the warning is dropped when the count is that default. tests/container's start test fails when granian
# words it otherwise.
WORKERS_WARNING = "Configured number of workers appears to be higher than the amount of CPU cores"


class _DropWorkersWarning(logging.Filter):
    """Drops granian's ``WORKERS_WARNING`` record (used only while the worker count is the stack's default)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(WORKERS_WARNING)


def _log_dictconfig(level: str, fmt: str, default_workers: bool = False) -> dict:
    """granian's logging config: the stack's line format (``server.logs.make_formatter``) on stderr; with
    ``default_workers`` (WEB_CONCURRENCY unset) without granian's ``WORKERS_WARNING``."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"generic": {"()": "server.logs.make_formatter", "fmt": fmt}},
        "filters": {"workers": {"()": _DropWorkersWarning}} if default_workers else {},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "generic", "stream": "ext://sys.stderr",
                                 "filters": ["workers"] if default_workers else []}},
        "loggers": {
            "_granian": {"handlers": ["console"], "level": level, "propagate": False},
            "granian.access": {"handlers": [], "level": "CRITICAL", "propagate": False},
        },
    }


def run_granian(settings) -> int:
    """Serve with granian and ``settings`` (``serving.settings.ServingSettings``); return the exit status.

    Raises:
        supervisor.ServingError: granian is not installed.
    """
    try:
        from granian import Granian
        from granian.constants import Interfaces
        from granian.http import HTTP1Settings
        from granian.log import LogLevels
    except ImportError:
        raise supervisor.ServingError("granian is not installed in this environment; add it or unset STACK_SERVER") from None
    _patch_worker_signals()
    # Behind the nginx front (serving.front) a unix socket instead of 127.0.0.1:PORT: nginx's proxying costs less
    # kernel time per request than over loopback TCP. Run as root, nginx's workers are `nobody`: they may connect.
    app_socket = stacksettings.value("STACK_APP_SOCKET")
    server = Granian(
        "serving.worker:production_app",  # for granian's messages; the workers load _load_target
        address=settings.host,
        port=settings.port,
        uds=Path(app_socket) if app_socket else None,
        uds_permissions=0o666 if app_socket and os.geteuid() == 0 else None,
        interface=Interfaces.WSGI,
        workers=settings.workers,
        blocking_threads=settings.threads,
        http1_settings=HTTP1Settings(header_read_timeout=10_000),
        respawn_failed_workers=True,
        workers_kill_timeout=settings.graceful_timeout,
        log_level=LogLevels(settings.log_level.lower()),
        log_dictconfig=_log_dictconfig(settings.log_level, settings.log_format, settings.workers_default),
        log_access=False,  # the runtime writes the access line
        websockets=False,
    )
    metrics_dir = stacksettings.value("PROMETHEUS_MULTIPROC_DIR")
    server.on_startup(lambda: _watch_main_signals(server))
    server.on_startup(lambda: logging.getLogger("_granian").info(
        "flask-stack serving on %s with granian, %d workers x %d threads (metrics dir %s)",
        f"unix:{app_socket}" if app_socket else f"http://{settings.bind}",
        settings.workers, settings.threads, metrics_dir or "unset: single process"))
    stop = threading.Event()
    if metrics_dir:
        threading.Thread(target=reaper.watch_dead_workers, args=(metrics_dir, stop, logging.getLogger("_granian")),
                         name="metrics-reaper", daemon=True).start()
    failed = _beside_app_check(server)
    try:
        server.serve(target_loader=_load_target, wrap_loader=False)
    except SystemExit as exc:
        return failed[0] or (exc.code if isinstance(exc.code, int) else 1)
    finally:
        stop.set()
    return failed[0]


def _beside_app_check(server) -> list[int]:
    """``serve``'s app load check (``serving.appcheck``) runs beside granian: the workers (forked) load the app at
    once (their failure waits for the check's verdict, ``serving.worker._load_app``), the main process's lines wait
    for the verdict, and when the app fails to load granian stops; returns a one-item list holding the check's
    status once it failed (else 0), for the exit status."""
    failed = [0]
    check = appcheck.take()
    if check is None:
        return failed
    serving_worker.app_check = check
    logger = logging.getLogger("_granian")
    held = appcheck.HeldLines(logger)
    logger.addFilter(held)
    os.register_at_fork(after_in_child=lambda: logger.removeFilter(held))  # a worker's lines are its own

    def wait() -> None:
        status = appcheck.verdict(check)
        held.settle(not status)
        if status:
            failed[0] = status
            server.signal_handler_interrupt()

    server.on_startup(lambda: threading.Thread(target=wait, name="app-check", daemon=True).start())
    return failed


def main() -> int:
    """The granian master (what ``serve`` with STACK_SERVER=granian becomes once the serving layer validated the
    settings and started the app check; ``python3 granian_app.py`` behind the front): serve, then remove a temporary
    metrics dir."""
    return supervisor.run_master("granian_app", run_granian)


if __name__ == "__main__":
    sys.exit(main())
