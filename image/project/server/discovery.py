"""Finding the user's app the way ``flask run`` does, and importing its module once per process.

Where the app is (:func:`locate`, no import), from the settings:

* ``FLASK_APP`` set (``--app`` of ``flask-stack``): Flask's own syntax, ``module``, ``module:name`` or
  ``module:factory(args)``, where ``module`` is a dotted name or a file path (``src/app.py``), taken relative to
  the project directory as ``flask --app`` takes it relative to the current directory (Flask's ``prepare_import``).
* else, in the project directory (``STACK_USERAPP_DIR``, else the current directory), the first that exists:
  ``wsgi.py``, ``app.py`` (Flask's defaults); the project's own ``__init__.py`` (the project is a package: the
  Blueprint and Appsody shapes); the one package directly below it (``flaskr/``; ``tests``, ``docs`` and the
  like do not count).
* no project directory and no ``FLASK_APP``, but ``USERAPP`` set or a module ``userapp`` on ``sys.path`` (older
  configurations): ``import USERAPP`` from ``sys.path``; else the current directory is the project directory.

The project directory goes first on ``sys.path``, so the user's absolute imports of their own package work. A
module below it has its ordinary name (``wsgi``, ``flaskr``). The project's own ``__init__.py`` is imported under
the directory's name (``/project/userapp`` is ``userapp``), the name pytest gives it too, so it is imported once;
``USERAPP`` overrides that name, and ``userapp`` stands in for a directory name that is not an identifier
(``hello-app``) or names another module.

Which object is the app (:func:`find_app`), in the imported module: with a ``name`` from ``FLASK_APP``, Flask's
``find_app_by_string``; else Flask's ``find_best_app`` (``app``, ``application``, the single ``Flask`` instance, a
``create_app``/``make_app`` factory, in that order) when the module has a Flask instance or a factory; else None,
and the stack makes the app for the module's ``blueprint``/``blueprints``.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import re
import sys
from dataclasses import dataclass
from types import ModuleType

from flask import Flask
from flask.cli import NoAppException, find_app_by_string, find_best_app, prepare_import
from oneline import first_line

from .exceptions import UserAppImportError

#: Directories directly below the project that never hold the app.
NOT_APP_PACKAGES = frozenset({"tests", "test", "docs", "doc", "migrations", "instance", "build", "dist", "venv",
                              "node_modules", "site-packages", "examples"})
#: Flask's default modules, tried in this order (``flask run`` without ``--app``).
DEFAULT_MODULES = ("wsgi", "app")
#: Module name of a project package whose directory name cannot serve (the original Appsody stack's name).
FALLBACK_NAME = "userapp"


@dataclass(frozen=True)
class AppLocation:
    """Where the user's app is.

    Attributes:
        module (str): the module to import (``flaskr``, ``wsgi``, ``userapp``).
        attr (str | None): the app's name or factory call in the module (``FLASK_APP``'s part after ``:``).
        project_dir (str | None): the project directory (absolute), on ``sys.path`` first; None: ``sys.path`` only.
        file (str | None): the module's file (``__init__.py`` of a package), absolute, when known before import.
        package_dir (str | None): the directory of the module's own code (its package directory, else the
            directory of its file); the user's ``templates/``, ``static/`` and tracebacks are looked for there.
        root_package (bool): the module is the project directory itself (loaded from its ``__init__.py``).
    """

    module: str
    attr: str | None
    project_dir: str | None
    file: str | None
    package_dir: str | None
    root_package: bool = False

    def describe(self) -> str:
        """``module`` or ``module:attr``, as ``FLASK_APP`` would say it."""
        return f"{self.module}:{self.attr}" if self.attr else self.module


def _packages_below(project: str) -> list[str]:
    found = []
    for name in sorted(os.listdir(project)):
        if name.startswith((".", "_")) or name in NOT_APP_PACKAGES or not name.isidentifier():
            continue
        if os.path.isfile(os.path.join(project, name, "__init__.py")):
            found.append(name)
    return found


def _root_package_name(project: str, override: str | None) -> str:
    """The module name of the project's own ``__init__.py``: ``override``, else the directory's name unless that
    is not an identifier or names another module (``flask``, an installed ``app``), else ``FALLBACK_NAME``."""
    if override:
        return override
    name = os.path.basename(project)
    if not name.isidentifier():
        return FALLBACK_NAME
    init = os.path.join(project, "__init__.py")
    existing = sys.modules.get(name)
    if existing is not None:
        return name if _same_file(getattr(existing, "__file__", None), init) else FALLBACK_NAME
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        spec = None
    return name if spec is None or _same_file(spec.origin, init) else FALLBACK_NAME


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _same_file(a: str | None, b: str) -> bool:
    try:
        return bool(a) and os.path.samefile(a, b)  # type: ignore[arg-type]
    except OSError:
        return False


def locate(app: str | None, project_dir: str | None, module_name: str | None) -> AppLocation:
    """Find the user's app without importing it (see the module docstring for the order).

    Args:
        app: ``FLASK_APP``'s value, or None.
        project_dir: the project directory, or None for ``import module_name`` from ``sys.path``.
        module_name: ``USERAPP``: the module name on ``sys.path`` (no project directory), or the name for the
            project's own ``__init__.py``; None for the default.

    Raises:
        UserAppImportError: the directory does not exist, holds no app, or holds several candidate packages.
    """
    if project_dir is None and not app and (module_name or _importable(FALLBACK_NAME)):
        name = module_name or FALLBACK_NAME
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError) as exc:
            raise UserAppImportError(f"{name} not found: {exc}; set STACK_USERAPP_DIR to your project directory")
        if spec is None or not spec.origin or spec.origin in ("built-in", "frozen"):
            raise UserAppImportError(f"{name} not found: no module named {name!r} on sys.path; set "
                                     f"STACK_USERAPP_DIR to your project directory")
        origin = os.path.abspath(spec.origin)
        return AppLocation(name, None, None, origin, os.path.dirname(origin))
    project = os.path.abspath(project_dir or os.getcwd())
    if not os.path.isdir(project):
        raise UserAppImportError(f"project directory {project} does not exist (STACK_USERAPP_DIR)", project)
    if app:
        return _from_flask_app(app, project)
    for name in DEFAULT_MODULES:
        path = os.path.join(project, name + ".py")
        if os.path.isfile(path) and not os.path.isfile(os.path.join(project, "__init__.py")):
            return AppLocation(name, None, project, path, project)
    init = os.path.join(project, "__init__.py")
    if os.path.isfile(init):
        return AppLocation(_root_package_name(project, module_name), None, project, init, project, True)
    packages = _packages_below(project)
    if len(packages) == 1:
        directory = os.path.join(project, packages[0])
        return AppLocation(packages[0], None, project, os.path.join(directory, "__init__.py"), directory)
    if packages:
        raise UserAppImportError(f"{project} holds several packages ({', '.join(packages)}); say which is the "
                                 f"app with --app NAME (FLASK_APP)", project)
    raise UserAppImportError(f"no Flask app found in {project}: write app.py or wsgi.py (app = Flask(__name__) or "
                             f"create_app()), a package, or an __init__.py with a Blueprint; or pass --app "
                             f"(FLASK_APP)", project)


def _from_flask_app(value: str, project: str) -> AppLocation:
    """``FLASK_APP`` relative to ``project``, split as ``flask.cli.ScriptInfo.load_app`` splits it."""
    path, attr = (re.split(r":(?![\\/])", value, maxsplit=1) + [""])[:2]  # Flask's own split
    if not path:
        raise UserAppImportError(f"FLASK_APP={value!r} names no module; use module, module:name or "
                                 f"module:create_app()")
    target = os.path.join(project, path)
    module = prepare_import(target)  # Flask's own: dotted name of a file or package; its directory goes on sys.path
    file = None
    base = os.path.splitext(os.path.realpath(target))[0] if target.endswith(".py") else os.path.realpath(target)
    for candidate in (os.path.join(base, "__init__.py"), base + ".py"):
        if os.path.isfile(candidate):
            file = candidate
            break
    if project not in sys.path:
        sys.path.insert(0, project)
    package_dir = os.path.dirname(file) if file else project
    return AppLocation(module, attr or None, project, file, package_dir)


def import_module(location: AppLocation) -> ModuleType:
    """Import the user's module (or reuse it when this process imported it already from the same file).

    A module of that name from another file (an earlier project in the same process) is dropped from
    ``sys.modules`` with its submodules first.

    Raises:
        UserAppImportError: the module raised while importing: one line with file and line.
    """
    if location.project_dir and location.project_dir not in sys.path:
        sys.path.insert(0, location.project_dir)
    name = location.module
    existing = sys.modules.get(name)
    if existing is not None:
        if location.file is None or _same_file(getattr(existing, "__file__", None), location.file):
            return existing
        _purge(name)
    try:
        if location.root_package:
            spec = importlib.util.spec_from_file_location(name, location.file,
                                                          submodule_search_locations=[location.project_dir])
            if spec is None or spec.loader is None:
                raise UserAppImportError(f"{name} cannot be loaded from {location.file}", location.file)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(name)
    except UserAppImportError:
        _purge(name)
        raise
    except Exception as exc:  # noqa: BLE001 - any error in user code becomes one actionable line
        _purge(name)
        raise UserAppImportError.from_exception(f"{name} failed to import", exc, location.project_dir or
                                                location.package_dir, name) from exc
    return module


def _purge(name: str) -> None:
    for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
        del sys.modules[key]


def has_own_app(module: ModuleType) -> bool:
    """True when ``module`` holds a Flask app or an app factory (``create_app``/``make_app``), i.e. Flask's
    ``find_best_app`` has something to find."""
    namespace = vars(module)
    if any(isinstance(value, Flask) for value in list(namespace.values())):
        return True
    return any(inspect.isfunction(namespace.get(name)) for name in ("create_app", "make_app"))


def find_app(module: ModuleType, location: AppLocation) -> Flask | None:
    """The user's Flask app in ``module`` (a factory is called, with no arguments or ``FLASK_APP``'s), or None
    when the module has no app and no factory (the Blueprint shape: the stack makes the app).

    Raises:
        UserAppImportError: ``FLASK_APP``'s name is not in the module or not an app, several apps and no
            ``app``, a factory that needs arguments, or a factory that raised (one line, file and line).
    """
    if location.attr is None and not has_own_app(module):
        return None
    try:
        if location.attr is not None:
            return find_app_by_string(module, location.attr)
        return find_best_app(module)
    except NoAppException as exc:
        first = first_line(exc, "no Flask app found")
        raise UserAppImportError(f"{location.describe()}: {first}", location.file) from None
    except Exception as exc:  # noqa: BLE001 - the user's factory raised
        raise UserAppImportError.from_exception(f"{location.describe()}: the app factory failed", exc,
                                                location.project_dir or location.package_dir,
                                                location.module) from exc
