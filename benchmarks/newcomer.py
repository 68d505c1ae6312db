"""The newcomer timeline, as a new user on Debian meets it: README's first command -> first response -> first edit
served -> tests run.

    /usr/bin/python3 benchmarks/newcomer.py

Runs in a login shell (``bash -l``) of a fresh HOME copied from /etc/skel (as ``useradd -m`` makes it: empty
caches, so the CLI's and the stack's packages come from the package index), from this checkout: README's first
command (its project directory ``/tmp/demo`` replaced by a temporary one, the port by a free one through
``FLASK_RUN_PORT``) until ``/hello`` answers; then an edit of the greeting in ``__init__.py`` until it is served;
then, the greeting restored, the ``next: ... flask-stack test`` line ``init`` printed, as printed. No targets: it
prints the four times. Only 127.0.0.1 is served; every wait is bounded (300 s).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LIMIT = 300.0


def _get(port: int, path: str) -> tuple[int | None, str]:
    """``GET path`` on 127.0.0.1:``port``: (status, body); (None, reason) when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return response.status, response.read().decode()
    except Exception as exc:  # noqa: BLE001 - not answering yet, in any way
        return None, str(exc)


def _until(predicate, what: str, proc: subprocess.Popen, log: Path) -> float:
    """Wait until ``predicate()`` (polling every 20 ms, at most LIMIT s); return when it held (monotonic).

    Raises:
        SystemExit: the command died or the limit passed (its log's tail is printed).
    """
    deadline = time.monotonic() + LIMIT
    while not predicate():
        if proc.poll() is not None or time.monotonic() > deadline:
            sys.exit(f"{what}: not reached\n{log.read_text()[-3000:]}")
        time.sleep(0.02)
    return time.monotonic()


def main() -> int:
    """Measure and print the timeline; return 0 (1 when the tests failed)."""
    root = Path(tempfile.mkdtemp(prefix="newcomer-"))
    home, project, log = root / "home", root / "demo", root / "run.log"
    shutil.copytree("/etc/skel", home)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STACK_", "PYTHON", "VIRTUAL_ENV", "FLASK_"))}
    env.update(HOME=str(home), FLASK_RUN_PORT=str(port))
    first_paragraph = (REPO / "README.md").read_text().split("\n\n")[1]
    command = re.search(r"`([^`]+)`", first_paragraph).group(1).replace("/tmp/demo", str(project))
    started = time.monotonic()
    with open(log, "wb") as sink:
        proc = subprocess.Popen(["bash", "-l", "-c", f"cd {REPO} && {command}"], env=env, stdout=sink,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        first = _until(lambda: _get(port, "/hello")[0] == 200, "first response", proc, log)
        init = project / "__init__.py"
        source = init.read_text()
        saved = time.monotonic()
        init.write_text(source.replace("Hello from Appsody!", "Hello, edited"))
        served = _until(lambda: _get(port, "/hello")[1] == "Hello, edited", "edit served", proc, log)
        init.write_text(source)  # back to the greeting the template's test expects
        printed = [line.split("next: ", 1)[1] for line in log.read_text().splitlines() if "flask-stack: next: " in line]
        test_line = next(line for line in printed if line.endswith("flask-stack test"))
        tests_started = time.monotonic()
        tests = subprocess.run(["bash", "-l", "-c", test_line], env=env, capture_output=True, text=True,
                               timeout=LIMIT)
        tests_done = time.monotonic()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)
    summary = (tests.stdout.strip().splitlines() or ["(no output)"])[-1].strip("= ")
    print(f"README's first command -> first /hello response   {first - started:6.1f} s")
    print(f"first edit saved -> served                        {served - saved:6.2f} s")
    print(f"`flask-stack test` as init printed it (exit {tests.returncode})  {tests_done - tests_started:6.1f} s  {summary}")
    print(f"README's first command -> tests done              {tests_done - started:6.1f} s")
    shutil.rmtree(root, ignore_errors=True)
    return 0 if tests.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
