"""Logging for the dev loop's own messages (logger ``devloop``), in the runtime's format.

:func:`configure` sets up the root logger with the runtime's ``server.logs.configure_logging`` (one
handler, stdout), so the loop's lines and the served app's look the same and are ordered in one stream:

* ``LOG_FORMAT=text`` (default): ``2024-05-01 12:00:00 [INFO] message`` (local time);
* ``LOG_FORMAT=json``: one JSON object per line (``time``, ``level``, ``logger`` = ``devloop``, ``message``).

``LOG_LEVEL`` (default INFO) applies to the loop's lines too. An unusable ``LOG_LEVEL``/``LOG_FORMAT`` falls
back to INFO/text here; ``run``/``debug``/``test`` then stop with the runtime's one-line settings error. The
app process inherits the handler through fork (logging is configured once per process, by its entry: here the
loop; ``Stack.init_app`` leaves it as it is).
The line format is defined once, in the runtime (``server.logs.make_formatter``). When the runtime is not
importable (wrong ``PYTHONPATH``), the "cannot import server" error is written as ``devloop: message``.
"""

from __future__ import annotations

import logging
import sys

LOGGER_NAME = "devloop"


def get_logger() -> logging.Logger:
    """Return the ``devloop`` logger (it propagates to the root logger that :func:`configure` sets up)."""
    return logging.getLogger(LOGGER_NAME)


def _fallback_configure(level: str) -> logging.Handler:
    """Stand-in for ``server.logs.configure_logging`` when the runtime cannot be imported: the bare message on
    stdout (the line format is the runtime's alone; the one line written this way says the runtime is missing)."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)
    return handler


def _setting(name: str, fallback: str) -> str:
    """The registry's value of ``name``, or ``fallback`` when it is unusable (the settings check reports it)."""
    try:
        import stacksettings

        return stacksettings.value(name)
    except (ImportError, ValueError):  # stacksettings.SettingsError is a ValueError
        return fallback


def configure() -> None:
    """Configure logging from ``LOG_LEVEL`` and ``LOG_FORMAT`` (see the module docstring). Idempotent."""
    level, fmt = _setting("LOG_LEVEL", "INFO"), _setting("LOG_FORMAT", "text")
    logger = get_logger()
    for handler in list(logger.handlers):  # a handler of its own would print the line twice
        logger.removeHandler(handler)
    logger.propagate = True
    logger.setLevel(logging.NOTSET)
    try:
        from server.logs import configure_logging, mark_process_configured
    except Exception:  # reported later, in this format, by the step that needs the runtime
        if not getattr(configure, "_fallback", None):
            configure._fallback = _fallback_configure(level)  # type: ignore[attr-defined]
    else:
        configure_logging(level, fmt)  # the process's entry: also what the forked app processes log with
        mark_process_configured()
