"""``serve``'s app load check, run beside the server's own start (standard library only: the supervisor and the
servers' masters import it, and they never import Flask).

``start`` forks a child that loads the app once (``server.app``) and records its verdict: 0 when the app loads, 4
(``server.app``'s one-line message written by the child) when it does not. The verdict reaches every process that
inherited the check's two file descriptors, named in STACK_APP_CHECK_FD (``"<pipe>,<memfd>"``): the child writes
its status into the memfd, then one byte into the pipe, which nobody reads, so every process that polls the pipe
wakes (``verdict``). A child that died without a verdict (killed: the server is being stopped, or out of memory)
wrote no line and decides nothing: the workers' own load of the app does.

The server's master starts its workers at once and holds its own log lines until the verdict (``HeldLines``;
for uWSGI its supervisor, which rewrites uWSGI's lines, holds them; a master started without ``serve``'s check:
``await_verdict`` returns 0 at once): then a worker
whose own load fails says nothing while the check is out and leaves quietly with status 4 when it failed too
(``serving.worker.production_app``), so a broken app is one line and exit status 4 whatever the worker count.
"""

from __future__ import annotations

import logging
import os
import select
import shutil
import sys
import tempfile
import threading
import time

import stacksettings

ENV = "STACK_APP_CHECK_FD"
EXIT_APP_LOAD = 4


_pid: int | None = None  # the check this process started, until it is reaped (``_reap``)


def _forget_in_child() -> None:
    global _pid
    _pid = None


os.register_at_fork(after_in_child=_forget_in_child)  # a forked worker did not start the check: it reaps nothing


def start(nice: int = 0) -> str:
    """Start the check (at ``nice`` added niceness, so workers loading the app at the same time go first) and return
    the value of STACK_APP_CHECK_FD for the processes that wait for it; the descriptors are inheritable. The check
    is a grandchild, forked through a child that ends at once: it is no child of the server's master that this
    process becomes (no extra "worker" beside the server's own) and whoever adopts it reaps it, except that in a
    container this very process, PID 1, adopts it: ``verdict`` reaps it once it is known (else it would stay a
    zombie)."""
    global _pid
    read_fd, write_fd = os.pipe()
    memfd = os.memfd_create("flask-stack-app-check", 0)
    pid_read, pid_write = os.pipe()  # the grandchild's pid, from the child
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        os.close(write_fd)
        os.close(pid_write)
        os.waitpid(pid, 0)
        try:
            _pid = int(os.read(pid_read, 32) or 0) or None
        finally:
            os.close(pid_read)
        os.set_inheritable(read_fd, True)
        os.set_inheritable(memfd, True)
        return f"{read_fd},{memfd}"
    try:  # pragma: no cover - the short-lived child
        os.close(pid_read)
        grandchild = os.fork()
        if grandchild:
            os.write(pid_write, str(grandchild).encode())
            os._exit(0)
        os.close(pid_write)
        os.close(read_fd)
        _check(write_fd, memfd, nice)
    finally:
        os._exit(1)


def _reap(timeout: float = 2.0) -> None:
    """Reap the check this process started when this process is PID 1 (which adopted it), waiting at most
    ``timeout`` seconds for it to end (it ends right after its verdict); nothing to do otherwise (another process
    adopted it, or it was reaped already: gunicorn's arbiter reaps every child)."""
    global _pid
    pid, _pid = _pid, None
    if os.getpid() != 1:  # init (or a subreaper) adopted it; its pid may even be reused by a child of this process
        return
    deadline = time.monotonic() + timeout
    while pid is not None:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] or time.monotonic() > deadline:
                return
        except ChildProcessError:
            return
        time.sleep(0.01)


