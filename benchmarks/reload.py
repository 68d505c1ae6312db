"""Hot reload benchmark: seconds from saving ``__init__.py`` to the first response of the new code.

Locally through the dev loop (``python -m devloop run``), and in the dev container through
``flask-stack run --engine podman`` when podman works.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import statistics
import subprocess
import time
import uuid
from pathlib import Path

from .procs import BIN, REPO, TEMPLATE, copy_project, free_port, get

ORIGINAL = "Hello from Appsody!"


def _wait_for(port: int, text: str, timeout: float) -> float | None:
    """Poll /hello every 5 ms until its body is ``text``; return the time it took, None on timeout."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        try:
            status, body = get(port, "/hello", timeout=2)
            if status == 200 and body.decode(errors="replace") == text:
                return time.monotonic() - began
        except (OSError, http.client.HTTPException):  # not up yet, or the old process went away mid-response
            pass
        time.sleep(0.005)
    return None


def measure_edits(project: Path, port: int, edits: int) -> list[float]:
    """Edit the project's /hello text ``edits`` times; return the save -> new response delays (seconds).

    Raises:
        RuntimeError: the new text was not served within 30 s.
    """
    source = project / "__init__.py"
    current = ORIGINAL
    delays = []
    for _ in range(edits):
        new = f"Hello {uuid.uuid4().hex[:8]}"
        text = source.read_text().replace(current, new)
        saved = time.monotonic()
        source.write_text(text)
        took = _wait_for(port, new, 30.0)
        if took is None:
            raise RuntimeError(f"the edit to {new!r} was not served within 30 s")
        delays.append(time.monotonic() - saved)
        current = new
        time.sleep(0.3)  # let the loop settle, as between two real saves
    return delays


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        except ProcessLookupError:
            pass


def local_reload(edits: int) -> dict:
    """Dev loop on this machine. Returns ``{"p50", "max", "n"}`` in seconds."""
    project = copy_project(TEMPLATE)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STACK_", "PROMETHEUS_"))}
    env.update(PYTHONPATH=f"{REPO / 'image' / 'project'}:{REPO / 'image'}", PATH=f"{BIN}:{env.get('PATH', '')}")
    log = open(project.parent / "devloop.log", "wb")
    argv = [str(BIN / "python"), "-m", "devloop", "run", "--project", str(project), "--port", str(port),
            "--host", "127.0.0.1", "--deps-dir", str(project.parent / "deps")]
    proc = subprocess.Popen(argv, env=env, cwd=project, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    try:
        if _wait_for(port, ORIGINAL, 120) is None:
            raise RuntimeError("dev loop not serving:\n" + (project.parent / "devloop.log").read_text()[-2000:])
        delays = measure_edits(project, port, edits)
    finally:
        _stop(proc)
        shutil.rmtree(project.parent, ignore_errors=True)
    return {"p50": statistics.median(delays), "max": max(delays), "n": len(delays)}


def container_reload(edits: int) -> dict | str:
    """Dev container via ``flask-stack run --engine podman``; returns the figures, or a reason string (n/a)."""
    if not shutil.which("podman"):
        return "n/a (no podman)"
    if subprocess.run(["podman", "info"], capture_output=True, timeout=60).returncode != 0:
        return "n/a (podman not working)"
    cli = BIN / "flask-stack"
    if not cli.exists():
        return "n/a (flask-stack CLI not installed in this venv)"
    project = copy_project(TEMPLATE)
    port = free_port()
    log_path = project.parent / "run.log"
    log = open(log_path, "wb")
    env = dict(os.environ, STACK_BASE_IMAGE=os.environ.get("STACK_BASE_IMAGE", "localhost/debian-python3:bookworm"))
    proc = subprocess.Popen([str(cli), "run", "--engine", "podman", "--project", str(project), "--port", str(port)],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    try:
        if _wait_for(port, ORIGINAL, 600) is None:
            return "n/a (dev container not serving: " + log_path.read_text()[-300:].strip().splitlines()[-1] + ")"
        delays = measure_edits(project, port, edits)
    finally:
        _stop(proc)
        subprocess.run([str(cli), "stop", "--engine", "podman", "--project", str(project)], capture_output=True,
                       timeout=120)
        shutil.rmtree(project.parent, ignore_errors=True)
    return {"p50": statistics.median(delays), "max": max(delays), "n": len(delays)}
