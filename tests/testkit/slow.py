"""Slow clients for tests of the production server: ``SLOW`` connections that send a request head, or a body,
one byte a second (``Trickle``), and the heads they send. Everything talks to 127.0.0.1 on the given port; the
trickle sends until ``close()``."""

from __future__ import annotations

import socket
import threading
import time

SLOW = 64  # connections
SLOW_HEAD = b"GET /hello HTTP/1.1\r\nHost: t\r\nX-Slow: " + b"a" * 4000 + b"\r\n\r\n"
SLOW_BODY_HEAD = (b"POST /size HTTP/1.1\r\nHost: t\r\nContent-Type: application/octet-stream\r\n"
                  b"Content-Length: 100000\r\n\r\n")


class Trickle(threading.Thread):
    """``SLOW`` connections, each sending ``payload`` one byte a second (after ``head`` at once) until ``stop``;
    ``closed_after`` holds, per connection the server closed, the seconds it took."""

    def __init__(self, port: int, head: bytes, payload: bytes):
        super().__init__(daemon=True)
        self.socks = []
        for _ in range(SLOW):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            if head:
                sock.sendall(head)
            sock.setblocking(False)
            self.socks.append(sock)
        self.payload = payload
        self.stop = threading.Event()
        self.closed_after: list[float] = []

    def run(self) -> None:
        began = time.monotonic()
        position = 0
        alive = list(self.socks)
        while alive and not self.stop.wait(1.0):
            for sock in list(alive):
                try:
                    sock.send(self.payload[position:position + 1])
                except BlockingIOError:
                    continue
                except OSError:
                    self.closed_after.append(time.monotonic() - began)
                    alive.remove(sock)
            position += 1

    def close(self) -> None:
        self.stop.set()
        self.join(5)
        for sock in self.socks:
            sock.close()
