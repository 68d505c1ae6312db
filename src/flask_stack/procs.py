"""Child processes of the CLI: free-port checks, running a server in the foreground, server records.

A served child runs in its own process group, so a terminal's Ctrl-C reaches flask-stack once and is
forwarded once (SIGINT stays SIGINT: Appsody's controller and the dev loop stop on it); SIGTERM and
SIGHUP are forwarded too. On Linux the child also gets SIGTERM if flask-stack itself dies (prctl
PR_SET_PDEATHSIG), so no server outlives the command that started it.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import CliError

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
            raise CliError(f"cannot check port {port} on {host}: {exc.strerror}") from None
    return False


def require_free_port(port: int, option: str = "--port") -> None:
    """Raise CliError ``port N is in use; stop the other server or pass --port N`` when ``port`` is taken.

    Raises:
        CliError: the port is out of range or in use.
    """
    if not 1 <= port <= 65535:
        raise CliError(f"{option} {port} is not a TCP port (1-65535)")
    if port_in_use(port):
        raise CliError(f"port {port} is in use; stop the other server or pass {option} N")


def _die_with_parent() -> None:
    """In the child before exec: start a process group and ask for SIGTERM when the parent dies (Linux)."""
    os.setpgid(0, 0)
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


def run_foreground(argv: list[str], env: dict[str, str], cwd: Path) -> int:
    """Run ``argv`` until it exits, forwarding SIGINT/SIGTERM/SIGHUP; return its exit status.

    The status is the child's own, or 128+N when it died of signal N. If the child has not exited
    ``STOP_GRACE`` seconds after a forwarded signal, its whole process group gets SIGKILL.

    Raises:
        CliError: the program cannot be started.
    """
    try:
        proc = subprocess.Popen(argv, env=env, cwd=str(cwd), preexec_fn=_die_with_parent)
    except OSError as exc:
        raise CliError(f"cannot start {argv[0]}: {exc.strerror}") from None
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
    return 128 - status if status < 0 else status


def _kill_group(pgid: int) -> None:
    """SIGKILL every process left in process group ``pgid`` (no error when it is empty)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


@dataclass(frozen=True)
class ServerRecord:
    """A server ``flask-stack run``/``debug`` is serving: the flask-stack process and its ports.

    Attributes:
        pid (int): the flask-stack process serving (SIGTERM stops it and its server).
        port (int): the host TCP port the app answers on.
        engine (str): the engine's name (``local``, ``podman``, ``docker``).
        started (str): the process's start time in clock ticks since boot (``/proc/PID/stat`` field 22),
            so a pid reused by another program is never taken for the server.
        project (str): the project directory served ("" in a record written before it was recorded).
    """

    pid: int
    port: int
    engine: str
    started: str
    project: str = ""


def _start_ticks(pid: int) -> str | None:
    """Return the start time of process ``pid`` (clock ticks since boot), or None when it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] == "Z" else fields[19]


def write_record(path: Path, port: int, engine: str, project: Path | None = None) -> ServerRecord:
    """Record this process as serving ``project`` on ``port`` in ``path`` (JSON; parent directories are made).

    Raises:
        OSError: ``path`` cannot be written.
    """
    record = ServerRecord(os.getpid(), port, engine, _start_ticks(os.getpid()) or "", str(project or ""))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(asdict(record)) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return record


def remove_record(path: Path) -> None:
    """Remove ``path`` if it still names this process (a newer run may have replaced it)."""
    record = read_record(path)
    if record is not None and record.pid == os.getpid():
        path.unlink(missing_ok=True)


def read_record(path: Path) -> ServerRecord | None:
    """Return the record in ``path`` when it names a live process started when recorded, else None."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        record = ServerRecord(int(data["pid"]), int(data["port"]), str(data["engine"]), str(data["started"]),
                              str(data.get("project", "")))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return record if _start_ticks(record.pid) == record.started else None


def stop_server(record: ServerRecord, timeout: float = STOP_GRACE + 5) -> None:
    """SIGTERM the flask-stack process of ``record`` (it forwards the signal to its server) and wait up to
    ``timeout`` seconds for it to exit; then SIGKILL it and its server's process group.

    Raises:
        CliError: the process is still alive after the SIGKILL.
    """
    try:
        os.kill(record.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if _start_ticks(record.pid) != record.started:
            return
        time.sleep(0.05)
    for pid in [record.pid, *_children(record.pid)]:
        _kill_group(pid)
    time.sleep(0.2)
    if _start_ticks(record.pid) == record.started:
        raise CliError(f"process {record.pid} did not stop after SIGTERM and SIGKILL")


def _children(pid: int) -> list[int]:
    """Return the pids of the live children of ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text(errors="replace").rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if fields[1] == str(pid) and fields[0] != "Z":
                found.append(int(entry.name))
    return found
