"""The remote debugger (Debug Adapter Protocol) for VS Code and other DAP clients.

Only the dev loop calls ``start_debugger``, in the served process, when debug mode is on; production never does.
VS Code attaches with a ``launch.json`` entry of type ``debugpy``, request ``attach``, ``connect`` to the host and
port, and ``pathMappings`` from the local project folder to the project path inside the container.
"""

from __future__ import annotations

import logging
import os

from .exceptions import DebuggerError

log = logging.getLogger(__name__)
KINDS = ("debugpy", "ptvsd")
_listening: dict[int, tuple[str, str, int]] = {}  # pid -> (kind, host, port)


def start_debugger(port: int = 5678, wait: bool = False, kind: str = "debugpy", host: str = "0.0.0.0") -> None:
    """Listen for a DAP debugger client on ``host:port`` (TCP); optionally block until one attaches.

    Idempotent per process: a second call (same process, any arguments) only logs where it already listens; a
    forked child starts its own listener.

    Args:
        port: TCP port (1-65535).
        wait: block until a client attaches (STACK_DEBUG_WAIT=1), so breakpoints at import time are hit.
        kind: ``debugpy`` (default) or ``ptvsd`` (legacy; only if ptvsd is installed).
        host: interface to listen on; ``0.0.0.0`` inside a container so the published port reaches it.

    Raises:
        DebuggerError: unknown kind, the debugger package is not installed, or listening failed (port in use).
    """
    if kind not in KINDS:
        raise DebuggerError(f"unknown debugger {kind!r} (STACK_DEBUGGER); use debugpy or ptvsd")
    try:
        number = int(port)
    except (TypeError, ValueError):
        number = -1
    if not 0 < number < 65536:
        raise DebuggerError(f"debugger port {port!r} is not a TCP port (1-65535); check STACK_DEBUG_PORT")
    port = number
    pid = os.getpid()
    if pid in _listening:
        old_kind, old_host, old_port = _listening[pid]
        log.info("debugger (%s) already listening on %s:%d", old_kind, old_host, old_port)
        return
    if kind == "debugpy":
        try:
            import debugpy
        except ImportError:
            raise DebuggerError("debugpy is not installed; it is a dev-package of the stack "
                                "(pipenv install --dev), or use STACK_DEBUGGER=ptvsd") from None
        try:
            debugpy.listen((host, port))
        except Exception as exc:  # noqa: BLE001 - debugpy raises RuntimeError/OSError variants
            raise DebuggerError(f"cannot listen for the debugger on {host}:{port}: {exc}; "
                                f"is another debug session running? pass another debug port") from None
        _listening[pid] = (kind, host, port)
        log.info("debugger (debugpy, DAP) listening on %s:%d; attach VS Code with a 'debugpy' attach config", host,
                 port)
        if wait:
            log.info("waiting for a debugger client to attach on port %d", port)
            debugpy.wait_for_client()
            log.info("debugger client attached")
        return
    try:
        import ptvsd  # type: ignore[import-not-found]
    except ImportError:
        raise DebuggerError("ptvsd is not installed (it is deprecated); use STACK_DEBUGGER=debugpy") from None
    try:
        ptvsd.enable_attach(address=(host, port))
    except Exception as exc:  # noqa: BLE001
        raise DebuggerError(f"cannot listen for the debugger on {host}:{port}: {exc}") from None
    _listening[pid] = (kind, host, port)
    log.info("debugger (ptvsd) listening on %s:%d", host, port)
    if wait:
        log.info("waiting for a debugger client to attach on port %d", port)
        ptvsd.wait_for_attach()
