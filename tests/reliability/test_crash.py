"""A worker killed under load (SIGKILL, as the OOM killer does): the server keeps answering and cleans up."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
from testkit.serve import SERVERS, get, parse_wrk, wrk_command

from .harness import sample_value, scrape

pytestmark = pytest.mark.slow

CONNECTIONS = 16
LOAD_SECONDS = 8


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (a zombie has closed all its sockets)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            stat = fh.read()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


def _live_gauge_files(metrics_dir, pid: int) -> list:
    """The per-process live-gauge files of ``pid`` (what mark_process_dead removes)."""
    return sorted(metrics_dir.glob(f"gauge_live*_{pid}.db"))


@pytest.mark.parametrize("server", SERVERS)
def test_sigkilled_worker_is_replaced_without_downtime(server, start_server):
    srv = start_server(server=server, workers=2)
    old_workers = srv.worker_pids()
    # Every worker writes its files (the per-worker memory gauges are refreshed on scrapes).
    deadline = time.monotonic() + 10
    victim = old_workers[0]
    counters = srv.metrics_dir / f"counter_{victim}.db"
    while not (_live_gauge_files(srv.metrics_dir, victim) and counters.exists()) and time.monotonic() < deadline:
        get(srv.port, "/metrics")
    assert _live_gauge_files(srv.metrics_dir, victim), "the worker wrote no live gauge; the cleanup check is void"
    assert counters.exists(), "the worker counted no request"

    load = subprocess.Popen(
        wrk_command(srv.port, "/hello", LOAD_SECONDS, CONNECTIONS), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        time.sleep(2)
        before = sample_value(scrape(srv.port), "http_requests_total", endpoint="/hello")
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        # Requests already queued on the victim die with it (granian gives each worker its own SO_REUSEPORT
        # socket); what must hold is that every request made once it is dead is answered.
        while _alive(victim) and time.monotonic() - killed_at < 5:
            time.sleep(0.01)

        # While wrk keeps loading the server, every fresh health probe and request is answered.
        probes, resets = [], []
        while load.poll() is None and time.monotonic() - killed_at < LOAD_SECONDS + 5:
            try:
                probes.append((get(srv.port, "/health", timeout=5)[0], get(srv.port, "/hello", timeout=5)[0]))
            except OSError as exc:
                resets.append((time.monotonic() - killed_at, repr(exc), srv.log_tail(10)))
            time.sleep(0.1)
        output, _ = load.communicate(timeout=30)
    finally:
        if load.poll() is None:
            load.kill()
            load.wait(5)

    assert len(probes) > 10
    assert set(probes) == {(200, 200)}, probes
    if server == "gunicorn":
        assert not resets, resets  # one listening socket shared by all workers: nothing is lost
    else:
        # granian gives each worker its own SO_REUSEPORT socket: a connection that lands on a socket being
        # closed or set up at the crash/respawn moment is reset (unless net.ipv4.tcp_migrate_req=1). Only then.
        assert len(resets) <= 2 and all(after < 1.0 for after, _, _ in resets), resets
    result = parse_wrk(output)
    # Only requests on the killed worker's connections can fail (reset): at most one per connection under
    # gunicorn; under granian also the reconnections that hit the respawn moment (see below).
    assert result.non_2xx == 0, output
    assert sum(result.socket_errors.values()) <= CONNECTIONS * (1 if server == "gunicorn" else 4), output
    assert result.requests > 1000, output

    new_workers = srv.worker_pids()
    assert victim not in new_workers and len(new_workers) == 2, (new_workers, srv.log_tail())
    deadline = time.monotonic() + 10  # granian's cleanup runs from a watcher thread (1 s period)
    while _live_gauge_files(srv.metrics_dir, victim) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _live_gauge_files(srv.metrics_dir, victim), "the dead worker's live gauges were not removed"
    # Its counts are folded into the directory's folded files (scrapes never read its own files again); totals
    # over all workers never go down.
    while counters.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not counters.exists() and (srv.metrics_dir / "counter_folded.db").exists()
    after = sample_value(scrape(srv.port), "http_requests_total", endpoint="/hello")
    assert after >= before
    # Every response wrk got was counted (the dead worker's counts included), but for the few in flight on it and
    # what it had not written yet: a worker killed with SIGKILL loses at most its last 0.1 s of counts (issue 19's
    # bound; server.request_batch writes every 0.05 s), here at most 0.1 s of the whole server's rate.
    lost_at_most = CONNECTIONS + result.requests / LOAD_SECONDS * 0.1
    assert after >= result.requests - lost_at_most, (after, result.requests)
    assert get(srv.port, "/health/ready")[0] == 200
