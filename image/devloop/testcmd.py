"""``python -m devloop test``: the project's own test suite plus the stack's checks, with pytest.

Runs ``python -m pytest -p server.testing --stack-checks [--junitxml PATH] [extra]`` in a subprocess, in the
project directory, as ``pytest`` would run there: the project's ``pytest.ini``/``pyproject.toml``/``setup.cfg``
settings apply and pytest finds its tests (``testpaths``, else the whole project); with no test path in
``extra`` the stack's checks (``server/checks``) run too. ``STACK_PROFILE`` is ``testing`` unless set (the
project's settings.yaml profile). ``STACK_USERAPP_DIR`` is set so the ``server.testing``
plugin's fixtures (``app``, ``client``) give the project's app with the stack applied, and the project's
installed packages come first on ``PYTHONPATH``. Returns pytest's exit status (0 all passed, 1 failures, 2
interrupted/usage error, 5 nothing collected), or, with ``appsody`` (what ``APPSODY_TEST`` runs), 1 with one
line for every status but 0 and 1: the Appsody CLI takes 2 for Ctrl-C. ``--watch`` runs again after every save of a
``*.py`` file or the dependency declaration (reinstalling first) until SIGINT/SIGTERM, then returns 0.
"""

from __future__ import annotations

import importlib.util
import os
import select
import subprocess
import sys
from pathlib import Path

import stacksettings

from . import deps
from . import watch as watching
from .errors import DevloopError, StopRequested
from .logs import get_logger

log = get_logger()


def pytest_argv(project: Path, junitxml: str | None = None, extra: list[str] | None = None) -> list[str]:
    """Return the pytest command line for ``project`` (see the module docstring); run it with cwd ``project``."""
    if importlib.util.find_spec("server") is None:
        raise DevloopError("cannot find the stack's runtime package `server`; run with the stack's image/project "
                           "on PYTHONPATH")
    argv = [sys.executable, "-m", "pytest", "-p", "server.testing", "--stack-checks"]
    if junitxml:
        argv += ["--junitxml", str(Path(junitxml).resolve())]
    return argv + list(extra or [])


def _run_once(project: Path, state: deps.DepsState, junitxml: str | None, extra: list[str]) -> int:
    env = dict(os.environ)
    env["STACK_USERAPP_DIR"] = str(project)
    stacksettings.set_default("STACK_PROFILE", "testing", env)  # the user's settings.yaml profile (server.userconfig)
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


#: What a pytest exit status other than 0 and 1 means (``pytest.ExitCode``).
PYTEST_STATUSES = {
    2: "interrupted: errors while collecting the tests (a test file that fails to import, say)",
    3: "an internal error",
    4: "a usage error (bad arguments or options)",
    5: "no tests collected",
}


def appsody_status(status: int) -> int:
    """Return ``status`` for the Appsody CLI: 0 and 1 as they are, any other pytest status 1 with one ERROR line
    saying what pytest reported (the Appsody CLI reads an exit status of 2 as an interrupt and reports success)."""
    if status in (0, 1):
        return status
    meaning = PYTEST_STATUSES.get(status, "an unexpected status")
    log.error("pytest exited with status %d (%s); reporting it as a test failure (1)", status, meaning)
    return 1


def run_tests(project: Path, deps_dir: Path | None, state: deps.DepsState, *, junitxml: str | None = None,
              watch: bool = False, extra: list[str] | None = None, appsody: bool = False) -> int:
    """Run the tests once (return pytest's status; with ``appsody``, :func:`appsody_status` of it) or, with
    ``watch``, on every save (return 0 when stopped)."""
    extra = extra or []
    if not watch:
        status = _run_once(project, state, junitxml, extra)
        return appsody_status(status) if appsody else status
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
