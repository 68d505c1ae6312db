"""What the stack records of each request (its metrics and its access line), handed from the request to a thread
of the worker in batches.

Why: the stack's own per-request work is held to about 1.05x bare Flask's CPU instructions (issue 19,
``benchmarks/instructions.py``). A request only appends one tuple, a ``RequestRecord``, to a queue; every
``FLUSH_SECONDS`` a thread of the process ("request-batch") counts the batch into the metrics (one write per series
and batch: in multiprocess mode an mmap write is about 9,000 instructions) and formats its access lines in one loop
(``server.access_log.log_access_records``), which the log handler writes with its other lines.

When: batching is on while the stack's log handler buffers lines (STACK_LOG_FLUSH_SECONDS > 0, which ``serve``
sets to 0.25); otherwise each record is written by the request itself, in its thread and request context, when
Flask calls ``start_response`` (the dev loop, tests, ``flask run``). Bounds with batching (README.md, "Metrics"):

* a count reaches what ``/metrics`` serves at most ``FLUSH_SECONDS`` (0.05 s) plus the thread's wake-up after its
  request ended, so a scrape 0.2 s after the last request is exact across workers; a scrape served by the worker
  itself writes that worker's batch first (``HttpMetrics.render``); an access line waits at most that long plus the
  handler's own interval;
* a graceful exit, a reload or a recycled worker loses nothing: pending records are written at interpreter exit
  (``atexit``) and by ``flush_pending_requests``, which the servers' mappings call where a worker ends without
  ``atexit`` (granian's ``multiprocessing`` finalizer, uWSGI's ``atexit`` hook);
* a worker killed with SIGKILL loses at most its last batch (``FLUSH_SECONDS`` of requests): for Prometheus'
  ``rate()`` a tiny counter shortfall, the same as the request that worker was serving;
* the access record of a batched request is made in the batch thread (a logging filter of your own sees that
  thread, not the request's); a request's own log lines come before its access line, and a WARNING or worse line
  comes after every access line pending in the process (``server.logs.before_urgent_write``), but an access line
  may follow INFO lines that other requests logged up to ``FLUSH_SECONDS`` later.

A forked child starts with nothing pending (its parent's records are the parent's to write) and its own thread.
"""

from __future__ import annotations

import atexit
import collections
import logging
import os
import threading
import time
import weakref
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Optional, Tuple

from . import logs

FLUSH_SECONDS = 0.05  # the longest a record waits in a worker before it is counted and its line formatted
log = logging.getLogger("server.metrics")

#: One request: (started, ended: ``time.perf_counter()`` seconds; status: the WSGI status line, ``"200 OK"``;
#: method; the matched URL rule (``Rule.rule``, ``"/users/<int:id>"``) or None when none matched; path as the client asked
#: it (``SCRIPT_NAME`` + ``PATH_INFO``); request id; client address (``REMOTE_ADDR``) or None).
RequestRecord = Tuple[float, float, str, str, Any, str, str, Optional[str]]


class RequestBatch:
    """The records of one app's requests not yet counted and logged.

    Args:
        write: called with a list of ``RequestRecord`` (oldest first) to count and log them
            (``server.observe`` passes a function writing the metrics and the access lines). It must not raise
            for one bad record; an exception is logged and that batch dropped.
        batching: called when a record arrives and no batch is due; True: batch (see the module docstring),
            False: write it now, in the caller's thread.

    The request's side is ``append(record)`` then, when ``armed`` is False, ``arm()``: two attribute reads and a
    ``deque.append`` while a batch is due.
    """

    def __init__(self, write: Callable[[list], None], batching: Callable[[], bool]):
        self._write = write
        self._batching = batching
        self._queue: collections.deque = collections.deque()
        #: Queue a record (thread-safe; the deque is never replaced, a fork clears it).
        self.append = self._queue.append
        #: True while a batch is due: the thread will write every record appended before it clears this.
        self.armed = False
        # One batch written at a time; a scrape of this process waits for it. Reentrant: a warning logged while a
        # batch is written flushes the batches first (server.logs.before_urgent_write).
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        _BATCHES.add(self)

    def arm(self) -> None:
        """A record was appended and no batch is due: wake the thread, or write now when not batching."""
        if not self._batching():
            self.flush()
            return
        self.armed = True
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="request-batch", daemon=True)
                    self._thread.start()
        self._wake.set()

    def flush(self) -> None:
        """Write every pending record now (thread-safe; an exception of ``write`` is logged, never raised)."""
        with self._lock:
            self._write_pending()

    @contextmanager
    def flushed(self) -> Iterator[None]:
        """Write every pending record, then keep this process's batch writes out until the block ends: a scrape
        served by this process reads its own files after its writes, never while the thread creates a file
        (prometheus_client's reader fails on a file it finds empty)."""
        with self._lock:
            self._write_pending()
            yield

    def _write_pending(self) -> None:
        self.armed = False  # before the queue is read: a record appended after this arms the next batch
        queue = self._queue
        popleft = queue.popleft
        records = [popleft() for _ in range(len(queue))]
        if not records:
            return
        try:
            self._write(records)
        except Exception as exc:  # noqa: BLE001 - recording must never take the worker down
            log.warning("could not record %d requests: %s: %s", len(records), type(exc).__name__, exc)

    def _run(self) -> None:
        wait, clear = self._wake.wait, self._wake.clear
        while True:
            wait()
            clear()
            time.sleep(FLUSH_SECONDS)  # gather what else arrives meanwhile
            self.flush()

    def _after_fork_in_child(self) -> None:
        self._queue.clear()
        self.armed = False
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._thread = None


_BATCHES: "weakref.WeakSet[RequestBatch]" = weakref.WeakSet()


def flush_pending_requests() -> None:
    """Write every batch's pending records (at exit, and from the servers' worker-exit hooks)."""
    for batch in list(_BATCHES):
        batch.flush()


def _reset_after_fork() -> None:
    for batch in list(_BATCHES):
        batch._after_fork_in_child()


atexit.register(flush_pending_requests)
logs.before_urgent_write.append(flush_pending_requests)  # a warning comes after the access lines before it
os.register_at_fork(after_in_child=_reset_after_fork)
