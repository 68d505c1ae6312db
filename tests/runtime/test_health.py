"""/health and the probe views: check results, timeouts, bounded threads, startup and shutdown."""

from __future__ import annotations

import json
import linecache
import signal
import subprocess
import sys
import threading
import time

import pytest

from server import health
from server.health import Check, checks_for

from .support import subprocess_env


@pytest.fixture
def fresh_shutdown(monkeypatch):
    """begin_shutdown() is per process: give each test its own flag."""
    monkeypatch.setattr(health, "_shutdown", threading.Event())


def _app(make_app, **config):
    config.setdefault("HEALTH_TIMEOUT", 0.3)
    return make_app(None, **config)


def test_up_with_builtin_checks(make_app):
    response = _app(make_app).test_client().get("/health")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "UP"
    assert body["commit"] is None
    assert set(body["checks"]) == {"started", "shutdown"}
    assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize(
    "fn, detail",
    [
        (lambda: False, "check returned False"),
        (lambda: None, "check returned None"),
        (lambda: 1 / 0, "ZeroDivisionError: division by zero"),
        (lambda: {"status": "down", "why": "disk"}, {"status": "down", "why": "disk"}),
    ],
    ids=["false", "none", "raises", "dict-down"],
)
def test_failing_check_makes_group_down(make_app, fn, detail):
    app = _app(make_app)
    checks_for(app).add(health.READINESS, Check("db", fn))
    client = app.test_client()
    ready = client.get("/health/ready")
    assert ready.status_code == 503
    assert ready.get_json()["status"] == "DOWN"
    assert ready.get_json()["checks"]["db"] == {"status": "DOWN", "detail": detail}
    assert "Traceback" not in ready.get_data(as_text=True)
    assert client.get("/health/live").status_code == 200  # other groups unaffected
    assert client.get("/health").status_code == 503  # the overall view includes readiness


def test_detail_from_str_and_dict(make_app):
    app = _app(make_app)
    checks_for(app).add(health.LIVENESS, Check("s", lambda: "fine"))
    checks_for(app).add(health.LIVENESS, Check("d", lambda: {"latency_ms": 4}))
    body = app.test_client().get("/health/live").get_json()
    assert body["status"] == "UP"
    assert body["checks"]["s"] == {"status": "UP", "detail": "fine"}
    assert body["checks"]["d"] == {"status": "UP", "detail": {"latency_ms": 4}}


def test_check_runs_in_app_context(make_app):
    from flask import current_app

    app = _app(make_app)
    checks_for(app).add(health.LIVENESS, Check("ctx", lambda: current_app.name))
    assert app.test_client().get("/health/live").get_json()["checks"]["ctx"]["detail"] == "server"


def test_user_checks_collected_from_module(make_app):
    app = make_app("basic")
    client = app.test_client()
    body = client.get("/health").get_json()
    assert body["checks"]["flag"]["status"] == "UP"
    assert body["checks"]["loop"] == {"status": "UP", "detail": "loop running"}
    assert body["checks"]["cache"] == {"status": "UP", "detail": {"entries": 3}}
    assert set(client.get("/health/live").get_json()["checks"]) == {"loop"}
    assert set(client.get("/health/ready").get_json()["checks"]) == {"flag", "cache", "started", "shutdown"}
    assert set(client.get("/health/started").get_json()["checks"]) == {"started"}
    app.extensions["flask_stack"].module.STATE["ready"] = False
    try:
        assert client.get("/health/ready").status_code == 503
        assert client.get("/health/live").status_code == 200
    finally:
        app.extensions["flask_stack"].module.STATE["ready"] = True


def test_timeout_reports_down_and_hung_check_holds_one_thread(make_app):
    release = threading.Event()
    app = _app(make_app, HEALTH_TIMEOUT=0.2)
    checks_for(app).add(health.READINESS, Check("hung", lambda: release.wait(60)))
    client = app.test_client()
    try:
        first = client.get("/health/ready")
        assert first.status_code == 503
        assert first.get_json()["checks"]["hung"] == {"status": "DOWN", "detail": "timed out after 0.2s"}
        for _ in range(15):  # the same run, already past its timeout: DOWN without waiting on it again
            response = client.get("/health/ready")
            assert response.status_code == 503
            hung = response.get_json()["checks"]["hung"]
            assert hung["status"] == "DOWN" and hung["detail"].startswith("still running after "), hung
        hung_threads = [t for t in threading.enumerate() if t.name == "health-hung"]
        assert len(hung_threads) == 1
        assert hung_threads[0].daemon
        assert client.get("/health/live").status_code == 200  # probes of other groups still answer
    finally:
        release.set()
    for _ in range(100):  # once released, the same check is UP again
        if client.get("/health/ready").status_code == 200:
            break
        time.sleep(0.05)
    assert client.get("/health/ready").get_json()["checks"]["hung"]["status"] == "UP"


