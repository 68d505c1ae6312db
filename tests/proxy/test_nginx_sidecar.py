"""The nginx sidecar of ``flask-stack deploy --nginx-sidecar``, run for real.

The manifests are generated (``flask_stack.deploy.generate``, as the CLI calls it); the ConfigMap's nginx.conf runs in
Debian's nginx started with the sidecar container's own command (``-p`` its emptyDir, ``-c`` its config mount: here
two temporary paths), the project's static/ copied where the init container copies it, in front of the real
production server (``serve``) started with the Deployment's STACK_* settings. Only the ports (generate's ``port``
and ``nginx_port``) and nginx's listen address (127.0.0.1, ``nginx_address``) differ from a pod's.

The module's topology is the full one: ingress-nginx (played by the client, which sends the X-Forwarded-* headers
ingress-nginx sets) -> the sidecar -> the app, so STACK_PROXY_HOPS is 2; one test runs the sidecar alone (1).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml
from testkit.net import free_port
from testkit.nginx import require_nginx
from testkit.serve import METRICS_SETTLE_SECONDS, SERVERS, ProductionServer, copy_project, get, percentile, probe
from testkit.serve import hello_count as serve_hello_count

from flask_stack import deploy
from flask_stack.front import Front

REPO = Path(__file__).resolve().parents[2]
APP = REPO / "tests" / "fixtures" / "userapps" / "fronted"
PREFIX = "/your/path"
CLIENT = "127.0.0.2"  # the client's source address (nginx listens on 127.0.0.1)
MAX_BODY = 1024 * 1024  # deploy --max-content-length
SLOW = 64  # slow-body connections
PROBE_SECONDS = 10.0  # normal requests are timed this long while they trickle
INGRESS = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "shop.example"}
pytestmark = pytest.mark.slow


def request(port: int, path: str, method: str = "GET", body: bytes | None = None, headers: dict | None = None,
            timeout: float = 10.0) -> tuple[int, dict, bytes]:
    """One request from CLIENT on a fresh connection: (status, headers (lower-case names), body)."""
    return get(port, path, timeout, method, body, headers, source=CLIENT)


class Pod:
    """The generated manifests' pod on 127.0.0.1: ``serve`` (``app``) behind the nginx sidecar (``port``)."""

    def __init__(self, workdir: Path, server: str, front: Front, shutdown_delay: bool = False):
        self.workdir = workdir
        project = copy_project(APP, workdir / "project")
        app_port = free_port()
        paths = deploy.generate(project, workdir / "deploy", "registry.example.com/shop:1.0", port=app_port,
                                url_prefix=PREFIX, max_content_length=MAX_BODY, front=front)
        docs = {p.name: yaml.safe_load(p.read_text()) for p in paths}
        self.deployment, self.configmap = docs["deployment.yaml"], docs["nginx.yaml"]
        containers = {c["name"]: c for c in self.deployment["spec"]["template"]["spec"]["containers"]}
        self.app_container, self.nginx_container = containers["app"], containers["nginx"]
        env = {e["name"]: e["value"] for e in self.app_container["env"] if e["name"].startswith("STACK_")}
        if not shutdown_delay:  # stopping the test's servers need not wait
            env.pop("STACK_SHUTDOWN_DELAY")
        self.app = ProductionServer(project=project, workdir=workdir, server=server, workers=2, port=app_port,
                                    env=env)
        self.port = front.nginx_port
        self.nginx: subprocess.Popen | None = None

    def start(self) -> "Pod":
        """Start the app, then nginx as the sidecar container's command starts it; AssertionError when nginx does
        not listen within 10 s."""
        self.app.start(ready_path=self.app_container["readinessProbe"]["httpGet"]["path"])
        run = self.workdir / "nginx"  # the container's /tmp emptyDir
        conf_dir = self.workdir / "nginx-conf"  # the ConfigMap's mount
        conf_dir.mkdir()
        (conf_dir / "nginx.conf").write_text(self.configmap["data"]["nginx.conf"])
        mounts = {m["name"]: m["mountPath"] for m in self.nginx_container["volumeMounts"]}
        if "static" in mounts:  # what the init container does: the image's /project/userapp/static/ copied
            shutil.copytree(self.app.project / "static", run / mounts["static"].removeprefix(mounts["nginx-tmp"] + "/"))
        run.mkdir(exist_ok=True)
        # the container's paths -> the test's, longest first
        self.paths = {f"{mounts['nginx-conf']}/nginx.conf": str(conf_dir / "nginx.conf"), mounts["nginx-tmp"] + "/": f"{run}/"}
        command = self.nginx_container["command"]
        assert command[0] == "nginx" and set(self.paths) <= set(command), command
        argv = [require_nginx(), *(self.paths.get(arg, arg) for arg in command[1:])]
        if os.geteuid() == 0:  # as in the pod, workers run as the master's user (root here, not nobody)
            argv += ["-g", "user root root;"]
        with open(self.workdir / "nginx.out", "wb") as out, open(self.workdir / "nginx.err", "wb") as err:
            self.nginx = subprocess.Popen(argv, stdout=out, stderr=err, start_new_session=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            assert self.nginx.poll() is None, f"nginx exited {self.nginx.returncode}: {self.nginx_log()}"
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"nginx did not listen within 10 s: {self.nginx_log()}")

    def nginx_log(self) -> str:
        """nginx's stdout (its access lines) and stderr (its error log)."""
        return "\n".join((self.workdir / name).read_text(errors="replace") for name in ("nginx.out", "nginx.err")
                         if (self.workdir / name).exists())

    def stop(self) -> None:
        """SIGQUIT nginx (graceful), SIGKILL after 5 s; then stop the app."""
        if self.nginx is not None:
            if self.nginx.poll() is None:
                self.nginx.send_signal(signal.SIGQUIT)
                try:
                    self.nginx.wait(5)
                except subprocess.TimeoutExpired:
                    os.killpg(self.nginx.pid, signal.SIGKILL)
                    self.nginx.wait(5)
        self.app.stop()

    def wait_for_log(self, pattern: str, timeout: float = 10.0) -> str:
        """The first line of the app's log matching ``pattern`` (``ProductionServer.wait_for_log``)."""
        return self.app.wait_for_log(pattern, timeout)


