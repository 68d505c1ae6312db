"""A minimal Debug Adapter Protocol client: enough to prove a debugger accepts VS Code.

DAP messages are JSON bodies framed by a ``Content-Length: N`` header and a blank line (the same base protocol
as LSP; see the DAP specification's "Base Protocol").
"""

from __future__ import annotations

import json
import socket
import time

INITIALIZE_ARGUMENTS = {"clientID": "flask-stack-tests", "adapterID": "debugpy", "pathFormat": "path",
                        "linesStartAt1": True, "columnsStartAt1": True}


def frame(message: dict) -> bytes:
    """Return ``message`` encoded as one DAP frame (header, blank line, UTF-8 JSON body)."""
    body = json.dumps(message).encode()
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


def read_message(sock: socket.socket, buffer: bytearray) -> dict:
    """Read one DAP message from ``sock``; ``buffer`` keeps bytes read past it for the next call.

    Raises:
        ConnectionError: the peer closed the connection before a whole message arrived.
        OSError: the socket's timeout expired.
    """
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("debug adapter closed the connection")
        buffer += chunk
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("debug adapter closed the connection")
        rest += chunk
    buffer[:] = rest[length:]
    return json.loads(rest[:length])


def dap_initialize(port: int, timeout: float = 30.0, host: str = "127.0.0.1") -> dict:
    """Connect to ``host:port`` (retrying until ``timeout`` seconds pass), send ``initialize``, return its response.

    Events the adapter sends first are skipped. Raises AssertionError when no response comes within ``timeout``.
    """
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=5) as sock:
                sock.settimeout(max(1.0, deadline - time.monotonic()))
                sock.sendall(frame({"seq": 1, "type": "request", "command": "initialize",
                                    "arguments": INITIALIZE_ARGUMENTS}))
                buffer = bytearray()
                while True:
                    message = read_message(sock, buffer)
                    if message.get("type") == "response" and message.get("request_seq") == 1:
                        return message
        except (OSError, ValueError) as exc:  # not listening yet, or closed during start-up
            last = exc
            time.sleep(0.2)
    raise AssertionError(f"no DAP initialize response on {host}:{port} within {timeout:.0f} s ({last})")


class DapSession:
    """One DAP client connection: send requests, wait for their responses and for events.

    Args:
        port (int): the debug adapter's TCP port on ``host``.
        host (str): address to connect to.
        timeout (float): seconds to keep retrying the connection (the adapter may still be starting).
    """

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 30.0):
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.create_connection((host, port), timeout=5)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        self.buffer = bytearray()
        self.seq = 0
        self.events: list[dict] = []

    def close(self) -> None:
        """Close the connection."""
        self.sock.close()

    def send(self, command: str, **arguments: object) -> int:
        """Send the request ``command`` with ``arguments``; return its sequence number."""
        self.seq += 1
        self.sock.sendall(frame({"seq": self.seq, "type": "request", "command": command, "arguments": arguments}))
        return self.seq

    def _next(self, deadline: float) -> dict:
        self.sock.settimeout(max(0.1, deadline - time.monotonic()))
        return read_message(self.sock, self.buffer)

    def response(self, seq: int, timeout: float = 30.0) -> dict:
        """Wait for the response to request ``seq`` (events meanwhile are kept); return it.

        Raises:
            OSError: no response within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            message = self._next(deadline)
            if message.get("type") == "response" and message.get("request_seq") == seq:
                return message
            if message.get("type") == "event":
                self.events.append(message)

    def request(self, command: str, timeout: float = 30.0, **arguments: object) -> dict:
        """Send ``command`` and return its response."""
        return self.response(self.send(command, **arguments), timeout)

    def event(self, name: str, timeout: float = 30.0) -> dict:
        """Return the first event called ``name`` (one seen before, or the next to arrive).

        Raises:
            OSError: none within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            for index, message in enumerate(self.events):
                if message.get("event") == name:
                    return self.events.pop(index)
            message = self._next(deadline)
            if message.get("type") == "event":
                self.events.append(message)
