"""Production serving settings: what ``serving.supervisor`` and each server's mapping (gunicorn.conf.py, granian_app.py,
uwsgi_app.py) run with, read once from the environment only (README.md, "Environment variables"): STACK_SERVER,
PORT, STACK_HOST, WEB_CONCURRENCY, STACK_THREADS, STACK_WORKER_TIMEOUT, STACK_GRACEFUL_TIMEOUT, STACK_SHUTDOWN_DELAY,
STACK_FRONT, STACK_PROBE_PORT, STACK_FRONT_CONNECTIONS, STACK_FRONT_CLIENT_CONNECTIONS, STACK_FRONT_BODY_BUDGET,
STACK_CONTROL_SOCKET, STACK_UWSGI_SOCKET(_PUBLIC), LOG_LEVEL, LOG_FORMAT. Values are parsed with the
runtime's one parser per type (``server.settings``); a bad value raises ``SettingsError`` with one line naming the
variable.
"""

from __future__ import annotations

import ipaddress
import math
import os
from dataclasses import dataclass
from typing import Any, Mapping

from server.exceptions import SettingsError
from server.settings import parse_bool, parse_choice, parse_int, parse_level, parse_seconds


def parse_uwsgi_socket(name: str, value: Any, public: bool = False) -> str | None:
    """A uwsgi-protocol socket address: ``HOST:PORT`` (``127.0.0.1:3031``, ``[::1]:3031``) or an absolute unix
    socket path; "" is None. The uwsgi protocol lets a peer make the server load code, so a TCP host must be a
    loopback one unless ``public`` (STACK_UWSGI_SOCKET_PUBLIC).

    Raises:
        SettingsError: neither form, or a host that is not a loopback one without ``public``.
    """
    text = str(value).strip()
    if not text or text.startswith("/"):
        return text or None
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise SettingsError(f"{name}={value!r} is neither HOST:PORT (e.g. 127.0.0.1:3031) nor an absolute path")
    try:
        loopback = host.strip("[]") == "localhost" or ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not public:
        raise SettingsError(f"{name}={value!r} is not a loopback address: the uwsgi protocol can make the server load "
                            "code; use 127.0.0.1:PORT or a unix socket, or set STACK_UWSGI_SOCKET_PUBLIC=1")
    return text


@dataclass(frozen=True)
class ServingSettings:
    """The production server's settings (README.md, "Environment variables"; times in seconds).

    Attributes:
        server: ``granian``, ``gunicorn`` or ``uwsgi``.
        host, port: where to listen.
        workers: worker processes; threads: threads per worker.
        worker_timeout: seconds a silent worker lives before it is restarted.
        graceful_timeout: seconds from SIGTERM to SIGKILL of workers.
        shutdown_delay: seconds a worker keeps accepting after SIGTERM, readiness DOWN (below graceful_timeout).
        log_level, log_format: as the runtime's.
        control_socket: gunicorn's control socket path, None = off.
        uwsgi_socket: uWSGI's uwsgi-protocol socket for nginx (``HOST:PORT`` or a path), None = none.
        front: ``none`` or ``nginx`` (``serving.front``: nginx buffers requests in front of the server).
        probe_port: with the front, the port of its probe listener (health and /metrics only); 0: none.
        front_connections: connections the front's public nginx holds at most (its worker_connections).
        front_client_connections: requests at once per client address on the public port (0: no limit).
        front_body_budget: bytes of request bodies the front may hold in temporary files under $TMPDIR at once.
        workers_default: True when ``workers`` is the stack's default (WEB_CONCURRENCY unset).
    """

    server: str = "granian"
    host: str = "0.0.0.0"
    port: int = 8080
    workers: int = 2
    threads: int = 4
    worker_timeout: int = 30
    graceful_timeout: int = 25
    shutdown_delay: float = 0.0
    log_level: str = "INFO"
    log_format: str = "text"
    control_socket: str | None = None
    uwsgi_socket: str | None = None
    front: str = "none"
    probe_port: int = 8090
    front_connections: int = 8192
    front_client_connections: int = 256
    front_body_budget: int = 128 * 1024 * 1024
    workers_default: bool = True

    @property
    def bind(self) -> str:
        """``HOST:PORT``, IPv6 literals bracketed."""
        host = self.host
        return f"[{host}]:{self.port}" if ":" in host and not host.startswith("[") else f"{host}:{self.port}"

    @property
    def probe_bind(self) -> str:
        """``HOST:STACK_PROBE_PORT``, IPv6 literals bracketed."""
        return self.bind.rpartition(":")[0] + f":{self.probe_port}"


KEEPALIVE_SECONDS = 5  # an idle keep-alive connection stays open: above probes' 2-4 s, below balancers' 60 s
SERVERS = ("granian", "gunicorn", "uwsgi")  # the default first (README.md, "Production serving", says why)
FRONTS = ("none", "nginx")  # STACK_FRONT; the deployable image sets nginx


