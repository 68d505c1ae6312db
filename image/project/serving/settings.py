"""Production serving settings: what ``serving.supervisor`` and each server's mapping (gunicorn.conf.py, granian_app.py,
uwsgi_app.py) run with, read once from the environment only, through the settings registry (``stacksettings``,
where each variable's parser, default and meaning are declared; README.md's "Environment variables" is made from
it). A bad value raises ``SettingsError`` with one line naming the variable.
"""

from __future__ import annotations

import ipaddress
import math
import os
from dataclasses import dataclass
from typing import Any, Mapping

import stacksettings
from stacksettings import FRONTS, SERVERS  # noqa: F401 - re-exported

from server.exceptions import SettingsError  # server/__init__ loads no Flask for it

_DECLARED = object()


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

    server: str = stacksettings.setting("STACK_SERVER").default
    host: str = "0.0.0.0"
    port: int = stacksettings.setting("PORT").default
    workers: int = 2
    threads: int = stacksettings.setting("STACK_THREADS").default
    worker_timeout: int = stacksettings.setting("STACK_WORKER_TIMEOUT").default
    graceful_timeout: int = stacksettings.setting("STACK_GRACEFUL_TIMEOUT").default
    shutdown_delay: float = 0.0
    log_level: str = stacksettings.setting("LOG_LEVEL").default
    log_format: str = stacksettings.setting("LOG_FORMAT").default
    control_socket: str | None = None
    uwsgi_socket: str | None = None
    front: str = stacksettings.setting("STACK_FRONT").default
    probe_port: int = stacksettings.setting("STACK_PROBE_PORT").default
    front_connections: int = stacksettings.setting("STACK_FRONT_CONNECTIONS").default
    front_client_connections: int = stacksettings.setting("STACK_FRONT_CLIENT_CONNECTIONS").default
    front_body_budget: int = stacksettings.setting("STACK_FRONT_BODY_BUDGET").default
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


def load_serving_settings(environ: Mapping[str, str] | None = None, cpus: int | None = None) -> ServingSettings:
    """Resolve the production server's settings from ``environ`` (default ``os.environ``) through the registry
    (``stacksettings``: each variable's parser and default are declared there).

    Args:
        environ: the environment to read.
        cpus: usable CPUs, for the default worker count (default: ``usable_cpus()``).

    Returns:
        ServingSettings: validated values.

    Raises:
        SettingsError: a value is unusable (one line naming the variable).
    """
    try:
        return _load(environ, cpus)
    except stacksettings.SettingsError as exc:
        if isinstance(exc, SettingsError):
            raise
        raise SettingsError(str(exc)) from None


def _load(environ: Mapping[str, str] | None, cpus: int | None) -> ServingSettings:
    def value(name: str, default: Any = _DECLARED) -> Any:
        return stacksettings.value(name, environ) if default is _DECLARED else stacksettings.value(name, environ,
                                                                                                    default)

    port = value("PORT")
    workers = value("WEB_CONCURRENCY", None)
    graceful = value("STACK_GRACEFUL_TIMEOUT")
    delay = value("STACK_SHUTDOWN_DELAY", 5.0 if value("KUBERNETES_SERVICE_HOST") else 0.0)  # the kubelet sets it
    probe_port = value("STACK_PROBE_PORT")
    if probe_port == port:
        raise SettingsError(f"STACK_PROBE_PORT={probe_port} is also PORT; give the probes another port (0: none)")
    if delay >= graceful:
        raise SettingsError(f"STACK_SHUTDOWN_DELAY={delay:g} must be below STACK_GRACEFUL_TIMEOUT={graceful} "
                            "(workers still running at the graceful timeout are killed)")
    return ServingSettings(
        server=value("STACK_SERVER"), host=value("STACK_HOST", "0.0.0.0"), port=port,
        workers=workers if workers is not None else default_workers(usable_cpus() if cpus is None else cpus),
        threads=value("STACK_THREADS"), worker_timeout=value("STACK_WORKER_TIMEOUT"), graceful_timeout=graceful,
        shutdown_delay=delay, log_level=value("LOG_LEVEL"), log_format=value("LOG_FORMAT"),
        control_socket=value("STACK_CONTROL_SOCKET"), front=value("STACK_FRONT"), probe_port=probe_port,
        front_connections=value("STACK_FRONT_CONNECTIONS"),
        front_client_connections=value("STACK_FRONT_CLIENT_CONNECTIONS"),
        front_body_budget=value("STACK_FRONT_BODY_BUDGET"), workers_default=workers is None,
        uwsgi_socket=parse_uwsgi_socket("STACK_UWSGI_SOCKET", value("STACK_UWSGI_SOCKET") or "",
                                        value("STACK_UWSGI_SOCKET_PUBLIC")),
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
