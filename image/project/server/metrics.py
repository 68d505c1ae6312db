"""Prometheus metrics of one app (own ``CollectorRegistry``; no global registry), single- or multi-process.

Series (names follow Prometheus conventions; the exposition format comes from prometheus_client):

* ``http_requests_total{method, endpoint, status}`` counter and
  ``http_request_duration_seconds{method, endpoint}`` histogram (seconds) for every request to every route.
  ``endpoint`` is the matched URL rule (``/users/<int:id>``), never the raw path; requests matching no rule
  (404, 405) all use ``endpoint="<unmatched>"``; methods outside the standard HTTP set become ``method="OTHER"``.
  So URL scans and odd methods add no series.
* ``http_requests_in_progress`` gauge, only with ``in_progress=True`` (STACK_METRICS_IN_PROGRESS=1): requests
  being served now (summed over live workers when multiprocess).
  Requests are counted per batch (``record``, called by ``server.request_batch``: one write per series and batch;
  a count reaches ``/metrics`` at most 0.05 s after its request, a worker killed with SIGKILL loses at most that
  much). The in-progress gauge adds an inc and a dec written at once (about 1.4 us), which is why it is opt-in (as
  in prometheus-fastapi-instrumentator).
* ``flask_stack_info{stack_version, app_version, python_version, flask_version}`` = 1.
* Single process: ``process_*`` (CPU seconds, memory bytes, fds, start time), ``python_info``, ``python_gc_*``, and
  every metric in prometheus_client's default registry (``prometheus_client.REGISTRY``, where a ``Counter(...)``
  without ``registry=`` goes: the user's module-level metrics, libraries'), less its own process, platform and GC
  collectors, which would repeat the app's (``DefaultRegistryCollector``).
* Multiprocess (PROMETHEUS_MULTIPROC_DIR set in the environment before prometheus_client is imported, as its
  docs require): values live in mmap files in that directory; each scrape reads them all through the worker's
  ``server.metric_scrape.DirectoryScraper`` (what ``MultiProcessCollector`` gives, its parsed keys and exposition
  text kept between scrapes), so counters and histograms are exact totals over all workers. ``process_*`` cannot
  work there, so each worker exports ``flask_stack_worker_*{pid}`` gauges (mode ``liveall``): resident and virtual
  memory (bytes), CPU time (seconds), open fds, start time (unix seconds); metrics the user made, in any registry,
  come from the mmap files like the stack's. Refreshed at most every ``WORKER_REFRESH_SECONDS`` by requests
  (the batch thread) and by a scrape that worker serves, so a scrape sees its own worker's values at most that
  old. The serving layer calls ``mark_process_dead(pid)`` when a worker is gone: its gauges disappear and its
  counts are folded into one file per type (``server.metric_files``), so a scrape's cost does not grow with the
  workers that ever lived.
"""

from __future__ import annotations

import bisect
import functools
import os
import platform
import threading
import time
from typing import Any, Iterable

import prometheus_client
from prometheus_client import values
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess
from prometheus_client.exposition import choose_encoder
from prometheus_client.gc_collector import GCCollector
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

import stacksettings

from .metric_files import fold_dead_worker
from .metric_scrape import DirectoryScraper

UNMATCHED = "<unmatched>"
OTHER_METHOD = "OTHER"
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT"})
WORKER_REFRESH_SECONDS = 5.0
BUCKETS = Histogram.DEFAULT_BUCKETS  # seconds; prometheus_client's defaults, the last +Inf


def multiprocess_enabled() -> bool:
    """True when prometheus_client runs in multiprocess mode (PROMETHEUS_MULTIPROC_DIR was set at its import)."""
    return values.ValueClass is not values.MutexValue


def mark_process_dead(pid: int, path: str | None = None) -> bool:
    """A worker ``pid`` is gone: remove its live-gauge files (prometheus_client's ``mark_process_dead``) and fold its
    counters, histograms and summaries into the directory's folded files (``server.metric_files``), so scrapes
    never read it again. No-op when not in multiprocess mode. ``path`` defaults to PROMETHEUS_MULTIPROC_DIR.
    Returns True when counts were folded.

    Raises:
        OSError: a metric file cannot be read, written or removed.
    """
    path = path or _multiprocess_dir()
    if not path:
        return False
    multiprocess.mark_process_dead(pid, path)
    return fold_dead_worker(path, pid)


def _multiprocess_dir() -> str | None:
    """PROMETHEUS_MULTIPROC_DIR (or prometheus_client's deprecated lower-case name), None when unset."""
    return stacksettings.value("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir") or None


