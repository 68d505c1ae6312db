"""The production serving layer: one place for what every production server of the stack does alike.

``/project/serve`` (the deployable image's CMD, and ``flask-stack run --production``) runs ``main`` here, in the
supervising process, which never imports Flask, flasgger or prometheus_client (the app is checked in a child,
dead workers' metric files are folded by one, and the workers import the runtime); ``main`` then

1. resolves the serving settings once (``serving.settings.load_serving_settings``: STACK_SERVER, PORT, STACK_HOST,
   WEB_CONCURRENCY, STACK_THREADS, STACK_WORKER_TIMEOUT, STACK_GRACEFUL_TIMEOUT, STACK_SHUTDOWN_DELAY, STACK_FRONT,
   LOG_LEVEL, LOG_FORMAT, STACK_CONTROL_SOCKET) and the runtime's (STACK_MAX_CONTENT_LENGTH...): a bad value is one line on
   stderr and exit status 2;
2. owns the metrics directory's life cycle: PROMETHEUS_MULTIPROC_DIR is checked and its stale ``*.db`` files are
   wiped; a temporary one (made by ``serve`` before Python starts, as prometheus_client requires) is removed when
   this process exits, whatever the exit;
3. loads the app once in a short-lived child process (``serving.appcheck``) while the server starts: an app that
   fails to load is one line naming file and line (``server.app``'s message) and exit status 4, for any worker
   count and any server (the server's workers load the app beside it, and its master, or uWSGI's supervisor,
   holds its own lines until the check is done);
4. runs the chosen server through its thin mapping of these settings onto its own options and hooks
   (``gunicorn.conf.py``; ``granian_app.py``; ``uwsgi_app.py``, which supervises uWSGI; all in this package), in
   this very process (``run_server``: it becomes gunicorn's or granian's master, or uWSGI's supervisor, with no
   second interpreter to start); with STACK_FRONT=nginx (the deployable image's default) this process stays, with
   nginx in front of that server (``serving.front``).

Every server's worker handles SIGTERM through ``serving.worker.Drain``: readiness DOWN at once, ``Connection: close`` on every
response (so clients that hold connections move away), new connections accepted until STACK_SHUTDOWN_DELAY
seconds are over, then the server's own graceful stop (finish requests in flight) within STACK_GRACEFUL_TIMEOUT.

Exit status: the server's (0 after SIGTERM); 2 bad setting; 4 the app failed to load.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from typing import Callable

import stacksettings
from server.exceptions import SettingsError, StackError
from server.settings import load_settings

from . import appcheck
from .settings import ServingSettings, load_serving_settings

EXIT_BAD_SETTING = 2
EXIT_APP_LOAD = 4  # gunicorn's APP_LOAD_ERROR, which stops its arbiter instead of respawning workers
HERE = os.path.dirname(os.path.abspath(__file__))  # /project/serving: gunicorn.conf.py, granian_app.py, uwsgi_app.py
PROJECT = os.path.dirname(HERE)  # /project: the packages server and serving
FOLD_TIMEOUT = 30.0  # seconds: the longest a dead worker's metric files take to fold
log = logging.getLogger("serving")

_settings: ServingSettings | None = None
_owner_pid: int | None = None  # the process that removes a temporary metrics dir (not its forked workers)


class ServingError(StackError):
    """The server cannot start (``exit_status`` tells why); ``str(err)`` is one line."""

    def __init__(self, message: str, exit_status: int = EXIT_BAD_SETTING):
        super().__init__(message)
        self.exit_status = exit_status


def serving_settings() -> ServingSettings:
    """The serving settings, resolved on first call in this process (environment only).

    Raises:
        SettingsError: a value is unusable.
    """
    global _settings
    if _settings is None:
        _settings = load_serving_settings()
    return _settings


def settings_or_exit(prefix: str) -> ServingSettings:
    """``serving_settings()``, or one line ``<prefix>: <error>`` on stderr and ``SystemExit(2)`` (for server
    config files run directly, e.g. ``gunicorn -c gunicorn.conf.py server:app``)."""
    try:
        return serving_settings()
    except SettingsError as exc:
        sys.stderr.write(f"{prefix}: {exc}\n")
        remove_temp_metrics_dir()
        raise SystemExit(EXIT_BAD_SETTING) from None


# --- environment and the metrics directory -------------------------------------------------------------------


def prepare_environment() -> None:
    """Production environment for the workers: the debugger off whatever STACK_DEBUG says (one line if it was
    on), the user's ``production`` profile unless STACK_PROFILE says another, buffered INFO lines
    (STACK_LOG_FLUSH_SECONDS 0.25 unless set), the runtime's settings validated, the metrics directory ready.

    Raises:
        SettingsError: a runtime setting is unusable.
        ServingError: the metrics directory cannot be used.
    """
    if (stacksettings.raw("STACK_DEBUG") or "0").strip() not in ("", "0"):  # whatever it is, it is ignored
        sys.stderr.write("serve: STACK_DEBUG is ignored in production; the debugger stays off\n")
    os.environ["STACK_DEBUG"] = "0"
    os.environ["FLASK_DEBUG"] = "0"
    stacksettings.set_default("STACK_PROFILE", "production")  # the user's settings.yaml profile (server.userconfig)
    stacksettings.set_default("STACK_LOG_FLUSH_SECONDS", "0.25")
    load_settings()
    prepare_metrics_dir()


def prepare_metrics_dir() -> str | None:
    """Check PROMETHEUS_MULTIPROC_DIR (created when missing) and wipe its stale ``*.db`` files, as prometheus_client's
    multiprocess mode requires; other files are left alone (the dir may be an ``emptyDir`` at /tmp). Returns it.

    Raises:
        ServingError: it cannot be created, written or wiped.
    """
    global _owner_pid
    directory = stacksettings.value("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return None
    if _made_by_serve() and _owner_pid is None:
        _owner_pid = os.getpid()
    try:
        os.makedirs(directory, exist_ok=True)
        if not os.access(directory, os.W_OK):
            raise ServingError(f"PROMETHEUS_MULTIPROC_DIR={directory} is not writable")
        for name in os.listdir(directory):
            if name.endswith(".db"):
                os.unlink(os.path.join(directory, name))
    except OSError as exc:
        raise ServingError(f"PROMETHEUS_MULTIPROC_DIR={directory} cannot be used: {exc.strerror or exc}") from None
    return directory


def _made_by_serve() -> bool:
    """STACK_METRICS_DIR_TEMP=1: ``serve`` made PROMETHEUS_MULTIPROC_DIR as a temporary dir (internal setting)."""
    try:
        return bool(stacksettings.value("STACK_METRICS_DIR_TEMP"))
    except stacksettings.SettingsError:
        return False


def remove_temp_metrics_dir() -> None:
    """Remove PROMETHEUS_MULTIPROC_DIR when ``serve`` made it as a temporary dir (STACK_METRICS_DIR_TEMP=1), from
    the process that owns it only (a forked worker leaving is no reason)."""
    directory = stacksettings.value("PROMETHEUS_MULTIPROC_DIR")
    if not directory or not _made_by_serve():
        return
    if _owner_pid is not None and _owner_pid != os.getpid():
        return
    shutil.rmtree(directory, ignore_errors=True)


def worker_exited(pid: int) -> None:
    """A worker ``pid`` is gone (normally, crashed or killed): drop its live-gauge files (prometheus_client
    multiprocess protocol) and fold its counters and histograms into the folded files (totals kept, see
    ``server.metric_files``), in a short-lived ``python -m server.metric_files`` process (this one never imports
    prometheus_client). Call it before a replacement worker is started where the server allows (gunicorn's
    ``child_exit``). Waits at most ``FOLD_TIMEOUT`` seconds. Never raises (logs a warning instead)."""
    directory = stacksettings.value("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return
    path = os.pathsep.join(p for p in (PROJECT, os.environ.get("PYTHONPATH", "")) if p)
    try:
        # subprocess tolerates a server that reaps every child itself (gunicorn's arbiter): returncode 0 then
        done = subprocess.run([sys.executable, "-P", "-m", "server.metric_files", directory, str(pid)],
                              env={**os.environ, "PYTHONPATH": path}, capture_output=True, text=True,
                              timeout=FOLD_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("could not clean the metric files of worker %s: %s", pid, exc)
        return
    if done.returncode:
        reason = (done.stderr.strip().splitlines() or ["exit status %d" % done.returncode])[-1]
        log.warning("could not clean the metric files of worker %s: %s", pid, reason)


# --- the app loads, or one line and exit 4 ------------------------------------------------------------------


def check_app_loads() -> int:
    """Load the app in a forked process (``serving.appcheck``) and wait for its verdict: 0 when it loads (or the
    check was killed before it knew), 4 (its one line written) when it does not."""
    fds = appcheck.parse(appcheck.start())
    try:
        return appcheck.verdict(fds)
    finally:
        appcheck.close(fds)


# --- entry point ---------------------------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    """Validate, prepare, check the app, then run the configured server (see the module docstring); return the exit
    status. ``argv``: extra server options (gunicorn's or uWSGI's; granian takes none)."""
    try:
        settings = serving_settings()
        prepare_environment()
        if settings.server == "granian" and argv:
            raise ServingError(f"unexpected arguments {' '.join(argv)!r}; granian is configured by environment "
                               "variables only")
        command = server_command(settings.server, argv)
        if settings.front == "nginx":  # the server is nginx's sibling, not this process: the check comes first
            status = check_app_loads()
            if status:
                return status
            from .front import run_front

            return run_front(settings, command)
        # the check runs while the server starts, at a lower priority: the workers load the app beside it and the
        # server's master (uWSGI's: its supervisor) holds its lines until the verdict
        os.environ[appcheck.ENV] = appcheck.start(nice=10, beside_workers=True)
        return run_server(settings.server, argv)
    except StackError as exc:  # SettingsError, ServingError, FrontError
        sys.stderr.write(f"serve: {exc}\n")
        return getattr(exc, "exit_status", EXIT_BAD_SETTING)
    finally:
        remove_temp_metrics_dir()


def run_master(name: str, serve: Callable[[ServingSettings], int]) -> int:
    """The body of a server's master process that ``main`` started (``granian_app.py``, ``uwsgi_app.py``):
    take over the metrics dir, ``serve(settings)`` (which calls ``appcheck.await_verdict`` before its workers start
    and returns its status when not 0) and return its exit status; a ``StackError`` is one line
    ``<name>: <error>`` and status 2; a temporary metrics dir is removed whatever the exit."""
    try:
        settings = serving_settings()
        prepare_metrics_dir()  # this process owns the dir from now on
        return serve(settings)
    except StackError as exc:
        sys.stderr.write(f"{name}: {exc}\n")
        return EXIT_BAD_SETTING
    finally:
        appcheck.await_verdict()  # ``serve`` failed before it waited for the check: no child left behind
        remove_temp_metrics_dir()


def run_server(server: str, argv: list[str]) -> int:
    """Become the server's master in this process, with the same arguments ``server_command`` gives a separate
    process (a second interpreter would cost about 60 ms before the server starts, and import again what this
    one has): gunicorn through its console entry point ``gunicorn.app.wsgiapp.run`` (which ends in
    ``SystemExit``), granian through ``granian_app.main``, uWSGI through ``uwsgi_app.main``. Returns the exit
    status. The process is named after the server (``gunicorn``, ``granian``, ``uwsgi_app``), since its command
    line stays ``serve``'s; its forked workers inherit the name."""
    name_process("uwsgi_app" if server == "uwsgi" else server)
    if server == "gunicorn":
        from gunicorn.app.wsgiapp import run

        sys.argv = ["gunicorn", *_gunicorn_args(argv)]
        run(prog="gunicorn")
        return 0  # pragma: no cover - gunicorn's arbiter ends in SystemExit
    if server == "granian":
        from . import granian_app

        return granian_app.main()
    from . import uwsgi_app

    return uwsgi_app.main(argv)