def start_pod(workdir: Path, server: str, front: Front, shutdown_delay: bool = False) -> Pod:
    pod = Pod(workdir, server, front, shutdown_delay)
    try:
        return pod.start()
    except BaseException:
        pod.stop()
        raise


@pytest.fixture(scope="module", params=SERVERS)
def pod(request, tmp_path_factory):
    """Ingress (the client) -> the nginx sidecar serving static/ -> the app under /your/path, on each server."""
    front = Front(ingress_host="shop.example", nginx_sidecar=True, nginx_static=True, nginx_port=free_port(),
                  nginx_address="127.0.0.1")
    pod = start_pod(tmp_path_factory.mktemp(f"sidecar-{request.param}"), request.param, front)
    try:
        yield pod
    finally:
        pod.stop()


def size_posts(port: int) -> float:
    """The app's ``http_requests_total`` for POST /size, any status (0 when absent)."""
    time.sleep(METRICS_SETTLE_SECONDS)  # every worker's counts written (server.request_batch)
    _, _, body = request(port, f"{PREFIX}/metrics")
    return sum(float(line.rsplit(" ", 1)[1]) for line in body.decode().splitlines()
               if line.startswith("http_requests_total{") and 'endpoint="/size"' in line and 'method="POST"' in line)


def hello_count(port: int) -> float:
    return serve_hello_count(port, PREFIX, CLIENT)


def test_routes_health_and_metrics_through_the_sidecar_probes_on_the_app(pod):
    """Through nginx: the app's routes, health and metrics (exact across workers) under the prefix; the probes of
    the Deployment reach the app's own port, as the kubelet's do; the Service sends traffic to nginx's port."""
    status, _, body = request(pod.port, f"{PREFIX}/hello")
    assert (status, body) == (200, b"hello"), pod.nginx_log()
    status, _, body = request(pod.port, f"{PREFIX}/health")
    assert status == 200 and json.loads(body)["status"] == "UP"
    before = hello_count(pod.port)
    for _ in range(20):
        assert request(pod.port, f"{PREFIX}/hello")[0] == 200
    assert hello_count(pod.port) == before + 20
    app_ports = {p["name"]: p["containerPort"] for p in pod.app_container["ports"]}
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        http_get = pod.app_container[kind]["httpGet"]
        assert http_get["path"].startswith(PREFIX + "/health/") and app_ports[http_get["port"]] == pod.app.port, kind
        assert request(pod.app.port, http_get["path"])[0] == 200, kind
    nginx_ports = {p["name"]: p["containerPort"] for p in pod.nginx_container["ports"]}
    service = yaml.safe_load((pod.workdir / "deploy" / "service.yaml").read_text())
    assert nginx_ports[service["spec"]["ports"][0]["targetPort"]] == pod.port
    assert request(pod.port, "/hello")[0] == 404  # outside the prefix: nginx's own 404


