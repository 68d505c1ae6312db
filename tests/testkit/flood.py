"""Connection floods for tests of the deployable image's front, from 127.0.0.1 only and bounded in time.

``Flood`` runs in a process of its own (its own interpreter lock, so the test's probes are not slowed by it) an
asyncio loop holding ``connections`` connections to 127.0.0.1:``port``. Each sends ``head`` at once, then its body:
``trickle`` (one byte every ``trickle_every`` seconds, the slow-body attack) or all of ``body`` but its last
``hold_back`` bytes at once, which it then holds back. When the server answers or closes, the connection is counted
and, after ``reconnect_after`` seconds, opened again, until ``seconds`` are over. ``result()`` returns the counts.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import resource
import socket
import time
from collections import Counter


def _status(answer: bytes) -> str:
    """``"503"`` for an HTTP answer, ``"closed"`` for none."""
    parts = answer.split(b" ", 2)
    return parts[1].decode("ascii", "replace") if len(parts) > 1 and answer.startswith(b"HTTP/") else "closed"


async def _one(port: int, head: bytes, body: bytes | None, hold_back: int, trickle_every: float, deadline: float,
               reconnect_after: float, counts: Counter, open_now: list[int]) -> None:
    while time.monotonic() < deadline:
        sock = socket.socket()
        sock.setblocking(False)
        try:  # a connected socket: open_connection("127.0.0.1", port) would resolve the name in a thread each time
            await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port)), 10)
            reader, writer = await asyncio.open_connection(sock=sock)
        except (OSError, asyncio.TimeoutError) as exc:
            sock.close()
            counts[f"connect {type(exc).__name__}"] += 1
            await asyncio.sleep(reconnect_after or 0.05)
            continue
        counts["connected"] += 1
        open_now[0] += 1
        began = time.monotonic()

        async def send() -> None:
            writer.write(head)
            if body is not None:
                writer.write(body[:len(body) - hold_back])
                await writer.drain()
                await asyncio.sleep(deadline - time.monotonic())
            while time.monotonic() < deadline:
                await writer.drain()
                await asyncio.sleep(trickle_every)
                writer.write(b"x")

        sender = asyncio.ensure_future(send())
        try:
            answer = await asyncio.wait_for(reader.read(200), max(0.1, deadline - time.monotonic()))
            counts[_status(answer)] += 1
            counts["answer ms max"] = max(counts["answer ms max"], int((time.monotonic() - began) * 1000))
        except asyncio.TimeoutError:
            counts["held to the end"] += 1
        except OSError as exc:
            counts[type(exc).__name__] += 1
        finally:
            sender.cancel()
            open_now[0] -= 1
            writer.transport.abort()
        if reconnect_after:
            await asyncio.sleep(reconnect_after)


async def _flood(port: int, connections: int, seconds: float, head: bytes, body: bytes | None, hold_back: int,
                 trickle_every: float, reconnect_after: float, ramp: float) -> dict:
    counts: Counter = Counter()
    open_now = [0]
    deadline = time.monotonic() + seconds
    most = 0
    tasks = []
    for index in range(connections):
        tasks.append(asyncio.ensure_future(_one(port, head, body, hold_back, trickle_every, deadline,
                                                reconnect_after, counts, open_now)))
        if ramp and index % 100 == 99:
            await asyncio.sleep(ramp * 100 / connections)
    while time.monotonic() < deadline - 0.5:
        most = max(most, open_now[0])
        await asyncio.sleep(0.2)
    await asyncio.gather(*tasks, return_exceptions=True)
    return {**counts, "most open at once": most}


def _run(queue, *args) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    queue.put(asyncio.run(_flood(*args)))


class Flood:
    """A bounded flood of 127.0.0.1:``port`` in a child process (module docstring); ``start()``, then ``result()``
    (waits until ``seconds`` are over) returns the counts: per answer status, ``closed`` (no answer), ``held to the
    end``, ``connected``, ``most open at once``, ``answer ms max`` (the slowest answer, milliseconds)."""

    def __init__(self, port: int, connections: int, seconds: float, head: bytes, *, body: bytes | None = None,
                 hold_back: int = 100, trickle_every: float = 5.0, reconnect_after: float = 0.0, ramp: float = 2.0):
        self.seconds = seconds
        self.queue = multiprocessing.get_context("fork").Queue()
        self.process = multiprocessing.get_context("fork").Process(
            target=_run, args=(self.queue, port, connections, seconds, head, body, hold_back, trickle_every,
                               reconnect_after, ramp), daemon=True)

    def start(self) -> "Flood":
        self.process.start()
        return self

    def result(self) -> dict:
        """The counts, once the flood is over (AssertionError when the flood process did not report)."""
        try:
            return self.queue.get(timeout=self.seconds + 60)
        finally:
            self.process.join(10)
            if self.process.is_alive():
                self.process.kill()
