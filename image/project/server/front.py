"""The buffering front: nginx in front of the production server (STACK_FRONT=nginx, the deployable image's default).

Why: every server the stack runs reads a request body in the thread that runs the app, with no time limit
(granian's ``wsgi.input.read(n)`` waits for n bytes; gunicorn's gthread worker and uWSGI's http router pass the
body on as it arrives), so 64 clients sending bodies one byte a second take every thread of the default
configuration. nginx reads whole request heads and bodies in its event loop first (``proxy_request_buffering on``;
gunicorn's own documentation recommends a buffering proxy) and closes a client silent for 10 s; the app's threads
only ever see complete requests.

``run_front`` (called by ``server.serving.main``, in the process ``serve`` started) renders ``server/nginx.conf``
(the template ``flask-stack deploy --nginx-sidecar`` also uses) into a private directory under $TMPDIR, then
starts two children:

* the chosen server (``serving.server_command``) on 127.0.0.1 at a free port, trusting one proxy more
  (STACK_PROXY_HOPS + 1: nginx's ``X-Forwarded-*``), its shutdown delay ``LINGER`` seconds past nginx's stop;
* nginx (``nginx`` on PATH, else /usr/sbin/nginx), listening on STACK_HOST:PORT, its body limit the runtime's
  STACK_MAX_CONTENT_LENGTH (a larger declared body is nginx's 413, before it is read). Its output goes through
  pipes: error lines are logged through logger ``nginx`` and its access lines (only requests it answered itself)
  become the stack's access line, both in the stack's log format. Its own error answers (413, 400, 408, 414, 502,
  504, 505...) follow the app's JSON-or-HTML rule (server/errors.py) in nginx.conf.

SIGTERM (or SIGINT): SIGTERM to the server at once (readiness DOWN; its answers say ``Connection: close``, which
nginx passes on as an added token), SIGQUIT to nginx after STACK_SHUTDOWN_DELAY seconds (at least ``QUIT_LINGER``;
it stops accepting and finishes what it has), the server stops ``LINGER`` seconds after that; whatever is left at
STACK_GRACEFUL_TIMEOUT (+ ``LINGER``) is killed. When either child ends on its own the other is stopped. The exit
status is the server's (0 after SIGTERM; 1 when nginx ended on its own); nginx missing or rejecting its config, or
the address in use, is one line and status 2. The private directory is removed at exit.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from .exceptions import StackError
from .logs import access_line, printable_path, stderr_logger
from .serving_settings import ServingSettings
from .settings import load_settings

LINGER = 2.0  # seconds the server keeps accepting after nginx stopped: requests nginx still holds get through
# Least seconds from SIGTERM to nginx's stop, even with STACK_SHUTDOWN_DELAY=0: nginx's stop closes idle kept-alive
# connections at once, so each first gets an answer with its ``Connection: close`` token (the servers linger too).
QUIT_LINGER = 1.0
TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nginx.conf")
log = logging.getLogger("server.front")
nginx_log = logging.getLogger("nginx")
# nginx's error-log line: ``2026/12/01 19:13:05 [error] 123#123: *5 message``
_ERROR_LINE = re.compile(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \[(?P<level>\w+)\] \d+#\d+: (?:\*\d+ )?(?P<message>.*)$")
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "notice": logging.INFO, "warn": logging.WARNING,
           "error": logging.ERROR, "crit": logging.CRITICAL, "alert": logging.CRITICAL, "emerg": logging.CRITICAL}


class FrontError(StackError):
    """The front cannot start (nginx missing, its config unusable, no port); ``str(err)`` is one line."""


def nginx_binary() -> str:
    """The nginx executable: ``nginx`` on PATH, else Debian's /usr/sbin/nginx (not on a non-root user's PATH).

    Raises:
        FrontError: neither exists.
    """
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if not found:
        raise FrontError("STACK_FRONT=nginx needs nginx (Debian package nginx-light); install it or set "
                         "STACK_FRONT=none")
    return found


def render(settings: ServingSettings, app_port: int, max_content_length: int) -> str:
    """``server/nginx.conf`` for the image's front: listening on ``settings.bind``, proxying every path to
    127.0.0.1:``app_port``, body limit ``max_content_length`` bytes (0: none), without the sidecar's static block.

    Raises:
        FrontError: the template cannot be read.
    """
    try:
        with open(TEMPLATE, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise FrontError(f"cannot read the nginx template {TEMPLATE}: {exc.strerror}") from None
    # The sidecar's optional block (``# >>> nginx-static`` ... ``# <<< nginx-static``) is left out here; the CLI
    # keeps or drops it in flask_stack.front.toggle (the CLI and the runtime are shipped apart).
    text = re.sub(r"^[ \t]*# >>> nginx-static\n.*?^[ \t]*# <<< nginx-static\n", "", text, flags=re.M | re.S)
    values = {
        "FLASK_STACK_NGINX_BODY_SIZE": str(max(0, max_content_length)),  # bytes; 0: no limit, as nginx takes it
        "FLASK_STACK_NGINX_LISTEN": settings.bind,
        "FLASK_STACK_URL_PREFIX": "",  # every path goes to the app, which knows its own prefix
        "APPSODY_PORT": str(app_port),
    }
    for key in sorted(values, key=len, reverse=True):
        text = text.replace(key, values[key])
    return text


def free_loopback_port() -> int:
    """A TCP port free on 127.0.0.1 now (bound and released; the server binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def quit_after(settings: ServingSettings) -> float:
    """Seconds from SIGTERM to nginx's graceful stop: STACK_SHUTDOWN_DELAY, at least ``QUIT_LINGER``."""
    return max(settings.shutdown_delay, QUIT_LINGER)


def check_listen(settings: ServingSettings) -> None:
    """Bind ``settings.bind`` once (as nginx will, with SO_REUSEADDR) and release it, so that an address in use is
    one line before anything starts.

    Raises:
        FrontError: the address cannot be bound (in use, not on this host, not allowed).
    """
    host = settings.host.strip("[]")
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, settings.port))
        except OSError as exc:
            raise FrontError(f"cannot listen on {settings.bind}: {exc.strerror or exc}; set PORT or STACK_HOST")


