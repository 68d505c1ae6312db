"""Serve ``server:app`` with granian (WSGI interface) instead of gunicorn: ``STACK_SERVER=granian /project/serve``.

Run as a script (``python3 granian_app.py``) it starts granian with the settings of ``gunicorn.conf.py`` (read
with ``runpy``, so both servers take the same environment variables: PORT, STACK_HOST, WEB_CONCURRENCY →
worker processes, STACK_THREADS → blocking threads per worker, STACK_GRACEFUL_TIMEOUT → workers' kill timeout,
STACK_SHUTDOWN_DELAY, LOG_LEVEL, LOG_FORMAT). Imported as a module (what each granian worker does to load
``granian_app:app``) it gives the stack's WSGI app and makes the worker's shutdown match gunicorn's:

* SIGTERM turns readiness DOWN at once (``server.health.begin_shutdown()``), the worker keeps serving for
  ``STACK_SHUTDOWN_DELAY`` seconds, then granian's own graceful stop runs. granian has no hook for this, so its
  worker signal setup (``granian._signals.set_sync_signals``, granian 2.x) is wrapped; pin granian's version.
* Buffered log lines (STACK_LOG_FLUSH_SECONDS) are written when a worker ends, as gunicorn's workers write them
  at exit.
* Crashed workers are respawned (``respawn_failed_workers``), and a watcher thread in the main process calls
  ``server.metrics.mark_process_dead(pid)`` for every worker pid in PROMETHEUS_MULTIPROC_DIR that is gone, the
  job gunicorn's ``child_exit`` hook does (granian has no such hook either).

Exit status: granian's; 1 with a one-line message for bad settings or arguments.
"""

from __future__ import annotations

import logging
import os
import re
import runpy
import signal
import sys
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
REAP_INTERVAL = 1.0  # seconds between scans of the metrics dir for dead workers
_PID_IN_NAME = re.compile(r"_(\d+)\.db$")  # prometheus_client names files <type>[_<mode>]_<pid>.db


def __getattr__(name: str):
    """``granian_app.app`` is ``server.app`` (created lazily in each worker, on first access)."""
    if name == "app":
        import server

        return server.app
    raise AttributeError(name)


# --- worker side: SIGTERM -> readiness DOWN, delay, then granian's graceful stop --------------------------------


def _shutdown_delay() -> float:
    """STACK_SHUTDOWN_DELAY as the launcher validated it (exported as STACK_SHUTDOWN_DELAY_RESOLVED)."""
    try:
        return float(os.environ.get("STACK_SHUTDOWN_DELAY_RESOLVED", "0"))
    except ValueError:
        return 0.0


def _chain_sigterm() -> None:
    """Take over the SIGTERM/SIGINT handling granian just set up in this worker.

    Python runs signal handlers in the main thread only, and a granian worker's main thread sleeps on a lock
    while Rust threads serve; a signal the kernel hands to one of those threads would wait (a second or more)
    for the main thread to wake. So the C-level handler's wakeup fd (``signal.set_wakeup_fd``) is read by a
    daemon thread instead, which acts at once: SIGTERM -> readiness DOWN, then granian's graceful stop after
    ``STACK_SHUTDOWN_DELAY`` seconds (at once on a second SIGTERM); SIGINT -> granian's stop at once.
    """
    granian_stop = signal.getsignal(signal.SIGTERM)
    delay = _shutdown_delay()
    draining = False

    def on_signal(signum: int) -> None:
        nonlocal draining
        if signum == signal.SIGINT or (signum == signal.SIGTERM and (draining or delay <= 0)):
            _begin_shutdown()
            granian_stop(signum, None)
        elif signum == signal.SIGTERM:
            draining = True
            _begin_shutdown()
            logging.getLogger("_granian").info("worker %s: readiness DOWN; stops accepting in %gs", os.getpid(), delay)
            timer = threading.Timer(delay, granian_stop, args=(signal.SIGTERM, None))
            timer.daemon = True
            timer.start()

    _start_signal_watcher(on_signal, "sigterm-watcher")
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: None)  # the watcher thread does the work


def _start_signal_watcher(on_signal, name: str) -> None:
    """Route every signal with a Python handler through ``signal.set_wakeup_fd`` to a daemon thread that calls
    ``on_signal(signum)`` at once (the C-level handler writes the signal number to a pipe; the main thread may be
    asleep in Rust and would run Python handlers late)."""
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


def _begin_shutdown() -> None:
    """Readiness DOWN in this worker (``server.health.begin_shutdown``)."""
    from server import health

    health.begin_shutdown()


def _flush_logs_at_worker_exit() -> None:
    """Write the worker's buffered log lines (``server.logs``, STACK_LOG_FLUSH_SECONDS) when it ends: a granian
    worker is a ``multiprocessing`` process, which ends with ``os._exit`` and so skips ``atexit``; its exit
    finalizers still run."""
    from multiprocessing import util

    from server.logs import flush_pending_lines

    util.Finalize(None, flush_pending_lines, exitpriority=0)