def test_forwarded_headers_of_the_ingress_reach_the_app(pod):
    """STACK_PROXY_HOPS=2 (ingress + sidecar): the client address, scheme and host ingress-nginx passes are what
    the app sees and logs; the sidecar appends its own values rather than replacing them."""
    status, _, body = request(pod.port, f"{PREFIX}/seen", headers={**INGRESS, "X-Request-ID": "via-ingress"})
    assert status == 200, pod.app.log_tail()
    assert json.loads(body) == {"remote_addr": "203.0.113.7", "scheme": "https", "host": "shop.example",
                                "link": f"https://shop.example{PREFIX}/hello"}
    pod.wait_for_log(rf"GET {PREFIX}/seen 200 \S+ id=via-ingress client=203\.0\.113\.7$")


def test_static_files_are_served_by_nginx_not_the_app(pod):
    """<prefix>/static/app.css comes from the copy of the project's static/ (the init container's), with a
    cache lifetime; the app logs no line for it (nginx does), while a request it serves is logged."""
    expected = (APP / "static" / "app.css").read_bytes()
    status, headers, body = request(pod.port, f"{PREFIX}/static/app.css", headers={"X-Request-ID": "static-1"})
    assert (status, body) == (200, expected)
    assert headers["content-type"].startswith("text/css") and headers["cache-control"] == "max-age=3600"
    assert request(pod.port, f"{PREFIX}/hello", headers={"X-Request-ID": "after-static"})[0] == 200
    pod.wait_for_log(rf"GET {PREFIX}/hello 200 \S+ id=after-static ")
    assert "/static/app.css" not in pod.app.log_text()
    assert re.search(r'"request":"GET /your/path/static/app.css HTTP/1.1","status":200', pod.nginx_log())
    assert request(pod.app.port, f"{PREFIX}/static/app.css")[2] == expected  # Flask's own route, the fallback


def test_body_limit_is_the_apps_and_nginx_answers_413(pod):
    """--max-content-length: a body of exactly the limit reaches the app whole; one byte more is nginx's 413,
    the app never sees it."""
    status, _, body = request(pod.port, f"{PREFIX}/size", method="POST", body=b"x" * MAX_BODY)
    assert status == 200 and json.loads(body) == {"size": MAX_BODY}
    status, _, _ = request(pod.port, f"{PREFIX}/size", method="POST", body=b"x" * (MAX_BODY + 1),
                           headers={"X-Request-ID": "too-big"})
    assert status == 413
    assert request(pod.port, f"{PREFIX}/hello", headers={"X-Request-ID": "after-413"})[0] == 200
    pod.wait_for_log(rf"GET {PREFIX}/hello 200 \S+ id=after-413 ")
    assert "id=too-big" not in pod.app.log_text()


class SlowBodies(threading.Thread):
    """``SLOW`` connections each POSTing a 50 kB body to ``path`` one byte a second, until ``stop`` (50 kB: a body
    class that admits more than ``SLOW`` at once, see test_sidecar_has_the_image_fronts_limits)."""

    def __init__(self, port: int, path: str):
        super().__init__(daemon=True)
        head = (f"POST {path} HTTP/1.1\r\nHost: shop.example\r\nContent-Type: application/octet-stream\r\n"
                "X-Request-ID: slow-body\r\nContent-Length: 50000\r\n\r\n").encode()
        self.socks = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(SLOW)]
        for sock in self.socks:
            sock.sendall(head)
            sock.setblocking(False)
        self.stop = threading.Event()
        self.sent_to = [0] * SLOW  # seconds each connection was still accepting bytes

    def run(self) -> None:
        began = time.monotonic()
        while not self.stop.wait(1.0):
            for index, sock in enumerate(self.socks):
                try:
                    sock.send(b"x")
                    self.sent_to[index] = time.monotonic() - began
                except OSError:
                    pass

    def close(self) -> None:
        self.stop.set()
        self.join(5)
        for sock in self.socks:
            sock.close()