def server_environment(settings: ServingSettings, app_port: int, proxy_hops: int) -> dict[str, str]:
    """The environment of the server behind nginx: this one with the server on 127.0.0.1:``app_port``, one more
    trusted proxy than the runtime's ``proxy_hops`` (STACK_PROXY_HOPS), a shutdown delay ``LINGER`` seconds past
    nginx's stop (below the graceful timeout) and no front of its own."""
    env = dict(os.environ)
    delay = min(quit_after(settings) + LINGER, settings.graceful_timeout - 0.5)
    env.update(STACK_FRONT="none", STACK_HOST="127.0.0.1", PORT=str(app_port), STACK_PROXY_HOPS=str(proxy_hops + 1),
               STACK_SHUTDOWN_DELAY=f"{delay:g}")
    return env


class Front:
    """nginx and the server behind it, as children of this process (see the module docstring)."""

    def __init__(self, settings: ServingSettings, command: list[str]):
        self.settings = settings
        self.command = command
        self.workdir = tempfile.mkdtemp(prefix="flask-stack-front.")
        self.server: subprocess.Popen | None = None
        self.nginx: subprocess.Popen | None = None
        self.stopping = threading.Event()
        self.relays: list[threading.Thread] = []

    def start(self) -> None:
        """Write nginx's config, check it, start the server then nginx.

        Raises:
            FrontError: nginx is missing or rejects its config, or the address is in use.
        """
        nginx = nginx_binary()
        check_listen(self.settings)
        app_port = free_loopback_port()
        conf = os.path.join(self.workdir, "nginx.conf")
        runtime = load_settings()  # the runtime's settings (validated by serving.prepare_environment already)
        with open(conf, "w", encoding="utf-8") as fh:
            fh.write(render(self.settings, app_port, runtime.max_content_length or 0))
        argv = [nginx, "-p", self.workdir + "/", "-e", "/dev/stderr", "-c", conf]
        check = subprocess.run([*argv, "-t", "-q"], capture_output=True, text=True, check=False)
        if check.returncode != 0:
            detail = (check.stderr.strip().splitlines() or ["no message"])[-1]
            raise FrontError(f"nginx rejects the front's config: {detail}")
        server_env = server_environment(self.settings, app_port, runtime.proxy_hops)
        self.server = subprocess.Popen(self.command, env=server_env)
        # nginx reopens /dev/stdout and /dev/stderr: on a file that would be a second write offset, clobbering the
        # server's lines; through pipes its lines are also rewritten in the stack's format (``relay_access``,
        # ``relay_errors``).
        self.nginx = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.relays = [threading.Thread(target=relay_access, args=(self.nginx.stdout, self.settings.log_format),
                                        name="nginx-access", daemon=True),
                       threading.Thread(target=relay_errors, args=(self.nginx.stderr,), name="nginx-errors",
                                        daemon=True)]
        for relay in self.relays:
            relay.start()
        log.info("flask-stack: nginx in front on http://%s, buffering requests for %s on 127.0.0.1:%d",
                 self.settings.bind, self.settings.server, app_port)

    def stop(self) -> None:
        """SIGTERM's sequence (module docstring); returns at once, a daemon thread does the waiting. Idempotent."""
        if self.stopping.is_set():
            return
        self.stopping.set()
        _signal(self.server, signal.SIGTERM)
        threading.Thread(target=self._quit_nginx, name="front-stop", daemon=True).start()

    def _quit_nginx(self) -> None:
        time.sleep(quit_after(self.settings))
        _signal(self.nginx, signal.SIGQUIT)

    def wait(self) -> int:
        """Wait until both children are gone and return the exit status: 1 when nginx ended on its own, else the
        server's (128 + N when signal N killed it). When one child ends on its own the other is stopped;
        after a stop, whatever is left at the graceful timeout (+ ``LINGER``) is killed."""
        assert self.server is not None and self.nginx is not None
        ended_first = None
        deadline = None
        while self.server.poll() is None or self.nginx.poll() is None:
            if not self.stopping.is_set():
                ended_first = self.server if self.server.poll() is not None else \
                    self.nginx if self.nginx.poll() is not None else None
                if ended_first is not None:
                    log.warning("%s exited with status %s; stopping the front",
                                "nginx" if ended_first is self.nginx else self.settings.server, ended_first.returncode)
                    self.stopping.set()
                    _signal(self.server, signal.SIGTERM)
                    _signal(self.nginx, signal.SIGQUIT)
            if self.stopping.is_set() and deadline is None:
                deadline = time.monotonic() + self.settings.graceful_timeout + LINGER
            if deadline is not None and time.monotonic() > deadline:
                _signal(self.nginx, signal.SIGKILL)
                _signal(self.server, signal.SIGKILL)
            time.sleep(0.05)
        for relay in self.relays:  # nginx is gone: its last lines are in the pipes
            relay.join(1.0)
        if ended_first is self.nginx:
            return 1
        status = self.server.returncode
        return status if status >= 0 else 128 - status

    def close(self) -> None:
        """Kill children still running (after an error) and remove the private directory."""
        for child in (self.nginx, self.server):
            if child is not None and child.poll() is None:
                child.kill()
                child.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)


