"""The buffering front: nginx in front of the production server (STACK_FRONT=nginx, the deployable image's default).

Why: every server the stack runs reads a request body in the thread that runs the app, with no time limit
(granian's ``wsgi.input.read(n)`` waits for n bytes; gunicorn's gthread worker and uWSGI's http router pass the
body on as it arrives), so 64 clients sending bodies one byte a second take every thread of the default
configuration. nginx reads whole request heads and bodies in its event loop first (``proxy_request_buffering on``;
gunicorn's own documentation recommends a buffering proxy) and closes a client silent for 10 s; the app's threads
only ever see complete requests.

``run_front`` (called by ``serving.supervisor.main``, in the process ``serve`` started) renders ``serving/nginx.conf``
(the template ``flask-stack deploy --nginx-sidecar`` also uses) twice (``serving.front_conf``: the public listener
with its connection, per-client and body-budget limits; the probe listener) into a private directory under
$TMPDIR, then starts three children, each its own process group:

* the chosen server (``serving.server_command``) on a unix socket in that directory (granian: nginx's proxying
  then costs less kernel time per request than over loopback TCP) or else on 127.0.0.1 at a free port, trusting
  one proxy more
  (STACK_PROXY_HOPS + 1: nginx's ``X-Forwarded-*``), its shutdown delay ``LINGER`` seconds past nginx's stop;
* once the server answers HTTP (so nginx never answers 502 at start, and the port refuses until then): nginx
  (``nginx`` on PATH, else /usr/sbin/nginx) on STACK_HOST:PORT, its body limit the runtime's
  STACK_MAX_CONTENT_LENGTH (a larger declared body is nginx's 413, before it is read), and a second nginx on
  STACK_HOST:STACK_PROBE_PORT passing only the health endpoints and /metrics (0: none), so that a flood taking
  every connection of the first leaves the probes answered. Their output goes through pipes: error lines are
  logged through logger ``nginx`` and their access lines (only requests nginx answered itself) become the stack's
  access line, both in the stack's log format. nginx's own error answers (413, 400, 408, 414, 502, 503, 504,
  505...) follow the app's JSON-or-HTML rule (server/error_pages.py) in nginx.conf.

SIGTERM (or SIGINT): SIGTERM to the server at once (readiness DOWN; its answers say ``Connection: close``, which
nginx passes on as an added token), SIGQUIT to nginx after STACK_SHUTDOWN_DELAY seconds (at least ``QUIT_LINGER``;
it stops accepting and finishes what it has), the server stops ``LINGER`` seconds after that; whatever is left at
STACK_GRACEFUL_TIMEOUT (+ ``LINGER``) is killed; the exit status is the server's (0 after SIGTERM).

The front is one unit: when any child ends on its own (an nginx master killed, the server crashed), one ERROR
line names it (``flask-stack: nginx (the front) died (killed by SIGKILL); stopping the container``), every other
child's process group is killed at once (requests in flight are lost with the dead child anyway) and this process
exits within a second: status 1 for nginx, the server's status for the server (1 if it was 0). The orchestrator
restarts the container (restarting nginx in place was not chosen: a half-dead front would keep answering 502 and
the liveness probe could not tell). nginx missing or rejecting its config, or an address in use, is one line and
status 2. The private directory is removed at exit.
"""

from __future__ import annotations

import http.client
import logging
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from server.logs import printable_path, stderr_logger
from server.mistakes import client_mistake
from server.settings import load_settings

from . import front_conf
from .access_relay import start_access_relay
from .front_conf import FrontError
from .settings import ServingSettings

LINGER = 2.0  # seconds the server keeps accepting after nginx stopped: requests nginx still holds get through
# Least seconds from SIGTERM to nginx's stop, even with STACK_SHUTDOWN_DELAY=0: nginx's stop closes idle kept-alive
# connections at once, so each first gets an answer with its ``Connection: close`` token (the servers linger too).
QUIT_LINGER = 1.0
START_TIMEOUT = 60.0  # seconds the server gets to answer its first request before nginx starts
RELAY_EXIT_TIMEOUT = 2.0  # seconds an access relay gets to write nginx's last lines once nginx is gone
POLL = 0.02  # seconds between looks at the children: a dead one stops the front within a second
TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nginx.conf")
log = logging.getLogger("serving.front")
nginx_log = logging.getLogger("nginx")
# nginx's error-log line: ``2026/12/01 19:13:05 [error] 123#123: *5 message``
_ERROR_LINE = re.compile(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \[(?P<level>\w+)\] \d+#\d+: (?:\*\d+ )?(?P<message>.*)$")
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "notice": logging.INFO, "warn": logging.WARNING,
           "error": logging.ERROR, "crit": logging.CRITICAL, "alert": logging.CRITICAL, "emerg": logging.CRITICAL}


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