class InfoCollector:
    """Yields ``flask_stack_info`` (constant 1) with the stack, app, Python and Flask versions as labels (Flask's
    looked up on the first scrape, not in every worker's start: ``dist_version`` scans ``sys.path``)."""

    def __init__(self, stack_version: str, app_version: str | None):
        self._labels = {
            "stack_version": stack_version,
            "app_version": app_version or "",
            "python_version": platform.python_version(),
        }

    def collect(self) -> Iterable[Metric]:
        """Return the info family (prometheus_client collector protocol)."""
        labels = {**self._labels, "flask_version": dist_version("flask")}
        family = GaugeMetricFamily("flask_stack_info", "python-flask stack and app versions", labels=list(labels))
        family.add_metric(list(labels.values()), 1)
        return [family]


@functools.lru_cache(maxsize=None)
def dist_version(name: str) -> str:
    """The installed version of distribution ``name`` ('' when not installed), looked up once per process (each
    lookup scans ``sys.path``: milliseconds, on every app the dev loop makes otherwise)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return ""


_WORKER_GAUGES = (
    ("resident_memory_bytes", "Resident memory of this worker process, in bytes."),
    ("virtual_memory_bytes", "Virtual memory of this worker process, in bytes."),
    ("cpu_seconds", "CPU time (user + system) used by this worker process, in seconds."),
    ("open_fds", "Open file descriptors of this worker process."),
    ("start_time_seconds", "Start time of this worker process, in seconds since the epoch."),
)


class DefaultRegistryCollector:
    """The metrics of prometheus_client's default registry (``prometheus_client.REGISTRY``) except the families of
    its default process, platform and GC collectors (``PROCESS_COLLECTOR``, ``PLATFORM_COLLECTOR``,
    ``GC_COLLECTOR``), which the app's registry has already. Collected through the public ``collect()`` calls."""

    def __init__(self) -> None:
        self._skip = {family.name for collector in (prometheus_client.PROCESS_COLLECTOR,
                                                    prometheus_client.PLATFORM_COLLECTOR,
                                                    prometheus_client.GC_COLLECTOR)
                      for family in collector.collect()}

    def describe(self) -> list[Metric]:
        """Nothing: the default registry's names may change after registration (no duplicate check here)."""
        return []

    def collect(self) -> Iterable[Metric]:
        for family in prometheus_client.REGISTRY.collect():
            if family.name not in self._skip:
                yield family


