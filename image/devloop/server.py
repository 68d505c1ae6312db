"""The warm dev loop: one listening socket, one forked app process per (re)start.

The loop process imports the stack (``server``, Flask, flasgger, prometheus_client, Werkzeug) once
but never the user's package, binds the socket once (or inherits it across a re-exec through
``STACK_DEVLOOP_FD``), and forks :func:`devloop.child.child_main` for every start. While an app
process restarts, new connections wait in the socket's backlog instead of being refused.

Events (signals, watcher batches) arrive through pipes the main thread ``select``s on:

* ``*.py`` (or the settings file) saved: log one line naming the files and fork the new app process at
  once, beside the one serving, which keeps serving until the new one has built its app (it says so on a
  pipe: ``ChildSpec.verdict_fd``); then SIGTERM the old one (it stops accepting and finishes the requests
  in flight; SIGKILL of its group after ``STOP_SECONDS``). A save that gives a setting a bad value keeps
  the old one serving (the new one exits after one line). In debug mode the old process is stopped first
  (the debugger's port is one). Listening socket and process helpers: :mod:`devloop.process`.
* an app process listed the third-party modules its app imported (:mod:`devloop.child`): import
  those the loop has not, so the next app process starts with them loaded (never the project's own).
* a dependency declaration file saved (``requirements.txt``, ``pyproject.toml``, ``Pipfile``...): install
  (:mod:`devloop.deps`) while the old app keeps serving,
  then stop it and ``os.execv`` the loop so the new packages load; a failed install is logged and
  the previous version keeps serving.
* the app process exits by itself: log its status and serve the error page until the next save.
* SIGINT/SIGTERM: stop the app process, exit 0. Orphans re-parented to the loop (PID 1 in a
  container, or a child sub-reaper elsewhere) are reaped.
"""

from __future__ import annotations

import gc
import os
import select
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import stacksettings

from . import debuggate, deps, preload, watch
from .child import ChildSpec, child_main
from .errors import DevloopError, StopRequested
from .logs import get_logger
from .process import FD_ENV, set_subreaper, stop_adopted_children

#: Seconds an app process gets to exit after SIGTERM before SIGKILL.
STOP_SECONDS = 3.0
VERDICT_SECONDS = 120.0  # the longest the previous app process serves alone while the next one builds its app

log = get_logger()


