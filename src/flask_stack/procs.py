"""Child processes of the CLI: free-port checks, running a server in the foreground, pid files.

A served child runs in its own process group, so a terminal's Ctrl-C reaches flask-stack once and is
forwarded once (SIGINT stays SIGINT: Appsody's controller and the dev loop stop on it); SIGTERM and
SIGHUP are forwarded too. On Linux the child also gets SIGTERM if flask-stack itself dies (prctl
PR_SET_PDEATHSIG), so no server outlives the command that started it.
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from .errors import StackError

#: Seconds the child gets to exit after a forwarded signal before its process group is killed.
STOP_GRACE = 15.0


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Return True when something already listens on (or holds) TCP ``host:port``.

    Binds with SO_REUSEADDR, so ports in TIME_WAIT from a server that just stopped count as free.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise StackError(f"cannot check port {port} on {host}: {exc.strerror}") from None
    return False


def require_free_port(port: int, option: str = "--port") -> None:
    """Raise StackError ``port N is in use; stop the other server or pass --port N`` when ``port`` is taken.

    Raises:
        StackError: the port is out of range or in use.
    """
    if not 1 <= port <= 65535:
        raise StackError(f"{option} {port} is not a TCP port (1-65535)")
    if port_in_use(port):
        raise StackError(f"port {port} is in use; stop the other server or pass {option} N")


def _die_with_parent() -> None:
    """In the child before exec: start a process group and ask for SIGTERM when the parent dies (Linux)."""
    os.setpgid(0, 0)
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


def run_foreground(argv: list[str], env: dict[str, str], cwd: Path, pidfile: Path | None = None) -> int:
    """Run ``argv`` until it exits, forwarding SIGINT/SIGTERM/SIGHUP; return its exit status.

    The status is the child's own, or 128+N when it died of signal N. If the child has not exited
    ``STOP_GRACE`` seconds after a forwarded signal, its whole process group gets SIGKILL. The child's
    pid is written to ``pidfile`` while it runs (for ``flask-stack stop``) and removed afterwards.

    Raises:
        StackError: the program cannot be started.
    """
    try:
        proc = subprocess.Popen(argv, env=env, cwd=str(cwd), preexec_fn=_die_with_parent)
    except OSError as exc:
        raise StackError(f"cannot start {argv[0]}: {exc.strerror}") from None
    deadline: list[float] = []

    def forward(signum: int, _frame: object) -> None:
        try:
            os.killpg(proc.pid, signum)
        except ProcessLookupError:
            return
        if not deadline:
            deadline.append(time.monotonic() + STOP_GRACE)

    forwarded = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, forward) for sig in forwarded}
    if pidfile is not None:
        write_pidfile(pidfile, proc.pid)
    try:
        while True:
            try:
                status = proc.wait(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                if deadline and time.monotonic() > deadline[0]:
                    _kill_group(proc.pid)
    finally:
        if proc.poll() is None:  # an unexpected exception in the loop: never leave the server behind
            _kill_group(proc.pid)
            proc.wait()
        _kill_group(proc.pid)  # stragglers the server forked and did not stop
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if pidfile is not None:
            remove_pidfile(pidfile, proc.pid)
    return 128 - status if status < 0 else status


def _kill_group(pgid: int) -> None:
    """SIGKILL every process left in process group ``pgid`` (no error when it is empty)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def write_pidfile(path: Path, pid: int) -> None:
    """Write ``pid`` (decimal, newline) to ``path``, creating parent directories."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{pid}\n", encoding="ascii")


def remove_pidfile(path: Path, pid: int) -> None:
    """Remove ``path`` if it still names ``pid`` (a newer run may have replaced it)."""
    if read_pidfile(path) == pid:
        path.unlink(missing_ok=True)


def read_pidfile(path: Path) -> int | None:
    """Return the pid in ``path``, or None when the file is absent or not a pid."""
    try:
        return int(path.read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return None


def stop_pid(pid: int, must_contain: str, timeout: float = STOP_GRACE) -> bool:
    """SIGTERM process ``pid`` (and its group) and wait up to ``timeout`` seconds for it to go.

    Only a live process whose command line contains ``must_contain`` is signalled, so a pid reused by
    an unrelated program is left alone. Returns True when a process was stopped, False when none ran.

    Raises:
        StackError: the process is still alive after ``timeout`` seconds and a SIGKILL.
    """
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    if must_contain not in cmdline:
        return False
    try:
        os.killpg(pid, signal.SIGTERM) if os.getpgid(pid) == pid else os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    _kill_group(pid)
    time.sleep(0.2)
    if _alive(pid):
        raise StackError(f"process {pid} did not stop after SIGTERM and SIGKILL")
    return True


def _alive(pid: int) -> bool:
    """Return True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
