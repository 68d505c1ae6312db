"""/metrics: request counting by URL rule, bounded label values, per-app registries, multiprocess totals."""

from __future__ import annotations

import importlib.metadata
import random
import string
import subprocess
import sys

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .support import USERAPPS, subprocess_env


def scrape(client, **kwargs):
    response = client.get("/metrics", **kwargs)
    assert response.status_code == 200
    return {f.name: f for f in text_string_to_metric_families(response.get_data(as_text=True))}


def requests_total(families, **labels):
    return sum(
        s.value for s in families["http_requests"].samples
        if s.name == "http_requests_total" and all(s.labels.get(k) == v for k, v in labels.items())
    )


def series(families):
    return {(s.name, tuple(sorted(s.labels.items()))) for f in families.values() for s in f.samples}


def test_endpoint_label_is_the_url_rule(make_app):
    client = make_app("basic").test_client()
    for user_id in (1, 2, 3):
        assert client.get(f"/users/{user_id}").status_code == 200
    families = scrape(client)
    assert requests_total(families, endpoint="/users/<int:user_id>", method="GET", status="200") == 3
    assert not any("/users/1" == s.labels.get("endpoint") for s in families["http_requests"].samples)
    counts = [s for s in families["http_request_duration_seconds"].samples
              if s.name == "http_request_duration_seconds_count" and s.labels["endpoint"] == "/users/<int:user_id>"]
    assert [c.value for c in counts] == [3]


def test_random_404s_add_no_series(make_app):
    client = make_app("basic").test_client()
    rng = random.Random(7)

    def junk():
        return "/" + "".join(rng.choices(string.ascii_letters + string.digits, k=12))

    assert client.get(junk()).status_code == 404
    scrape(client)  # the scrape itself is counted: make its series exist before comparing
    before = series(scrape(client))
    for _ in range(1000):
        assert client.get(junk()).status_code == 404
    families = scrape(client)
    assert series(families) == before
    assert requests_total(families, endpoint="<unmatched>", status="404") == 1001


def test_unknown_methods_and_405_collapse(make_app):
    client = make_app("basic").test_client()
    for method in ("FOO", "BAR", "PROPFIND"):
        client.open("/hello", method=method)
    assert client.post("/hello").status_code == 405
    families = scrape(client)
    methods = {s.labels["method"] for s in families["http_requests"].samples if "method" in s.labels}
    assert methods <= {"GET", "POST", "OTHER"}
    assert requests_total(families, method="OTHER", endpoint="<unmatched>") == 3
    assert requests_total(families, method="POST", endpoint="<unmatched>", status="405") == 1


def test_unhandled_exception_counted_as_500(make_app):
    client = make_app("basic", TESTING=False).test_client()
    assert client.get("/boom").status_code == 500
    assert requests_total(scrape(client), endpoint="/boom", status="500") == 1


def test_propagated_exception_still_counted(make_app):
    client = make_app("basic").test_client()  # TESTING: Flask re-raises into the test
    with pytest.raises(RuntimeError):
        client.get("/boom")
    assert requests_total(scrape(client), endpoint="/boom", status="500") == 1


def test_two_apps_do_not_share_metrics(make_app):
    a = make_app("basic").test_client()
    b = make_app("basic").test_client()
    for _ in range(5):
        a.get("/hello")
    b.get("/hello")
    assert requests_total(scrape(a), endpoint="/hello") == 5
    assert requests_total(scrape(b), endpoint="/hello") == 1


def test_process_platform_and_info_metrics(make_app):
    families = scrape(make_app("basic", APP_VERSION="1.2.3").test_client())
    assert "process_cpu_seconds" in families
    assert "process_resident_memory_bytes" in families
    assert "python_info" in families
    info = families["flask_stack_info"].samples[0]
    assert info.value == 1
    assert info.labels["stack_version"] == "0.4.0"
    assert info.labels["app_version"] == "1.2.3"
    assert info.labels["python_version"] == "%d.%d.%d" % sys.version_info[:3]
    assert info.labels["flask_version"] == importlib.metadata.version("flask")