def test_probes_of_a_hung_check_do_not_wait_again(make_app):
    # Each of these 10 probes waiting the full 1 s timeout again would take >= 10 s (the production report: under a
    # hung dependency every probe held a server thread for the whole timeout); answered at once they take far less.
    release = threading.Event()
    app = _app(make_app, HEALTH_TIMEOUT=1.0)
    checks_for(app).add(health.READINESS, Check("hung", lambda: release.wait(120)))
    client = app.test_client()
    try:
        assert client.get("/health/ready").get_json()["checks"]["hung"]["detail"] == "timed out after 1s"
        start = time.monotonic()
        for _ in range(10):
            hung = client.get("/health/ready").get_json()["checks"]["hung"]
            assert hung["status"] == "DOWN" and hung["detail"].startswith("still running after "), hung
            assert float(hung["detail"].removeprefix("still running after ").removesuffix("s")) >= 1.0
        elapsed = time.monotonic() - start
        assert elapsed < 5, f"10 probes took {elapsed:.1f}s: they waited on the hung check again"
        assert len([t for t in threading.enumerate() if t.name == "health-hung"]) == 1
    finally:
        release.set()


def test_probe_joining_a_run_waits_only_until_the_runs_deadline(make_app):
    # A probe joining a run started earlier waits until that run's start + timeout, not a fresh timeout.
    release = threading.Event()
    app = _app(make_app, HEALTH_TIMEOUT=0.5)
    checks = checks_for(app)
    checks.add(health.LIVENESS, Check("slow", lambda: release.wait(120), timeout=60))
    client = app.test_client()
    results: list[dict] = []
    first = threading.Thread(target=lambda: results.append(app.test_client().get("/health/live").get_json()))
    try:
        first.start()
        for _ in range(500):  # until the first probe's run is in flight
            if checks._inflight:
                break
            time.sleep(0.01)
        (run,) = checks._inflight.values()
        _until_waiting_on_a_run([first])  # the first probe's wait (60 s from the run's start) has begun
        run.started -= 59.7  # as if the run had started 59.7 s ago: its 60 s deadline is 0.3 s away
        start = time.monotonic()
        joined = client.get("/health/live").get_json()["checks"]["slow"]
        elapsed = time.monotonic() - start
        assert joined == {"status": "DOWN", "detail": "timed out after 60s"}
        assert elapsed < 30, f"the joining probe waited {elapsed:.1f}s, a fresh 60 s timeout"
    finally:
        release.set()  # a first probe still waiting (its wait began before the edit) gets the result now
        first.join(60)
    assert results[0]["checks"]["slow"] == {"status": "UP", "detail": None}  # released within its own 60 s


def _until_waiting_on_a_run(threads: list[threading.Thread], timeout: float = 10.0) -> None:
    """Return once every thread of ``threads`` is blocked in the health module's wait on a check's run (seen in
    its stack, ``sys._current_frames``); fail after ``timeout`` seconds."""
    def waiting(thread: threading.Thread) -> bool:
        # sys._current_frames (CPython, documented in sys): the only way to see where a thread waits; should it go,
        # this helper fails every test using it (AssertionError after its timeout)
        frame = sys._current_frames().get(thread.ident)
        while frame is not None:
            if frame.f_code.co_filename == health.__file__ and "run.done.wait(" in \
                    linecache.getline(frame.f_code.co_filename, frame.f_lineno):
                return True
            frame = frame.f_back
        return False

    deadline = time.monotonic() + timeout
    while not all(waiting(thread) for thread in threads):
        assert time.monotonic() < deadline, "the probes never waited on the check's run"
        time.sleep(0.005)


def test_per_check_timeout_overrides_default(make_app):
    release = threading.Event()
    app = _app(make_app, HEALTH_TIMEOUT=5)
    checks_for(app).add(health.LIVENESS, Check("slow", lambda: release.wait(60), timeout=0.1))
    try:
        body = app.test_client().get("/health/live").get_json()
        assert body["checks"]["slow"]["detail"] == "timed out after 0.1s"
    finally:
        release.set()