def load_serving_settings(environ: Mapping[str, str] | None = None, cpus: int | None = None) -> ServingSettings:
    """Resolve the production server's settings from ``environ`` (default ``os.environ``).

    Args:
        environ: the environment to read.
        cpus: usable CPUs, for the default worker count (default: ``usable_cpus()``).

    Returns:
        ServingSettings: validated values.

    Raises:
        SettingsError: a value is unusable (one line naming the variable).
    """
    env = os.environ if environ is None else environ

    def given(name: str) -> bool:
        return name in env

    server = parse_choice("STACK_SERVER", env.get("STACK_SERVER", ""), SERVERS, ServingSettings.server, "a server")
    port = parse_int("PORT", env["PORT"], 1, 65535, example=8080) if given("PORT") else 8080
    host = env.get("STACK_HOST", "").strip() or "0.0.0.0"
    if given("WEB_CONCURRENCY"):
        workers = parse_int("WEB_CONCURRENCY", env["WEB_CONCURRENCY"], 1, example=3)
    else:
        workers = default_workers(usable_cpus() if cpus is None else cpus)
    threads = parse_int("STACK_THREADS", env["STACK_THREADS"], 1, example=4) if given("STACK_THREADS") else 4
    timeout = parse_int("STACK_WORKER_TIMEOUT", env["STACK_WORKER_TIMEOUT"], 1, example=30) \
        if given("STACK_WORKER_TIMEOUT") else 30
    graceful = parse_int("STACK_GRACEFUL_TIMEOUT", env["STACK_GRACEFUL_TIMEOUT"], 1, example=25) \
        if given("STACK_GRACEFUL_TIMEOUT") else 25
    default_delay = 5.0 if env.get("KUBERNETES_SERVICE_HOST") else 0.0  # the kubelet sets it in every pod
    delay = parse_seconds("STACK_SHUTDOWN_DELAY", env["STACK_SHUTDOWN_DELAY"], 0.0) \
        if given("STACK_SHUTDOWN_DELAY") else default_delay
    probe_port = parse_int("STACK_PROBE_PORT", env["STACK_PROBE_PORT"], 0, 65535, example=8090) \
        if given("STACK_PROBE_PORT") else ServingSettings.probe_port
    if probe_port == port:
        raise SettingsError(f"STACK_PROBE_PORT={probe_port} is also PORT; give the probes another port (0: none)")
    front_limits = {name: parse_int(name, env[name], minimum, example=default) if given(name) else default
                    for name, minimum, default in (
                        ("STACK_FRONT_CONNECTIONS", 64, ServingSettings.front_connections),
                        ("STACK_FRONT_CLIENT_CONNECTIONS", 0, ServingSettings.front_client_connections),
                        ("STACK_FRONT_BODY_BUDGET", 0, ServingSettings.front_body_budget))}
    if delay >= graceful:
        raise SettingsError(f"STACK_SHUTDOWN_DELAY={delay:g} must be below STACK_GRACEFUL_TIMEOUT={graceful} "
                            "(workers still running at the graceful timeout are killed)")
    return ServingSettings(
        server=server, host=host, port=port, workers=workers, threads=threads, worker_timeout=timeout,
        graceful_timeout=graceful, shutdown_delay=delay,
        log_level=parse_level("LOG_LEVEL", env.get("LOG_LEVEL", "")),
        log_format=parse_choice("LOG_FORMAT", env.get("LOG_FORMAT", ""), ("text", "json"), "text", "a log format"),
        control_socket=env.get("STACK_CONTROL_SOCKET", "").strip() or None,
        front=parse_choice("STACK_FRONT", env.get("STACK_FRONT", ""), FRONTS, ServingSettings.front, "a front"),
        probe_port=probe_port, front_connections=front_limits["STACK_FRONT_CONNECTIONS"],
        front_client_connections=front_limits["STACK_FRONT_CLIENT_CONNECTIONS"],
        front_body_budget=front_limits["STACK_FRONT_BODY_BUDGET"], workers_default=not given("WEB_CONCURRENCY"),
        uwsgi_socket=parse_uwsgi_socket("STACK_UWSGI_SOCKET", env.get("STACK_UWSGI_SOCKET", ""), parse_bool(
            "STACK_UWSGI_SOCKET_PUBLIC", env.get("STACK_UWSGI_SOCKET_PUBLIC", ""))),
    )


def usable_cpus() -> int:
    """How many CPUs this process may really use: the CPU affinity mask, further limited by a cgroup v2 quota
    (``/sys/fs/cgroup/cpu.max``, e.g. ``200000 100000`` = 2 CPUs, set by ``--cpus`` or Kubernetes
    ``resources.limits.cpu``), rounded up, at least 1."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    try:
        with open("/sys/fs/cgroup/cpu.max", encoding="ascii") as fh:
            quota, period = fh.read().split()[:2]
        if quota != "max":
            cpus = min(cpus, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


def default_workers(cpus: int) -> int:
    """The worker count when WEB_CONCURRENCY is unset: ``max(2, cpus + 1)``.

    Each worker runs Python code on one CPU at a time (the GIL), so one worker per usable CPU keeps every CPU busy;
    the extra worker covers the time workers spend blocked, and each worker's threads overlap I/O waits. Two at
    least, so one crashed or busy worker never leaves the service unanswered. Unlike gunicorn's classic
    ``2 * cpus + 1`` (sync workers with one request each), this keeps memory per CPU low.
    """
    return max(2, cpus + 1)
