"""Batched request records (server.request_batch) in multiprocess mode: the same metric totals as writing each
request at once, within the documented delay, at exit, and never twice across a fork."""

from __future__ import annotations

import json
import subprocess
import sys

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.multiprocess import MultiProcessCollector

from .support import subprocess_env

# Each script runs with PROMETHEUS_MULTIPROC_DIR set (prometheus_client reads it at import).
_PRELUDE = """
import json, os, sys, time
from server.metrics import HttpMetrics
from server.request_batch import FLUSH_SECONDS, RequestBatch, flush_pending_requests
metrics = HttpMetrics("test")
assert metrics.multiprocess
batch = RequestBatch(metrics.record, lambda: True)  # as under serve (buffered logs)
metrics.batch = batch

def request(method, rule, status, seconds):
    \"\"\"One request's record, as server.observe appends it.\"\"\"
    batch.append((0.0, seconds, f"{status} X", method, rule, "/p", "id", None))  # exact durations
    if not batch.armed:
        batch.arm()
"""


def _run(tmp_path, body: str) -> str:
    done = subprocess.run([sys.executable, "-c", _PRELUDE + body], env=subprocess_env(
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path)), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _samples(directory) -> dict[tuple, float]:
    """What a scrape of ``directory`` reads: (sample name, sorted labels) -> value."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for family in registry.collect()
            for s in family.samples}


def test_histogram_internals_the_batch_writes_through():
    """The private attributes of prometheus_client's Histogram that a batch adds to (``HttpMetrics._write_series``): when
    a release renames them, this fails first."""
    histogram = Histogram("probe_seconds", "probe", ["route"], registry=CollectorRegistry())
    child = histogram.labels("/x")
    assert hasattr(child._sum, "inc") and all(hasattr(bucket, "inc") for bucket in child._buckets)
    assert len(child._buckets) == len(Histogram.DEFAULT_BUCKETS) and Histogram.DEFAULT_BUCKETS[-1] == float("inf")
    child._sum.inc(1.5)
    child._buckets[3].inc(2)
    samples = {(s.name, s.labels.get("le")): s.value for s in histogram.collect()[0].samples}
    assert samples[("probe_seconds_sum", None)] == 1.5
    assert samples[("probe_seconds_bucket", "0.05")] == 2 and samples[("probe_seconds_bucket", "0.025")] == 0
    assert samples[("probe_seconds_count", None)] == 2


def test_batched_totals_equal_the_requests(tmp_path):
    durations = [0.001, 0.005, 0.0051, 0.02, 0.3, 0.3, 7.0, 11.0, 0.0]
    _run(tmp_path, f"""
for seconds in {durations!r}:
    request("GET", "/a", 200, seconds)
request("POST", None, 404, 0.2)
flush_pending_requests()
""")
    samples = _samples(tmp_path)
    assert samples[("http_requests_total", (("endpoint", "/a"), ("method", "GET"), ("status", "200")))] == 9
    assert samples[("http_requests_total", (("endpoint", "<unmatched>"), ("method", "POST"), ("status", "404")))] == 1
    labels = (("endpoint", "/a"), ("method", "GET"))
    assert abs(samples[("http_request_duration_seconds_sum", labels)] - sum(durations)) < 1e-9
    assert samples[("http_request_duration_seconds_count", labels)] == 9
    for bound in Histogram.DEFAULT_BUCKETS:  # le buckets are cumulative; a value equal to a bound is in it
        le = "+Inf" if bound == float("inf") else repr(float(bound))
        expected = sum(1 for d in durations if d <= bound)
        assert samples[("http_request_duration_seconds_bucket", tuple(sorted(labels + (("le", le),))))] == expected, le


def test_counts_reach_the_files_within_the_flush_interval(tmp_path):
    out = _run(tmp_path, """
request("GET", "/a", 200, 0.01)
started = time.monotonic()
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
def total():
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    return sum(s.value for f in registry.collect() for s in f.samples if s.name == "http_requests_total")
while total() != 1 and time.monotonic() - started < 5:
    time.sleep(0.005)
print(json.dumps({"seconds": time.monotonic() - started, "total": total()}))
""")
    found = json.loads(out)
    assert found["total"] == 1
    assert found["seconds"] < 0.2, found  # FLUSH_SECONDS (0.05) plus the thread's wake-up, with room for a busy CI


def test_exit_writes_what_is_pending(tmp_path):
    _run(tmp_path, """
for _ in range(5):
    request("GET", "/a", 200, 0.01)
""")  # a normal exit, no flush called: atexit writes the batch
    assert _samples(tmp_path)[("http_requests_total", (("endpoint", "/a"), ("method", "GET"), ("status", "200")))] == 5


def test_a_forked_child_never_writes_its_parents_counts(tmp_path):
    _run(tmp_path, """
request("GET", "/a", 200, 0.01)  # pending in the parent when it forks
pid = os.fork()
if pid == 0:
    request("GET", "/a", 200, 0.01)
    request("GET", "/a", 200, 0.01)
    flush_pending_requests()
    os._exit(0)
os.waitpid(pid, 0)
""")
    assert _samples(tmp_path)[("http_requests_total", (("endpoint", "/a"), ("method", "GET"), ("status", "200")))] == 3
