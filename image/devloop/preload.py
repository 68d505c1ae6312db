"""Preloading for faster reloads: the third-party modules an app process imported, imported by the warm loop too.

An app process (:mod:`devloop.child`) lists, a second after it starts serving and again when it stops, every
module it has (those it inherited from the loop, those the loop preloaded, those its app imported), leaving out
the user's package (and any file inside the project), the stack's own and the debugger's
(:func:`third_party_modules`), as JSON in
:func:`listing_path` (in the deps dir, so the list outlives a restart of the loop), and writes one byte to a
pipe. The loop (:mod:`devloop.server`) then imports those it has not (:func:`import_listed`) and does the
first-use work of the libraries among them that do some (:func:`warm_up`: pydantic's), so the next app
process forks with them loaded: a save of an app using SQLAlchemy or pydantic is served about as fast as one of
the bare template. The project's own modules are never imported by the loop, so every save is seen.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from .errors import StopRequested
from .logs import get_logger

#: Seconds after it starts serving that an app process lists its third-party modules for the loop.
REPORT_AFTER_SECONDS = 1.0
#: Top-level modules never preloaded: the stack's own, the debugger's (started per app process), mains.
NOT_PRELOADED = ("server", "devloop", "debugpy", "pydevd", "_pydev", "_pydevd", "__main__", "__mp_main__")

log = get_logger()
#: Names :func:`import_listed` skipped (the project's, or failing to import): not tried again by this loop.
_skipped: set[str] = set()


def listing_path(project: Path, deps_dir: Path | None) -> Path:
    """Return the file listing the modules to preload for ``project``: in ``deps_dir``, else in the temporary
    directory."""
    tag = hashlib.sha256(str(project.resolve()).encode()).hexdigest()[:12]
    return (deps_dir or Path(tempfile.gettempdir())) / f"preload-{tag}.json"


def _excluded(name: str, userapp: str) -> bool:
    return (name == userapp or name.startswith(userapp + ".") or name.split(".")[0] in NOT_PRELOADED
            or name.endswith(".__main__"))


def third_party_modules(project: Path, userapp: str) -> list[str]:
    """Return the names of the modules in ``sys.modules`` that are neither the project's own (the package
    ``userapp`` and its submodules, or a file under ``project``) nor the stack's or the debugger's
    (:data:`NOT_PRELOADED`), in import order. The whole list, not only what this process added: the next
    loop starts from nothing."""
    root = str(project.resolve()) + os.sep
    names = []
    for name, module in list(sys.modules.items()):
        if _excluded(name, userapp):
            continue
        filename = getattr(module, "__file__", None)
        if filename and not os.path.abspath(filename).startswith(root):
            names.append(name)
    return names


#: How many modules this process had when it last reported (it reports again only when it has more).
_reported = 0


def report(project: Path, userapp: str, path: Path | None, fd: int | None) -> None:
    """In an app process: write :func:`third_party_modules` to ``path`` and one byte to ``fd``, unless no module
    was imported since the last report (best effort: a deps dir that cannot be written only makes reloads
    slower)."""
    global _reported
    if path is None or fd is None or len(sys.modules) == _reported:
        return
    _reported = len(sys.modules)
    try:
        names = third_party_modules(project, userapp)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(names), encoding="utf-8")
        os.replace(tmp, path)
        os.write(fd, b"p")
    except OSError as exc:
        log.debug("could not list the app's modules for the loop: %s", exc)


def import_listed(path: Path | None, project: Path, userapp: str) -> int:
    """In the loop: import the modules listed in ``path`` that are not imported yet, skipping the project's
    own (by name, and by where ``importlib.util.find_spec`` finds them) and any that fails to import; return
    how many were imported (one INFO line says so when any)."""
    try:
        names = json.loads(path.read_text(encoding="utf-8")) if path is not None else []
    except (OSError, ValueError):
        return 0
    root = str(project.resolve()) + os.sep
    started, count = time.monotonic(), 0
    for name in names if isinstance(names, list) else []:
        if not isinstance(name, str) or name in sys.modules or name in _skipped or _excluded(name, userapp):
            continue
        try:
            found = importlib.util.find_spec(name)
            origin = found.origin if found is not None else None
            if not origin or os.path.abspath(origin).startswith(root):
                _skipped.add(name)
                continue
            importlib.import_module(name)
            count += 1
        except (KeyboardInterrupt, StopRequested):
            raise
        except BaseException as exc:  # any failure (even SystemExit) only makes reloads slower
            _skipped.add(name)
            log.debug("not preloading %s: %s", name, exc)
    if count:
        warm_up()
        log.info("preloaded %d modules your app imports, for faster reloads (%.2f s)", count,
                 time.monotonic() - started)
    return count


def _warm_pydantic(pydantic) -> None:
    """pydantic discovers its plugins (an entry-point scan of every installed package) and loads its schema
    machinery when the first model class is made, 15-25 ms in every app process otherwise: make one here."""
    type("StackWarmUp", (pydantic.BaseModel,), {"__module__": __name__, "__annotations__": {"value": int}})


#: First-use work of libraries, done once in the loop (public APIs only) when the app uses the library: the
#: top-level module's name -> a function taking that module. Nothing here may touch the project's code.
WARM_UPS = {"pydantic": _warm_pydantic}
_warmed: set[str] = set()


def warm_up() -> list[str]:
    """Run the :data:`WARM_UPS` of the libraries now imported in the loop, each once per loop; return their
    names. A warm-up that fails is skipped (one DEBUG line): it only makes reloads slower."""
    done = []
    for name, warm in WARM_UPS.items():
        module = sys.modules.get(name)
        if module is None or name in _warmed:
            continue
        _warmed.add(name)
        try:
            warm(module)
            done.append(name)
        except Exception as exc:  # noqa: BLE001 - a library's first use may fail here for reasons of its own
            log.debug("could not warm up %s: %s", name, exc)
    return done