def _patch_worker_signals() -> None:
    """Wrap ``granian._signals.set_sync_signals`` (called by every WSGI worker) once per process."""
    try:
        from granian import _signals
    except ImportError:  # granian absent: module used only for its ``app``
        return
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


_patch_worker_signals()


# --- main process ------------------------------------------------------------------------------------------------


def _fail(message: str) -> None:
    """One line on stderr, exit status 1."""
    sys.stderr.write(f"granian_app: {message}\n")
    raise SystemExit(1)


def reap_dead_workers(directory: str, handled: set[int]) -> list[int]:
    """Call ``server.metrics.mark_process_dead`` for each pid named in ``directory``'s metric files whose process is
    gone and not yet in ``handled`` (updated in place). Returns the pids handled by this call."""
    from server.metrics import mark_process_dead

    try:
        names = os.listdir(directory)
    except OSError:
        return []
    pids = {int(m.group(1)) for m in map(_PID_IN_NAME.search, names) if m}
    reaped = []
    for pid in sorted(pids):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            if pid not in handled:
                mark_process_dead(pid)
                handled.add(pid)
                reaped.append(pid)
            continue
        except PermissionError:
            pass  # alive, another user's: not ours to clean
        handled.discard(pid)  # alive (again, should a new worker reuse the pid): clean it when it dies
    return reaped


def _watch_dead_workers(directory: str, stop: threading.Event) -> None:
    """Thread body: reap dead workers' live-gauge files every REAP_INTERVAL seconds until ``stop`` is set."""
    handled: set[int] = set()
    log = logging.getLogger("_granian")
    while not stop.wait(REAP_INTERVAL):
        try:
            for pid in reap_dead_workers(directory, handled):
                log.info("cleaned the metric files of dead worker %s", pid)
        except Exception as exc:  # keep watching; a failed scan only delays the cleanup
            log.warning("metrics cleanup failed: %s", exc)


def _watch_main_signals(server) -> None:
    """granian ``on_startup`` hook, in the main process: act on SIGTERM/SIGINT/SIGHUP from a wakeup-fd thread.

    granian's main thread sleeps on an Event and runs its Python signal handlers only when it wakes; a signal
    the kernel gives to another thread could wait. Meanwhile a worker that got the same signal (Ctrl-C or a
    kill of the process group reaches every process) exits, and granian would take that for a crash and
    respawn it in the middle of the shutdown. Setting granian's own flags at once closes that window. Forked
    workers drop the inherited wakeup fd and start with default SIGTERM/SIGINT until granian sets theirs.
    """
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


def _log_dictconfig(level: str, json_format: bool, json_formatter) -> dict:
    """granian's logging config with the stack's line format (or JSON lines) on stderr."""
    formatter = (
        {"()": json_formatter}
        if json_format
        else {"format": "%(asctime)s [%(levelname)s] %(message)s", "datefmt": "%Y-%m-%d %H:%M:%S"}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"generic": formatter},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "generic", "stream": "ext://sys.stderr"}},
        "loggers": {
            "_granian": {"handlers": ["console"], "level": level.upper(), "propagate": False},
            "granian.access": {"handlers": [], "level": "CRITICAL", "propagate": False},
        },
    }


def main(argv: list[str]) -> int:
    """Start granian with the stack's production settings; return its exit status."""
    if argv:
        _fail(f"unexpected arguments {' '.join(argv)!r}; granian is configured by environment variables only")
    settings = runpy.run_path(os.path.join(HERE, "gunicorn.conf.py"))  # exits 1 with one line on bad values
    try:
        from granian import Granian
        from granian.constants import Interfaces
        from granian.log import LogLevels
    except ImportError:
        _fail("granian is not installed in this environment; install it or unset STACK_SERVER")

    os.environ["STACK_SHUTDOWN_DELAY_RESOLVED"] = repr(settings["shutdown_delay"])
    level = settings["loglevel"]
    server = Granian(
        "granian_app:app",
        address=settings["host"],
        port=settings["port"],
        interface=Interfaces.WSGI,
        workers=settings["workers"],
        blocking_threads=settings["threads"],
        respawn_failed_workers=True,
        workers_kill_timeout=settings["graceful_timeout"],
        log_level=LogLevels(level),
        log_dictconfig=_log_dictconfig(level, settings["_json_logs"], settings["JsonFormatter"]),
        log_access=False,  # the runtime writes the access line
        websockets=False,
    )

    server.on_startup(lambda: _watch_main_signals(server))
    metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    stop = threading.Event()
    if metrics_dir:
        threading.Thread(target=_watch_dead_workers, args=(metrics_dir, stop), name="metrics-reaper", daemon=True).start()
    try:
        server.serve()
    finally:
        stop.set()
        settings["_remove_temp_metrics_dir"]()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
