"""Process helpers of the benchmarks: start the stack and its baselines on 127.0.0.1, wrk, memory from /proc.

Every server is started in its own session and stopped with its whole process group (``Server.stop``).
"""

from __future__ import annotations

import compileall
import http.client
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
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROJECT_DIR = REPO / "image" / "project"
SERVE = PROJECT_DIR / "serve"
TEMPLATE = REPO / "templates" / "simple"
APPS = Path(__file__).resolve().parent / "apps"
BIN = Path(sys.executable).parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """GET on a fresh connection; return (status, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def children_of(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc/*/stat)."""
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text(errors="replace")
            except OSError:
                continue
            if int(stat[stat.rfind(")") + 2 :].split()[1]) == pid:
                kids.append(int(entry))
    return sorted(kids)


def descendants(pid: int) -> list[int]:
    """Every descendant of ``pid`` (children, their children...)."""
    found, frontier = [], [pid]
    while frontier:
        kids = children_of(frontier.pop())
        found += kids
        frontier += kids
    return sorted(found)


def _comm(pid: int) -> str:
    """The process name of ``pid`` (/proc/PID/comm), "" when it is gone."""
    try:
        return Path(f"/proc/{pid}/comm").read_text(errors="replace").strip()
    except OSError:
        return ""


def memory(pid: int) -> dict:
    """``{"rss": bytes, "pss": bytes}`` of ``pid`` from /proc/PID/smaps_rollup (PSS shares pages fairly between
    the processes mapping them, so it is the fair per-worker figure after fork)."""
    values = {"rss": 0, "pss": 0}
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("Rss", "Pss"):
                values[key.lower()] = int(rest.split()[0]) * 1024
    except OSError:
        pass
    return values


def cpu_seconds(pids) -> float:
    """User + system CPU seconds used so far by ``pids`` (utime + stime from /proc/PID/stat)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])
    return total / ticks


def serving_settings(env: dict):
    """The stack's production serving settings (``serving.settings.ServingSettings``) for environment ``env``."""
    if str(PROJECT_DIR) not in sys.path:
        sys.path.insert(0, str(PROJECT_DIR))
    from serving.settings import load_serving_settings

    return load_serving_settings(env)


