"""The apps the stack makes itself: ``StackFlask`` for the Blueprint and Appsody shapes (and for ``USERAPP=""``).

``StackGlobals`` is the ``flask.g`` class of every app the stack serves (``Stack.init_app`` gives it to a user's app
too, unless that app has a ``g`` class of its own): ``g.request_id`` reads the request id lazily, so nothing is
written to ``g`` per request.
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask
from flask.ctx import _AppCtxGlobals

from .discovery import AppLocation
from .observe import current_request_id

SERVER_DIR = os.path.dirname(os.path.abspath(__file__))


class StackGlobals(_AppCtxGlobals):
    """``flask.g`` of the stack's apps (``Flask.app_ctx_globals_class``): ``g.request_id`` is the request id of the
    request being served (or None outside a request) unless the app set ``g.request_id`` itself."""

    def __getattr__(self, name: str) -> Any:
        if name == "request_id":
            return current_request_id()
        return super().__getattr__(name)


class StackFlask(Flask):
    """The stack's app class: ``Flask`` whose ``g`` offers ``g.request_id`` (``StackGlobals``)."""

    app_ctx_globals_class = StackGlobals


def new_stack_app(location: AppLocation | None) -> StackFlask:
    """A new app for the user's module at ``location``: named after the module, rooted in its package directory
    (its ``templates/`` and ``static/`` are the app's), instance folder beside them. ``None``: the stack's
    endpoints only, rooted in the runtime."""
    if location is None or location.package_dir is None:
        return StackFlask("server", root_path=SERVER_DIR, static_folder=None, template_folder=None,
                          instance_path=os.path.join(SERVER_DIR, "instance"))
    root = location.package_dir
    static = "static" if os.path.isdir(os.path.join(root, "static")) else None
    return StackFlask(location.module, root_path=root, static_folder=static, template_folder="templates",
                      instance_path=os.path.join(root, "instance"))
