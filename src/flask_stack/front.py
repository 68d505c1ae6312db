"""What stands in front of the app in Kubernetes, for ``flask-stack deploy``: an Ingress and an nginx sidecar.

Both are off by default (clients reach the app's own port through the Service). When asked:

- ``--ingress HOST`` writes ``ingress.yaml`` (image/config/ingress.yaml): an Ingress for ingress-nginx routing
  ``HOST`` + the URL prefix to the Service, with request and response buffering on, the body limit of the app
  (``STACK_MAX_CONTENT_LENGTH``) and timeouts; ``--tls-secret NAME`` adds its TLS section.
- ``--nginx-sidecar`` writes ``nginx.yaml`` (a ConfigMap holding image/project/serving/nginx.conf) and adds an nginx
  container to the Deployment, in front of the app in the same pod; ``--nginx-static`` has it serve the
  project's ``static/`` files (copied out of the app's image by an init container).

Each proxy in front adds one to the pods' ``STACK_PROXY_HOPS``. Optional parts of the templates sit between
``# >>> name`` and ``# <<< name`` lines (:func:`toggle`).
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import CliError
from .paths import stacksettings
from .paths import import_runtime

#: The nginx sidecar's image (Debian-based, nginx's own): any image with ``nginx`` on PATH and
#: /etc/nginx/mime.types works, since the pod gives it its command and config.
NGINX_IMAGE = "docker.io/library/nginx:1.27-bookworm"
#: The port the nginx sidecar listens on (above 1024: it runs as the pod's non-root user).
NGINX_PORT = 8081
#: The deployable image's probe port (its STACK_PROBE_PORT default): the health endpoints and /metrics through a
#: second nginx of the image's front; the probes and Prometheus use it unless the sidecar replaces that front.
PROBE_PORT = 8090
#: The app's default body limit, bytes (the serving layer's STACK_MAX_CONTENT_LENGTH default, 16 MiB).
MAX_CONTENT_LENGTH = stacksettings().DEFAULT_MAX_CONTENT_LENGTH
#: Seconds the app keeps accepting after SIGTERM (STACK_SHUTDOWN_DELAY): with the sidecar, longer than
#: nginx's 5 (its preStop hook), so nginx stops accepting before the app does.
SHUTDOWN_DELAY, SIDECAR_SHUTDOWN_DELAY = 5, 7
# An RFC 1123 host name, optionally a wildcard (*.example.com), as an Ingress rule takes it.
_HOST_RE = re.compile(r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# A DNS-1123 subdomain: the name of a Secret.
_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


@dataclass(frozen=True)
class Front:
    """What to put in front of the app (the ``deploy`` options); the defaults put nothing.

    Attributes:
        ingress_host (str): ``--ingress``: the host name the Ingress routes ("": no Ingress).
        tls_secret (str): ``--tls-secret``: the Secret (type kubernetes.io/tls) with the Ingress's certificate.
        nginx_sidecar (bool): ``--nginx-sidecar``: nginx in front of the app in each pod.
        nginx_image (str | None): ``--nginx-image``: its image (None: :data:`NGINX_IMAGE`).
        nginx_static (bool): ``--nginx-static``: nginx serves the project's ``static/`` at ``<prefix>/static/``.
        nginx_port (int): the port nginx listens on (:data:`NGINX_PORT`; tests pick a free one).
        nginx_address (str): the address nginx listens on ("": every address, as a pod needs; tests give
            127.0.0.1).
    """

    ingress_host: str = ""
    tls_secret: str = ""
    nginx_sidecar: bool = False
    nginx_image: str | None = None
    nginx_static: bool = False
    nginx_port: int = NGINX_PORT
    nginx_address: str = ""

    @property
    def image(self) -> str:
        """The nginx image the sidecar runs."""
        return self.nginx_image or NGINX_IMAGE

    @property
    def image_front(self) -> bool:
        """Whether the pods run the image's own nginx front (STACK_FRONT=nginx): not when an nginx sidecar or an
        Ingress (ingress-nginx buffers every request) is in front already, so no request is buffered twice."""
        return not (self.nginx_sidecar or self.ingress_host)

    @property
    def proxy_hops(self) -> int:
        """How many proxies stand in front of the app (the pods' STACK_PROXY_HOPS)."""
        return bool(self.ingress_host) + self.nginx_sidecar

    def check(self, project: Path, app_port: int) -> None:
        """Raise CliError (one line naming the option) when the options do not fit together or a value is bad:
        a host or Secret name that is not a DNS name, --tls-secret without --ingress, an nginx option without
        --nginx-sidecar, --nginx-static without a ``static/`` directory in ``project``, an nginx port that is
        the app's or below 1025."""
        if self.ingress_host and not (len(self.ingress_host) <= 253 and _HOST_RE.match(self.ingress_host)):
            raise CliError(f"--ingress {self.ingress_host!r} is not a host name like app.example.com")
        if self.tls_secret and not self.ingress_host:
            raise CliError("--tls-secret needs --ingress HOST (the Secret holds the Ingress's certificate)")
        if self.tls_secret and not (len(self.tls_secret) <= 253 and _NAME_RE.match(self.tls_secret)):
            raise CliError(f"--tls-secret {self.tls_secret!r} is not a Secret name (lower-case letters, digits, "
                             "'-' and '.')")
        if not self.nginx_sidecar:
            given = [name for name, value in (("--nginx-image", self.nginx_image),
                                              ("--nginx-static", self.nginx_static)) if value]
            if given:
                raise CliError(f"{given[0]} needs --nginx-sidecar")
            return
        if not 1024 < self.nginx_port <= 65535 or self.nginx_port == app_port:
            raise CliError(f"nginx port {self.nginx_port} must be 1025-65535 and not the app's port {app_port}")
        if self.nginx_address:
            try:
                ipaddress.IPv4Address(self.nginx_address)
            except ValueError:
                raise CliError(f"nginx address {self.nginx_address!r} is not an IPv4 address") from None
        if self.nginx_static and not (project / "static").is_dir():
            raise CliError(f"--nginx-static: {project / 'static'} is not a directory (the project's static "
                             "files, which nginx would serve)")

    def values(self, max_content_length: int) -> dict[str, str]:
        """The placeholders of the templates that depend on the front, for ``deploy.render``."""
        return {
            "FLASK_STACK_PROXY_HOPS": str(self.proxy_hops),
            "FLASK_STACK_MAX_CONTENT_LENGTH": str(max_content_length),
            "FLASK_STACK_NGINX_BODY_SIZE": nginx_size(max_content_length),
            "FLASK_STACK_SHUTDOWN_DELAY": str(SIDECAR_SHUTDOWN_DELAY if self.nginx_sidecar else SHUTDOWN_DELAY),
            "FLASK_STACK_TARGET_PORT": "front" if self.nginx_sidecar else "http",
            # the image's own front has a probe port; with a sidecar or an Ingress (STACK_FRONT=none) the app's
            "FLASK_STACK_PROBE_PORT": str(PROBE_PORT),
            "FLASK_STACK_PROBE_PORT_NAME": "probes" if self.image_front else "http",
            "FLASK_STACK_METRICS_PORT": str(PROBE_PORT) if self.image_front else "APPSODY_PORT",
            "FLASK_STACK_METRICS_SERVICE_PORT": "metrics" if self.image_front else "http",
            "FLASK_STACK_NGINX_IMAGE": self.image,
            "FLASK_STACK_NGINX_PORT": str(self.nginx_port),
            "FLASK_STACK_NGINX_LISTEN": (f"{self.nginx_address}:{self.nginx_port}" if self.nginx_address
                                         else str(self.nginx_port)),
            "FLASK_STACK_INGRESS_HOST": self.ingress_host,
            "FLASK_STACK_TLS_SECRET": self.tls_secret,
            **(sidecar_limits(max_content_length) if self.nginx_sidecar else {}),
        }

    def blocks(self) -> dict[str, bool]:
        """Which optional blocks of the templates (``# >>> name``) are written."""
        return {"nginx-sidecar": self.nginx_sidecar, "nginx-static": self.nginx_static, "tls": bool(self.tls_secret),
                "front-limits": self.nginx_sidecar,  # as the image's own front has them (sidecar_limits)
                "image-front": self.image_front, "front-off": not self.image_front}


def sidecar_limits(max_content_length: int) -> dict[str, str]:
    """The nginx sidecar's limits, the ones the image's own front has (``serving.front_conf``, README "Production
    serving"), computed by the runtime's code from the serving settings' defaults (``STACK_FRONT_CONNECTIONS``
    8,192, ``STACK_FRONT_CLIENT_CONNECTIONS`` 256 per client address, ``STACK_FRONT_BODY_BUDGET`` 128 MiB) and
    the body limit ``max_content_length`` (bytes): the template's ``FLASK_STACK_NGINX_WORKER_CONNECTIONS``,
    ``..._RLIMIT_NOFILE``, ``..._LIMITS_HTTP`` and ``..._LIMITS_SERVER``. The pod's descriptor limit is not
    known here: the connections are not cut to it (a container's is 1,048,576 by default on containerd and CRI-O).

    Raises:
        CliError: the stack's runtime cannot be imported.
    """
    front_conf = import_runtime("serving.front_conf")
    settings = import_runtime("serving.settings").load_serving_settings({}, cpus=1)
    connections, nofile = front_conf.connection_budget(settings, -1)

    def indent(text: str, spaces: int) -> str:
        return ("\n" + " " * spaces).join(text.splitlines())

    return {
        "FLASK_STACK_NGINX_WORKER_CONNECTIONS": str(connections),
        "FLASK_STACK_NGINX_RLIMIT_NOFILE": str(nofile),
        "FLASK_STACK_NGINX_LIMITS_HTTP": indent(front_conf.limits_http(settings, max_content_length), 4),
        "FLASK_STACK_NGINX_LIMITS_SERVER": indent(front_conf.limits_server(settings, max_content_length), 8),
    }


def nginx_size(size: int) -> str:
    """``size`` bytes as nginx (and ingress-nginx's proxy-body-size) write it: ``16m``, ``512k``, ``1000``;
    0 stays 0 (no limit)."""
    for unit, factor in (("m", 1024 * 1024), ("k", 1024)):
        if size and size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


def toggle(text: str, name: str, keep: bool) -> str:
    """Return ``text`` with each block between a ``# >>> name`` and a ``# <<< name`` line kept (without
    those two lines) or, when not ``keep``, left out."""
    pattern = re.compile(rf"^[ \t]*# >>> {re.escape(name)}\n(.*?)^[ \t]*# <<< {re.escape(name)}\n", re.M | re.S)
    return pattern.sub(lambda match: match.group(1) if keep else "", text)


def with_nginx_conf(values: dict[str, str], conf: str) -> dict[str, str]:
    """``values`` plus the rendered nginx config ``conf`` as the ConfigMap's (indented) ``nginx.conf`` and its
    SHA-256, which the pod template carries so that a changed config rolls the pods."""
    indented = "".join(f"    {line}" if line.strip() else line for line in conf.splitlines(keepends=True))
    return {**values, "FLASK_STACK_NGINX_CONF": indented.rstrip("\n"),
            "FLASK_STACK_NGINX_CONF_SHA256": hashlib.sha256(conf.encode()).hexdigest()}
