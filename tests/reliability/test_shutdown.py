"""Graceful shutdown under load: SIGTERM with slow requests in flight, readiness DOWN while draining."""

from __future__ import annotations

import http.client
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from testkit.nginx import require_nginx
from testkit.serve import SERVERS, get

from .harness import sample_value, scrape

pytestmark = pytest.mark.slow

DELAY = 2.0  # STACK_SHUTDOWN_DELAY: seconds of serving with readiness DOWN after SIGTERM
GRACEFUL = 12  # STACK_GRACEFUL_TIMEOUT
SLOW = 4.0  # seconds each in-flight request takes
CLIENTS = 32  # keep-alive connections held through SIGTERM (issue 19: 32, delay 0, none fails)
PROPAGATION = 0.25  # seconds for SIGTERM to reach the workers from the server's main process (bound asserted)


def _idle_in_progress(srv) -> float:
    """http_requests_in_progress (on with STACK_METRICS_IN_PROGRESS=1) as a scrape sees it on an idle server (the
    scrape itself may count)."""
    return sample_value(scrape(srv.port), "http_requests_in_progress")


def _wait_in_flight(srv, count: int, idle: float, timeout: float = 10.0) -> None:
    """Wait until ``count`` more requests than at idle are being served (the runtime's in-progress gauge, summed
    over workers): accepted by a worker and inside the app, not merely queued in the listen backlog."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sample_value(scrape(srv.port), "http_requests_in_progress") - idle >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"{count} requests never got in flight")


@pytest.mark.parametrize("server", SERVERS)
def test_sigterm_drains_in_flight_requests_with_readiness_down(server, start_server):
    srv = start_server(
        server=server,
        workers=2,
        # 8 threads per worker: even if every slow request lands on one worker, it has threads left for probes
        env={"STACK_SHUTDOWN_DELAY": str(DELAY), "STACK_GRACEFUL_TIMEOUT": str(GRACEFUL), "STACK_THREADS": "8",
             "STACK_METRICS_IN_PROGRESS": "1"},
    )
    in_flight = 4
    idle = _idle_in_progress(srv)
    pool = ThreadPoolExecutor(max_workers=in_flight)
    try:
        slow = [pool.submit(get, srv.port, f"/slow?seconds={SLOW}", 20.0) for _ in range(in_flight)]
        _wait_in_flight(srv, in_flight, idle)

        sigterm_at = time.monotonic()
        srv.terminate()
        # Within moments readiness turns DOWN (the master relays SIGTERM to every worker) ...
        first_down = None
        while time.monotonic() - sigterm_at < 1.0:
            if get(srv.port, "/health/ready", timeout=3)[0] == 503:
                first_down = time.monotonic() - sigterm_at
                break
            time.sleep(0.02)
        assert first_down is not None, "readiness still UP 1s after SIGTERM"
        # ... and stays DOWN while the server keeps serving everyone until the delay is over.
        probes, served = [], []
        while time.monotonic() - sigterm_at < DELAY - 0.5:
            probes.append(get(srv.port, "/health/ready", timeout=3))
            served.append(get(srv.port, "/hello", timeout=3)[0])
            time.sleep(0.05)
        assert probes, "no readiness probe got in during the drain"
        for status, _, body in probes:
            assert status == 503, body
            assert json.loads(body)["status"] == "DOWN"
        assert set(served) == {200}, served

        # Every request in flight at SIGTERM completes.
        results = [future.result(timeout=GRACEFUL + 5) for future in slow]
        assert [status for status, _, _ in results] == [200] * in_flight, results
        srv.proc.wait(timeout=GRACEFUL + 5)
        elapsed = time.monotonic() - sigterm_at
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    assert srv.proc.returncode == 0, srv.log_tail()
    assert elapsed < GRACEFUL, f"server took {elapsed:.1f}s to stop (graceful timeout {GRACEFUL}s)"
    assert elapsed >= SLOW - 1, "server stopped before its requests in flight could finish"


@pytest.mark.parametrize("server", SERVERS)
def test_sigterm_without_delay_finishes_requests_in_flight(server, start_server):
    """STACK_SHUTDOWN_DELAY=0 (the default outside Kubernetes): stop accepting at once, still finish in flight."""
    srv = start_server(
        server=server, workers=2, env={"STACK_SHUTDOWN_DELAY": "0", "STACK_GRACEFUL_TIMEOUT": "10", "STACK_THREADS": "8",
                                       "STACK_METRICS_IN_PROGRESS": "1"}
    )
    results: list = []

    def call():
        try:
            results.append(get(srv.port, "/slow?seconds=2", timeout=15)[0])
        except OSError as exc:
            results.append(repr(exc))

    idle = _idle_in_progress(srv)
    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    _wait_in_flight(srv, 4, idle)
    sigterm_at = time.monotonic()
    srv.terminate()
    for thread in threads:
        thread.join(15)
    srv.proc.wait(timeout=15)
    assert results == [200] * 4
    assert srv.proc.returncode == 0, srv.log_tail()
    assert time.monotonic() - sigterm_at < 10


@pytest.mark.parametrize("server", SERVERS)
def test_graceful_timeout_bounds_a_request_that_never_ends(server, start_server):
    """A request longer than STACK_GRACEFUL_TIMEOUT cannot hold the shutdown: workers are killed at the limit."""
    srv = start_server(server=server, workers=2, env={"STACK_SHUTDOWN_DELAY": "0", "STACK_GRACEFUL_TIMEOUT": "3",
                                       "STACK_METRICS_IN_PROGRESS": "1"})
    idle = _idle_in_progress(srv)
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        pool.submit(get, srv.port, "/slow?seconds=30", 40.0)
        _wait_in_flight(srv, 1, idle)
        sigterm_at = time.monotonic()
        srv.terminate()
        srv.proc.wait(timeout=15)
        elapsed = time.monotonic() - sigterm_at
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    assert 2.5 <= elapsed < 8, f"stopped after {elapsed:.1f}s with a 3s graceful timeout"


class KeepAliveClient(threading.Thread):
    """A client that holds one keep-alive connection, as ingress controllers and load balancers do: GET /hello
    back to back until the server answers with the ``close`` connection option (``Connection: close``; behind nginx
    ``Connection: keep-alive, close``: RFC 9112 9.6, the client closes), then it moves away (no more requests here).
    ``pause``: seconds the connection stays idle between an answer and the next request (0: back to back).
    ``failed``: requests sent without a 200 answer (a reset, a dropped connection, an error status); ``reused_failed``:
    those of them sent on a connection that had already served a request (the idle keep-alive close race)."""

    def __init__(self, port: int, deadline: float, pause: float = 0.0):
        super().__init__(daemon=True)
        self.port = port
        self.deadline = deadline
        self.pause = pause
        self.ok = 0
        self.failed: list[str] = []
        self.reused_failed: list[str] = []
        self.told_to_close = False

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            while time.monotonic() < self.deadline:
                try:
                    conn.request("GET", "/hello")
                    resp = conn.getresponse()
                    resp.read()
                except (OSError, http.client.HTTPException) as exc:
                    self._fail(f"after {self.ok} ok: {exc!r}")
                    return
                if resp.status != 200:
                    self._fail(f"after {self.ok} ok: status {resp.status}")
                    return
                self.ok += 1
                if "close" in [token.strip().lower() for token in (resp.getheader("Connection") or "").split(",")]:
                    self.told_to_close = True
                    return
                time.sleep(self.pause)
        finally:
            conn.close()

    def _fail(self, what: str) -> None:
        self.failed.append(what)
        if self.ok:  # this connection had answered a request before: it was reused
            self.reused_failed.append(what)


@pytest.mark.parametrize("server", SERVERS)
@pytest.mark.parametrize("delay", [0, 3])
@pytest.mark.parametrize("front", ["none", "nginx"])
def test_sigterm_under_keep_alive_load_fails_no_request(server, delay, front, start_server):
    """SIGTERM while 32 clients hold keep-alive connections (to the server, or to the nginx front), some of them idle
    between requests: every request is answered (none fails on a reused connection), every client is told
    ``Connection: close`` and moves away; with a delay, new connections are still accepted (readiness DOWN) until it
    ends; the server exits within the graceful timeout."""
    graceful = 12
    if front == "nginx":
        require_nginx()
    srv = start_server(server=server, workers=2, env={"STACK_SHUTDOWN_DELAY": str(delay), "STACK_FRONT": front,
                                                      "STACK_GRACEFUL_TIMEOUT": str(graceful), "STACK_THREADS": "8"})
    # a third back to back, the others idle 0.15 or 0.3 s between requests: kept-alive connections idle at SIGTERM,
    # whose next request comes within the servers' least linger (1 s)
    clients = [KeepAliveClient(srv.port, time.monotonic() + 40, pause=0.15 * (index % 3)) for index in range(CLIENTS)]
    for client in clients:
        client.start()
    time.sleep(3)
    assert all(client.ok > 0 and not client.failed for client in clients), [c.failed for c in clients]
    sigterm_at = time.monotonic()
    srv.terminate()
    fresh = []  # (seconds after SIGTERM the readiness probe was sent, /hello status, /health/ready status)
    while delay and time.monotonic() - sigterm_at < delay - 0.8:  # new connections during the delay
        hello = get(srv.port, "/hello", timeout=3)[0]
        sent = time.monotonic() - sigterm_at
        fresh.append((sent, hello, get(srv.port, "/health/ready", timeout=3)[0]))
        time.sleep(0.1)
    for client in clients:
        client.join(graceful + 5)
    srv.proc.wait(timeout=graceful + 5)
    elapsed = time.monotonic() - sigterm_at
    served = sum(client.ok for client in clients)
    reused_failed = [f for client in clients for f in client.reused_failed]
    assert not reused_failed, f"{len(reused_failed)} failed requests on reused connections of {served} served: " \
                              f"{reused_failed}"
    failed = [f for client in clients for f in client.failed]
    assert not failed, failed
    assert all(client.told_to_close for client in clients), [client.ok for client in clients]
    if delay:
        # new connections are served all along; readiness is DOWN once the signal has reached the workers (the
        # server's main process forwards it: a probe in the first PROPAGATION seconds may still see UP)
        assert fresh and all(hello == 200 for _, hello, _ in fresh), fresh
        settled = [ready for sent, _, ready in fresh if sent >= PROPAGATION]
        assert settled and set(settled) == {503}, fresh
    assert srv.proc.returncode == 0, srv.log_tail()
    assert elapsed < graceful, f"stopped {elapsed:.1f}s after SIGTERM"


@pytest.mark.parametrize("server", SERVERS)
@pytest.mark.parametrize("front", ["none", "nginx"])
def test_sigterm_request_in_flight_leaves_no_reusable_connection(server, front, start_server):
    """STACK_SHUTDOWN_DELAY=0: a request in flight at SIGTERM that ends after the server's linger (its stop closes
    idle kept-alive connections) is answered with ``Connection: close``, or its connection still answers the next
    request sent at once: the client, reusing a connection it was not told to close, loses no request."""
    if front == "nginx":
        require_nginx()
    srv = start_server(server=server, workers=2, env={"STACK_SHUTDOWN_DELAY": "0", "STACK_FRONT": front,
                                                      "STACK_GRACEFUL_TIMEOUT": "12", "STACK_THREADS": "8"})
    outcomes: dict[float, str] = {}

    def client(seconds: float) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=15)
        try:
            conn.request("GET", "/hello")
            conn.getresponse().read()
            conn.request("GET", f"/slow?seconds={seconds}")
            resp = conn.getresponse()
            resp.read()
            options = [token.strip().lower() for token in (resp.getheader("Connection") or "").split(",")]
            if resp.status != 200 or "close" in options:
                outcomes[seconds] = f"{resp.status} close"
                return
            conn.request("GET", "/hello")  # the connection was left open: the client reuses it at once
            resp = conn.getresponse()
            resp.read()
            outcomes[seconds] = f"{resp.status} then"
        except (OSError, http.client.HTTPException) as exc:
            outcomes[seconds] = f"failed: {exc!r}"
        finally:
            conn.close()

    durations = [0.5, 1.5, 2.5, 3.5]  # seconds; the servers' lingers are 1-2 s
    threads = [threading.Thread(target=client, args=(seconds,)) for seconds in durations]
    for thread in threads:
        thread.start()
    time.sleep(0.3)  # every slow request in flight
    srv.terminate()
    for thread in threads:
        thread.join(20)
    srv.proc.wait(timeout=20)
    assert sorted(outcomes) == durations, outcomes  # every client came back
    assert all(outcome in ("200 close", "200 then") for outcome in outcomes.values()), outcomes
    assert srv.proc.returncode == 0, srv.log_tail()