def test_openmetrics_on_request(make_app):
    client = make_app(None).test_client()
    response = client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    assert response.get_data(as_text=True).rstrip().endswith("# EOF")
    plain = client.get("/metrics")
    assert plain.headers["Content-Type"].startswith("text/plain")


def test_track_requests_keeps_function_working():
    from server.routes.prometheus import track_requests

    @track_requests
    def hello(name):
        """doc"""
        return f"hi {name}"

    assert hello("x") == "hi x"
    assert hello.__name__ == "hello" and hello.__doc__ == "doc"


# -- multiprocess mode: real processes sharing PROMETHEUS_MULTIPROC_DIR -------------------------------------

_WORKER = r"""
import json, os, sys
from server import create_app
app = create_app({"USERAPP_DIR": sys.argv[1], "LOG_LEVEL": "WARNING"})
client = app.test_client()
for i in range(int(sys.argv[2])):
    assert client.get("/users/%d" % i).status_code == 200
client.get("/nowhere")
if sys.argv[3] == "scrape":
    sys.stdout.write(client.get("/metrics").get_data(as_text=True))
elif sys.argv[3].startswith("dead:"):
    from server.metrics import mark_process_dead
    mark_process_dead(int(sys.argv[3][5:]))
    sys.stdout.write(client.get("/metrics").get_data(as_text=True))
else:
    print(os.getpid())
"""