def free_loopback_port() -> int:
    """A TCP port free on 127.0.0.1 now (bound and released; the server binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def quit_after(settings: ServingSettings) -> float:
    """Seconds from SIGTERM to nginx's graceful stop: STACK_SHUTDOWN_DELAY, at least ``QUIT_LINGER``."""
    return max(settings.shutdown_delay, QUIT_LINGER)


def check_listen(settings: ServingSettings) -> None:
    """Bind ``settings.bind`` (and the probe port's) once (as nginx will, with SO_REUSEADDR) and release it, so that
    an address in use is one line before anything starts.

    Raises:
        FrontError: an address cannot be bound (in use, not on this host, not allowed).
    """
    host = settings.host.strip("[]")
    for port, what, hint in ((settings.port, settings.bind, "PORT"), (settings.probe_port, settings.probe_bind,
                                                                       "STACK_PROBE_PORT")):
        if not port:
            continue
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError as exc:
                raise FrontError(f"cannot listen on {what}: {exc.strerror or exc}; set {hint} or STACK_HOST") from None


def server_environment(settings: ServingSettings, app_port: int, proxy_hops: int,
                       app_socket: str | None = None) -> dict[str, str]:
    """The environment of the server behind nginx: this one with the server on the unix socket ``app_socket`` (a
    path: STACK_APP_SOCKET, granian only) or else 127.0.0.1:``app_port``, one more trusted proxy than the runtime's
    ``proxy_hops`` (STACK_PROXY_HOPS), a shutdown delay ``LINGER`` seconds past nginx's stop (below the graceful
    timeout) and no front of its own."""
    env = dict(os.environ)
    env.pop("STACK_APP_SOCKET", None)
    delay = min(quit_after(settings) + LINGER, settings.graceful_timeout - 0.5)
    env.update(STACK_FRONT="none", STACK_HOST="127.0.0.1", PORT=str(app_port), STACK_PROXY_HOPS=str(proxy_hops + 1),
               STACK_SHUTDOWN_DELAY=f"{delay:g}")
    if app_socket:
        env["STACK_APP_SOCKET"] = app_socket
    return env


class UnixHTTPConnection(http.client.HTTPConnection):
    """``http.client.HTTPConnection`` to the unix socket at ``path`` (the server behind the front)."""

    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # closed by close(), also after a failure
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


