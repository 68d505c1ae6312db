"""Where the stack's own files are: inside the installed wheel, or at the repository root.

A wheel built from pyproject.toml carries ``stack.yaml``, ``image/`` and ``templates/`` under
``flask_stack/stack/``; an editable install (or a checkout on ``PYTHONPATH``) finds them two levels
above ``src/flask_stack``.
"""

from pathlib import Path

from .errors import CliError


def stack_root() -> Path:
    """Return the directory holding ``stack.yaml``, ``image/`` and ``templates/``.

    Raises:
        CliError: when neither the packaged copy nor a repository checkout is found.
    """
    here = Path(__file__).resolve().parent
    for candidate in (here / "stack", here.parent.parent):
        if (candidate / "stack.yaml").is_file() and (candidate / "image" / "project").is_dir():
            return candidate
    raise CliError(f"the stack's files are missing next to {here}; reinstall flask-stack")


def runtime_dir() -> Path:
    """Return ``image/project``: the runtime package ``server`` and its Pipfile.lock."""
    return stack_root() / "image" / "project"


def devloop_parent() -> Path:
    """Return ``image``: the directory to put on ``PYTHONPATH`` to import the ``devloop`` package."""
    return stack_root() / "image"


def templates_dir() -> Path:
    """Return ``templates``: one sub-directory per project template."""
    return stack_root() / "templates"
