"""The front's nginx configs (``serving.front``): the public one rendered from ``serving/nginx.conf`` (the template
``flask-stack deploy --nginx-sidecar`` also uses, with the same limits: ``flask_stack.front.sidecar_limits`` calls
:func:`connection_budget`, :func:`limits_http` and :func:`limits_server` with the settings' defaults) and the probe
port's, with the limits that keep the container within its file descriptors and memory.

Figures (README.md, "Production serving"), all from the serving settings (``serving.settings``):

* connections: one nginx worker holds at most STACK_FRONT_CONNECTIONS connections (``worker_connections``; the
  connections to the app count too), its file-descriptor limit (``worker_rlimit_nofile``) that many plus
  ``FD_RESERVE``; when the container's hard limit (``ulimit -Hn``) is lower, the connections are cut to fit it.
* per client address: at most STACK_FRONT_CLIENT_CONNECTIONS requests at once on the public port (nginx's
  ``limit_conn``, counted once a request head is read); more are answered 503 at once.
* request bodies: nginx keeps a body up to ``BODY_BUFFER`` bytes in memory and writes a larger one to a temporary
  file under $TMPDIR, which is memory when /tmp is a tmpfs or a memory-backed emptyDir. Requests are put in classes
  by the number of digits of their Content-Length (5 digits: up to 99,999 bytes; 6: up to 999,999; ... the last
  class ends at STACK_MAX_CONTENT_LENGTH; a chunked body, whose size is unknown, is in the last class); each class
  gets an equal share of STACK_FRONT_BODY_BUDGET and admits as many requests at once as fit in its share at the
  class's largest body. A request past its class's count is answered 503 right after its head, before its body is
  read, so the files never hold more than the budget.
* the probe port (STACK_PROBE_PORT) is a second nginx, with ``PROBE_CONNECTIONS`` connections of its own: a flood
  that takes every connection of the public one leaves it answering.
"""

from __future__ import annotations

import re

from server.exceptions import StackError

from .settings import ServingSettings

FD_RESERVE = 256  # descriptors beyond worker_connections: temp files of buffered bodies, logs, listeners
BODY_BUFFER = 16 * 1024  # bytes of a request body nginx keeps in memory (client_body_buffer_size)
PROBE_CONNECTIONS = 256  # the probe port's nginx: kubelet, HEALTHCHECK and Prometheus only
FIRST_BODY_DIGITS = 5  # Content-Lengths of 4 digits or fewer (< 10,000 bytes) stay within BODY_BUFFER, in memory
#: The status nginx gives a request a limit refuses, which serving/nginx.conf answers as 503 with its page: a code the
#: app never uses, so that the proxy location can intercept the app server's own refusals (431) without replacing
#: the app's own 503 (readiness DOWN) body.
LIMIT_STATUS = 597


class FrontError(StackError):
    """The front cannot start (nginx missing, its config unusable, no port); ``str(err)`` is one line."""


def read_template(path: str) -> str:
    """The text of the nginx template at ``path``.

    Raises:
        FrontError: it cannot be read.
    """
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except OSError as exc:
        raise FrontError(f"cannot read the nginx template {path}: {exc.strerror}") from None


def connection_budget(settings: ServingSettings, hard_nofile: int) -> tuple[int, int]:
    """(worker_connections, worker_rlimit_nofile) for the public nginx: STACK_FRONT_CONNECTIONS and that plus
    ``FD_RESERVE``, both cut to fit ``hard_nofile`` (the process's hard RLIMIT_NOFILE; -1: unlimited)."""
    connections = settings.front_connections
    if 0 <= hard_nofile < connections + FD_RESERVE:
        connections = max(64, hard_nofile - FD_RESERVE)
    return connections, connections + FD_RESERVE