def server_command(server: str, argv: list[str]) -> list[str]:
    """The command of the server's master: ``python3 -m gunicorn --config gunicorn.conf.py [argv]
    serving.worker:app``, ``python3 granian_app.py`` or ``python3 uwsgi_app.py [argv]``. With STACK_FRONT=nginx
    ``main`` starts it behind nginx; without, ``run_server`` does the same in this process. From then on the
    server's mapping removes a temporary metrics dir at exit (gunicorn.conf.py's ``on_exit``, the others' ``main``).

    Raises:
        ServingError: the server is not installed in this Python environment.
    """
    import importlib.util

    if importlib.util.find_spec("pyuwsgi" if server == "uwsgi" else server) is None:
        raise ServingError(f"{server} is not installed in this environment; install it or set STACK_SERVER")
    if server == "granian":
        return [sys.executable, "-P", os.path.join(HERE, "granian_app.py")]
    if server == "uwsgi":
        return [sys.executable, "-P", os.path.join(HERE, "uwsgi_app.py"), *argv]
    return [sys.executable, "-P", "-m", "gunicorn", *_gunicorn_args(argv)]


def _gunicorn_args(argv: list[str]) -> list[str]:
    """gunicorn's arguments: this package's config file, ``argv`` (extra options), the app ``serving.worker:app``."""
    return ["--config", os.path.join(HERE, "gunicorn.conf.py"), *argv, "serving.worker:app"]


def name_process(name: str) -> None:
    """Name this process ``name`` (``/proc/self/comm``, at most 15 bytes: what ``ps`` and ``top`` show); nothing
    when it cannot be written."""
    try:
        with open("/proc/self/comm", "w", encoding="ascii") as fh:
            fh.write(name)
    except OSError:
        pass


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
