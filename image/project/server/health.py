"""Health checks: liveness, readiness and startup probes (Kubernetes), per app, with timeouts.

User API (no import of ``server`` needed for the mapping form)::

    # in the user's __init__.py
    liveness_checks = {"worker-loop": lambda: loop.is_alive()}
    readiness_checks = {"database": ping_db}          # also: startup_checks = {...}

    from server.health import readiness_check
    @readiness_check("cache", timeout=2.0)            # only marks the function; create_app collects it
    def cache_ok():
        return {"latency_ms": 3}                      # truthy str/dict = UP with that detail

A check is a function without arguments, run in the app context in a worker thread with a timeout (default
STACK_HEALTH_TIMEOUT = 1 s). Result: raising, returning a falsy value or timing out makes its group DOWN with a short
reason (``"ConnectionError: refused"``, ``"timed out after 1s"``); a dict with ``"status": "DOWN"`` is DOWN too.
A check still running from an earlier probe is not started again: later probes share that run and wait only
until its deadline (start + timeout); a run already past its deadline answers DOWN at once ("still running after
3.2s"), so a hung check holds one thread and no probe waits on it twice. At most STACK_HEALTH_THREADS checks run
at once per app (beyond that: DOWN, "capacity exhausted"). Threads are daemons, so a hung check never blocks
process exit.

Built-in checks: ``started`` (readiness, startup; UP once ``create_app`` has finished building the app) and
``shutdown`` (readiness; DOWN once ``begin_shutdown()`` ran in this process, e.g. on SIGTERM, so traffic drains).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from dataclasses import dataclass
from types import FunctionType
from typing import Any, Callable, Iterable, Mapping

from flask import Flask
from oneline import reason

log = logging.getLogger(__name__)

LIVENESS, READINESS, STARTUP = "liveness", "readiness", "startup"
GROUPS = (LIVENESS, READINESS, STARTUP)
#: Module attribute names holding ``{name: function}`` mappings, by group.
MAPPING_NAMES = {LIVENESS: "liveness_checks", READINESS: "readiness_checks", STARTUP: "startup_checks"}
_MARK = "__stack_health_checks__"
_DOWN_WORDS = {"DOWN", "FAIL", "FAILED", "ERROR", "UNHEALTHY"}

_shutdown = threading.Event()


def begin_shutdown() -> None:
    """Mark this process as shutting down: readiness is DOWN from now on (all apps of the process). Idempotent."""
    if not _shutdown.is_set():
        _shutdown.set()
        log.info("shutting down: readiness is DOWN from now on")


def is_shutting_down() -> bool:
    """True once ``begin_shutdown()`` ran in this process."""
    return _shutdown.is_set()


def install_sigterm_handler(drain_seconds: float = 0.0) -> Any:
    """On SIGTERM call ``begin_shutdown()``, then hand the signal to the handler that was installed before.

    Args:
        drain_seconds: wait this long (seconds) between readiness DOWN and the previous handler, so a load
            balancer can stop sending traffic. 0 = chain at once.

    Returns:
        The previous SIGTERM handler (callable, ``signal.SIG_DFL`` or ``signal.SIG_IGN``).

    Raises:
        ValueError: not called from the main thread (a Python restriction on signal handlers).

    The previous handler runs as it would have: a Python callable is called (in the main thread); the default
    action (terminate) or ignore is restored and the signal re-sent to this process.
    """
    previous = signal.getsignal(signal.SIGTERM)
    draining = threading.Event()

    def hand_over(signum: int, frame: Any) -> None:  # in the main thread
        if callable(previous):
            previous(signum, frame)
        else:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)

    def after_drain() -> None:  # timer thread: re-send; the main thread's handler then hands over
        os.kill(os.getpid(), signal.SIGTERM)

    def on_sigterm(signum: int, frame: Any) -> None:
        begin_shutdown()
        if drain_seconds > 0 and not draining.is_set():  # a second SIGTERM hands over at once
            draining.set()
            timer = threading.Timer(drain_seconds, after_drain)
            timer.daemon = True
            timer.start()
        else:
            hand_over(signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)
    return previous


def _mark(group: str, name: str | None, timeout: float | None) -> Callable[[Callable], Callable]:
    if timeout is not None and not timeout > 0:
        raise ValueError(f"health check timeout must be > 0 seconds, got {timeout!r}")

    def decorate(fn: Callable) -> Callable:
        marks = list(getattr(fn, _MARK, ()))
        marks.append((group, name or fn.__name__, timeout))
        setattr(fn, _MARK, marks)
        return fn

    return decorate


def liveness_check(name: str | None = None, timeout: float | None = None) -> Callable[[Callable], Callable]:
    """Mark a function as a liveness check named ``name`` (default: the function's name); timeout in seconds."""
    return _mark(LIVENESS, name, timeout)


def readiness_check(name: str | None = None, timeout: float | None = None) -> Callable[[Callable], Callable]:
    """Mark a function as a readiness check named ``name`` (default: the function's name); timeout in seconds."""
    return _mark(READINESS, name, timeout)


def startup_check(name: str | None = None, timeout: float | None = None) -> Callable[[Callable], Callable]:
    """Mark a function as a startup check named ``name`` (default: the function's name); timeout in seconds."""
    return _mark(STARTUP, name, timeout)


@dataclass(frozen=True)
class Check:
    """One registered check. ``timeout`` in seconds (None = the app's default); ``builtin`` runs inline."""

    name: str
    fn: Callable[[], Any]
    timeout: float | None = None
    builtin: bool = False


class _Run:
    """One execution of a check in a daemon thread; ``done`` is set when it returned or raised; ``started`` is
    its start time (``time.monotonic()`` seconds)."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None


def _judge(value: Any) -> tuple[str, Any]:
    if isinstance(value, Mapping) and value:
        status = str(value.get("status", "UP")).upper()
        return ("DOWN" if status in _DOWN_WORDS else "UP"), dict(value)
    if isinstance(value, str) and value:
        return "UP", value
    if value:
        return "UP", None
    return "DOWN", f"check returned {value!r}"


class HealthChecks:
    """The health checks of one app (no global registry): groups of named checks and a bounded thread runner.

    Args:
        app: the Flask app whose context the checks run in.
        default_timeout: seconds a check may take when it has no own timeout.
        max_threads: checks of this app running at once, at most.
    """

    def __init__(self, app: Flask, default_timeout: float = 1.0, max_threads: int = 4):
        self.app = app
        self.default_timeout = default_timeout
        self.started = False
        self._groups: dict[str, dict[str, Check]] = {group: {} for group in GROUPS}
        self._slots = threading.BoundedSemaphore(max_threads)
        self._max_threads = max_threads
        self._inflight: dict[int, _Run] = {}
        self._lock = threading.Lock()
        started = Check("started", lambda: True if self.started else {"status": "DOWN", "reason": "starting"}, None, True)
        self.add(READINESS, started)
        self.add(STARTUP, started)
        self.add(READINESS, Check("shutdown", _shutdown_check, None, True))

    def add(self, group: str, check: Check) -> None:
        """Register ``check`` in ``group`` (one of ``GROUPS``).

        Raises:
            ValueError: unknown group, a non-callable, or the name is taken by a different function.
        """
        if group not in GROUPS:
            raise ValueError(f"unknown health group {group!r}; use one of {', '.join(GROUPS)}")
        if not callable(check.fn):
            raise ValueError(f"health check {check.name!r} is not callable")
        for other in self._groups.values():
            old = other.get(check.name)
            if old is not None and old.fn is not check.fn:
                raise ValueError(f"two different health checks are named {check.name!r}; rename one")
        self._groups[group][check.name] = check

    def collect(self, namespace: Mapping[str, Any]) -> int:
        """Register the checks found in a module namespace: the ``*_checks`` mappings and marked functions.

        Returns:
            int: how many checks were registered.

        Raises:
            ValueError: a mapping is not a dict of callables, or names clash.
        """
        count = 0
        for group, attr in MAPPING_NAMES.items():
            mapping = namespace.get(attr)
            if mapping is None:
                continue
            if not isinstance(mapping, Mapping):
                raise ValueError(f"{attr} must be a dict of name -> function, not {type(mapping).__name__}")
            for name, fn in mapping.items():
                self.add(group, Check(str(name), fn))
                count += 1
        for value in list(namespace.values()):
            if not isinstance(value, FunctionType):  # plain functions only: never touch proxies such as request
                continue
            for group, name, timeout in value.__dict__.get(_MARK, ()):
                self.add(group, Check(name, value, timeout))
                count += 1
        return count

    def names(self, group: str) -> list[str]:
        """The check names of ``group``."""
        return list(self._groups[group])

    def _start(self, check: Check) -> _Run | None:
        key = id(check.fn)
        with self._lock:
            run = self._inflight.get(key)
            if run is not None:
                return run
            if not self._slots.acquire(blocking=False):
                return None
            run = _Run()
            self._inflight[key] = run

        def target() -> None:
            try:
                with self.app.app_context():
                    run.value = check.fn()
            except BaseException as exc:  # noqa: BLE001 - any failure of user code is a DOWN result
                run.error = exc
            finally:
                with self._lock:
                    self._inflight.pop(key, None)
                self._slots.release()
                run.done.set()

        threading.Thread(target=target, name=f"health-{check.name}", daemon=True).start()
        return run

    def run(self, groups: Iterable[str]) -> dict[str, Any]:
        """Run the checks of ``groups`` concurrently and wait for them, each at most until its run's start plus
        its timeout (seconds); a run from an earlier probe already past that is DOWN without waiting.

        Returns:
            dict: ``{"status": "UP"|"DOWN", "checks": {name: {"status": ..., "detail": ...}}}``.
        """
        checks: dict[str, Check] = {}
        for group in groups:
            checks.update(self._groups[group])
        results: dict[str, dict[str, Any]] = {}
        pending: list[tuple[str, float, _Run]] = []
        for name, check in checks.items():
            if check.builtin:
                status, detail = _judge(check.fn())
                results[name] = {"status": status, "detail": detail}
                continue
            run = self._start(check)
            if run is None:
                detail = f"capacity exhausted: {self._max_threads} health checks still running"
                results[name] = {"status": "DOWN", "detail": detail}
                continue
            timeout = check.timeout if check.timeout is not None else self.default_timeout
            overdue = time.monotonic() - run.started
            if overdue >= timeout and not run.done.is_set():  # an earlier probe's run, hung: do not wait again
                results[name] = {"status": "DOWN", "detail": f"still running after {overdue:.1f}s"}
                continue
            pending.append((name, timeout, run))
        for name, timeout, run in pending:  # the deadline of a run is its start + its check's timeout
            if not run.done.wait(max(0.0, run.started + timeout - time.monotonic())):
                results[name] = {"status": "DOWN", "detail": f"timed out after {timeout:g}s"}
            elif run.error is not None:
                results[name] = {"status": "DOWN", "detail": reason(run.error)}
            else:
                status, detail = _judge(run.value)
                results[name] = {"status": status, "detail": detail}
        overall = "UP" if all(r["status"] == "UP" for r in results.values()) else "DOWN"
        return {"status": overall, "checks": dict(sorted(results.items()))}


def _shutdown_check() -> Any:
    return {"status": "DOWN", "reason": "shutting down"} if _shutdown.is_set() else True


def checks_for(app: Flask) -> HealthChecks:
    """The ``HealthChecks`` of an app made by ``create_app`` (to add checks from ``init_app``).

    Raises:
        KeyError: the app was not made by ``server.create_app``.
    """
    return app.extensions["flask_stack"].health
