"""Where the stack's own files are: inside the installed wheel, or at the repository root.

A wheel built from pyproject.toml carries ``stack.yaml``, ``image/`` and ``templates/`` under
``flask_stack/stack/``; an editable install (or a checkout on ``PYTHONPATH``) finds them two levels
above ``src/flask_stack``.
"""

import importlib.util
import sys
from functools import lru_cache
from pathlib import Path
from types import ModuleType

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


@lru_cache(maxsize=None)
def stacksettings() -> ModuleType:
    """Return the stack's settings registry, the package ``image/project/stacksettings`` (standard library only):
    the CLI reads every setting through it, as the runtime, the dev loop and the serving layer do (one declaration,
    in one place).

    Raises:
        CliError: the stack's files are missing (see :func:`stack_root`).
    """
    return import_runtime("stacksettings")


def devloop_parent() -> Path:
    """Return ``image``: the directory to put on ``PYTHONPATH`` to import the ``devloop`` package."""
    return stack_root() / "image"


def templates_dir() -> Path:
    """Return ``templates``: one sub-directory per project template."""
    return stack_root() / "templates"


def load_devloop_module(name: str) -> ModuleType:
    """Import ``image/devloop/<name>.py`` (a standalone module of the dev loop's, standard library only, that the
    CLI shares with the development image, which has no ``flask_stack``) as ``flask_stack._devloop_<name>``, once.

    The file is loaded by path so that ``image`` never goes on this process's ``sys.path`` (the user's project or
    environment may have a ``devloop`` of its own).

    Raises:
        CliError: the stack's files or that module are missing.
    """
    qualified = f"flask_stack._devloop_{name}"
    loaded = sys.modules.get(qualified)
    if loaded is not None:
        return loaded
    path = devloop_parent() / "devloop" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(qualified, path)
    if spec is None or spec.loader is None or not path.is_file():
        raise CliError(f"the stack's dev loop is missing {path}; reinstall flask-stack")
    module = importlib.util.module_from_spec(spec)
    sys.modules[qualified] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[qualified]
        raise
    return module


def import_runtime(name: str) -> ModuleType:
    """Import the runtime's module ``name`` (e.g. ``serving.front_conf``, standard library only) from
    ``image/project``, so the CLI computes what the runtime computes with the runtime's own code.

    ``image/project`` is on ``sys.path`` for the import only; its packages (``server``, ``serving``) stay imported
    under their own names, which this process (the CLI, never a user's app) has no other use for.

    Raises:
        CliError: the stack's files are missing or the module cannot be imported.
    """
    directory = str(runtime_dir())
    sys.path.insert(0, directory)
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise CliError(f"the stack's runtime module {name} cannot be imported ({exc}); reinstall flask-stack") from None
    finally:
        sys.path.remove(directory)
