"""``python -m devloop test``: the stack's checks plus the project's tests, with pytest.

Runs ``python -m pytest -p server.testing <server/checks> <project>/tests [--junitxml PATH] [extra]``
in a subprocess, in the project directory, with ``STACK_USERAPP_DIR`` set so the ``server.testing``
plugin's fixtures (``app``, ``client``) load the project as ``userapp``, and the project's installed
packages first on ``PYTHONPATH``. Returns pytest's exit status (0 all passed, 1 failures, 2
interrupted/usage error, 5 nothing collected). ``--watch`` runs again after every save of a ``*.py``
file or the Pipfile (reinstalling first) until SIGINT/SIGTERM, then returns 0.
"""

from __future__ import annotations

import importlib.util
import os
import select
import subprocess
import sys
from pathlib import Path

from . import deps
from . import watch as watching
from .errors import DevloopError, StopRequested
from .logs import get_logger

log = get_logger()


def checks_dir() -> Path | None:
    """Return the stack's checks directory (``server/checks``), or None when the runtime has none."""
    spec = importlib.util.find_spec("server")
    if spec is None or not spec.submodule_search_locations:
        raise DevloopError("cannot find the stack's runtime package `server`; run with the stack's image/project "
                           "on PYTHONPATH")
    checks = Path(list(spec.submodule_search_locations)[0]) / "checks"
    return checks if checks.is_dir() else None


def pytest_argv(project: Path, junitxml: str | None = None, extra: list[str] | None = None) -> list[str]:
    """Return the pytest command line for ``project`` (see the module docstring)."""
    argv = [sys.executable, "-m", "pytest", "-p", "server.testing", "--rootdir", str(project)]
    checks = checks_dir()
    if checks is not None:
        argv.append(str(checks))
    tests = project / "tests"
    if tests.is_dir():
        argv.append(str(tests))
    if junitxml:
        argv += ["--junitxml", str(Path(junitxml).resolve())]
    return argv + list(extra or [])


def _run_once(project: Path, state: deps.DepsState, junitxml: str | None, extra: list[str]) -> int:
    env = dict(os.environ)
    env["STACK_USERAPP_DIR"] = str(project)
    env["PYTHONPATH"] = deps.pythonpath(state)
    proc = subprocess.Popen(pytest_argv(project, junitxml, extra), cwd=project, env=env, stdin=subprocess.DEVNULL)
    try:
        return proc.wait()
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def run_tests(project: Path, deps_dir: Path | None, state: deps.DepsState, *, junitxml: str | None = None,
              watch: bool = False, extra: list[str] | None = None) -> int:
    """Run the tests once (return pytest's status) or, with ``watch``, on every save (return 0 when stopped)."""
    extra = extra or []
    if not watch:
        return _run_once(project, state, junitxml, extra)
    watcher = watching.Watcher(project, [deps_dir] if deps_dir is not None else []).start()
    try:
        watcher.ready.wait(5.0)
        status = _run_once(project, state, junitxml, extra)
        log.info("tests finished with status %d; watching %s for changes (Ctrl-C stops)", status, project)
        while True:
            select.select([watcher.fileno()], [], [], 1.0)
            paths = watcher.take()
            if watcher.error is not None:
                raise DevloopError(f"watching {project} failed: {watcher.error}")
            if not paths:
                continue
            log.info("running tests again: %s changed", watching.describe(paths, project))
            if watching.touches_deps(paths, project):
                try:
                    state = deps.ensure_deps(project, deps_dir)
                except DevloopError as exc:
                    log.error("%s; testing with the previous dependencies", exc)
            status = _run_once(project, state, junitxml, extra)
            log.info("tests finished with status %d", status)
    except (KeyboardInterrupt, StopRequested):
        return 0
    finally:
        watcher.stop()
