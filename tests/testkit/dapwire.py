"""The Debug Adapter Protocol's wire format and its ``initialize`` request, with no import of the test suite's own:
DAP messages are JSON bodies framed by a ``Content-Length: N`` header and a blank line (the DAP specification's
"Base Protocol"). Standalone, so a test can run this file's source in a container (``python3 -c``) as it is;
``testkit.dap`` builds the attach/breakpoint client on it.
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