def relay_access(stream, fmt: str) -> None:
    """Write each access line nginx writes on ``stream`` (its ``front`` log format: JSON, only requests nginx
    answered itself) to stdout as the stack's access line in format ``fmt`` ("text" or "json"), with nginx's request
    id (the one its error answer carries). Returns at end of stream."""
    for raw in iter(stream.readline, b""):
        try:
            entry = json.loads(raw)
            method, _, rest = str(entry["request"]).partition(" ")
            path = rest.rsplit(" ", 1)[0] if " " in rest else rest
            line = access_line(fmt, time.time(), printable_path(method, 20) or "-", printable_path(path or "-"),
                               int(entry["status"]), float(entry["seconds"]) * 1000.0,
                               printable_path(str(entry.get("request_id") or "-"), 64),
                               printable_path(str(entry["client"]), 100))
        except (ValueError, KeyError, TypeError):
            nginx_log.warning("%s", printable_path(raw.decode("utf-8", "replace").rstrip("\n")))
            continue
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def relay_errors(stream) -> None:
    """Log each line nginx writes on ``stream`` (its error log) through logger ``nginx`` (in the stack's format) at
    nginx's level. Returns at end of stream."""
    for raw in iter(stream.readline, b""):
        text = raw.decode("utf-8", "replace").rstrip("\n")
        match = _ERROR_LINE.match(text)
        if match:
            nginx_log.log(_LEVELS.get(match["level"], logging.WARNING), "%s", printable_path(match["message"]))
        elif text:
            nginx_log.warning("%s", printable_path(text))


def _signal(child: subprocess.Popen | None, signum: int) -> None:
    if child is not None and child.poll() is None:
        try:
            child.send_signal(signum)
        except ProcessLookupError:
            pass


def run_front(settings: ServingSettings, command: list[str]) -> int:
    """Serve behind nginx: ``command`` is the server's (``serving.server_command``). Returns the exit status.

    Raises:
        FrontError: nginx is missing or rejects its config (nothing is left running).
    """
    stderr_logger(log, settings.log_level, settings.log_format)
    stderr_logger(nginx_log, settings.log_level, settings.log_format)
    front = Front(settings, command)
    try:
        front.start()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: front.stop())
        sys.stdout.flush()
        return front.wait()
    finally:
        front.close()
