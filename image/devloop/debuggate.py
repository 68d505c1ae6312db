"""The debugger's port in debug mode: a relay in front of the app process's debugger.

debugpy's adapter stops answering for good once a TCP connection to its port closes without a DAP message (a port
probe, a "wait for port" task, ``nc -z``): the next client's ``attach`` is never answered (upstream
https://github.com/microsoft/debugpy/issues/1308, open). So the dev loop owns ``STACK_DEBUG_PORT`` itself: this
relay accepts there and connects a client to the app process's debugger (listening on a loopback port of its own)
only once the client has sent its first bytes; a connection closed before that never reaches debugpy. The same
port also outlives reloads (each app process starts its own debugger on the same internal port). A debugger
connection dropped before its first answer (debugpy's adapter still ending the previous session right after a
detach: the next client's connection is closed, or left unanswered, now and then) is made again with what the
client said replayed, so a re-attach works at once.

Runs as its own process (``python -m devloop.debuggate LISTEN_FD TARGET_PORT``, the listening socket inherited),
single-threaded; exits on SIGTERM or when its parent (the dev loop) is gone.
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
import subprocess
import sys
import time

from .logs import get_logger

log = get_logger()
#: Seconds a client's first bytes wait for the app process's debugger to listen (it may be (re)starting).
CONNECT_SECONDS = 30.0
CHUNK = 65536


def open_for(spec) -> subprocess.Popen | None:
    """Debug mode: own ``spec.debug_port`` on ``spec.debug_host or spec.host`` (this module relays it) and point
    the app processes' debugger (``spec``, a :class:`devloop.child.ChildSpec`) at a loopback port behind it. Returns the relay
    process; None when the port cannot be bound (logged in one line; the app processes then try it themselves)."""
    public, host = spec.debug_port, spec.debug_host or spec.host
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((host, public))
        except OSError as exc:
            log.error("debugger not started on port %d: %s; is another debug session running? pass another "
                      "debug port", public, exc.strerror)
            return None
        listener.listen(16)
        spec.debug_port, spec.debug_host = free_loopback_port(), "127.0.0.1"
        log.info("debugger port %s:%d relayed to the app process's debugger", host, public)
        return start(listener, spec.debug_port)


def free_loopback_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for the app process's debugger)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start(listener: socket.socket, target_port: int) -> subprocess.Popen:
    """Start the relay process on ``listener`` (a listening socket; this process may close its copy after),
    relaying to ``127.0.0.1:target_port``."""
    return subprocess.Popen([sys.executable, "-m", "devloop.debuggate", str(listener.fileno()), str(target_port)],
                            pass_fds=(listener.fileno(),), stdin=subprocess.DEVNULL)


def stop(proc: subprocess.Popen | None) -> None:
    """Stop the relay process and reap it (SIGKILL after 5 s)."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _connect(target_port: int) -> socket.socket | None:
    deadline = time.monotonic() + CONNECT_SECONDS
    while True:
        try:
            return socket.create_connection(("127.0.0.1", target_port), timeout=5)
        except OSError:
            if time.monotonic() > deadline:
                return None
            time.sleep(0.1)


class _Client:
    """One client connection and, once it has spoken, its connection to the debugger."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.debugger: socket.socket | None = None
        self.said = bytearray()  # what the client sent before the debugger's first response, to replay
        self.answered = False  # the debugger sent a DAP response: the session is its own from then on
        self.closed = False


def relay(listener: socket.socket, target_port: int, parent: int) -> None:
    """Accept on ``listener`` and relay each client that speaks to ``127.0.0.1:target_port`` until ``parent``
    is no longer this process's parent.

    A debugger connection that closes before its first DAP response (debugpy's adapter still ending the previous
    session, right after a detach, or the app process restarting) is made again and what the client said is
    replayed, for ``CONNECT_SECONDS`` at most; the client sees one session."""
    sel = selectors.DefaultSelector()
    listener.setblocking(False)
    sel.register(listener, selectors.EVENT_READ, None)

    def drop(sock: socket.socket) -> None:
        try:
            sel.unregister(sock)
        except (KeyError, ValueError):
            pass
        sock.close()

    def close(client: _Client) -> None:
        client.closed = True
        for end in (client.sock, client.debugger):
            if end is not None:
                drop(end)

    def connect(client: _Client) -> bool:
        debugger = _connect(target_port)
        if debugger is None:
            return False
        debugger.settimeout(None)
        client.debugger = debugger
        sel.register(debugger, selectors.EVENT_READ, (client, False))
        try:
            debugger.sendall(client.said)
        except OSError:
            pass  # seen as a close on the next select
        return True

    while os.getppid() == parent:
        for key, _ in sel.select(timeout=1.0):
            if key.fileobj is listener:
                try:
                    sock, _ = listener.accept()
                except OSError:
                    continue
                sock.settimeout(None)
                sel.register(sock, selectors.EVENT_READ, (_Client(sock), True))
                continue
            client, from_client = key.data
            if client.closed or (not from_client and key.fileobj is not client.debugger):
                continue  # closed earlier in this round
            try:
                data = key.fileobj.recv(CHUNK)
            except OSError:
                data = b""
            if from_client:
                if not data:  # the client left (before speaking: a probe, which the debugger never sees)
                    close(client)
                elif client.debugger is None:  # its first bytes: now connect it to the debugger
                    client.said += data
                    if not connect(client):
                        close(client)
                else:
                    if not client.answered:
                        client.said += data
                    try:
                        client.debugger.sendall(data)
                    except OSError:
                        pass  # seen as a close on the next select
            elif not data:
                drop(client.debugger)
                client.debugger = None
                if client.answered or not connect(client):
                    close(client)
            else:
                client.answered = client.answered or b'"type": "response"' in data or b'"type":"response"' in data
                try:
                    client.sock.sendall(data)
                except OSError:
                    close(client)


def main(argv: list[str]) -> int:
    """``python -m devloop.debuggate LISTEN_FD TARGET_PORT``: relay until SIGTERM or the parent is gone; return 0."""
    signal.signal(signal.SIGTERM, lambda s, f: sys.exit(0))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the dev loop stops it
    listener = socket.socket(fileno=int(argv[0]))
    relay(listener, int(argv[1]), os.getppid())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
