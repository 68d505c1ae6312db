"""Time from a new dependency declaration to the first response, per format, on the local engine.

    .venv/bin/python benchmarks/deps_formats.py [--cache DIR]

For each of ``requirements.txt``, ``pyproject.toml`` (uv locks it on the way), ``pyproject.toml`` + ``uv.lock`` and
``Pipfile`` (pipenv locks it): the markdown app of ``tests/testkit/depsapps.py`` (3 runtime pins, pytest-mock for
development) is laid out new and served with ``flask-stack run --engine local``; launch -> first 200 from /versions,
**cold** (a new project and an empty uv cache: packages come from the package index) and **warm** (the same project
started again: nothing changed). The stack's environment is made first (not timed). No target: a report.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from testkit.depsapps import FORMATS, make_project  # noqa: E402
from testkit.net import free_port  # noqa: E402

TIMEOUT = 600.0


def first_response(project: Path, env: dict[str, str]) -> float:
    """Start ``flask-stack run`` on ``project``; return seconds until /versions answers 200; stop it."""
    port = free_port()
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "flask_stack", "run", "--engine", "local", "--port", str(port),
                             "--project", str(project)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        while time.monotonic() - started < TIMEOUT:
            if proc.poll() is not None:
                raise SystemExit(f"flask-stack run exited with {proc.returncode} on {project}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/versions", timeout=2) as answer:
                    if answer.status == 200:
                        return time.monotonic() - started
            except OSError:
                pass
            time.sleep(0.05)
        raise SystemExit(f"no answer from {project} within {TIMEOUT:.0f} s")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)


def main() -> None:
    """Run the measurement and print one line per format."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", help="flask-stack cache dir (default: a new temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="deps-formats-") as tmp:
        env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "STACK_ENGINE", "PORT")}
        env.update(STACK_CACHE_DIR=args.cache or str(Path(tmp) / "cache"), PYTHONPATH=str(REPO / "src"))
        first_response(make_project(Path(tmp) / "warmup", "requirements.txt"), env)  # the stack's environment
        for kind in FORMATS:
            project = make_project(Path(tmp) / kind.replace(".", "-"), kind)
            env["UV_CACHE_DIR"] = str(Path(tmp) / f"uv-cache-{kind}")
            cold = first_response(project, env)
            warm = first_response(project, env)
            print(f"{kind:18} cold {cold:5.1f} s   warm {warm:5.1f} s", flush=True)


if __name__ == "__main__":
    main()
