"""Choosing the engine for ``--engine``: the one module that knows every engine (neither engine imports it).

Which engine a command uses, first found: ``--engine``; ``STACK_ENGINE``; the project's recorded choice (the
``flask-stack-engine:`` line ``flask-stack init --engine`` writes into its ``.appsody-config.yaml``); else the
local engine (this machine's Python, no container). A container engine is used only when asked for in one of
those ways: it needs a base image, which a machine without a registry may not have.
"""

from __future__ import annotations

import os
from pathlib import Path

from .container import ContainerEngine, detect_container_engine
from .engine import Engine
from .local import LocalEngine
from .project import CONFIG_FILE, read_config

#: Engines a command can run on.
ENGINE_NAMES = ("local", "docker", "podman")
#: Engines that can build an image.
BUILD_ENGINE_NAMES = ("docker", "podman")
#: The key of ``.appsody-config.yaml`` recording the project's engine (``flask-stack init --engine``).
ENGINE_KEY = "flask-stack-engine"
ENGINE_ENV = "STACK_ENGINE"


def recorded_engine(project: Path | None) -> str | None:
    """Return the engine recorded for ``project`` (``flask-stack-engine:`` in its .appsody-config.yaml), or None
    when none (or an unknown name) is recorded."""
    if project is None:
        return None
    value = read_config(project).get(ENGINE_KEY, "").strip().lower()
    return value if value in ENGINE_NAMES else None


def record_engine(project: Path, name: str) -> None:
    """Record ``name`` as ``project``'s engine in its .appsody-config.yaml (the line replaced, else appended).

    Raises:
        OSError: the file cannot be written.
    """
    path = project / CONFIG_FILE
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        lines = []
    lines = [line for line in lines if not line.startswith(f"{ENGINE_KEY}:")]
    lines.append(f"{ENGINE_KEY}: {name}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def resolve_engine_name(option: str | None, from_env: bool, project: Path | None,
                        build: bool = False) -> tuple[str | None, str]:
    """Return ``(engine name, why)`` for a command (see the module docstring for the order).

    Args:
        option: ``--engine``'s value (from the command line or ``STACK_ENGINE``), or None.
        from_env: the value came from ``STACK_ENGINE``.
        project: the project directory (its recorded choice), or None.
        build: the command builds an image: ``local`` choices are passed over, and the name is None (meaning:
            whichever container engine works) when no container engine was asked for.
    """
    if option:
        return option, (f"from {ENGINE_ENV}" if from_env else "from --engine")
    if build and os.environ.get(ENGINE_ENV, "").strip().lower() in BUILD_ENGINE_NAMES:
        return os.environ[ENGINE_ENV].strip().lower(), f"from {ENGINE_ENV}"
    recorded = recorded_engine(project)
    if recorded and (not build or recorded in BUILD_ENGINE_NAMES):
        return recorded, f"recorded in {CONFIG_FILE} by `flask-stack init --engine`"
    if build:
        return None, "the first container engine that works"
    return "local", "the default; --engine podman|docker runs in a container"


def select_engine(name: str | None = "local", *, quiet: bool = False) -> Engine:
    """Return the engine for ``name``: ``local``, ``docker`` or ``podman``; None: the first container engine
    that works (docker if its daemon answers, else podman), for ``build``.

    Raises:
        CliError: the named (or, for None, any) container engine is not installed or not working.
    """
    if name == "local":
        return LocalEngine()
    if name is None:
        binary = detect_container_engine()
        if binary is None:
            detect_container_engine(required="podman")  # raises, saying why podman does not work
        return ContainerEngine(binary)
    return ContainerEngine(detect_container_engine(required=name))
