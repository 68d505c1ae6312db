"""A readiness check that never returns: /health answers in time, says DOWN, and nothing else suffers."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from testkit.serve import SERVERS, get, thread_count

pytestmark = pytest.mark.slow

HEALTH_TIMEOUT = 1.0  # STACK_HEALTH_TIMEOUT, seconds
SLACK = 2.0  # seconds allowed on top of the check timeout (scheduling on a loaded 2-core machine)


@pytest.mark.parametrize("server", SERVERS)
def test_hung_readiness_check_times_out_without_harm(server, start_server):
    srv = start_server(
        server=server,
        workers=2,
        env={"RELIABILITY_HANG_CHECK": "1", "STACK_HEALTH_TIMEOUT": str(HEALTH_TIMEOUT)},
        ready_path="/health/live",
    )

    started = time.monotonic()
    status, _, body = get(srv.port, "/health/ready", timeout=HEALTH_TIMEOUT + 10)
    took = time.monotonic() - started
    assert took < HEALTH_TIMEOUT + SLACK, f"/health/ready took {took:.1f}s with a {HEALTH_TIMEOUT}s check timeout"
    assert status == 503
    report = json.loads(body)
    assert report["status"] == "DOWN"
    assert report["checks"]["dependency"]["status"] == "DOWN"
    assert "Traceback" not in body.decode()
    assert get(srv.port, "/health/live")[0] == 200, "a hung readiness check must not fail liveness"

    # Probers keep probing (a kubelet, a load balancer, a curious human) while users are served.
    probers, probing_seconds = 4, 4.0

    def probe_repeatedly():
        statuses, until = [], time.monotonic() + probing_seconds
        while time.monotonic() < until:
            statuses.append(get(srv.port, "/health/ready", timeout=HEALTH_TIMEOUT + 15)[0])
        return statuses

    with ThreadPoolExecutor(max_workers=probers) as pool:
        futures = [pool.submit(probe_repeatedly) for _ in range(probers)]
        served = []
        while not all(future.done() for future in futures):
            began = time.monotonic()
            served.append((get(srv.port, "/hello", timeout=10)[0], time.monotonic() - began))
            time.sleep(0.05)
        answers = [status for future in futures for status in future.result(timeout=60)]
    assert len(answers) >= probers and set(answers) == {503}, answers
    assert len(served) >= 10 and all(status == 200 for status, _ in served), served
    assert max(took for _, took in served) < HEALTH_TIMEOUT + SLACK, served

    # Hung checks do not pile up threads: each worker has its request threads plus a bounded check pool.
    for pid in srv.worker_pids():
        assert thread_count(pid) <= 30, f"worker {pid} has {thread_count(pid)} threads after {len(answers)} probes"
    started = time.monotonic()
    assert get(srv.port, "/health/ready", timeout=HEALTH_TIMEOUT + 10)[0] == 503
    assert time.monotonic() - started < HEALTH_TIMEOUT + SLACK