class NginxFront:
    """nginx (public and probe port) and the server behind it, as children of this process (module docstring)."""

    def __init__(self, settings: ServingSettings, command: list[str]):
        self.settings = settings
        self.command = command
        self.workdir = tempfile.mkdtemp(prefix="flask-stack-front.")
        if os.geteuid() == 0:  # nginx's workers then run as nobody: they must reach their temp dirs (bodies) below it
            os.chmod(self.workdir, 0o711)
        self.server: subprocess.Popen | None = None
        self.nginx: subprocess.Popen | None = None
        self.probes: subprocess.Popen | None = None
        self.stopping = threading.Event()
        self.relays: list[threading.Thread] = []
        self.access_relays: list[subprocess.Popen] = []

    @property
    def children(self) -> dict[str, subprocess.Popen]:
        """The running children by the name the one line gives them."""
        named = {f"the app server ({self.settings.server})": self.server, "nginx (the front)": self.nginx,
                 "nginx (the probe port)": self.probes}
        return {name: child for name, child in named.items() if child is not None}

    def _nginx_config(self, name: str, text: str) -> list[str]:
        """Write config ``text`` into ``<workdir>/<name>/nginx.conf``, check it with ``nginx -t``; its argv.

        Raises:
            FrontError: nginx rejects it.
        """
        prefix = os.path.join(self.workdir, name)
        os.makedirs(prefix)
        conf = os.path.join(prefix, "nginx.conf")
        with open(conf, "w", encoding="utf-8") as fh:
            fh.write(text)
        argv = [nginx_binary(), "-p", prefix + "/", "-e", "/dev/stderr", "-c", conf]
        check = subprocess.run([*argv, "-t", "-q"], capture_output=True, text=True, check=False)
        if check.returncode != 0:
            detail = (check.stderr.strip().splitlines() or ["no message"])[-1]
            raise FrontError(f"nginx rejects the front's config: {detail}")
        return argv

    def start(self) -> bool:
        """Write and check nginx's configs, start the server, wait until it answers HTTP, then start nginx (so
        nginx never answers 502 for a server still starting). False when the server ended before it answered
        (``wait`` then returns its status).

        Raises:
            FrontError: nginx is missing or rejects its config, an address is in use, or the server does not
                answer within ``START_TIMEOUT`` seconds.
        """
        nginx_binary()
        check_listen(self.settings)
        app_port = free_loopback_port()
        app_socket = os.path.join(self.workdir, "app.sock") if self.settings.server == "granian" else None
        runtime = load_settings()  # the runtime's settings (validated by serving.prepare_environment already)
        max_body = runtime.max_content_length or 0
        template = front_conf.read_template(TEMPLATE)
        hard_nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        public = self._nginx_config("public", front_conf.render_public(template, self.settings, app_port, max_body,
                                                                       hard_nofile, app_socket))
        probes = self._nginx_config("probes", front_conf.render_probes(
            template, self.settings, app_port, max_body, runtime.url_prefix or "", app_socket)
        ) if self.settings.probe_port else None
        server_env = server_environment(self.settings, app_port, runtime.proxy_hops, app_socket)
        self.server = subprocess.Popen(self.command, env=server_env, process_group=0)
        if not self._wait_for_server(app_port, runtime.url_prefix or "", app_socket):
            return False
        # nginx reopens /dev/stdout and /dev/stderr: on a file that would be a second write offset, clobbering the
        # server's lines; through pipes its lines are also rewritten in the stack's format (``serving.access_relay``,
        # a child process because it counts in the app's metrics, ``relay_errors`` a thread). Each nginx is its own
        # process group: its workers go with its master.
        for argv, attr in ((public, "nginx"), (probes, "probes")):
            if argv is None:
                continue
            child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, process_group=0)
            setattr(self, attr, child)
            self.access_relays.append(start_access_relay(child.stdout, self.settings.log_format,
                                                          self.settings.log_level))
            child.stdout.close()  # the relay holds it now
            relay = threading.Thread(target=relay_errors, args=(child.stderr,), name=f"{attr}-relay", daemon=True)
            relay.start()
            self.relays.append(relay)
        connections, nofile = front_conf.connection_budget(self.settings, hard_nofile)
        log.info("flask-stack: nginx in front on http://%s (%d connections, %d descriptors), probes on %s, "
                 "buffering requests for %s on %s", self.settings.bind, connections, nofile,
                 f"http://{self.settings.probe_bind}" if probes else "the same port", self.settings.server,
                 front_conf.upstream(app_port, app_socket))
        return True

    def _wait_for_server(self, app_port: int, prefix: str, app_socket: str | None = None) -> bool:
        """Poll ``GET <prefix>/health/started`` on the unix socket ``app_socket`` or else 127.0.0.1:``app_port``
        until the server answers (any status); False when it ended first.

        Raises:
            FrontError: no answer within ``START_TIMEOUT`` seconds.
        """
        deadline = time.monotonic() + START_TIMEOUT
        while self.server.poll() is None and not self.stopping.is_set():
            connection = (UnixHTTPConnection(app_socket, timeout=2) if app_socket
                          else http.client.HTTPConnection("127.0.0.1", app_port, timeout=2))
            try:
                connection.request("GET", f"{prefix}/health/started", headers={"X-Request-ID": "front-start-check"})
                connection.getresponse().read()
                return True
            except OSError:
                if time.monotonic() > deadline:
                    raise FrontError(f"{self.settings.server} did not answer on "
                                     f"{front_conf.upstream(app_port, app_socket)} within "
                                     f"{START_TIMEOUT:g} s") from None
                time.sleep(0.05)
            finally:
                connection.close()
        return False

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
        _signal(self.probes, signal.SIGQUIT)

    def wait(self) -> int:
        """Wait until every child is gone and return the exit status (module docstring). When one child ends on
        its own: one ERROR line naming it, every other child's process group killed at once, status 1 (nginx) or
        the server's (1 if that was 0). After a stop, whatever is left at the graceful timeout (+ ``LINGER``) is
        killed."""
        deadline = None
        while any(child.poll() is None for child in self.children.values()):
            if not self.stopping.is_set():
                ended = next(((name, child) for name, child in self.children.items() if child.poll() is not None), None)
                if ended is not None:
                    return self._died(*ended)
            if self.stopping.is_set() and deadline is None:
                deadline = time.monotonic() + self.settings.graceful_timeout + LINGER
            if deadline is not None and time.monotonic() > deadline:
                self._kill_all()
            time.sleep(POLL)
        self._join_relays()
        if self.server is None:
            return 1
        status = self.server.returncode
        return status if status >= 0 else 128 - status

    def _died(self, name: str, child: subprocess.Popen) -> int:
        self.stopping.set()
        status = child.returncode
        how = f"killed by {signal.Signals(-status).name}" if status < 0 else f"exit status {status}"
        log.error("flask-stack: %s died (%s); stopping the container", name, how)
        self._kill_all()
        self._join_relays()
        if child is self.server:
            return (128 - status if status < 0 else status) or 1
        return 1

    def _kill_all(self) -> None:
        """SIGKILL every child's process group (an nginx master's workers, a server's workers with it)."""
        for child in self.children.values():
            try:
                os.killpg(child.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for child in self.children.values():
            try:
                child.wait(5)
            except subprocess.TimeoutExpired:
                pass

    def _join_relays(self) -> None:
        for relay in self.relays:  # nginx is gone: its last lines are in the pipes
            relay.join(1.0)
        for process in self.access_relays:
            try:
                process.wait(RELAY_EXIT_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def close(self) -> None:
        """Kill children still running (after an error) and remove the private directory."""
        if any(child.poll() is None for child in self.children.values()):
            self._kill_all()
        shutil.rmtree(self.workdir, ignore_errors=True)


def relay_errors(stream) -> None:
    """Log each line nginx writes on ``stream`` (its error log) through logger ``nginx`` (in the stack's format) at
    nginx's level, except two kinds that are not the server's trouble (``log_nginx_line``). Returns at end of
    stream."""
    for raw in iter(stream.readline, b""):
        text = raw.decode("utf-8", "replace").rstrip("\n")
        match = _ERROR_LINE.match(text)
        if match:
            log_nginx_line(_LEVELS.get(match["level"], logging.WARNING), printable_path(match["message"]))
        elif text:
            nginx_log.warning("%s", printable_path(text))


def log_nginx_line(level: int, message: str) -> None:
    """Log one message of nginx's error log at ``level`` (a ``logging`` level), except: a request body buffered to a
    temporary file (nginx's ``[warn]`` for every body over its 16 KiB buffer: the front's job) is DEBUG; a client's
    mistake (nginx's messages that begin ``client ``: an invalid chunked body, header or method, a client that timed
    out or closed early, a body over the limit) is at most a WARNING once per kind per minute
    (``server.mistakes.client_mistake``; the kind is the message up to its first comma or colon), DEBUG after."""
    if message.startswith("a client request body is buffered to a temporary file"):
        nginx_log.debug("%s", message)
    elif message.startswith("client ") and level > logging.INFO:
        client_mistake(nginx_log, "nginx: " + re.split(r"[,:(]", message, maxsplit=1)[0].strip(), "%s", message)
    else:
        nginx_log.log(level, "%s", message)


def _signal(child: subprocess.Popen | None, signum: int) -> None:
    if child is not None and child.poll() is None:
        try:
            child.send_signal(signum)
        except ProcessLookupError:
            pass


def run_front(settings: ServingSettings, command: list[str]) -> int:
    """Serve behind nginx: ``command`` is the server's (``serving.server_command``). Returns the exit status.

    Raises:
        FrontError: nginx is missing or rejects its config, an address is in use, the server does not answer
            (nothing is left running).
    """
    stderr_logger(log, settings.log_level, settings.log_format)
    stderr_logger(nginx_log, settings.log_level, settings.log_format)
    front = NginxFront(settings, command)
    try:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: front.stop())
        front.start()
        sys.stdout.flush()
        return front.wait()
    finally:
        front.close()
