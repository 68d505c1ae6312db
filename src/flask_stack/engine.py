"""The engine interface: where ``run``, ``debug``, ``test``, ``stop`` and ``build`` execute.

Two kinds implement it: the local engine (``flask_stack.local.LocalEngine``: a virtual environment
on this machine) and the container engine (``flask_stack.container.ContainerEngine``: docker or
podman running the stack's development image). ``flask_stack.engines.select_engine`` picks one for
``--engine``; this module imports neither engine.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path

from .errors import CliError


@dataclass
class RunOptions:
    """What ``run``/``debug`` need.

    Attributes:
        project (Path): the directory holding the user's ``__init__.py``.
        port (int): the host TCP port the app is served on (default 8080).
        debug (bool): debug mode (Flask debugger plus debugpy).
        debug_port (int): the host TCP port of the DAP debugger (default 5678).
        debug_wait (bool): wait for the debugger client before serving.
        production (bool): serve with gunicorn and the production config instead of the dev loop.
        env (dict[str, str]): extra environment variables for the served app.
    """

    project: Path
    port: int = 8080
    debug: bool = False
    debug_port: int = 5678
    debug_wait: bool = False
    production: bool = False
    env: dict[str, str] = field(default_factory=dict)


class Engine(abc.ABC):
    """Runs the stack's commands for one project. Every method raises ``CliError`` on failure."""

    name: str = "engine"

    @abc.abstractmethod
    def run(self, opts: RunOptions) -> int:
        """Serve the project in the foreground until Ctrl-C/SIGTERM; return the exit status."""

    @abc.abstractmethod
    def test(self, project: Path, junitxml: Path | None = None, args: tuple[str, ...] = (),
             env: dict[str, str] | None = None) -> int:
        """Run the project's tests and the stack's checks once (``args``: more pytest arguments; ``env``: more
        environment variables); return pytest's exit status."""

    @abc.abstractmethod
    def flask(self, project: Path, args: tuple[str, ...], env: dict[str, str] | None = None) -> int:
        """Run the Flask CLI (``flask ARGS``) on the project's app with the stack applied, in the project's
        environment; return its exit status."""

    def stop(self, project: Path) -> int:
        """Stop the project's running server/container; return 0 when something was stopped or nothing ran."""
        return 0

    def build(self, project: Path, tag: str, base_image: str | None = None) -> int:
        """Build the deployable image; only container engines can."""
        raise CliError(f"`build` needs a container engine (docker or podman); the {self.name} engine cannot build images")