def _worker(tmp_path, n, mode):
    env = subprocess_env(PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
    return subprocess.Popen([sys.executable, "-c", _WORKER, str(USERAPPS / "basic"), str(n), mode], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc):
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return out


def test_multiprocess_totals_are_exact(tmp_path):
    first, second = _worker(tmp_path, 300, "pid"), _worker(tmp_path, 200, "pid")  # concurrently
    pids = {int(_finish(first)), int(_finish(second))}
    text = _finish(_worker(tmp_path, 7, "scrape"))
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert requests_total(families, endpoint="/users/<int:user_id>", status="200") == 507
    assert requests_total(families, endpoint="<unmatched>", status="404") == 3
    count = sum(s.value for s in families["http_request_duration_seconds"].samples
                if s.name == "http_request_duration_seconds_count" and s.labels["endpoint"] == "/users/<int:user_id>")
    assert count == 507
    memory = families["flask_stack_worker_resident_memory_bytes"].samples
    worker_pids = {int(s.labels["pid"]) for s in memory}
    assert pids < worker_pids  # dead workers stay until mark_process_dead
    assert all(s.value > 0 for s in memory)
    assert "flask_stack_info" in families and "python_info" in families
    assert "process_cpu_seconds" not in families  # the per-process collector is meaningless here
    # gunicorn's child_exit hook: the dead worker's gauges disappear, counters keep their totals
    dead = min(pids)
    text = _finish(_worker(tmp_path, 1, f"dead:{dead}"))
    families = {f.name: f for f in text_string_to_metric_families(text)}
    remaining = {int(s.labels["pid"]) for s in families["flask_stack_worker_resident_memory_bytes"].samples}
    assert dead not in remaining
    assert requests_total(families, endpoint="/users/<int:user_id>", status="200") == 508
    # its counts now live in the folded files, which a scrape reads instead of the dead worker's
    assert not list(tmp_path.glob(f"*_{dead}.db"))
    assert {p.name for p in tmp_path.glob("*_folded.db")} == {"counter_folded.db", "histogram_folded.db"}


def test_dead_workers_fold_into_one_file_per_type(tmp_path):
    """However many workers die, a scrape reads one folded file per type plus the live workers' files, and every
    total (counters, histogram buckets, sums and counts) stays exact."""
    from server.metrics import mark_process_dead

    pids = [int(_finish(_worker(tmp_path, n, "pid"))) for n in (3, 5, 7, 11, 13)]
    assert len(list(tmp_path.glob("*.db"))) >= 3 * len(pids)  # counter, histogram, worker gauges: each worker's
    for pid in pids:
        assert mark_process_dead(pid, str(tmp_path)) is True  # what the serving layer does when a worker is gone
    assert {p.name for p in tmp_path.glob("*.db")} == {"counter_folded.db", "histogram_folded.db"}
    text = _finish(_worker(tmp_path, 2, "scrape"))
    families = {f.name: f for f in text_string_to_metric_families(text)}
    served = 3 + 5 + 7 + 11 + 13 + 2
    assert requests_total(families, endpoint="/users/<int:user_id>", status="200") == served
    assert requests_total(families, endpoint="<unmatched>", status="404") == len(pids) + 1
    durations = [s for s in families["http_request_duration_seconds"].samples
                 if s.labels.get("endpoint") == "/users/<int:user_id>"]
    count = [s.value for s in durations if s.name.endswith("_count")]
    inf = [s.value for s in durations if s.name.endswith("_bucket") and s.labels["le"] == "+Inf"]
    assert count == inf == [served]
    buckets = [s.value for s in durations if s.name.endswith("_bucket")]
    assert buckets == sorted(buckets)  # cumulative, as a single process would serve them


def test_fold_leaves_a_live_pid_alone(tmp_path):
    """A process with the pid exists (a new worker that reused it): its file is not folded away."""
    import os

    from server.metric_files import fold_dead_worker

    pid = int(_finish(_worker(tmp_path, 4, "pid")))
    own = tmp_path / f"counter_{os.getpid()}.db"
    (tmp_path / f"counter_{pid}.db").rename(own)
    assert fold_dead_worker(str(tmp_path), os.getpid()) is False
    assert own.exists() and not (tmp_path / "counter_folded.db").exists()
    assert not list(tmp_path.glob(".*.new"))


def test_in_progress_gauge_is_off_by_default(make_app):
    families = scrape(make_app(None).test_client())
    assert "http_requests_in_progress" not in families
    assert "http_requests" in families


def test_in_progress_gauge(make_app):
    import threading

    from flask import Blueprint

    app = make_app(None, METRICS_IN_PROGRESS=True)
    gate, entered = threading.Event(), threading.Event()
    bp = Blueprint("slow", __name__)

    @bp.route("/slow")
    def slow():
        entered.set()
        gate.wait(10)
        return "done"

    app.register_blueprint(bp)
    client = app.test_client()
    worker = threading.Thread(target=lambda: client.get("/slow"))
    worker.start()
    try:
        assert entered.wait(10)
        during = scrape(app.test_client())["http_requests_in_progress"].samples[0].value
    finally:
        gate.set()
        worker.join(10)
    assert during == 2  # /slow and the scrape itself
    assert scrape(client)["http_requests_in_progress"].samples[0].value == 1  # only this scrape


def test_direct_recording_matches_prometheus_client():
    """HttpMetrics records through cached label children; a scrape must equal what prometheus_client's own
    Counter.inc / Histogram.observe / Gauge.inc+dec give for the same requests, bucket boundaries included."""
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

    from server.metrics import HttpMetrics

    metrics = HttpMetrics("0", in_progress=True)
    registry = CollectorRegistry()
    requests = Counter("http_requests", "x", ["method", "endpoint", "status"], registry=registry)
    duration = Histogram("http_request_duration_seconds", "x", ["method", "endpoint"], registry=registry)
    in_progress = Gauge("http_requests_in_progress", "x", registry=registry)
    samples = [0.0, 0.005, 0.0050001, 0.01, 0.3, 2.5, 10.0, 10.5, 1e9, float("inf"), 0.004999, 7.5]
    for i, seconds in enumerate(samples):
        status = 200 if i % 3 else 503
        metrics.in_progress.inc()
        in_progress.inc()
        metrics.observe("GET", "/a/<int:x>", status, seconds)
        requests.labels("GET", "/a/<int:x>", str(status)).inc()
        duration.labels("GET", "/a/<int:x>").observe(seconds)
        if i % 4:
            metrics.in_progress.dec()
            in_progress.dec()

    def values(text: bytes) -> dict:
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text.decode())
                if family.name.startswith("http_") for s in family.samples if not s.name.endswith("_created")}

    got, expected = values(metrics.render()[0]), values(generate_latest(registry))
    assert got == expected
    assert got[("http_requests_in_progress", ())] == 3.0