class Loop:
    """The supervisor; see the module docstring. ``run()`` returns the exit status."""

    def __init__(self, sock: socket.socket, spec: ChildSpec, *, deps_dir: Path | None, deps_key: str | None,
                 watch_enabled: bool = True, argv: list[str] | None = None):
        self.sock = sock
        self.spec = spec
        self._preload_r, self._preload_w = os.pipe()
        os.set_blocking(self._preload_r, False)
        spec.preload_fd = self._preload_w
        spec.preload_path = preload.listing_path(spec.project, deps_dir)
        spec.userapp = stacksettings.value("STACK_USERAPP") or "userapp"
        #: Old app processes draining after a reload: pid -> time.monotonic() deadline for SIGKILL.
        self.retiring: dict[int, float] = {}
        self.project = spec.project
        self.deps_dir = deps_dir
        self.deps_key = deps_key
        self.watch_enabled = watch_enabled
        self.argv = argv if argv is not None else sys.argv[1:]
        self.child: int | None = None
        self.child_is_error = False
        self.stopping = False
        self.interruptible = False
        self.watcher: watch.Watcher | None = None
        self._sig_r, self._sig_w = os.pipe()
        self._said_watching = False
        self.gate: subprocess.Popen | None = None

    # --- signals -------------------------------------------------------------------------------
    def _on_stop(self, signum, frame):
        self.stopping = True
        if self.interruptible:
            self.interruptible = False
            raise StopRequested()

    def _install_signals(self) -> None:
        os.set_blocking(self._sig_w, False)
        os.set_blocking(self._sig_r, False)
        signal.set_wakeup_fd(self._sig_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGCHLD, lambda s, f: None)  # wakes select through the wakeup fd
        set_subreaper()

    # --- app processes -------------------------------------------------------------------------
    def start_child(self, *, failure: str | None = None, started: float | None = None,
                    verdict: tuple[int, int] | None = None) -> None:
        """Fork an app process (the user's app, or the error app with ``failure``); ``verdict``: a pipe (read end,
        write end) the app process says on whether it serves (``ChildSpec.verdict_fd``)."""
        self.spec.failure = failure
        self.spec.started = started if started is not None else time.monotonic()
        self.spec.verdict_fd = verdict[1] if verdict else None
        self.spec.close_fds = [self._sig_r, self._sig_w, self._preload_r] + (
            list(self.watcher.fds()) if self.watcher else []) + ([verdict[0]] if verdict else [])
        blocked = {signal.SIGTERM, signal.SIGINT, signal.SIGCHLD}
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
        try:
            with warnings.catch_warnings():
                # Python 3.12+ warns about fork() with threads; the watcher thread only waits in
                # watchfiles' Rust code (GIL released), and the app process never touches it.
                warnings.simplefilter("ignore", DeprecationWarning)
                # The loop's objects (the stack's and the preloaded modules) are never garbage: keep the app
                # process's collector from walking, and so copying, them (the gc module's advice for fork).
                gc.freeze()
                pid = os.fork()
            if pid == 0:
                child_main(self.spec)  # never returns
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        try:
            os.setpgid(pid, pid)
        except OSError:
            pass
        self.child, self.child_is_error = pid, failure is not None
        self.spec.show_urls = False  # said once, by the first app process

    def stop_child(self) -> None:
        """SIGTERM the app process group, SIGKILL it after ``STOP_SECONDS``, and reap it."""
        pid = self.child
        if pid is None:
            return
        self.child = None
        self._signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        while True:
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                break
            if done:
                break
            if time.monotonic() > deadline:
                log.warning("app process %d did not stop within %.0f s; killing it", pid, STOP_SECONDS)
                self._signal_group(pid, signal.SIGKILL)
                try:
                    os.waitpid(pid, 0)
                except ChildProcessError:
                    pass
                break
            time.sleep(0.005)
        self._signal_group(pid, signal.SIGKILL)  # helpers it left behind (debug adapter, user subprocesses)

    def retire_child(self, pid: int | None = None) -> None:
        """SIGTERM the app process (``pid``, default the current one) and leave it to finish its requests in flight
        while the next one starts; :meth:`reap` collects it, :meth:`kill_overdue` SIGKILLs its group after
        ``STOP_SECONDS``."""
        if pid is None:
            pid, self.child = self.child, None
        if pid is None:
            return
        self._signal_group(pid, signal.SIGTERM)
        self.retiring[pid] = time.monotonic() + STOP_SECONDS

    def kill_overdue(self, *, everyone: bool = False) -> None:
        """SIGKILL the groups of retiring app processes past their deadline (``everyone``: wait for each until
        its deadline, then kill what is left; used when the loop stops or re-execs)."""
        if everyone:
            while self.retiring and time.monotonic() < max(self.retiring.values()):
                self.reap()
                if self.retiring:
                    time.sleep(0.005)
        for pid, deadline in list(self.retiring.items()):
            if everyone or time.monotonic() > deadline:
                log.warning("app process %d did not stop within %.0f s; killing it", pid, STOP_SECONDS)
                self._signal_group(pid, signal.SIGKILL)
                del self.retiring[pid]

    def _preload(self) -> None:
        """Import what the app processes listed (:func:`devloop.preload.import_listed`)."""
        preload.import_listed(self.spec.preload_path, self.project, self.spec.userapp)

    def _timeout(self) -> float:
        """Seconds the main loop may wait in select: 1, or less until a retiring process's deadline."""
        if not self.retiring:
            return 1.0
        return max(0.0, min(1.0, min(self.retiring.values()) - time.monotonic()))

    @staticmethod
    def _signal_group(pid: int, sig: int) -> None:
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass

    def reap(self) -> None:
        """Collect every exited child; react when it is the current app process."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if self.retiring.pop(pid, None) is not None:
                self._signal_group(pid, signal.SIGKILL)  # helpers it left behind
                continue
            if pid == self.child:
                self.child = None
                self._signal_group(pid, signal.SIGKILL)
                code = os.waitstatus_to_exitcode(status)
                if self.stopping:
                    continue
                reason = f"the app process exited with status {code}"
                if self.child_is_error:
                    log.error("%s; save a file to restart it", reason)
                else:
                    log.error("%s; serving an error page until the next save", reason)
                    self.start_child(failure=reason)

    # --- main loop -----------------------------------------------------------------------------
    def run(self) -> int:
        """Serve until SIGINT/SIGTERM; returns 0. Re-execs itself after a dependency change."""
        self._install_signals()
        if self.watch_enabled:
            ignore = [self.deps_dir] if self.deps_dir is not None else []
            self.watcher = watch.Watcher(self.project, ignore).start()
        try:
            if self.spec.debug:
                self.gate = debuggate.open_for(self.spec)
            self.start_child()
            self._preload()  # what the app imported last time, while the first app process starts
            while not self.stopping:
                fds = [self._sig_r, self._preload_r] + ([self.watcher.fileno()] if self.watcher else [])
                try:
                    ready, _, _ = select.select(fds, [], [], self._timeout())
                except InterruptedError:
                    ready = []
                for fd in (self._sig_r, self._preload_r):
                    try:
                        while os.read(fd, 512):
                            pass
                    except BlockingIOError:
                        pass
                if self.stopping:
                    break
                self.reap()
                self.kill_overdue()
                if self._preload_r in ready:
                    self._preload()
                if self.watcher:
                    if self.watcher.error is not None:
                        log.error("watching %s stopped (%s); restart the dev loop to get reloads back",
                                  self.project, self.watcher.error)
                        self.watcher = None
                        continue
                    changed = self.watcher.take()
                    if self.watcher.ready.is_set() and not self._said_watching:
                        self._said_watching = True
                        log.info("watching %s for changes", self.project)
                    if changed:
                        self.on_change(changed)
        except StopRequested:
            pass
        finally:
            self.stop_child()
            self.kill_overdue(everyone=True)
            debuggate.stop(self.gate)
            stop_adopted_children()
            if self.watcher:
                self.watcher.stop()
        log.info("stopped")
        return 0

    def on_change(self, changed: list[str]) -> None:
        """React to one batch of saved files (absolute paths)."""
        started = time.monotonic()
        names = watch.describe(changed, self.project)
        code_changed = any(p.endswith(".py") for p in changed)
        if watch.touches_deps(changed, self.project):
            state = None
            self.interruptible = True
            try:
                state = deps.ensure_deps(self.project, self.deps_dir, cleanup=False)
            except DevloopError as exc:
                log.error("%s; still serving the previous version", exc)
            finally:
                self.interruptible = False
            if state is not None and (state.key != self.deps_key or state.installed):
                log.info("dependencies changed (%s); restarting the dev loop", names)
                self.reexec()
            if not code_changed:
                return
        log.info("reloading: %s changed", names)
        if self.spec.debug:
            self.stop_child()
        elif self.child is not None and not self.child_is_error:
            self._replace_child(started)
            return
        else:
            self.retire_child()
        self.start_child(started=started)

    def _replace_child(self, started: float) -> None:
        """Start the next app process beside the current one, which keeps serving until the new one has built its
        app; then retire it. When a setting has a bad value (the new process says ``!``), the new one exits and
        the current one stays: the previous version is served until the next save."""
        previous = self.child
        read_end, write_end = os.pipe()
        try:
            self.start_child(started=started, verdict=(read_end, write_end))
        finally:
            os.close(write_end)
        try:
            verdict = self._await_verdict(read_end)
        finally:
            os.close(read_end)
        if verdict == b"!":
            pid, self.child, self.child_is_error = self.child, previous, False
            self.retiring[pid] = time.monotonic() + STOP_SECONDS  # it exits by itself; reap collects it
            return
        self.retire_child(previous)

    def _await_verdict(self, read_end: int) -> bytes:
        """The new app process's one byte (``ChildSpec.verdict_fd``), b"" when it ended without one, took over
        ``VERDICT_SECONDS``, or the loop is asked to stop."""
        deadline = time.monotonic() + VERDICT_SECONDS
        while not self.stopping:
            left = deadline - time.monotonic()
            if left <= 0:
                return b""
            try:
                ready, _, _ = select.select([read_end, self._sig_r], [], [], left)
            except InterruptedError:
                continue
            if read_end in ready:
                try:
                    return os.read(read_end, 1)
                except OSError:
                    return b""
            if self._sig_r in ready:
                try:
                    while os.read(self._sig_r, 512):
                        pass
                except BlockingIOError:
                    pass
        return b""

    def reexec(self) -> None:
        """Stop the app process and replace this process with a fresh loop on the same socket."""
        self.stop_child()
        self.kill_overdue(everyone=True)
        debuggate.stop(self.gate)
        stop_adopted_children()
        if self.watcher:
            self.watcher.stop()
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        os.set_inheritable(self.sock.fileno(), True)
        os.environ[FD_ENV] = str(self.sock.fileno())
        sys.stderr.flush()
        os.execv(sys.executable, [sys.executable, "-m", "devloop", *self.argv])