def test_slow_bodies_wait_in_nginx_not_in_the_app(pod):
    """64 clients sending a body one byte a second hold no app thread (the app has 2 workers x 4): normal requests
    timed meanwhile through nginx all succeed, p99 under 250 ms; no slow body reaches the app. Without nginx the
    same clients take every thread (tests/reliability/test_slow_clients.py)."""
    posts_before = size_posts(pod.port)
    trickle = SlowBodies(pod.port, f"{PREFIX}/size")
    trickle.start()
    try:
        time.sleep(2)
        latencies, failures = probe(pod.port, f"{PREFIX}/hello", PROBE_SECONDS, source=CLIENT)
        still_sending = sum(1 for seconds in trickle.sent_to if seconds > PROBE_SECONDS)
    finally:
        trickle.close()
    p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
    print(f"\n{pod.app.server}: {SLOW} slow bodies through the nginx sidecar, {len(latencies)} normal requests: "
          f"{len(failures)} failed, p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms; {still_sending} slow "
          f"connections still sending after {PROBE_SECONDS + 2:.0f} s")
    assert not failures, failures[:5]
    assert p99 < 0.25, f"p99 {p99 * 1000:.0f} ms over {len(latencies)} requests"
    assert still_sending == SLOW  # they were trickling all along, held by nginx
    assert size_posts(pod.port) == posts_before  # the app finished none (its metrics: exact, across workers)
    # ...and logged none: a request sent after them has its access line written (in batches every 0.25 s) first
    status, headers, _ = request(pod.port, f"{PREFIX}/hello", headers={"X-Request-ID": "after-slow-bodies"})
    assert status == 200
    pod.wait_for_log(r"^.*id=after-slow-bodies.*$")
    assert "id=slow-body" not in pod.app.log_text()  # by their request id: earlier tests' POSTs may be logged late


def front_limit_lines(conf: str) -> list[str]:
    """The lines of an nginx config that the front's limits make (connections, descriptors, zones, body classes)."""
    keys = ("worker_connections", "worker_rlimit_nofile", "client_body_buffer_size", "limit_conn", "map $front_body",
            'map "$http_transfer_encoding', '"~^', "default \"\";")
    return [line.strip() for line in conf.splitlines() if line.strip().startswith(keys)]


def hold_heads(port: int, count: int, content_length: int, source: str = CLIENT) -> list[socket.socket]:
    """``count`` connections from ``source``, each having sent a POST head with ``content_length`` and no body yet
    (nginx counts each once it has read the head, and waits for the body)."""
    head = (f"POST {PREFIX}/size HTTP/1.1\r\nHost: shop.example\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Length: {content_length}\r\n\r\n").encode()
    socks = []
    try:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
            socks.append(sock)
            sock.sendall(head)
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks


def test_sidecar_has_the_image_fronts_limits(pod):
    """The sidecar's nginx has the image front's limits, computed by the same code from the same settings
    (serving.front_conf, STACK_FRONT_* defaults) for the same body limit: 8,192 connections, 256 requests at once per
    client address, request bodies in classes sharing the 128 MiB budget. Real nginx: the 257th request at once from
    one address is a 503 (JSON, nginx's error page) while another address is served; past its class's count, a
    1 MB body is refused right after its head while a small request passes."""
    import sys

    sys.path.insert(0, str(REPO / "image" / "project"))
    try:
        from serving.front_conf import body_classes, read_template, render_public
        from serving.settings import load_serving_settings
    finally:
        sys.path.remove(str(REPO / "image" / "project"))
    settings = load_serving_settings({}, cpus=1)
    image_front = render_public(read_template(str(REPO / "image" / "project" / "serving" / "nginx.conf")), settings,
                                pod.app.port, MAX_BODY, -1)
    sidecar = pod.configmap["data"]["nginx.conf"]
    assert front_limit_lines(sidecar) == front_limit_lines(image_front)
    assert "worker_connections 8192;" in sidecar and "limit_conn front_client 256;" in sidecar

    per_address = settings.front_client_connections
    held = hold_heads(pod.port, per_address, 10)
    try:
        time.sleep(0.5)  # every head read
        began = time.monotonic()
        status, headers, body = request(pod.port, f"{PREFIX}/hello", headers={"Accept": "application/json"})
        assert status == 503 and json.loads(body)["error"]["status"] == 503, (status, body, pod.nginx_log()[-2000:])
        assert time.monotonic() - began < 2
        assert get(pod.port, f"{PREFIX}/hello", source="127.0.0.3")[0] == 200  # another address
    finally:
        for sock in held:
            sock.close()

    (_, largest, admitted), = [c for c in body_classes(MAX_BODY, settings.front_body_budget) if c[0] == 7]
    assert admitted < per_address  # the class's count is what refuses, not the address's
    held = hold_heads(pod.port, admitted, 1_000_000)
    try:
        time.sleep(0.5)
        extra = hold_heads(pod.port, 1, 1_000_000)[0]
        try:
            extra.settimeout(3)
            answer = extra.recv(200)  # refused right after its head, before any body byte is sent
            assert answer.startswith(b"HTTP/1.1 503 "), answer
        finally:
            extra.close()
        assert request(pod.port, f"{PREFIX}/hello")[0] == 200
    finally:
        for sock in held:
            sock.close()
    print(f"\n{pod.app.server}: the sidecar answered 503 to request number {per_address + 1} at once from one "
          f"address, and to 1 MB body number {admitted + 1} at once (its class: up to {largest} bytes)")