def test_thread_cap_exhausted(make_app):
    release = threading.Event()
    app = _app(make_app, HEALTH_TIMEOUT=0.1, HEALTH_THREADS=2)
    for name in ("a", "b", "c"):
        checks_for(app).add(health.LIVENESS, Check(name, lambda: release.wait(60)))
    try:
        body = app.test_client().get("/health/live").get_json()
        statuses = {k: v["detail"] for k, v in body["checks"].items()}
        assert sorted(statuses.values()).count("timed out after 0.1s") == 2
        assert any(d.startswith("capacity exhausted") for d in statuses.values())
        assert len([t for t in threading.enumerate() if t.name.startswith("health-")]) <= 2
    finally:
        release.set()


def test_concurrent_probes_share_one_run(make_app):
    calls = []
    gate = threading.Event()

    def slow():
        calls.append(1)
        gate.wait(5)
        return True

    app = _app(make_app, HEALTH_TIMEOUT=5)
    checks_for(app).add(health.LIVENESS, Check("slow", slow))
    results = []

    def probe():
        results.append(app.test_client().get("/health/live").status_code)

    threads = [threading.Thread(target=probe) for _ in range(4)]
    for t in threads:
        t.start()
    _until_waiting_on_a_run(threads)  # every probe waits on the run in flight
    gate.set()
    for t in threads:
        t.join(10)
    assert results == [200, 200, 200, 200]
    assert calls == [1]


def test_shutdown_turns_readiness_down(make_app, fresh_shutdown):
    client = _app(make_app).test_client()
    assert client.get("/health/ready").status_code == 200
    health.begin_shutdown()
    ready = client.get("/health/ready")
    assert ready.status_code == 503
    assert ready.get_json()["checks"]["shutdown"]["status"] == "DOWN"
    assert client.get("/health/live").status_code == 200  # do not restart a draining pod
    assert health.is_shutting_down()


def test_startup_view_down_until_built(make_app):
    app = _app(make_app)
    state = app.extensions["flask_stack"]
    state.health.started = False  # as during create_app
    client = app.test_client()
    assert client.get("/health/started").status_code == 503
    assert client.get("/health/ready").status_code == 503
    state.health.started = True
    assert client.get("/health/started").status_code == 200


def test_commit_from_setting_and_file(make_app, tmp_path):
    assert _app(make_app, COMMIT="abc123").test_client().get("/health").get_json()["commit"] == "abc123"
    commit_file = tmp_path / ".commit"
    commit_file.write_text("deadbeef\n")
    body = _app(make_app, COMMIT_FILE=str(commit_file)).test_client().get("/health").get_json()
    assert body["commit"] == "deadbeef"


def test_bad_check_definitions_rejected(make_app):
    app = _app(make_app)
    with pytest.raises(ValueError, match="unknown health group"):
        checks_for(app).add("sideways", Check("x", lambda: True))
    checks_for(app).add(health.LIVENESS, Check("x", lambda: True))
    with pytest.raises(ValueError, match="two different health checks"):
        checks_for(app).add(health.READINESS, Check("x", lambda: True))
    with pytest.raises(ValueError, match="must be > 0"):
        health.readiness_check("y", timeout=0)


_SIGTERM_SCRIPT = r"""
import json, os, signal, sys, time
from server import create_app
from server import health
app = create_app({"USERAPP": "", "LOG_LEVEL": "WARNING"})
client = app.test_client()
mode = sys.argv[1]
calls = []
if mode == "callable":
    signal.signal(signal.SIGTERM, lambda s, f: calls.append(s))
before = client.get("/health/ready").status_code
health.install_sigterm_handler(drain_seconds=0.5 if mode == "drain" else 0)
os.kill(os.getpid(), signal.SIGTERM)
after = client.get("/health/ready").status_code
print(json.dumps({"before": before, "after": after, "calls": calls}), flush=True)
time.sleep(30 if mode != "callable" else 0)
"""


@pytest.mark.parametrize("mode", ["callable", "default", "drain"])
def test_sigterm_handler_chains(mode):
    proc = subprocess.run([sys.executable, "-c", _SIGTERM_SCRIPT, mode], env=subprocess_env(),
                          capture_output=True, text=True, timeout=60)
    if mode == "default":  # no drain delay: the default action terminates the process at once
        assert proc.returncode == -signal.SIGTERM
        assert proc.stdout == ""
        return
    result = json.loads(proc.stdout.strip().splitlines()[0])
    assert result["before"] == 200
    assert result["after"] == 503
    if mode == "callable":
        assert result["calls"] == [signal.SIGTERM]
        assert proc.returncode == 0
    else:  # readiness went DOWN at once; the default action terminated the process after the drain delay
        assert proc.returncode == -signal.SIGTERM