def body_classes(max_body: int, budget: int) -> list[tuple[int, int, int]]:
    """The request-body classes (module docstring): ``(digits, largest body in bytes, requests at once)`` for
    Content-Lengths of ``FIRST_BODY_DIGITS`` digits up to those of ``max_body`` (bytes; 0: no limit, no classes),
    each admitting ``budget / len(classes) // largest`` requests at once, at least 1."""
    if max_body <= 0 or budget <= 0 or max_body < 10 ** (FIRST_BODY_DIGITS - 1):
        return []
    digits = range(FIRST_BODY_DIGITS, len(str(max_body)) + 1)
    share = budget // len(digits)
    classes = []
    for count in digits:
        largest = min(10 ** count - 1, max_body)
        classes.append((count, largest, max(1, share // largest)))
    return classes


def limits_http(settings: ServingSettings, max_body: int) -> str:
    """The public nginx's ``http``-level limit directives (zones and the body-class map)."""
    lines = [f"client_body_buffer_size {BODY_BUFFER};",
             "limit_conn_zone $binary_remote_addr zone=front_client:4m;"]
    classes = body_classes(max_body, settings.front_body_budget)
    if classes:
        last = classes[-1][0]
        lines.append('map "$http_transfer_encoding|$content_length" $front_body_class {')
        lines.append('    default "";')
        lines.append('    "|" "";  # no body (most requests): a hash lookup, none of the regexes below')
        lines.append(f'    "~^[^|]+[|]" {last};  # chunked: its size is unknown, so the largest class')
        lines.extend(f'    "~^[|]0*[1-9][0-9]{{{count - 1}}}$" {count};' for count, _, _ in classes)
        lines.append("}")
        for count, _, _ in classes:
            lines.append(f'map $front_body_class $front_body_{count} {{ {count} 1; default ""; }}')
            lines.append(f"limit_conn_zone $front_body_{count} zone=front_body_{count}:64k;")
    return "\n".join(lines)


def limits_server(settings: ServingSettings, max_body: int) -> str:
    """The public nginx's ``server``-level limit directives: per client address, per body class."""
    lines = [f"limit_conn_status {LIMIT_STATUS};  # 503 (error_page {LIMIT_STATUS} =503, nginx.conf)",
             "limit_conn_log_level info;"]
    if settings.front_client_connections:
        lines.append(f"limit_conn front_client {settings.front_client_connections};")
    for count, largest, admitted in body_classes(max_body, settings.front_body_budget):
        lines.append(f"limit_conn front_body_{count} {admitted};  # bodies up to {largest} bytes")
    return "\n".join(lines)


def _indent(text: str, spaces: int) -> str:
    return ("\n" + " " * spaces).join(text.splitlines())


def _fill(template: str, values: dict[str, str]) -> str:
    # The sidecar's optional block (``# >>> nginx-static``) is left out here and the front's limits
    # (``# >>> front-limits``) kept; the CLI keeps both for the sidecar (flask_stack.front.toggle, shipped apart),
    # with the limits this module computes (flask_stack.front.sidecar_limits).
    text = re.sub(r"^[ \t]*# >>> nginx-static\n.*?^[ \t]*# <<< nginx-static\n", "", template, flags=re.M | re.S)
    text = re.sub(r"^[ \t]*# [<>]{3} front-limits\n", "", text, flags=re.M)
    for key in sorted(values, key=len, reverse=True):
        text = text.replace(key, values[key])
    return text


def upstream(app_port: int, app_socket: str | None) -> str:
    """The app server's address as nginx's ``server`` directive takes it: ``unix:<app_socket>`` (a path), else
    127.0.0.1:``app_port``."""
    return f"unix:{app_socket}" if app_socket else f"127.0.0.1:{app_port}"


def render_public(template: str, settings: ServingSettings, app_port: int, max_body: int, hard_nofile: int,
                  app_socket: str | None = None) -> str:
    """``serving/nginx.conf`` (text ``template``) for the image's front: listening on ``settings.bind``, proxying
    every path to the unix socket ``app_socket`` (a path) or else 127.0.0.1:``app_port``, body limit ``max_body``
    bytes (0: none), the limits above; without the sidecar's static block."""
    connections, nofile = connection_budget(settings, hard_nofile)
    return _fill(template, {
        "FLASK_STACK_NGINX_BODY_SIZE": str(max(0, max_body)),  # bytes; 0: no limit, as nginx takes it
        "FLASK_STACK_NGINX_LISTEN": settings.bind,
        "FLASK_STACK_URL_PREFIX": "",  # every path goes to the app, which knows its own prefix
        "FLASK_STACK_NGINX_WORKER_CONNECTIONS": str(connections),
        "FLASK_STACK_NGINX_RLIMIT_NOFILE": str(nofile),
        "FLASK_STACK_NGINX_LIMITS_HTTP": _indent(limits_http(settings, max_body), 4),
        "FLASK_STACK_NGINX_LIMITS_SERVER": _indent(limits_server(settings, max_body), 8),
        "127.0.0.1:APPSODY_PORT": upstream(app_port, app_socket),
        "APPSODY_PORT": str(app_port),
    })


def render_probes(template: str, settings: ServingSettings, app_port: int, max_body: int, url_prefix: str,
                  app_socket: str | None = None) -> str:
    """The probe port's nginx config from the same template: ``PROBE_CONNECTIONS`` connections, no limits,
    listening on STACK_HOST:STACK_PROBE_PORT, proxying to the app as ``render_public`` does, and passing only ``<url_prefix>/health``,
    ``/health/live|ready|started`` and ``/metrics`` on to the app (any other path: 404)."""
    text = _fill(template, {
        "FLASK_STACK_NGINX_BODY_SIZE": str(max(0, max_body)),
        "FLASK_STACK_NGINX_LISTEN": settings.probe_bind,
        "FLASK_STACK_URL_PREFIX": "",
        "FLASK_STACK_NGINX_WORKER_CONNECTIONS": str(PROBE_CONNECTIONS),
        "FLASK_STACK_NGINX_RLIMIT_NOFILE": str(PROBE_CONNECTIONS + FD_RESERVE),
        "FLASK_STACK_NGINX_LIMITS_HTTP": f"client_body_buffer_size {BODY_BUFFER};",
        "FLASK_STACK_NGINX_LIMITS_SERVER": "",
        "127.0.0.1:APPSODY_PORT": upstream(app_port, app_socket),
        "APPSODY_PORT": str(app_port),
    })
    paths = f"location ~ ^{re.escape(url_prefix)}/(health(/(live|ready|started))?|metrics)$ {{"
    if "\n        location / {\n" not in text:
        raise FrontError("the nginx template has no `location / {` block for the probe port")
    return text.replace("\n        location / {\n", "\n        location / {\n            return 404;\n        }\n"
                        f"        {paths}\n", 1)
