"""The python-flask stack's runtime: a Flask extension (``Stack``) and the app factory ``create_app``, which finds
the user's app as ``flask run`` does (``server.discovery``) and applies the stack to it.

Importing ``server`` (or a module of it such as ``server.logs``) loads no third-party package: ``Stack``,
``create_app`` and ``app`` are imported on first access (PEP 562), so the production supervisor (``serving``) may
use the runtime's Flask-free modules without Flask, flasgger or prometheus_client in its process.

``server.app`` is the WSGI app for ``gunicorn server:app`` and ``flask --app server run``: created by
``create_app()`` on first access (PEP 562 module ``__getattr__``) and cached; ``import server`` alone imports no
user code. While ``create_app`` imports the user's module, ``server.app`` is the app the stack makes for it, so
Appsody-style code (``from server import app`` then ``@app.route``) works unchanged. If the user's app fails to
load when ``server.app`` is first accessed, one line is logged (no traceback) and ``SystemExit(4)`` is raised:
gunicorn's APP_LOAD_ERROR, which stops its arbiter instead of re-spawning workers.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from .version import __version__

__all__ = ["Stack", "__version__", "app", "create_app"]

APP_LOAD_ERROR = 4
_lock = threading.RLock()
_app: Any = None


def _load_app() -> Any:
    global _app
    from .factory import app_under_construction, create_app

    building = app_under_construction()
    if building is not None:
        return building
    with _lock:
        if _app is None:
            from .exceptions import StackError

            try:
                _app = create_app()
            except StackError as exc:
                from .logs import configure_logging

                configure_logging()
                logging.getLogger("server").error("%s", exc)
                raise SystemExit(APP_LOAD_ERROR) from None
        return _app


def __getattr__(name: str) -> Any:
    if name == "app":
        return _load_app()
    if name == "create_app":
        from .factory import create_app

        return create_app
    if name == "Stack":
        from .stack import Stack

        return Stack
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | {"app", "create_app", "Stack"})
