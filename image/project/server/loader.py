"""Finding and importing the user's package (``userapp``).

Two ways, chosen by the settings:
    * ``USERAPP_DIR`` set: the package is that directory's ``__init__.py``, loaded under the module name
      ``USERAPP`` with ``importlib.util.spec_from_file_location(..., submodule_search_locations=[dir])`` so its
      relative imports (``from .models import User``) work. The directory need not be on ``sys.path``.
    * unset: ``import USERAPP`` from ``sys.path``.

An already imported module is reused, unless it came from another directory or it holds a Flask app other than
the one being built (an Appsody-style package that did ``from server import app`` for an earlier app): then the
package and its submodules are dropped from ``sys.modules`` and imported again.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass
from types import ModuleType

from flask import Flask

from .exceptions import UserAppImportError


@dataclass(frozen=True)
class UserPackage:
    """Where the user's package is.

    Attributes:
        name (str): module name (``userapp``).
        directory (str): absolute directory holding its ``__init__.py`` (or the module file).
        init_file (str): absolute path of ``__init__.py`` (or the module file).
        from_dir (bool): loaded from USERAPP_DIR rather than from ``sys.path``.
    """

    name: str
    directory: str
    init_file: str
    from_dir: bool


def locate(name: str, directory: str | None) -> UserPackage:
    """Find the user's package without importing it.

    Raises:
        UserAppImportError: no ``__init__.py`` in ``directory``, or no module ``name`` on ``sys.path``.
    """
    if directory:
        directory = os.path.abspath(directory)
        init_file = os.path.join(directory, "__init__.py")
        if not os.path.isdir(directory):
            raise UserAppImportError(f"{name} not found: directory {directory} does not exist (STACK_USERAPP_DIR)",
                                     directory, None)
        if not os.path.isfile(init_file):
            raise UserAppImportError(f"{name} not found: {init_file} does not exist; write your app there "
                                     f"(or run `flask-stack init`)", init_file, None)
        return UserPackage(name, directory, init_file, True)
    existing = sys.modules.get(name)
    try:
        spec = existing.__spec__ if existing is not None and existing.__spec__ else importlib.util.find_spec(name)
    except (ImportError, ValueError) as exc:
        raise UserAppImportError(f"{name} not found: {exc}; set STACK_USERAPP_DIR to the directory of your "
                                 f"__init__.py", None, None) from None
    if spec is None or not spec.origin or spec.origin in ("built-in", "frozen"):
        raise UserAppImportError(f"{name} not found: no module named {name!r} on sys.path; set STACK_USERAPP_DIR "
                                 f"to the directory of your __init__.py", None, None)
    origin = os.path.abspath(spec.origin)
    return UserPackage(name, os.path.dirname(origin), origin, False)


def _purge(name: str) -> None:
    for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
        del sys.modules[key]


def _bound_to_other_app(name: str, app: Flask) -> bool:
    for key, module in list(sys.modules.items()):
        if module is None or not (key == name or key.startswith(name + ".")):
            continue
        for value in list(vars(module).values()):
            if isinstance(value, Flask) and value is not app:
                return True
    return False


def _same_file(a: str | None, b: str) -> bool:
    if not a:
        return False
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def import_package(package: UserPackage, app: Flask) -> ModuleType:
    """Import (or reuse) the user's package while ``app`` is being built.

    Raises:
        UserAppImportError: the package raised while importing (one line with file and line).
    """
    existing = sys.modules.get(package.name)
    if existing is not None:
        if _same_file(getattr(existing, "__file__", None), package.init_file) and not _bound_to_other_app(
            package.name, app
        ):
            return existing
        _purge(package.name)
    try:
        if package.from_dir:
            spec = importlib.util.spec_from_file_location(
                package.name, package.init_file, submodule_search_locations=[package.directory]
            )
            if spec is None or spec.loader is None:
                raise UserAppImportError(f"{package.name} cannot be loaded from {package.init_file}",
                                         package.init_file, None)
            module = importlib.util.module_from_spec(spec)
            sys.modules[package.name] = module
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(package.name)
    except UserAppImportError:
        _purge(package.name)
        raise
    except Exception as exc:  # noqa: BLE001 - any error in user code becomes one actionable line
        _purge(package.name)
        raise UserAppImportError.from_exception(
            f"{package.name} failed to import", exc, package.directory, package.name
        ) from exc
    return module
