"""The deployable image's nginx front as a unit, under floods and memory pressure (issues 18 and 22): a real
container with ``--memory 512m``, real connections from 127.0.0.1, bounded in time.

Figures (README.md, "Production serving"): the flood is ``FLOOD`` connections for ``FLOOD_SECONDS`` s, each a POST
head and then one body byte every 5 s, reconnecting ``RECONNECT`` s after the front answers or closes it (an
asyncio client in a process of its own; at once would only measure this 2-core machine's client); the uploads are
``UPLOADS`` clients sending ``UPLOAD_SIZE``-byte bodies but their last 100 bytes and holding them, reconnecting too.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import subprocess
import threading
import time
from collections import Counter

import pytest
from testkit.flood import Flood
from testkit.serve import get, percentile

from .conftest import container_processes, free_port

pytestmark = pytest.mark.container

FLOOD, FLOOD_SECONDS, RECONNECT = 5000, 40.0, 1.0
UPLOADS, UPLOAD_SIZE = 40, 16_000_000
HARDENED = ["--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL", "--user", "1000650000:0"]
SLOW_BODY = (b"POST /size HTTP/1.1\r\nHost: t\r\nContent-Type: application/octet-stream\r\nContent-Length: 1000\r\n"
             b"\r\n")


class Container:
    """The deployable image running detached with ``--memory 512m`` and ``flags``, PORT and the probe port
    published on 127.0.0.1; removed by ``remove``."""

    def __init__(self, engine: str, image: str, flags: list[str] = (), name: str = "front"):
        self.engine = engine
        self.name = f"flask-stack-test-{name}-{os.getpid()}"
        self.port, self.probe_port = free_port(), free_port()
        subprocess.run([engine, "run", "-d", "--name", self.name, "--memory", "512m", *flags,
                        "-p", f"127.0.0.1:{self.port}:8080", "-p", f"127.0.0.1:{self.probe_port}:8090", image],
                       check=True, capture_output=True, timeout=120)

    def state(self) -> dict:
        data = json.loads(subprocess.run([self.engine, "inspect", self.name], capture_output=True, text=True,
                                         check=True, timeout=60).stdout)[0]
        return {"status": data["State"]["Status"], "oom": data["State"].get("OOMKilled"),
                "restarts": data.get("RestartCount", 0), "exit": data["State"].get("ExitCode")}

    def logs(self) -> str:
        done = subprocess.run([self.engine, "logs", self.name], capture_output=True, text=True, timeout=60)
        return done.stdout + done.stderr

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if get(self.probe_port, "/health/ready", timeout=2)[0] == 200:
                    return
            except OSError:
                pass
            assert self.state()["status"] == "running", self.logs()[-3000:]
            time.sleep(0.2)
        raise AssertionError(f"not ready within {timeout} s:\n{self.logs()[-3000:]}")

    def remove(self) -> None:
        subprocess.run([self.engine, "rm", "-f", self.name], capture_output=True, check=False, timeout=120)


def finished_at(text: str) -> float:
    """Unix seconds of an engine's ``State.FinishedAt`` (RFC 3339 with nanoseconds, UTC or an offset)."""
    match = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)", text)
    assert match, text
    zone = "+00:00" if match[3] == "Z" else match[3]
    whole = datetime.datetime.fromisoformat(match[1] + zone).timestamp()
    return whole + float("0" + (match[2] or ".0"))


def watch(port: int, path: str, seconds: float, ok=(200,)) -> tuple[list[float], Counter]:
    """GET ``path`` on a fresh connection every 50 ms for ``seconds`` (5 s timeout); the latencies (seconds) and
    the outcomes other than a status in ``ok`` (status numbers, or exception names: a timeout is one)."""
    latencies, others = [], Counter()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        began = time.monotonic()
        try:
            status = get(port, path, timeout=5)[0]
            if status not in ok:
                others[status] += 1
        except OSError as exc:
            others[type(exc).__name__] += 1
        latencies.append(time.monotonic() - began)
        time.sleep(0.05)
    return latencies, others


def watch_all(container: Container, seconds: float, public_ok=(200,)) -> dict[str, tuple[list[float], Counter]]:
    """``watch`` /health/live and /health/ready on the probe port and /hello on the public port, at once."""
    found = {}
    targets = {"live": (container.probe_port, "/health/live", (200,)),
               "ready": (container.probe_port, "/health/ready", (200,)),
               "hello": (container.port, "/hello", public_ok)}
    threads = [threading.Thread(target=lambda key=key, args=args: found.__setitem__(key, watch(*args[:2], seconds,
                                                                                                 args[2])))
               for key, args in targets.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 30)
    return found


def test_a_normal_start_logs_no_error_and_never_502(engine: str, app_image: str) -> None:
    """From ``run`` on, the public port refuses or answers 200 (nginx listens only once granian answers: no 502,
    no ``connect() failed`` line); the start logs no ERROR and no granian worker-count warning (defaults: no
    WEB_CONCURRENCY)."""
    container = Container(engine, app_image, name="start")
    try:
        seen = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and seen[-1:] != [200]:
            try:
                seen.append(get(container.port, "/hello", timeout=5)[0])
            except OSError:
                time.sleep(0.01)
        assert seen and set(seen) == {200}, seen
        assert get(container.probe_port, "/health/live")[0] == 200
        time.sleep(1)
        logs = container.logs()
        app_lines = [line for line in logs.splitlines() if not line.startswith("time=")]  # podman's own
        assert not [line for line in app_lines if "[ERROR]" in line or "[CRITICAL]" in line], logs
        assert "higher than the amount of CPU cores" not in logs and "connect() failed" not in logs, logs
    finally:
        container.remove()


