"""devloop: the python-flask stack's development loop (install, run, watch, reload, debug, test).

The development image's entrypoint and the ``flask-stack`` CLI's local engine both run it, with
the stack's ``image/project`` (runtime package ``server``) and ``image`` (this package) on
``PYTHONPATH``, in the environment holding the runtime's packages::

    python -m devloop run   [--project DIR] [--host H] [--port N] [--deps-dir DIR] [--no-watch]
    python -m devloop debug [same options]
    python -m devloop test  [--project DIR] [--deps-dir DIR] [--junitxml PATH] [--watch] [-- PYTEST_ARGS]
    python -m devloop deps  [--project DIR] [--deps-dir DIR]

Options and their environment defaults:

* ``--project DIR``: the user's project directory; the runtime finds the app there as ``flask run`` does
  (``server.discovery``; ``FLASK_APP`` says where when it cannot).
  Default ``STACK_USERAPP_DIR``, else ``$APPSODY_PROJECT_DIR/userapp``, else the current directory.
  The loop sets ``STACK_USERAPP_DIR`` to it for the runtime.
* ``--host H``: default ``STACK_HOST``, else ``0.0.0.0`` in a container, ``127.0.0.1`` elsewhere.
* ``--port N``: default ``PORT``, else 8080. In use: one line, exit 1.
* ``--deps-dir DIR``: default ``APPSODY_DEPS``. The project's declared packages are installed there
  (``pip install --target``) and put first on ``sys.path``; without it they are installed into the
  running interpreter's environment. See :mod:`devloop.deps`.
* ``--no-watch``: serve without reloading.
* debug: ``STACK_DEBUG_PORT`` (5678), ``STACK_DEBUG_WAIT`` (0; 1 = wait for the client before
  serving), ``STACK_DEBUGGER`` (debugpy), ``STACK_DEBUG_HOST`` (the debugger's interface; default: the app's).
* ``STACK_SHOW_URLS`` (1): 0 = do not log the app/health/metrics/API docs URLs (once the first app process
  answers; the app's is the route :mod:`devloop.approute` picks, as ``flask-stack run`` does) and the debugger
  port (at start) (``flask-stack run`` prints them itself, with the host's ports).
* ``LOG_LEVEL`` (INFO), ``LOG_FORMAT`` (text|json): as the runtime's; see :mod:`devloop.logs`.

``run`` serves the app with Werkzeug's threaded server from a process forked per save off a warm
loop that keeps the listening socket (:mod:`devloop.server`, :mod:`devloop.child`); a save that breaks
the import serves a one-line 500 (and ``/health`` 503 DOWN) until the next save
(:mod:`devloop.errorapp`). ``debug`` is ``run`` with ``STACK_DEBUG=1``: Flask debug mode, the Werkzeug
debugger, and ``server.debug.start_debugger`` in each app process, behind the loop's own debug port
(:mod:`devloop.debuggate`). ``test`` runs pytest once with the
stack's checks and the project's ``tests/`` and exits with pytest's status (:mod:`devloop.testcmd`).
``deps`` installs the project's declared packages once and exits 0 (the Appsody ``APPSODY_PREP`` step).
SIGINT or SIGTERM stops the app process and exits 0. The loop logs to stdout in the runtime's format
(``2024-05-01 12:00:00 [INFO] message``, or JSON); an expected failure is one ERROR line and exit 1.
"""

__all__ = ["__version__"]



def __getattr__(name: str) -> str:
    """``__version__``: the stack's, declared once in the runtime's ``image/project/stacksettings`` (read on
    first use, so ``python -m devloop`` can say in one line that the runtime is not on ``PYTHONPATH``)."""
    if name == "__version__":
        from stacksettings import __version__

        return __version__
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
