"""Request metrics batched per worker process (multiprocess mode): counts and durations gathered in memory and
written to prometheus_client's mmap files at most ``FLUSH_SECONDS`` after the request that made them.

Why: in multiprocess mode every ``Counter.inc`` and ``Histogram.observe`` takes a lock and writes the mmap file
(three writes per request: the counter, the histogram's sum, one bucket), about 28,000 CPU instructions per
request (``benchmarks/instructions.py --parts``). Here a request adds to a dict under one lock; a thread of the
worker writes each series' totals once per batch.

Bounds (issue 19; README.md, "Metrics"):

* a count reaches what ``/metrics`` serves at most ``FLUSH_SECONDS`` (0.05 s) plus the thread's wake-up after its
  request ended; a scrape 0.2 s after the last request is exact across workers; a scrape served by the worker
  itself first writes that worker's batch (``HttpMetrics.render``);
* a graceful exit, a reload or a recycled worker loses nothing: pending counts are written at interpreter exit
  (``atexit``) and by ``flush_pending_metrics``, which the servers' mappings call where a worker ends without
  ``atexit`` (granian's ``multiprocessing`` finalizer, uWSGI's ``atexit`` hook);
* a worker killed with SIGKILL loses at most its last batch (``FLUSH_SECONDS`` of counts): for Prometheus' ``rate()``
  a tiny counter shortfall, the same as the request that worker was serving.

A forked child starts with nothing pending (its parent's counts are the parent's to write) and its own thread.

The histogram's totals are added through ``Histogram``'s per-child values (``_sum`` and ``_buckets``, private
attributes of prometheus_client's ``Histogram``: it has no public way to add n observations at once);
``tests/runtime/test_metric_batch.py`` fails when they change.
"""

from __future__ import annotations

import atexit
import bisect
import logging
import os
import threading
import time
import weakref
from contextlib import contextmanager
from typing import Any, Iterator

FLUSH_SECONDS = 0.05  # the longest a count waits in a worker before it reaches the mmap files
log = logging.getLogger("server.metrics")


class MetricBatch:
    """The pending counts of one ``HttpMetrics`` (its ``requests`` counter and ``duration`` histogram).

    Args:
        requests: the ``http_requests`` Counter (labels method, endpoint, status).
        duration: the ``http_request_duration_seconds`` Histogram (labels method, endpoint).
        bounds: the histogram's bucket upper bounds, seconds, ascending, the last ``inf``.
    """

    def __init__(self, requests: Any, duration: Any, bounds: tuple[float, ...]):
        self._requests = requests
        self._duration = duration
        self._bounds = bounds
        self._pending: dict[tuple[str, str, int], list] = {}  # key -> [count, sum of seconds, per-bucket counts]
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()  # one batch written at a time; a scrape of this process waits for it
        self._armed = False  # a flush is due (the thread was woken for the counts pending)
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        _BATCHES.add(self)

    def add(self, key: tuple[str, str, int], seconds: float) -> None:
        """Count one request of series ``key`` (method, endpoint, status) that took ``seconds``."""
        index = bisect.bisect_left(self._bounds, seconds)  # the first bucket whose upper bound is >= seconds
        with self._lock:
            entry = self._pending.get(key)
            if entry is None:
                entry = self._pending[key] = [0, 0.0, [0] * len(self._bounds)]
            entry[0] += 1
            entry[1] += seconds
            entry[2][index] += 1
            if self._armed:
                return
            self._armed = True
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="metrics-flush", daemon=True)
                self._thread.start()
        self._wake.set()

    def flush(self) -> None:
        """Write every pending count to prometheus_client's values now (thread-safe; never raises on an empty
        batch)."""
        with self._write_lock:
            self._write_pending()

    @contextmanager
    def flushed(self) -> Iterator[None]:
        """Write every pending count, then keep this process's batch writes out until the block ends: a scrape
        served by this process reads its own files after its writes, never while the thread creates a file
        (prometheus_client's reader fails on a file it finds empty)."""
        with self._write_lock:
            self._write_pending()
            yield

    def _write_pending(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
            self._armed = False
        for (method, endpoint, status), (count, total, buckets) in pending.items():
            self._requests.labels(method, endpoint, str(status)).inc(count)
            child = self._duration.labels(method, endpoint)
            child._sum.inc(total)  # private (see the module docstring): n observations in one write
            for index, in_bucket in enumerate(buckets):
                if in_bucket:
                    child._buckets[index].inc(in_bucket)

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            time.sleep(FLUSH_SECONDS)  # gather what else arrives meanwhile
            try:
                self.flush()
            except Exception as exc:  # noqa: BLE001 - counting must never take the worker down; keep flushing
                log.warning("could not write the request metrics: %s: %s", type(exc).__name__, exc)

    def _after_fork_in_child(self) -> None:
        self._pending = {}
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._armed = False
        self._wake = threading.Event()
        self._thread = None


_BATCHES: "weakref.WeakSet[MetricBatch]" = weakref.WeakSet()


def flush_pending_metrics() -> None:
    """Write every batch's pending counts (at exit, and from the servers' worker-exit hooks)."""
    for batch in list(_BATCHES):
        batch.flush()


def _reset_after_fork() -> None:
    for batch in list(_BATCHES):
        batch._after_fork_in_child()


atexit.register(flush_pending_metrics)
os.register_at_fork(after_in_child=_reset_after_fork)