def test_sidecar_alone_ignores_forged_headers(tmp_path):
    """The sidecar without an ingress (STACK_PROXY_HOPS=1): a client's own X-Forwarded-* values change nothing,
    the app sees the client's address, plain http and the Host it sent."""
    pod = start_pod(tmp_path, "granian", Front(nginx_sidecar=True, nginx_port=free_port(), nginx_address="127.0.0.1"))
    try:
        env = {e["name"]: e["value"] for e in pod.app_container["env"]}
        assert env["STACK_PROXY_HOPS"] == "1"
        status, _, body = request(pod.port, f"{PREFIX}/seen", headers={**INGRESS, "Host": "shop.example:8080"})
        assert status == 200, pod.app.log_tail()
        assert json.loads(body) == {"remote_addr": CLIENT, "scheme": "http", "host": "shop.example:8080",
                                    "link": f"http://shop.example:8080{PREFIX}/hello"}
    finally:
        pod.stop()


def test_termination_nginx_stops_accepting_before_the_app(tmp_path):
    """The pod's termination, as the kubelet does it: SIGTERM to the app and, at the same moment, nginx's preStop
    hook (its own command, the paths made the test's). Requests sent through nginx while endpoints are being
    removed (the first 4.5 s) all succeed: nginx keeps accepting for 5 s and the app (STACK_SHUTDOWN_DELAY 7)
    after that; then nginx quits gracefully (the hook returns once it is gone) and the app exits cleanly."""
    pod = start_pod(tmp_path, "granian", Front(nginx_sidecar=True, nginx_port=free_port(), nginx_address="127.0.0.1"),
                    shutdown_delay=True)
    try:
        (hook,) = [pod.nginx_container["lifecycle"]["preStop"]["exec"]["command"]]
        assert hook[:2] == ["/bin/sh", "-c"]
        paths = re.compile("|".join(map(re.escape, pod.paths)))  # one pass: the test's paths are under /tmp/ too
        script = paths.sub(lambda match: pod.paths[match.group(0)], hook[2])
        env = {**os.environ, "PATH": f"{Path(require_nginx()).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
        failures, served = [], 0
        began = time.monotonic()
        pod.app.terminate()
        pre_stop = subprocess.Popen(["/bin/sh", "-c", script], env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT)
        while time.monotonic() - began < 4.5:
            try:
                status = request(pod.port, f"{PREFIX}/hello", timeout=5)[0]
                served += status == 200
                if status != 200:
                    failures.append(f"{time.monotonic() - began:.2f} s: status {status}")
            except OSError as exc:
                failures.append(f"{time.monotonic() - began:.2f} s: {exc!r}")
            time.sleep(0.02)
        output = pre_stop.communicate(timeout=20)[0]
        hook_seconds = time.monotonic() - began
        assert pre_stop.returncode == 0, output
        assert not failures, (failures[:5], pod.nginx_log())
        assert served > 50
        assert pod.nginx.wait(5) == 0 and 5 <= hook_seconds < 15, hook_seconds
        assert pod.app.proc.wait(30) == 0, pod.app.log_tail()
    finally:
        pod.stop()
