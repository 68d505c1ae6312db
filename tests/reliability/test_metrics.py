"""/metrics with several workers: exact totals, bounded cardinality, and a real Prometheus scraping it."""

from __future__ import annotations

import json
import random
import shutil
import string
import subprocess
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from testkit.net import free_port
from testkit.serve import SERVERS, get, require_tool, run_wrk

from .harness import sample_value, scrape, series_keys

pytestmark = pytest.mark.slow

RANDOM_PATHS_LUA = """
-- every request: a new unknown path
math.randomseed(os.time())
request = function()
  return wrk.format("GET", "/no/such/" .. math.random(1, 1000000000) .. "/" .. math.random(1, 1000000000))
end
"""


@pytest.mark.parametrize("server", SERVERS)
def test_request_totals_are_exact_over_all_workers(server, start_server):
    # A worker takes at most 5 connections at once and each request is held 20 ms, so 12 concurrent clients
    # (a fresh connection per request) are necessarily spread over the 3 workers.
    srv = start_server(server=server, workers=3, env={"GUNICORN_CMD_ARGS": "--worker-connections 5"})
    total = 300
    with ThreadPoolExecutor(max_workers=12) as pool:
        answers = list(pool.map(lambda _: get(srv.port, "/whoami?hold=0.02"), range(total)))
    assert all(status == 200 for status, _, _ in answers)
    pids = {json.loads(body)["pid"] for _, _, body in answers}
    assert len(pids) >= 2, f"all {total} requests went to one worker; the test would prove nothing"

    time.sleep(0.2)  # each worker writes its counts at most 0.05 s after a request (server.request_batch; issue 19)
    for _ in range(20):
        samples = scrape(srv.port)
        assert sample_value(samples, "http_requests_total", endpoint="/whoami") == total
        assert sample_value(samples, "http_requests_total", endpoint="/whoami", method="GET", status="200") == total
        assert sample_value(samples, "http_request_duration_seconds_count", endpoint="/whoami") == total


@pytest.mark.parametrize("server", SERVERS)
def test_a_graceful_stop_loses_no_count(server, start_server):
    """SIGTERM right after the last answer: each worker writes its pending counts as it ends (atexit, granian's
    multiprocessing finalizer), so the metrics directory holds every request."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    srv = start_server(server=server, workers=2)
    total = 200
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(lambda _: get(srv.port, "/hello")[0], range(total)))
    assert answers == [200] * total
    assert srv.stop() == 0, srv.log_tail()  # at once: counts of the last 0.05 s are still pending in the workers
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(srv.metrics_dir))
    counted = sum(s.value for family in registry.collect() for s in family.samples
                  if s.name == "http_requests_total" and s.labels.get("endpoint") == "/hello")
    assert counted == total, srv.log_tail()


@pytest.mark.parametrize("server", SERVERS)
def test_random_unknown_paths_add_no_series(server, start_server, tmp_path):
    srv = start_server(server=server, workers=2)
    script = tmp_path / "random_paths.lua"
    script.write_text(RANDOM_PATHS_LUA)
    # Warm up: the shared "unmatched" series exist, every worker has written its files.
    run_wrk(srv.port, "/", 2, connections=8, script=script)
    for path in ("/hello", "/metrics"):
        get(srv.port, path)
    before = series_keys(scrape(srv.port))

    sent = 0
    for _ in range(12):  # bounded: at most 12 x 4 s
        sent += run_wrk(srv.port, "/", 4, connections=16, script=script).requests
        if sent >= 10_000:
            break
    assert sent >= 10_000, f"only {sent} requests were sent"
    samples = scrape(srv.port)
    added = series_keys(samples) - before
    assert not added, f"{len(added)} new series after {sent} unknown paths, e.g. {sorted(added)[:5]}"
    unmatched = sum(
        s.value for s in samples if s.name == "http_requests_total" and s.labels.get("status") in ("404", "405")
    )
    assert unmatched >= sent, "the unknown-path requests were not counted"


@pytest.mark.parametrize("server", SERVERS)
def test_unknown_methods_add_no_series(server, start_server):
    srv = start_server(server=server, workers=2)
    rng = random.Random(7)
    get(srv.port, "/hello", method="NOPE")
    get(srv.port, "/no/such/path", method="NOPE")
    scrape(srv.port)  # the first scrape adds the /metrics endpoint's own series
    before = series_keys(scrape(srv.port))
    for _ in range(300):
        method = "".join(rng.choice(string.ascii_uppercase) for _ in range(rng.randint(3, 12)))
        status, _, _ = get(srv.port, rng.choice(["/hello", "/whoami", f"/no/{rng.random()}"]), method=method)
        assert 400 <= status < 500
    added = series_keys(scrape(srv.port)) - before
    assert not added, f"{len(added)} new series after 300 random methods, e.g. {sorted(added)[:5]}"


def _prometheus_query(api_port: int, query: str) -> list:
    url = f"http://127.0.0.1:{api_port}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(url, timeout=5) as resp:
        payload = json.load(resp)
    assert payload["status"] == "success", payload
    return payload["data"]["result"]


@pytest.mark.parametrize("server", SERVERS)
def test_real_prometheus_scrapes_the_app(server, start_server, tmp_path):
    prometheus = require_tool("prometheus")
    srv = start_server(server=server, workers=2)
    count = 37
    for _ in range(count):
        assert get(srv.port, "/hello")[0] == 200

    api_port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
        "scrape_configs:\n"
        "  - job_name: flask-stack\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{srv.port}']\n"
    )
    log = open(tmp_path / "prometheus.log", "wb")
    proc = subprocess.Popen(
        [
            prometheus,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{api_port}",
            f"--web.console.templates={tmp_path}",
            f"--web.console.libraries={tmp_path}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    query = 'http_requests_total{job="flask-stack",endpoint="/hello"}'
    try:
        result, deadline = [], time.monotonic() + 40
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()[-2000:]
            try:
                result = _prometheus_query(api_port, query)
            except OSError:
                result = []
            if result and float(result[0]["value"][1]) == count:
                break
            time.sleep(0.5)
        assert len(result) == 1, f"{query} -> {result}\n" + (tmp_path / "prometheus.log").read_text()[-2000:]
        series = result[0]
        assert float(series["value"][1]) == count
        assert series["metric"]["method"] == "GET" and series["metric"]["status"] == "200"
        assert series["metric"]["instance"] == f"127.0.0.1:{srv.port}"
        up = _prometheus_query(api_port, 'up{job="flask-stack"}')
        assert up and up[0]["value"][1] == "1"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        shutil.rmtree(tmp_path / "tsdb", ignore_errors=True)