def test_kill_9_of_nginx_stops_the_container_within_a_second(engine: str, app_image: str) -> None:
    """kill -9 of the public nginx's master: the container exits within 1 s, status 1, with one line naming it."""
    container = Container(engine, app_image, name="kill")
    try:
        container.wait_ready()
        table = container_processes(engine, container.name)
        (master,) = [pid for _, pid, ppid, cmd in table if ppid == "1" and cmd.startswith("nginx: master")
                     and "/public/" in cmd]
        killed = subprocess.run([engine, "exec", container.name, "sh", "-c", f"date +%s.%N; kill -9 {master}"],
                                capture_output=True, text=True, check=True, timeout=60)
        waited = subprocess.run([engine, "wait", container.name], capture_output=True, text=True, timeout=60)
        assert waited.stdout.strip() == "1", (waited.stdout, container.logs()[-2000:])
        finished = json.loads(subprocess.run([engine, "inspect", container.name], capture_output=True, text=True,
                                             check=True, timeout=60).stdout)[0]["State"]["FinishedAt"]
        took = finished_at(finished) - float(killed.stdout.split()[0])
        assert 0 < took < 1.0, (finished, killed.stdout, took)
        lines = [line for line in container.logs().splitlines() if " died " in line]
        assert len(lines) == 1 and lines[0].endswith(
            "flask-stack: nginx (the front) died (killed by SIGKILL); stopping the container"), lines
    finally:
        container.remove()


def test_probes_stay_answered_while_the_public_port_is_flooded(engine: str, app_image: str) -> None:
    """``FLOOD`` slow-body connections reconnecting for ``FLOOD_SECONDS`` s (module docstring): /health/live and
    /health/ready on the probe port 0 failed, p99 under 250 ms; /hello on the public port answered (200) or
    refused at once (503: this client address is over its share), never a timeout; the container never restarts,
    is never OOM-killed, and nginx never runs out of connections."""
    container = Container(engine, app_image, name="flood")
    try:
        container.wait_ready()
        flood = Flood(container.port, FLOOD, FLOOD_SECONDS, SLOW_BODY, reconnect_after=RECONNECT).start()
        time.sleep(3)
        found = watch_all(container, FLOOD_SECONDS - 6, public_ok=(200, 503))
        counts = flood.result()
        print(f"flood {FLOOD} x {FLOOD_SECONDS:g} s: {counts}")
        for key in ("live", "ready"):
            latencies, failed = found[key]
            print(f"{key}: {len(latencies)} probes, p99 {percentile(latencies, 0.99) * 1000:.0f} ms, failed {failed}")
            assert not failed and percentile(latencies, 0.99) < 0.25, (key, failed)
        latencies, others = found["hello"]
        print(f"hello: {len(latencies)}, max {max(latencies) * 1000:.0f} ms, not 200/503: {others}")
        assert not others and max(latencies) < 5, others
        assert counts.get("503", 0) > FLOOD and counts["most open at once"] > 1000, counts  # it was a flood
        assert container.state() == {"status": "running", "oom": False, "restarts": 0, "exit": 0}
        assert "worker_connections are not enough" not in container.logs()
    finally:
        container.remove()


def test_hardened_uploads_stay_within_the_body_budget(engine: str, app_image: str) -> None:
    """The hardened run (read-only root, /tmp a tmpfs: memory) with ``UPLOADS`` clients holding ``UPLOAD_SIZE``-byte
    bodies: those past the body budget get 503 at once, the others are held; /tmp never holds more than the
    budget; probes 0 failed; /hello keeps answering; not OOM-killed."""
    container = Container(engine, app_image, HARDENED, name="uploads")
    try:
        container.wait_ready()
        seconds = 25.0
        flood = Flood(container.port, UPLOADS, seconds, SLOW_BODY.replace(b"1000", str(UPLOAD_SIZE).encode()),
                      body=b"x" * UPLOAD_SIZE, hold_back=100, reconnect_after=RECONNECT).start()
        tmp_use = []

        def sample_tmp() -> None:
            for _ in range(int(seconds / 2.5) - 1):
                time.sleep(2)
                # df, not du: nginx unlinks a body's temporary file at once and writes the open file
                done = subprocess.run([engine, "exec", container.name, "df", "-B1", "--output=used", "/tmp"],
                                      capture_output=True, text=True, timeout=60)
                tmp_use.append(int(done.stdout.split()[-1]) if done.returncode == 0 else -1)

        sampler = threading.Thread(target=sample_tmp)
        sampler.start()
        found = watch_all(container, seconds - 3)
        counts = flood.result()
        sampler.join(60)
        print(f"uploads {UPLOADS} x {UPLOAD_SIZE} bytes: {counts}; /tmp bytes {tmp_use}")
        for key in ("live", "ready", "hello"):
            latencies, failed = found[key]
            print(f"{key}: {len(latencies)}, p99 {percentile(latencies, 0.99) * 1000:.0f} ms, failed {failed}")
            assert not failed and percentile(latencies, 0.99) < 0.25, (key, failed)
        assert counts.get("503", 0) > UPLOADS and counts["answer ms max"] < 5000, counts
        budget = 128 * 2**20  # STACK_FRONT_BODY_BUDGET's default
        assert tmp_use and -1 not in tmp_use and max(tmp_use) < budget, tmp_use
        assert max(tmp_use) > UPLOAD_SIZE, tmp_use  # some uploads were taken
        assert container.state() == {"status": "running", "oom": False, "restarts": 0, "exit": 0}
        assert not re.search(r"\[(ERROR|CRITICAL)\]", container.logs()), container.logs()[-3000:]
    finally:
        container.remove()
