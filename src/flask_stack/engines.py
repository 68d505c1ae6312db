"""Choosing the engine for ``--engine``: the one module that knows every engine (neither engine imports it)."""

from __future__ import annotations

from .container import ContainerEngine, detect_container_engine
from .engine import Engine
from .local import LocalEngine


def select_engine(name: str = "auto", *, quiet: bool = False) -> Engine:
    """Return the engine for ``--engine NAME``: ``auto`` (docker if its daemon answers, else podman if it runs,
    else local), ``local``, ``docker`` or ``podman``.

    Raises:
        StackError: an explicitly named container engine is not installed or not working.
    """
    if name == "local":
        return LocalEngine()
    if name == "auto":
        binary = detect_container_engine()
        return ContainerEngine(binary) if binary else LocalEngine()
    return ContainerEngine(detect_container_engine(required=name))
