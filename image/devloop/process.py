"""The dev loop's process plumbing: its listening socket (kept across a re-exec), the imports it warms before the
first app process, and the orphans it adopts as a child sub-reaper (PID 1 in a container)."""

from __future__ import annotations

import errno
import os
import signal
import socket
import time

import stacksettings

from .errors import DevloopError
from .logs import get_logger

FD_ENV = "STACK_DEVLOOP_FD"
PR_SET_CHILD_SUBREAPER = 36
_WARM_MODULES = ("flask", "werkzeug.serving", "werkzeug.debug", "flasgger", "prometheus_client", "server")

log = get_logger()


def listening_socket(host: str, port: int) -> socket.socket:
    """Return the loop's listening socket: inherited from ``STACK_DEVLOOP_FD`` after a re-exec,
    else bound to (host, port) with a backlog of 128.

    Raises:
        DevloopError: the port is in use (exit 1), or the address cannot be bound.
    """
    inherited = stacksettings.value(FD_ENV)
    os.environ.pop(FD_ENV, None)  # not for the app processes
    if inherited is not None:
        sock = socket.socket(fileno=inherited)
        os.set_inheritable(sock.fileno(), False)
        return sock
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise DevloopError(f"port {port} is in use; stop the other server or pass --port N") from None
        raise DevloopError(f"cannot listen on {host}:{port}: {exc.strerror}; pass --host/--port") from None
    sock.listen(128)
    return sock


def warm_imports(debug: bool = False) -> None:
    """Import the stack's modules once in the loop so every app process starts with them loaded
    (with ``debug``, also debugpy's server side, ~0.15 s; it starts no thread on import).

    Raises:
        DevloopError: the runtime package ``server`` is not importable (wrong PYTHONPATH).
    """
    import importlib
    import pkgutil

    for name in _WARM_MODULES:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise DevloopError(f"cannot import {name} ({exc}); run the dev loop with the stack's image/project "
                               f"on PYTHONPATH, inside the stack's environment") from None
    import server

    # Submodules that only define things; never one that builds an app (or imports user code) on import.
    for info in pkgutil.iter_modules(server.__path__):
        if info.name in ("factory", "health", "metrics", "logs", "debug", "errors", "apidocs", "loader", "settings",
                         "observe", "routes"):
            try:
                importlib.import_module(f"server.{info.name}")
            except Exception as exc:  # the app process will report it properly
                log.warning("could not preload server.%s: %s", info.name, exc)
    warm_metadata()
    if debug and stacksettings.raw("STACK_DEBUGGER") in (None, "", "debugpy"):  # _serve checked it
        try:
            importlib.import_module("debugpy.server.api")
        except Exception:  # start_debugger reports a missing or broken debugpy in the app process
            pass


def warm_metadata() -> None:
    """Fill, in the loop, the caches app processes inherit for installed-package metadata: ``importlib.metadata``'s
    listing of each ``sys.path`` directory (kept while the directory's mtime stays the same, so a package installed
    later is seen) and the Flask version ``/metrics`` reports. Libraries that scan entry points or versions while
    an app is made (pydantic's plugins, the stack's ``flask_stack_info``) then take a few ms less per reload."""
    import importlib.metadata

    from server.metrics import dist_version

    importlib.metadata.entry_points()
    dist_version("flask")


def set_subreaper() -> None:
    if os.getpid() == 1:
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def stop_adopted_children(timeout: float = 1.0) -> None:
    """SIGTERM every remaining child of this process (helpers of old app processes that were re-parented
    here, such as a debug adapter), SIGKILL those still there after ``timeout`` seconds, and reap them."""
    me = str(os.getpid())

    def children() -> list[int]:
        found = []
        for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                        fields = f.read().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if fields[1] == me and fields[0] != "Z":
                    found.append(int(entry))
        return found

    def reap_all() -> None:
        while True:
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    return
            except ChildProcessError:
                return

    pids = children()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        while pids and time.monotonic() < deadline:
            reap_all()
            pids = [pid for pid in pids if pid in children()]
            if pids:
                time.sleep(0.01)
        if not pids:
            break
    reap_all()