def _check(write_fd: int, memfd: int, nice: int) -> None:  # pragma: no cover - runs in the forked child
    status = 1
    scratch = ""
    try:
        if nice:
            os.nice(nice)
        scratch = tempfile.mkdtemp(prefix="flask-stack-check.")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = scratch
        os.environ["STACK_LOG_FLUSH_SECONDS"] = "0"
        if stacksettings.is_set(ENV):
            del os.environ[ENV]
        if (stacksettings.raw("LOG_LEVEL") or "").strip().upper() in ("", "INFO", "DEBUG"):
            os.environ["LOG_LEVEL"] = "WARNING"  # the workers log the app's start; this check only its failure
        import server

        server.app  # noqa: B018 - loads it
        status = 0
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else EXIT_APP_LOAD
    except BaseException as exc:  # noqa: BLE001 - one line, never a traceback
        sys.stderr.write(f"serve: the app failed to load: {type(exc).__name__}: {exc}\n")
        status = EXIT_APP_LOAD
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
            if scratch:
                shutil.rmtree(scratch, ignore_errors=True)
            os.pwrite(memfd, bytes([status & 0xFF]), 0)
            os.write(write_fd, b"!")
        finally:
            os._exit(status)


def parse(value: str | None) -> tuple[int, int] | None:
    """The two descriptors named by a STACK_APP_CHECK_FD value, or None (unset or not two whole numbers)."""
    try:
        read_fd, memfd = (int(part) for part in (value or "").split(","))
    except ValueError:
        return None
    return read_fd, memfd


def verdict(fds: tuple[int, int], timeout: float | None = None) -> int | None:
    """The check's exit status (0: the app loads; 4 or another non-zero: it does not, its line written), waiting
    at most ``timeout`` seconds (None: until it is known); None when it is not known by then. Once it is known,
    the check is reaped when this process started it and is PID 1 (which adopted it). A check that died
    without a verdict, or a descriptor that is not the check's (closed), counts as 0: nothing to report."""
    read_fd, memfd = fds
    poller = select.poll()
    poller.register(read_fd, select.POLLIN | select.POLLHUP)
    try:
        if not poller.poll(None if timeout is None else int(timeout * 1000)):
            return None
        data = os.pread(memfd, 1, 0)
    except OSError:
        return 0
    _reap()  # the check ends right after its verdict (or ended without one): no zombie of PID 1
    return data[0] if data else 0


def close(fds: tuple[int, int] | None) -> None:
    """Close the check's descriptors in this process (the verdict is known and nothing it starts needs it)."""
    for fd in fds or ():
        try:
            os.close(fd)
        except OSError:
            pass


def take() -> tuple[int, int] | None:
    """The check named in STACK_APP_CHECK_FD (``parse``), the variable removed from this process's environment so
    that nothing it starts sees it; None when there is none."""
    fds = parse(stacksettings.raw(ENV))
    if stacksettings.is_set(ENV):
        del os.environ[ENV]
    return fds


def await_verdict() -> int:
    """For a master that waits before any worker starts: the verdict of the check named in STACK_APP_CHECK_FD
    (removed from the environment, its descriptors closed), 0 when there is none (the server was
    not started by ``serve``)."""
    fds = take()
    if fds is None:
        return 0
    try:
        return verdict(fds)
    finally:
        close(fds)


class HeldLines(logging.Filter):
    """A filter for a logger whose records wait for the check's verdict: held while it is out, passed on in order
    when the app loads (``settle(True)``), dropped when it does not (the check's one line says why)."""

    def __init__(self, logger: logging.Logger):
        super().__init__()
        self.logger = logger
        self.state = "pending"
        self.held: list[logging.LogRecord] = []
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        with self._lock:
            if self.state == "pending":
                self.held.append(record)
                return False
            return self.state == "ok"

    def settle(self, loads: bool) -> None:
        """The verdict is known: pass the held records on (``loads``) or drop them."""
        with self._lock:
            if self.state != "pending":
                return
            self.state = "ok" if loads else "failed"
            held, self.held = self.held, []
        for record in held if loads else ():
            self.logger.handle(record)
