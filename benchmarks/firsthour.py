"""The first hour of a new user, measured: environments, reloads, and requests during saves.

    .venv/bin/python benchmarks/firsthour.py [--only envs|reload|saves|deps] [--edits N] [--saves N]

All in one run, on 127.0.0.1, with the ``flask-stack`` CLI and the dev loop of this checkout:

* **new project, first response** (``flask-stack init`` then ``flask-stack run --engine local``, launch -> first
  200 from /hello): on a machine that never ran the stack (empty flask-stack and uv caches: the stack's packages
  come from the package index; target <= 12 s), and for a second and third new project once the stack's
  environment exists (target <= 3 s).
* **reload** (save -> first response of the new code; p50 and max): the ``simple`` template, and the ``api``
  template (Flask-SQLAlchemy + pydantic) whose third-party modules the warm dev loop pre-imports
  (target p50 <= 0.1 s, as with the bare template).
* **requests failed during saves**: wrk with 16 connections on /hello while ``__init__.py`` is saved N times
  (default 10), counting wrk's socket errors and non-2xx answers (target 0), and tracebacks in the log.
* **dependency added** (``deps``): a package (humanize) added to a running project's Pipfile with a route using it,
  save -> the route's first 200 (pipenv lock, install into the project's layer, restart); no target.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    __package__ = "benchmarks"

from .procs import BIN, REPO, free_port, get  # noqa: E402
from .reload import measure_edits  # noqa: E402

CLI = [str(BIN / "python"), "-m", "flask_stack"]


def _cli_env(cache: Path, uv_cache: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STACK_", "PROMETHEUS_")) and k != "VIRTUAL_ENV"}
    env.update(STACK_CACHE_DIR=str(cache), PYTHONPATH=str(REPO / "src"), PYTHONUNBUFFERED="1")
    if uv_cache is not None:
        env["UV_CACHE_DIR"] = str(uv_cache)
    return env


class Run:
    """``flask-stack run --engine local`` on a free port, its output in a log file; ``stop()`` ends it."""

    def __init__(self, project: Path, env: dict[str, str], log: Path):
        self.port = free_port()
        self.log = log
        with open(log, "wb") as sink:
            self.proc = subprocess.Popen([*CLI, "run", "--engine", "local", "--port", str(self.port), "--project",
                                          str(project)], env=env, stdout=sink, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        self.started = time.monotonic()

    def wait(self, path: str = "/hello", timeout: float = 300.0) -> float:
        """Seconds from launch to the first 200 on ``path``; RuntimeError with the log's tail on timeout."""
        while time.monotonic() - self.started < timeout:
            if self.proc.poll() is not None:
                break
            try:
                if get(self.port, path, timeout=2)[0] == 200:
                    return time.monotonic() - self.started
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError(f"no 200 on {path}:\n{self.log.read_text(errors='replace')[-2000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


def _new_project(root: Path, name: str, env: dict[str, str], template: str = "simple") -> Path:
    project = root / name
    subprocess.run([*CLI, "init", str(project), "--template", template], env=env, check=True, capture_output=True,
                   timeout=60)
    return project


def envs(root: Path) -> list[tuple[str, str, str]]:
    """New project -> first response, cold (never ran) and warm (the stack's environment exists)."""
    env = _cli_env(root / "cache", root / "uv-cache")
    rows = []
    for i, label in enumerate(["never ran the stack (empty caches)", "stack env present (2nd project)",
                               "stack env present (3rd project)"]):
        project = _new_project(root, f"p{i}", env)
        run = Run(project, env, root / f"p{i}.log")
        try:
            seconds = run.wait()
        finally:
            run.stop()
        target = "<= 12 s" if i == 0 else "<= 3 s"
        rows.append((f"new project -> first response: {label}", f"{seconds:.2f} s", target))
    return rows


def reloads(root: Path, edits: int) -> list[tuple[str, str, str]]:
    """Save -> new response, simple template and api template (SQLAlchemy + pydantic), one warm stack env."""
    env = _cli_env(root / "cache")
    rows = []
    for template in ("simple", "api"):
        if not (REPO / "templates" / template).is_dir():
            rows.append((f"reload p50: {template} template", "n/a (no such template)", ""))
            continue
        project = _new_project(root, f"reload-{template}", env, template)
        if template == "api":
            source = project / "__init__.py"
            source.write_text(source.read_text() + '\n\n@blueprint.get("/hello")\ndef hello():\n'
                              '    return "Hello from Appsody!"\n')
        run = Run(project, env, root / f"reload-{template}.log")
        try:
            run.wait(timeout=600)
            run.wait()  # after a possible dependency restart
            time.sleep(1.0)  # the loop pre-imports the app's third-party modules after its first start
            delays = measure_edits(project, run.port, edits)
        finally:
            run.stop()
        rows.append((f"reload p50 / max: {template} template", f"{statistics.median(delays):.3f} s / "
                     f"{max(delays):.3f} s", f"p50 <= 0.1 s (n={len(delays)})"))
    return rows


def saves(root: Path, count: int) -> list[tuple[str, str, str]]:
    """wrk, 16 connections on /hello, while ``__init__.py`` is saved ``count`` times, 1 s apart."""
    if not shutil.which("wrk"):
        return [("failed requests during saves", "n/a (no wrk)", "0")]
    env = _cli_env(root / "cache")
    project = _new_project(root, "saves", env)
    run = Run(project, env, root / "saves.log")
    try:
        run.wait(timeout=600)
        duration = count + 3
        wrk = subprocess.Popen(["wrk", "-t2", "-c16", f"-d{duration}s", "--timeout", "5s",
                                f"http://127.0.0.1:{run.port}/hello"], stdout=subprocess.PIPE, text=True)
        source = project / "__init__.py"
        time.sleep(1.0)
        for _ in range(count):
            text = source.read_text()
            source.write_text(re.sub(r"Hello from Appsody!( [0-9a-f]{8})?", f"Hello from Appsody! "
                                     f"{uuid.uuid4().hex[:8]}", text, count=1))
            time.sleep(1.0)
        out, _ = wrk.communicate(timeout=duration + 30)
    finally:
        run.stop()
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    socket_errors = sum(int(n) for n in errors.groups()) if errors else 0
    non2xx = int(re.search(r"Non-2xx or 3xx responses: (\d+)", out).group(1)) if "Non-2xx" in out else 0
    reloads_seen = run.log.read_text(errors="replace").count("reloading:")
    tracebacks = run.log.read_text(errors="replace").count("Traceback")
    return [(f"failed requests during {count} saves (wrk -c16)", f"{socket_errors + non2xx} of {requests}",
             f"0 ({reloads_seen} reloads, socket errors {socket_errors}, non-2xx {non2xx}, tracebacks {tracebacks})")]


def add_dependency(root: Path) -> list[tuple[str, str, str]]:
    """A running project (``simple``) gets one more package in its Pipfile and a route that imports it: seconds
    from the save of both to the route's first 200 (the dev loop locks with pipenv, installs, restarts)."""
    env = _cli_env(root / "cache")
    project = _new_project(root, "deps", env)
    run = Run(project, env, root / "deps.log")
    try:
        run.wait(timeout=600)
        time.sleep(1.0)
        pipfile = project / "Pipfile"
        text = pipfile.read_text()
        pipfile.write_text(text.replace("[packages]\n", '[packages]\nhumanize = "==4.12.3"\n', 1))
        source = project / "__init__.py"
        source.write_text(source.read_text() + '\n\n@blueprint.route("/size")\ndef size():\n'
                          '    import humanize\n\n    return humanize.naturalsize(2048)\n')
        saved = time.monotonic()
        while time.monotonic() - saved < 300:
            try:
                status, body = get(run.port, "/size", timeout=2)
                if status == 200 and body == b"2.0 kB":
                    break
            except OSError:
                pass
            time.sleep(0.05)
        else:
            raise RuntimeError(f"/size not served within 300 s:\n{run.log.read_text(errors='replace')[-2000:]}")
        took = time.monotonic() - saved
    finally:
        run.stop()
    return [("dependency added -> its route served", f"{took:.1f} s", "no target (pipenv lock, install, restart)")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["envs", "reload", "saves", "deps"], default=None)
    parser.add_argument("--edits", type=int, default=15, help="saves per reload measurement")
    parser.add_argument("--saves", type=int, default=10, help="saves under load")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="flask-stack-firsthour-"))
    rows: list[tuple[str, str, str]] = []
    began = time.monotonic()
    try:
        if args.only in (None, "envs"):
            rows += envs(root)
        if args.only in (None, "reload"):
            rows += reloads(root, args.edits)
        if args.only in (None, "saves"):
            rows += saves(root, args.saves)
        if args.only in (None, "deps"):
            rows += add_dependency(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    width = max(len(r[0]) for r in rows)
    print(f"{'metric':<{width}}  {'measured':<20}  target")
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:<20}  {target}")
    load = os.getloadavg()[0]
    print(f"\n{os.cpu_count()} CPUs, Python {sys.version.split()[0]}, load average {load:.2f}, "
          f"{time.monotonic() - began:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
