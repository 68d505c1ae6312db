"""A real nginx in front of an app, for tests: started on 127.0.0.1 with a generated config, everything it
writes (pid file, error and access logs, temp dirs) under one temporary directory, stopped by ``stop``.

``readme_location`` is README.md's documented location block, so the tests run the config users copy.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path


from .net import free_port
from .need import missing

NGINX = "/usr/sbin/nginx"
START_TIMEOUT = 10.0  # seconds for nginx to listen


def require_nginx() -> str:
    """The nginx binary; skip the test when it is missing, unless CI=true (then fail)."""
    path = NGINX if os.path.exists(NGINX) else shutil.which("nginx")
    if path:
        return path
    message = "nginx is not installed (Debian package nginx-light); the reverse-proxy tests need it"
    missing(message)


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A throwaway certificate for CN=localhost (openssl, one day): (certificate, key) paths."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "1", "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=30)
    return cert, key


class Nginx:
    """nginx on 127.0.0.1 (``port`` HTTP, ``tls_port`` HTTPS) with ``server_body`` inside its ``server`` block.

    Args:
        workdir: a fresh directory for the config, pid file, logs and temp dirs.
        server_body: nginx directives for the server block (locations), may use ``{upstream}``-free text.
        upstream: ``host:port`` of the app, as the ``flask_stack`` upstream.
    """

    def __init__(self, workdir: Path, server_body: str, upstream: str):
        self.binary = require_nginx()
        self.workdir = workdir
        self.port = free_port()
        self.tls_port = free_port()
        self.proc: subprocess.Popen | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        cert, key = self_signed_cert(workdir)
        temp = "\n".join(f"    {kind}_temp_path {workdir / kind};" for kind in
                         ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        if os.path.exists("/etc/nginx/uwsgi_params"):  # Debian's, for ``include uwsgi_params;`` (README's block)
            shutil.copy("/etc/nginx/uwsgi_params", workdir / "uwsgi_params")
        self.config = workdir / "nginx.conf"
        self.config.write_text(f"""\
{"user root root;" if os.geteuid() == 0 else ""}
worker_processes 1;
daemon off;
pid {workdir / "nginx.pid"};
error_log {workdir / "error.log"} info;
events {{ worker_connections 256; }}
http {{
    access_log {workdir / "access.log"};
{temp}
    upstream flask_stack {{
        server {upstream};
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{self.port};
        listen 127.0.0.1:{self.tls_port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        server_name localhost;
{server_body}
    }}
}}
""")

    def start(self) -> "Nginx":
        """Start nginx and wait until both ports accept connections. Raises AssertionError (with its error log)
        when it does not."""
        log = open(self.workdir / "stderr.log", "wb")
        self.proc = subprocess.Popen([self.binary, "-p", str(self.workdir), "-e", str(self.workdir / "error.log"),
                                      "-c", str(self.config)], stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"nginx exited with {self.proc.returncode}:\n{self.errors()}")
            if all(_accepts(port) for port in (self.port, self.tls_port)):
                return self
            time.sleep(0.05)
        self.stop()
        raise AssertionError(f"nginx did not listen within {START_TIMEOUT}s:\n{self.errors()}")

    def errors(self) -> str:
        """nginx's error log and stderr."""
        return "\n".join(p.read_text(errors="replace") for p in (self.workdir / "error.log",
                                                                 self.workdir / "stderr.log") if p.exists())

    def stop(self) -> None:
        """SIGQUIT (graceful), then SIGKILL to its process group after 5 seconds."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait(5)


def readme_location(readme: Path, prefix: str = "/your/path/", passes_with: str | None = None) -> str:
    """The first ``location <prefix> { ... }`` block of README.md's nginx examples (with ``passes_with``: the first
    that passes requests on with that directive, ``proxy_pass`` or ``uwsgi_pass``). AssertionError when none."""
    import re

    for match in re.finditer(rf"^( *)location {re.escape(prefix)} \{{\n.*?^\1\}}$", readme.read_text(), re.M | re.S):
        if passes_with is None or re.search(rf"^\s*{passes_with}\s", match.group(0), re.M):
            return match.group(0)
    raise AssertionError(f"README.md has no nginx block 'location {prefix} {{ ... }}'"
                         + (f" with {passes_with}" if passes_with else ""))


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False