@dataclass
class Server:
    """One server under test. ``kind``: stack-gunicorn, stack-granian, stack-uwsgi, stack-granian-front (the deployable
    image's default: nginx in front of granian), stack-flask-run, bare-gunicorn, bare-granian, bare-uwsgi,
    peer-gunicorn (Flask + prometheus_flask_exporter, multiprocess, 3 workers x 4 threads).
    ``project``: the user project for stack kinds."""

    kind: str
    project: Path | None = None
    workers: int | None = None
    env: dict = field(default_factory=dict)
    port: int = 0
    proc: subprocess.Popen | None = None
    workdir: Path | None = None
    started_at: float = 0.0

    @property
    def ready_path(self) -> str:
        """The path polled for readiness: /health/ready for the stack, /hello for the bare app."""
        return "/health/ready" if self.kind.startswith("stack") else "/hello"

    def _command(self) -> tuple[list[str], dict]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("STACK_", "PROMETHEUS_", "GRANIAN_"))}
        env.pop("WEB_CONCURRENCY", None)
        env.update(PATH=f"{BIN}:{env.get('PATH', '/usr/bin:/bin')}", PORT=str(self.port), STACK_HOST="127.0.0.1")
        if self.workers:
            env["WEB_CONCURRENCY"] = str(self.workers)
        if self.project:
            env["STACK_USERAPP_DIR"] = str(self.project)
        env["PROMETHEUS_MULTIPROC_DIR"] = str(self.workdir / "metrics")
        env.update(self.env)
        conf = PROJECT_DIR / "serving" / "gunicorn.conf.py"
        if self.kind in ("stack-gunicorn", "stack-granian", "stack-uwsgi", "stack-granian-front"):
            env["STACK_SERVER"] = self.kind.split("-")[1]
            env["STACK_FRONT"] = "nginx" if self.kind.endswith("-front") else "none"
            return [str(SERVE)], env
        if self.kind == "stack-flask-run":
            env.pop("PROMETHEUS_MULTIPROC_DIR")
            env["PYTHONPATH"] = str(PROJECT_DIR)
            argv = [str(BIN / "python"), "-m", "flask", "--app", "server:app", "run", "--host", "127.0.0.1"]
            return argv + ["--port", str(self.port), "--with-threads", "--no-reload", "--no-debugger"], env
        if self.kind == "peer-gunicorn":
            (self.workdir / "metrics").mkdir(exist_ok=True)
            env.update(PYTHONPATH=str(APPS), PEER_METRICS_PORT=str(free_port()))
            return [str(BIN / "gunicorn"), "--config", str(APPS / "peer_gunicorn.conf.py"), "peer_flask:app"], env
        env.pop("PROMETHEUS_MULTIPROC_DIR")
        env["PYTHONPATH"] = f"{APPS}:{PROJECT_DIR}"
        if self.kind == "bare-gunicorn":
            return [str(BIN / "gunicorn"), "--config", str(conf), "bare_flask:app"], env
        if self.kind == "bare-uwsgi":  # uwsgi_app.py's very options (router, workers x threads...), the bare app
            settings = serving_settings(env)  # (puts the project dir on sys.path)
            from serving.uwsgi_app import uwsgi_options

            argv = uwsgi_options(settings, str(self.workdir))
            argv[argv.index("serving.uwsgi_app:application")] = "bare_flask:app"
            return [str(BIN / "uwsgi"), *argv], env
        if self.kind == "bare-granian":
            settings = serving_settings(env)  # same worker and thread counts as the stack's
            argv = [str(BIN / "granian"), "--interface", "wsgi", "--host", "127.0.0.1", "--port", str(self.port)]
            argv += ["--workers", str(settings.workers), "--blocking-threads", str(settings.threads), "--no-ws"]
            return argv + ["--log-level", "warning", "bare_flask:app"], env
        raise ValueError(f"unknown server kind {self.kind!r}")

    def start(self, timeout: float = 60.0) -> "Server":
        """Start and wait until the ready path answers 200 (and all workers are up); raise RuntimeError with the
        log tail on failure. ``started_at`` is the launch time (time.monotonic)."""
        compile_sources()
        self.workdir = Path(tempfile.mkdtemp(prefix=f"bench-{self.kind}-"))
        self.port = self.port or free_port()
        argv, env = self._command()
        self.started_at = time.monotonic()
        # Output goes through a pipe drained by a thread, as a container engine's log driver drains it; writing
        # the log file directly would add this disk's contention to every access line the server writes.
        self.proc = subprocess.Popen(argv, env=env, cwd=self.workdir, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self._drain = threading.Thread(target=_drain, args=(self.proc.stdout, self.workdir / "server.log"),
                                       daemon=True)
        self._drain.start()
        deadline = self.started_at + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._drain.join(2)
                raise RuntimeError(f"{self.kind} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if get(self.port, self.ready_path, timeout=2)[0] == 200:
                    self.ready_after = time.monotonic() - self.started_at
                    return self
            except OSError:
                pass
            time.sleep(0.01)
        tail = self.log_tail()
        self.stop()
        raise RuntimeError(f"{self.kind} not ready within {timeout}s:\n{tail}")

    def worker_pids(self) -> list[int]:
        """The processes that serve requests: the master's children, or the process itself (flask run); for the
        stack on uWSGI its workers (``serve`` -> uwsgi_app.py -> uWSGI's master -> workers and http router)."""
        if not self.proc or self.proc.poll() is not None:
            return []
        if self.kind == "stack-uwsgi":
            return [pid for pid in descendants(self.proc.pid) if _comm(pid) == "uwsgi worker"]
        if self.kind.endswith("-front"):  # serve -> nginx and granian's main process -> its workers
            masters = [pid for pid in children_of(self.proc.pid) if _comm(pid) != "nginx"]
            return [pid for master in masters for pid in children_of(master)]
        return children_of(self.proc.pid) or [self.proc.pid]

    def cpu_pids(self) -> list[int]:
        """Every process whose CPU time a request costs: the workers and the master; for uWSGI also its http
        router (which parses every request) and, for the stack, uwsgi_app.py's supervisor; behind the front also
        nginx and ``serve``."""
        if self.kind.endswith(("uwsgi", "-front")):
            return [self.proc.pid, *descendants(self.proc.pid)]
        return self.worker_pids() + [self.proc.pid]

    def wait_workers(self, count: int, timeout: float = 30.0) -> None:
        """Wait until ``count`` workers run (a server is ready as soon as one worker answers)."""
        deadline = time.monotonic() + timeout
        while len(self.worker_pids()) < count and time.monotonic() < deadline:
            time.sleep(0.05)

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the server's output."""
        path = self.workdir / "server.log" if self.workdir else None
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path and path.exists() else ""

    def stop(self) -> None:
        """SIGTERM to the process group, SIGKILL after 15 s; remove the work dir."""
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
            except ProcessLookupError:
                pass
        if self.proc and self.proc.stdout:
            self._drain.join(5)
            self.proc.stdout.close()
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _drain(stream, path: Path) -> None:
    """Copy a server's output pipe to ``path`` in large buffered writes until the pipe closes."""
    with open(path, "wb", buffering=0) as out:  # one write per chunk read: the file is always current
        while chunk := stream.read1(1 << 16):
            out.write(chunk)


def copy_project(source: Path) -> Path:
    """Copy a user project to a fresh temp dir, its Python files compiled (``compile_sources``), and return it."""
    dest = Path(tempfile.mkdtemp(prefix="bench-project-")) / "project"
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns("__pycache__", ".venv", "tests", ".vscode"))
    compileall.compile_dir(str(dest), quiet=1)
    return dest


_compiled = False


def compile_sources() -> None:
    """Compile the stack's Python files (image/project) and the benchmark apps to bytecode, once per process, in
    their ``__pycache__`` dirs (ignored by git and by the image's build context), whatever PYTHONDONTWRITEBYTECODE
    says: the deployable image ships them compiled (``compileall`` in image/project/Dockerfile), and otherwise
    every process of a stack server would compile the stack from source as it starts (about 0.1 s of CPU a
    process), so a cold start would measure the compiler."""
    global _compiled
    if not _compiled:
        for directory in (PROJECT_DIR, APPS):
            compileall.compile_dir(str(directory), quiet=1)
        _compiled = True


# --- wrk ------------------------------------------------------------------------------------------------------

_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def wrk(port: int, path: str, seconds: int, connections: int = 32, threads: int = 2, script: Path | None = None) -> dict:
    """Run wrk (with the Lua ``script`` when given) and return ``{"rps", "p50", "p99" (seconds), "requests",
    "errors"}``.

    Raises:
        RuntimeError: wrk is missing (Debian package wrk) or failed.
    """
    binary = shutil.which("wrk")
    if not binary:
        raise RuntimeError("wrk is not installed (apt-get install wrk)")
    argv = [binary, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s", "--latency",
            f"http://127.0.0.1:{port}{path}"]
    if script is not None:
        argv[1:1] = ["-s", str(script)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    out = done.stdout
    if done.returncode != 0 or "requests in" not in out:
        raise RuntimeError(f"wrk failed: {done.stderr or out}")
    latency = {
        int(p): float(v) * _UNITS[u]
        for p, v, u in re.findall(r"^\s+(50|99)(?:\.000)?%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
    }
    errors = sum(map(int, m.groups())) if (m := re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)) else 0
    non2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50": latency.get(50, float("nan")),
        "p99": latency.get(99, float("nan")),
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),
        "errors": errors + non2xx,
    }