class HttpMetrics:
    """The metrics of one app. ``observe`` records a request; ``render`` produces a scrape.

    Args:
        stack_version: ``server.__version__``.
        app_version: the user's app version (STACK_APP_VERSION) or None.
        in_progress: also keep the ``http_requests_in_progress`` gauge (STACK_METRICS_IN_PROGRESS).
    """

    _scraper: DirectoryScraper | None = None  # multiprocess: made by the first ``render`` of this process

    def __init__(self, stack_version: str, app_version: str | None = None, in_progress: bool = False):
        self.multiprocess = multiprocess_enabled()
        self.registry = CollectorRegistry()
        self.info = InfoCollector(stack_version, app_version)
        self.requests = Counter(
            "http_requests", "HTTP requests served, by method, matched URL rule and status code.",
            ["method", "endpoint", "status"], registry=self.registry,
        )
        self.duration = Histogram(
            "http_request_duration_seconds", "Time to produce the HTTP response, in seconds, by method and URL rule.",
            ["method", "endpoint"], registry=self.registry, buckets=BUCKETS,
        )
        #: The in-progress gauge, or None when it is off; callers test ``is not None`` before ``inc``/``dec``.
        self.in_progress: Gauge | None = None
        if in_progress:
            self.in_progress = Gauge(
                "http_requests_in_progress", "HTTP requests being served right now.", registry=self.registry,
                multiprocess_mode="livesum",
            )
        self._lock = threading.Lock()
        self._children: dict[tuple[str, str, str], tuple[Any, Any]] = {}  # labels -> (counter child, histogram child)
        self._last_refresh = 0.0
        self._worker: dict[str, Gauge] | None = None  # made on first refresh: never in a preloading master
        #: The batch of requests not yet counted (``server.request_batch.RequestBatch``), set by
        #: ``server.observe.install_observation``: a scrape writes it first. None: every count is written at once.
        self.batch: Any = None
        if self.multiprocess:
            self._process = ProcessCollector(registry=None)
            self._platform = PlatformCollector(registry=None)
        else:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            GCCollector(registry=self.registry)
            self.registry.register(self.info)
            self.registry.register(DefaultRegistryCollector())

    def observe(self, method: str, endpoint: str | None, status: int, seconds: float) -> None:
        """Record one request now: ``endpoint`` is the URL rule or None (unmatched); ``seconds`` its duration."""
        self._write_series(method, endpoint, str(status), [seconds])

    def record(self, records: list) -> None:
        """Count a batch of ``server.request_batch.RequestRecord`` tuples: one write per series, not per request."""
        series: dict[tuple, list[float]] = {}
        for record in records:
            started, ended, status, method, endpoint = record[:5]
            key = (method, endpoint, status)
            durations = series.get(key)
            if durations is None:
                series[key] = [ended - started]
            else:
                durations.append(ended - started)
        for (method, endpoint, status), durations in series.items():
            self._write_series(method, endpoint, status[:3], durations)
        self._refresh_stale_worker()

    def _write_series(self, method: str, endpoint: str | None, status: str, durations: list[float]) -> None:
        """Add ``durations`` (seconds, one per request) to the series of ``method``, ``endpoint`` (None:
        unmatched) and ``status`` (three digits): the counter once, the histogram's sum once, each bucket once.

        The histogram is added to through its per-child values (``_sum`` and ``_buckets``, private attributes of
        prometheus_client's ``Histogram``: it has no public way to add n observations at once);
        ``tests/runtime/test_request_batch.py`` fails when they change."""
        method = method if method in KNOWN_METHODS else OTHER_METHOD
        endpoint = endpoint if endpoint is not None else UNMATCHED
        key = (method, endpoint, status)
        children = self._children.get(key)
        if children is None:  # label values are bounded (rules x methods x statuses), so is this cache
            children = self._children[key] = (self.requests.labels(method, endpoint, status),
                                              self.duration.labels(method, endpoint))
        counter, histogram = children
        counter.inc(len(durations))
        histogram._sum.inc(sum(durations))  # private (see the docstring): n observations in one write
        durations.sort()
        below = 0
        for bound, bucket in zip(BUCKETS, histogram._buckets):
            upto = bisect.bisect_right(durations, bound)  # a value equal to a bound is in its bucket (le)
            if upto > below:
                bucket.inc(upto - below)
                below = upto

    def _refresh_stale_worker(self) -> None:
        """``refresh_worker`` when its gauges are ``WORKER_REFRESH_SECONDS`` old or older (multiprocess mode)."""
        if self.multiprocess and time.monotonic() - self._last_refresh >= WORKER_REFRESH_SECONDS:
            self.refresh_worker()

    def refresh_worker(self) -> None:
        """Update this worker's ``flask_stack_worker_*`` gauges from /proc (multiprocess mode only)."""
        if not self.multiprocess:
            return
        with self._lock:
            self._last_refresh = time.monotonic()
            if self._worker is None:
                self._worker = {
                    name: Gauge(f"flask_stack_worker_{name}", text, registry=self.registry,
                                multiprocess_mode="liveall")
                    for name, text in _WORKER_GAUGES
                }
            names = {
                "process_resident_memory_bytes": "resident_memory_bytes",
                "process_virtual_memory_bytes": "virtual_memory_bytes",
                "process_cpu_seconds": "cpu_seconds",
                "process_open_fds": "open_fds",
                "process_start_time_seconds": "start_time_seconds",
            }
            for family in self._process.collect():
                target = names.get(family.name)
                if target and family.samples:
                    self._worker[target].set(family.samples[0].value)

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """Produce a scrape for an ``Accept`` header: (body, content type). Prometheus text format by default,
        OpenMetrics when asked for it. Multiprocess: the directory's files through this process's
        ``DirectoryScraper`` (``server.metric_scrape``: what does not change between scrapes is kept)."""
        encoder, content_type = choose_encoder(accept or "")
        if not self.multiprocess:
            if self.batch is not None:
                self.batch.flush()  # this process's requests so far
            return encoder(self.registry), content_type
        self._refresh_stale_worker()  # under load the batch thread has already: no /proc reads in the scrape
        directory = _multiprocess_dir() or ""
        with self._lock:
            if self._scraper is None or self._scraper.directory != directory:
                self._scraper = DirectoryScraper(directory)
        others = (self._platform, self.info)
        if self.batch is None:
            return self._scraper.expose(encoder, others), content_type
        with self.batch.flushed():  # this worker's own counts, exact in its own scrape, its files complete
            return self._scraper.expose(encoder, others), content_type
