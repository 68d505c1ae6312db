"""``serve``'s app load check, run beside the server's own start (standard library only: the supervisor and the
servers' masters import it, and they never import Flask).

``start`` forks a child that loads the app once (``server.app``) and records its verdict: 0 when the app loads, 4
(``server.app``'s one-line message written by the child) when it does not. The verdict reaches every process that
inherited the check's file descriptors, named in STACK_APP_CHECK_FD (``"<pipe>,<memfd>[,<report>]"``): the child
writes its status into the memfd, then one byte into the pipe, which nobody reads, so every process that polls the
pipe wakes (``verdict``). A child that died without a verdict (killed: the server is being stopped, or out of
memory) wrote no line and decides nothing: the workers' own load of the app does.

Beside the workers (``start(beside_workers=True)``) the check does not load the app while they do, which would
take a third of two cores' time from the first worker's start: it waits for the first worker's own load
(``report``, through the third descriptor). A worker that loaded the app is the verdict 0, and the check ends
without loading it; a worker whose load failed (or no report within ``REPORT_WAIT`` seconds) sets the check
loading the app, for its one line.

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
import socket
import sys
import tempfile
import threading
import time

import stacksettings

ENV = "STACK_APP_CHECK_FD"
EXIT_APP_LOAD = 4
REPORT_WAIT = 5.0  # seconds the check beside the workers waits for a worker's report before it loads the app


_pid: int | None = None  # the check this process started, until it is reaped (``_reap``)


def _forget_in_child() -> None:
    global _pid
    _pid = None


os.register_at_fork(after_in_child=_forget_in_child)  # a forked worker did not start the check: it reaps nothing


def start(nice: int = 0, beside_workers: bool = False) -> str:
    """Start the check (at ``nice`` added niceness; ``beside_workers``: it loads the app only once a worker's load
    failed, see the module docstring) and return the value of STACK_APP_CHECK_FD for the processes that wait for
    it; the descriptors are inheritable. The check
    is a grandchild, forked through a child that ends at once: it is no child of the server's master that this
    process becomes (no extra "worker" beside the server's own) and whoever adopts it reaps it, except that in a
    container this very process, PID 1, adopts it: ``verdict`` reaps it once it is known (else it would stay a
    zombie)."""
    global _pid
    read_fd, write_fd = os.pipe()
    memfd = os.memfd_create("flask-stack-app-check", 0)
    pid_read, pid_write = os.pipe()  # the grandchild's pid, from the child
    # the first worker's load, to the check: a socket, whose send cannot raise SIGPIPE in a worker (uWSGI's) once
    # the check is gone
    report_read, report_write = (s.detach() for s in socket.socketpair()) if beside_workers else (-1, -1)
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
        if not beside_workers:
            return f"{read_fd},{memfd}"
        os.close(report_read)
        os.set_inheritable(report_write, True)
        return f"{read_fd},{memfd},{report_write}"
    try:  # pragma: no cover - the short-lived child
        os.close(pid_read)
        grandchild = os.fork()
        if grandchild:
            os.write(pid_write, str(grandchild).encode())
            os._exit(0)
        os.close(pid_write)
        os.close(read_fd)
        if beside_workers:
            os.close(report_write)
        _check(write_fd, memfd, nice, report_read)
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


def _check(write_fd: int, memfd: int, nice: int, report_fd: int) -> None:  # pragma: no cover - forked child
    status = 1
    scratch = ""
    try:
        if nice:
            os.nice(nice)
        if report_fd >= 0 and _worker_loaded(report_fd):
            status = 0
            return
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


def _worker_loaded(report_fd: int) -> bool:
    """True when the first worker's report (``report``) says it loaded the app; False when it failed, when every
    process that could report is gone, or after ``REPORT_WAIT`` seconds without a report."""
    poller = select.poll()
    poller.register(report_fd, select.POLLIN | select.POLLHUP)
    try:
        return bool(poller.poll(int(REPORT_WAIT * 1000))) and os.read(report_fd, 1) == b"+"
    except OSError:
        return False
    finally:
        os.close(report_fd)


def report(fds: tuple[int, ...] | None, loaded: bool) -> None:
    """A worker's own load of the app is over (``loaded``: it succeeded): tell the check waiting beside the workers
    (``start(beside_workers=True)``); the first report decides, later ones (and a check that ended) are ignored."""
    if fds is None or len(fds) < 3:
        return
    sock = socket.socket(fileno=fds[2])
    try:
        sock.send(b"+" if loaded else b"-", socket.MSG_NOSIGNAL | socket.MSG_DONTWAIT)
    except OSError:  # the check ended (its end is closed), or it has unread reports enough
        pass
    finally:
        sock.detach()  # the descriptor stays open: later workers forked from this process report through it


def parse(value: str | None) -> tuple[int, ...] | None:
    """The descriptors named by a STACK_APP_CHECK_FD value (the pipe, the memfd and, beside the workers, the report
    socket's sending end), or None (unset, or not two or three whole numbers)."""
    try:
        fds = tuple(int(part) for part in (value or "").split(","))
    except ValueError:
        return None
    return fds if len(fds) in (2, 3) else None


def verdict(fds: tuple[int, ...], timeout: float | None = None) -> int | None:
    """The check's exit status (0: the app loads; 4 or another non-zero: it does not, its line written), waiting
    at most ``timeout`` seconds (None: until it is known); None when it is not known by then. Once it is known,
    the check is reaped when this process started it and is PID 1 (which adopted it). A check that died
    without a verdict, or a descriptor that is not the check's (closed), counts as 0: nothing to report."""
    read_fd, memfd = fds[:2]
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


def close(fds: tuple[int, ...] | None) -> None:
    """Close the check's descriptors in this process (the verdict is known and nothing it starts needs it)."""
    for fd in fds or ():
        try:
            os.close(fd)
        except OSError:
            pass


def take() -> tuple[int, ...] | None:
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
