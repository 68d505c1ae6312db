"""The local engine: run, debug, test and stop a project with no container.

The stack's shared environment (see ``flask_stack.localenv``) holds the stack's locked runtime and dev
packages; the dev loop (package ``devloop`` in the stack's ``image/``) runs in it as

    <stack env>/bin/python -m devloop {run|debug|test} --project DIR --deps-dir <project layer>/deps
        [--port N --host 127.0.0.1] [--junitxml P]

with ``PYTHONPATH=<stack>/image/project:<stack>/image``, ``STACK_USERAPP_DIR=DIR`` and ``STACK_UV`` (the uv
that installs the project's packages; ``pip`` when there is none), plus ``STACK_DEBUG_PORT``/``STACK_DEBUG_WAIT``
for debug. The dev loop installs the project's own ``[packages]`` into its layer (never into the shared
environment) and puts it first on ``sys.path``. ``--production`` installs that layer the same way, then runs the
stack's production entry ``image/project/serve`` (the serving layer, package ``serving``: the server
STACK_SERVER names, granian by default, and a temporary ``PROMETHEUS_MULTIPROC_DIR``) with the environment first on PATH, the layer on
PYTHONPATH, ``STACK_HOST=127.0.0.1`` and ``PORT``. Servers bind 127.0.0.1 only: the local engine is for the
developer's own machine.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import click

from .engine import Engine, RunOptions
from .errors import CliError
from .localenv import PIP, ensure_stack_env, env_python, find_uv, project_dir
from .paths import devloop_parent, runtime_dir, stacksettings
from .procs import require_free_port, run_foreground

HOST = "127.0.0.1"


def _echo(line: str) -> None:
    """Print a progress line of the engine to stderr."""
    click.echo(f"flask-stack: {line}", err=True)


class LocalEngine(Engine):
    """Runs the dev loop (or, with --production, the serving layer) in the stack's environment on this machine."""

    name = "local"

    def run(self, opts: RunOptions) -> int:
        """Serve ``opts.project`` on 127.0.0.1 in the foreground; return the server's exit status.

        Raises:
            CliError: a port is in use, the venv cannot be made, or the stack's dev loop or production
                config is missing.
        """
        require_free_port(opts.port)
        if opts.debug:
            if opts.production:
                raise CliError("--production cannot be combined with debug mode")
            require_free_port(opts.debug_port, "--debug-port")
            if opts.debug_port == opts.port:
                raise CliError("--debug-port must differ from --port")
        if opts.production:
            return self._run_production(opts)
        self._require_devloop()
        venv = ensure_stack_env(_echo)
        mode = "debug" if opts.debug else "run"
        argv = [str(env_python(venv)), "-m", "devloop", mode, "--project", str(opts.project),
                "--deps-dir", str(deps_dir(opts.project)), "--port", str(opts.port), "--host", HOST]
        env = self._env(opts.project, opts.env)
        if opts.debug:
            env.update(STACK_DEBUG="1", STACK_DEBUG_PORT=str(opts.debug_port),
                       STACK_DEBUG_WAIT="1" if opts.debug_wait else "0")
        return run_foreground(argv, env, opts.project)

    def test(self, project: Path, junitxml: Path | None = None, args: tuple[str, ...] = (),
             env: dict[str, str] | None = None) -> int:
        """Run the project's tests and the stack's checks once; return pytest's exit status.

        Raises:
            CliError: the venv cannot be made or the dev loop is missing.
        """
        self._require_devloop()
        venv = ensure_stack_env(_echo)
        argv = [str(env_python(venv)), "-m", "devloop", "test", "--project", str(project),
                "--deps-dir", str(deps_dir(project))]
        if junitxml is not None:
            argv += ["--junitxml", str(junitxml.expanduser().absolute())]
        return run_foreground([*argv, "--", *args], self._env(project, env or {}), project)

    def flask(self, project: Path, args: tuple[str, ...], env: dict[str, str] | None = None) -> int:
        """Run ``flask ARGS`` on the project's app (``python -m devloop flask``); return its exit status.

        Raises:
            CliError: the venv cannot be made or the dev loop is missing.
        """
        self._require_devloop()
        venv = ensure_stack_env(_echo)
        argv = [str(env_python(venv)), "-m", "devloop", "flask", "--project", str(project),
                "--deps-dir", str(deps_dir(project)), "--", *args]
        return run_foreground(argv, self._env(project, env or {}), project)

    def _run_production(self, opts: RunOptions) -> int:
        """Serve with the stack's production entry ``image/project/serve`` (the serving layer; the server
        STACK_SERVER names) bound to 127.0.0.1:PORT.

        Raises:
            CliError: the stack's runtime has no ``serve``, or the project's packages fail to install.
        """
        serve = runtime_dir() / "serve"
        if not serve.is_file():
            raise CliError(f"--production needs the stack's production entry {serve}, which is missing")
        self._require_devloop()
        venv = ensure_stack_env(_echo)
        env = self._env(opts.project, opts.env)
        site = self._project_packages(venv, opts.project, env)
        env.update(PORT=str(opts.port), STACK_HOST=HOST, STACK_DEBUG="0")
        env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        if site:
            env["PYTHONPATH"] = os.pathsep.join([site, env["PYTHONPATH"]])
        return run_foreground(["/bin/sh", str(serve)], env, opts.project)

    @staticmethod
    def _project_packages(venv: Path, project: Path, env: dict[str, str]) -> str:
        """Install the project's declared packages into its layer (as the dev loop does) and return the directory
        to put on PYTHONPATH ('' when the project has none).

        Raises:
            CliError: the install failed (the dev loop's one-line reason).
        """
        code = "\n".join([
            "import pathlib, sys",
            "from devloop import deps, logs",
            "from devloop.errors import DevloopError",
            "logs.configure()",
            "try:",
            "    state = deps.ensure_deps(pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]))",
            "except DevloopError as exc:",
            "    logs.get_logger().error('%s', exc)",
            "    sys.exit(1)",
            "pathlib.Path(sys.argv[3]).write_text(str(state.site_dir or ''))",
        ])
        with tempfile.TemporaryDirectory(prefix="flask-stack-site-") as tmp:
            answer = Path(tmp) / "site"
            status = subprocess.run([str(env_python(venv)), "-c", code, str(project), str(deps_dir(project)),
                                     str(answer)], env=env, cwd=project, timeout=1800).returncode
            if status != 0 or not answer.is_file():
                raise CliError(f"installing the packages {project} declares failed; see the line above")
            return answer.read_text()

    @staticmethod
    def _require_devloop() -> None:
        """Raise CliError when the stack's dev loop package is not present."""
        if not (devloop_parent() / "devloop" / "__main__.py").is_file():
            raise CliError(f"the stack's dev loop is missing ({devloop_parent() / 'devloop'}); reinstall flask-stack")

    @staticmethod
    def _env(project: Path, extra: dict[str, str]) -> dict[str, str]:
        """Return the environment of the dev loop: ours plus the stack's PYTHONPATH and STACK_USERAPP_DIR."""
        env = dict(os.environ)
        env.pop("VIRTUAL_ENV", None)
        env.pop("PYTHONHOME", None)
        env.update(extra)
        env["PYTHONPATH"] = os.pathsep.join([str(runtime_dir()), str(devloop_parent())])
        env["STACK_USERAPP_DIR"] = str(project)
        stacksettings().set_default("STACK_UV", find_uv() or PIP, env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env


def deps_dir(project: Path) -> Path:
    """Return the directory of ``project``'s own packages (its layer over the stack's environment)."""
    return project_dir(project) / "deps"
