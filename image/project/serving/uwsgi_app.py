"""uWSGI's mapping of the stack's serving settings (``serving``) onto uWSGI's options (pyuwsgi, the binary
wheel: no compiler in the image).

``/project/serve`` with STACK_SERVER=uwsgi runs ``python3 uwsgi_app.py`` (``main``): a small supervisor that starts
uWSGI as its child and stays the process ``serve`` started (PID 1 in a container), because uWSGI 2.0's master has no
SIGTERM behaviour the stack can use (a brutal reload, or with ``--die-on-term`` a brutal stop) and no Python hook to
change it. uWSGI runs with:

* a master, WEB_CONCURRENCY worker processes x STACK_THREADS threads, each loading the app itself (``--lazy-apps``,
  as gunicorn and granian do), STACK_WORKER_TIMEOUT as ``--harakiri`` (a request longer than that restarts its
  worker), STACK_GRACEFUL_TIMEOUT as the workers' reload mercy;
* HTTP on STACK_HOST:PORT through uWSGI's ``http`` router (an event-driven process that holds slow and idle
  clients, with a 10 s bound on a request head, and HTTP/1.1 keep-alive), which passes requests to the workers on
  a private unix socket; and, when STACK_UWSGI_SOCKET asks, a uwsgi-protocol socket for nginx's ``uwsgi_pass``
  (loopback or a unix socket only, unless STACK_UWSGI_SOCKET_PUBLIC=1: that protocol can make the server load code);
* uWSGI's own request log off (the runtime writes the access line); uWSGI's own messages (its stderr) rewritten
  here in the stack's log format (logger ``uwsgi``), its start-up banner at DEBUG.

On SIGTERM the supervisor closes a pipe every worker watches: each worker's ``serving.worker.Drain`` begins at once
(readiness DOWN, ``Connection: close`` on every response, which the router honours); after STACK_SHUTDOWN_DELAY
(at least ``STOP_LINGER``) uWSGI's graceful stop (master FIFO ``q``: workers finish their requests in flight);
at STACK_GRACEFUL_TIMEOUT after SIGTERM whatever is left is killed. SIGINT stops at once; SIGHUP is passed on
(uWSGI's graceful reload). A thread drops the live-gauge metric files of dead workers (``serving.worker_exited``).

Exit status: uWSGI's (0 after SIGTERM); 2 a bad setting; 1 uWSGI failed.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import stacksettings
from serving import appcheck, reaper, supervisor
from serving.settings import KEEPALIVE_SECONDS
from serving import worker as serving_worker
from server.logs import stderr_logger
from server.settings import load_settings

WORKER_NAME = "uwsgi worker"  # each worker's process name (/proc/PID/comm)
DRAIN_FD_ENV = "STACK_UWSGI_DRAIN_FD"  # set by the supervisor for its uWSGI: the pipe the workers watch
# Seconds between SIGTERM and uWSGI's graceful stop even with STACK_SHUTDOWN_DELAY=0: the router keeps idle
# keep-alive connections, so each gets its ``Connection: close`` answer before the workers stop taking requests.
STOP_LINGER = 1.0
HEADER_TIMEOUT = 10  # seconds the router waits for a whole request head (granian: header_read_timeout)
LINGER_SECONDS = 1.0  # longest a worker reads and drops an unread request body after answering...
LINGER_BYTES = 256 * 1024 * 1024  # ... and at most this much of it (bytes)
BUFFER_SIZE = 32768  # bytes of request head and uwsgi packet (uWSGI's default, 4096, rejects common big cookies)
UNLIMITED_CHUNK = 1 << 30  # the largest chunk (bytes) taken with STACK_MAX_CONTENT_LENGTH=0 (no body limit)
CHUNK_TIMEOUT = 10  # seconds a worker waits for the next chunk of a chunked request body
MAX_VARS = 512  # request head lines uWSGI passes on (its default, 64, drops the request of a client with more headers)
log = logging.getLogger("uwsgi")

# uWSGI's start-up banner and its other routine lines: DEBUG; lines with these words: WARNING; the rest INFO.
_ROUTINE = re.compile(r"^(\*\*\* (Starting|Operational|uWSGI is running)|compiled with|os: |nodename: |machine: |"
                      r"clock source|pcre jit|detected |current working|your |lock engine|thunder lock|uwsgi socket|"
                      r"uWSGI http bound|Python (version|main interpreter)|python threads|mapped \d+ bytes|\*\*\* Python|"
                      r"spawned uWSGI|WSGI app \d+|mounting |chdir\(\)|setting PythonHome|uWSGI running as root|"
                      r"\*\*\* WARNING: you are running uWSGI as root|announcing my loyalty|\*\*\* End of|--- Python VM|"
                      r"added .* to pythonpath|"
                      r" \*\*\* WARNING: you have enabled harakiri without post buffering)")  # harakiri: on purpose
_TROUBLE = re.compile(r"error|!!!|unable|cannot|failed|harakiri|DAMN|killed|signal \d+", re.I)
_DATE = re.compile(r"^\w{3} \w{3} +\d+ [\d:]{8} \d{4} - ")  # uWSGI's own time stamp on some lines


# --- settings ----------------------------------------------------------------------------------------------------


def uwsgi_options(settings, rundir: str) -> list[str]:
    """uWSGI's command-line options for ``settings`` (``serving.settings.ServingSettings``): the app, the router on
    HOST:PORT, the workers' private socket and master FIFO in ``rundir``, STACK_UWSGI_SOCKET's socket."""
    project = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # /project: the packages serving, server
    workers_socket = os.path.join(rundir, "workers.sock")
    options = [
        "--strict", "--master", "--lazy-apps", "--need-app", "--single-interpreter",
        "--pythonpath", project, "--module", "serving.uwsgi_app:application",
        "--processes", str(settings.workers), "--threads", str(settings.threads), "--enable-threads",
        "--http", settings.bind, "--http-to", workers_socket, "--socket", workers_socket,
        f"--http-keepalive={KEEPALIVE_SECONDS}", "--http-auto-chunked", "--http-chunked-input",
        "--http-headers-timeout", str(HEADER_TIMEOUT), "--buffer-size", str(BUFFER_SIZE),
        "--http-buffer-size", str(BUFFER_SIZE), "--max-vars", str(MAX_VARS),
        "--harakiri", str(settings.worker_timeout),
        "--worker-reload-mercy", str(settings.graceful_timeout), "--reload-mercy", str(settings.graceful_timeout),
        "--master-fifo", os.path.join(rundir, "master.fifo"), "--die-on-term",
        "--disable-logging", "--ignore-sigpipe", "--ignore-write-errors", "--disable-write-exception",
        "--vacuum",
    ]
    if settings.uwsgi_socket:
        options += ["--socket", settings.uwsgi_socket]
    # the largest chunk of a chunked body a worker buffers (uWSGI's default, 1 MiB, fails common uploads with a read
    # error): twice the body limit, as uWSGI grows its chunk buffer by doubling, so a chunk as large as the limit (or a
    # little past it: the runtime's 413, server.bodies) is read whole
    limit = load_settings().max_content_length
    options += ["--chunked-input-limit", str(2 * limit + 65536 if limit else UNLIMITED_CHUNK)]
    return options


# --- worker side (uWSGI loads ``serving.uwsgi_app:application`` in each worker) -----------------------------------------


def _worker_app():
    """In a uWSGI worker: the production app (``serving.production_app``), with this worker's SIGTERM drain: a
    thread waits for the supervisor to close the drain pipe, then ``serving.Drain.begin`` (uWSGI's graceful stop,
    from the supervisor, ends the worker)."""
    # uWSGI's Python plugin points sys.stdout at stderr (fd 2, which the supervisor rewrites); the runtime's lines
    # (app log, access lines) go to stdout, as on the other servers. And no working directory on sys.path (``-P``).
    sys.stdout = sys.__stdout__ = open(1, "w", buffering=1, encoding="utf-8", errors="backslashreplace",
                                       closefd=False)
    while "." in sys.path:
        sys.path.remove(".")
    # a name for ps and top (uWSGI's --auto-procname cannot rename an embedding Python's processes)
    supervisor.name_process(WORKER_NAME)
    settings = supervisor.serving_settings()
    serving_worker.app_check = appcheck.take()  # the supervisor's app check, when still out as uWSGI started
    drain = serving_worker.drain = serving_worker.Drain(settings.shutdown_delay, lambda: None, log)
    fd = stacksettings.value(DRAIN_FD_ENV)  # set by the supervisor below: always a number
    if fd is not None:
        def watch() -> None:
            try:
                while os.read(int(fd), 64):
                    pass
            except OSError:
                pass
            drain.begin()

        threading.Thread(target=watch, name="drain-watcher", daemon=True).start()
    app = serving_worker.production_app()

    def serve(environ, start_response):
        environ["wsgi.url_scheme"] = connection_scheme(environ)
        stream = environ["wsgi.input"]
        if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower() and "CONTENT_LENGTH" not in environ:
            stream = environ["wsgi.input"] = _ChunkedInput()
            environ["wsgi.input_terminated"] = True  # werkzeug reads it to its end (serving caps it: 413)
        return _DrainingBody(app(environ, start_response), stream)

    return serve


class _ChunkedInput:
    """``wsgi.input`` of a chunked request under uWSGI: its http router passes the chunks on as they came
    (``--http-chunked-input``) and uWSGI's ``wsgi.input`` has no Content-Length to read by, so the app would see an
    empty body; this reads the body chunk by chunk with ``uwsgi.chunked_read`` (at most ``CHUNK_TIMEOUT`` seconds
    per chunk). A malformed chunk or a stalled client is an ``OSError`` (werkzeug: ``ClientDisconnected``, 400)."""

    def __init__(self) -> None:
        import uwsgi  # noqa: PLC0415 - uWSGI's embedded module exists in its workers only

        self._read_chunk = uwsgi.chunked_read
        self._buffer = b""
        self._done = False

    def _fill(self) -> None:
        chunk = self._read_chunk(CHUNK_TIMEOUT)
        if not chunk:
            self._done = True
        self._buffer += chunk or b""

    def read(self, size: int | None = -1) -> bytes:
        while not self._done and (size is None or size < 0 or len(self._buffer) < size):
            self._fill()
        if size is None or size < 0:
            size = len(self._buffer)
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def readline(self, size: int | None = -1) -> bytes:
        while not self._done and b"\n" not in self._buffer and (size is None or size < 0 or len(self._buffer) < size):
            self._fill()
        end = self._buffer.find(b"\n") + 1 or len(self._buffer)
        if size is not None and size >= 0:
            end = min(end, size)
        data, self._buffer = self._buffer[:end], self._buffer[end:]
        return data


class _DrainingBody:
    """A response iterable that, once uWSGI has sent it (``close``), reads and drops what is left of the request
    body (at most ``LINGER_BYTES`` or ``LINGER_SECONDS``): uWSGI's http router, still passing a refused body on
    (a 413 answered before reading), drops the whole exchange, the answer with it, when the worker's socket closes
    under it (a broken pipe); gunicorn and granian linger on the connection the same way."""

    def __init__(self, body, stream):
        self._body = body
        self._stream = stream

    def __iter__(self):
        return iter(self._body)

    def close(self) -> None:
        try:
            if hasattr(self._body, "close"):
                self._body.close()
        finally:
            deadline, left = time.monotonic() + LINGER_SECONDS, LINGER_BYTES
            try:
                while left > 0 and time.monotonic() < deadline:
                    data = self._stream.read(min(65536, left))
                    if not data:
                        break
                    left -= len(data)
            except Exception:  # noqa: BLE001 - the client went away or stalled: nothing more to drop
                pass


def connection_scheme(environ: dict) -> str:
    """The request's scheme as the connection says it: ``https`` when nginx says so over the uwsgi protocol
    (``HTTPS=on`` or ``REQUEST_SCHEME``, from ``uwsgi_params``), else ``http`` (uWSGI's http router has no TLS).
    uWSGI itself takes ``wsgi.url_scheme`` from any client's ``X-Forwarded-Proto`` or ``X-Forwarded-Ssl`` header and
    has no option to stop it; trusted proxies' headers are STACK_PROXY_HOPS's business (the runtime's ProxyFix)."""
    if environ.get("HTTPS", "").lower() in ("on", "1"):
        return "https"
    scheme = environ.get("REQUEST_SCHEME", "")
    return scheme if scheme in ("http", "https") else "http"


if "uwsgi" in sys.modules:  # uWSGI's embedded module: this is a worker loading ``serving.uwsgi_app:application``
    application = _worker_app()


# --- supervisor ------------------------------------------------------------------------------------------------


class Supervisor:
    """uWSGI as a child process, stopped the stack's way (see the module docstring)."""

    def __init__(self, settings, argv: list[str]):
        self.settings = settings
        self.argv = argv
        self.proc: subprocess.Popen | None = None
        self.rundir = ""
        self._drain_write: int | None = None
        self._stopping = False
        self._kill_at: float | None = None

    def run(self) -> int:
        """Start uWSGI, relay signals, rewrite its messages; return its exit status."""
        check = appcheck.take()  # ``serve``'s app check, still out: uWSGI's workers load the app beside it
        held = None
        if check is not None:
            held = appcheck.HeldLines(log)  # uWSGI's lines and this one's wait for the verdict
            log.addFilter(held)
        self.rundir = tempfile.mkdtemp(prefix="flask-stack-uwsgi.")
        drain_read, self._drain_write = os.pipe()
        env = dict(os.environ, **{DRAIN_FD_ENV: str(drain_read)})
        if check is not None:  # for the workers (``serving.worker._load_app``)
            env[appcheck.ENV] = ",".join(map(str, check))
        command = [sys.executable, "-P", "-c", "import sys, pyuwsgi; pyuwsgi.run(sys.argv[1:])",
                   *uwsgi_options(self.settings, self.rundir), *self.argv]
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        # its own process group: the graceful timeout kills uWSGI's master, workers and router at once
        self.proc = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     pass_fds=(drain_read, *(check or ())), process_group=0)
        os.close(drain_read)
        pump = threading.Thread(target=self._pump_messages, name="uwsgi-messages", daemon=True)
        pump.start()
        stop_reaping = threading.Event()
        metrics_dir = stacksettings.value("PROMETHEUS_MULTIPROC_DIR")
        if metrics_dir:
            threading.Thread(target=reaper.watch_dead_workers, args=(metrics_dir, stop_reaping, log),
                             name="metrics-reaper", daemon=True).start()
        log.info("flask-stack serving on http://%s with uWSGI, %d workers x %d threads (metrics dir %s)",
                 self.settings.bind, self.settings.workers, self.settings.threads, metrics_dir or "unset")
        failed = 0
        try:
            while True:
                if check is not None:
                    failed = self._settle_check(check, held, wait=self.proc.poll() is not None)
                    if failed is not None:
                        check = None
                        if failed:
                            self._kill_group()
                            self.proc.wait()
                            return failed
                try:
                    status = self.proc.wait(timeout=0.5 if check is None else 0.05)
                    break
                except subprocess.TimeoutExpired:
                    if self._kill_at is not None and time.monotonic() >= self._kill_at:
                        log.warning("graceful timeout (%ss) over: killing uWSGI", self.settings.graceful_timeout)
                        self._kill_group()
                        self._kill_at = None
        finally:
            stop_reaping.set()
            pump.join(2)
            self._kill_group()
            shutil.rmtree(self.rundir, ignore_errors=True)
            if check is not None:  # uWSGI ended before the verdict: the check says whether the app was the cause
                failed = self._settle_check(check, held, wait=True)
        if failed:
            return failed
        if self._stopping and status in (0, -signal.SIGKILL, 30):  # 30: uWSGI's "end" code after a graceful stop
            return 0
        return status if status > 0 else 128 - status

    @staticmethod
    def _settle_check(check: tuple[int, ...], held: appcheck.HeldLines, wait: bool) -> int | None:
        """The app check's verdict (``wait``: until it is known), its descriptors closed and the held lines passed
        on (the app loads) or dropped (it does not: its one line says why); None while it is still out."""
        status = appcheck.verdict(check, None if wait else 0)
        if status is None:
            return None
        appcheck.close(check)
        held.settle(not status)
        log.removeFilter(held)
        return status

    def _on_signal(self, signum: int, frame) -> None:
        if signum == signal.SIGHUP:
            self.proc and self.proc.send_signal(signal.SIGHUP)
        elif signum == signal.SIGINT or self._stopping:
            self._stopping = True
            self.proc and self.proc.send_signal(signal.SIGINT)  # uWSGI's immediate stop
        else:
            self._stopping = True
            self._kill_at = time.monotonic() + self.settings.graceful_timeout
            if self._drain_write is not None:
                os.close(self._drain_write)  # every worker's Drain begins
                self._drain_write = None
            timer = threading.Timer(max(self.settings.shutdown_delay, STOP_LINGER), self._graceful_stop)
            timer.daemon = True
            timer.start()

    def _graceful_stop(self) -> None:
        """uWSGI's graceful shutdown: no new requests, those in flight finish (master FIFO command ``q``)."""
        try:
            fd = os.open(os.path.join(self.rundir, "master.fifo"), os.O_WRONLY | os.O_NONBLOCK)
            try:
                os.write(fd, b"q")
            finally:
                os.close(fd)
        except OSError as exc:
            log.warning("could not ask uWSGI for a graceful stop (%s); stopping it now", exc)
            self.proc and self.proc.send_signal(signal.SIGINT)

    def _kill_group(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def _pump_messages(self) -> None:
        """uWSGI's stderr, one record per line: routine lines at DEBUG, trouble at WARNING, the rest at INFO."""
        for raw in self.proc.stderr:
            line = _DATE.sub("", raw.decode("utf-8", "replace").rstrip())
            if not line:
                continue
            level = logging.DEBUG if _ROUTINE.match(line) else logging.WARNING if _TROUBLE.search(line) \
                else logging.INFO
            log.log(level, "%s", line)


def main(argv: list[str] | None = None) -> int:
    """The supervisor (what ``serve`` with STACK_SERVER=uwsgi becomes once the serving layer validated the
    settings and started the app check; ``python3 uwsgi_app.py [uWSGI options]`` behind the front): serve, then
    remove a temporary metrics dir."""
    options = list(sys.argv[1:] if argv is None else argv)

    def supervise(settings) -> int:
        stderr_logger(log, settings.log_level, settings.log_format)
        return Supervisor(settings, options).run()

    return supervisor.run_master("uwsgi_app", supervise)


if __name__ == "__main__":
    sys.exit(main())
