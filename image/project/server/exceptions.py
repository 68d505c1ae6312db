"""The exceptions the stack runtime raises on purpose; this module imports nothing of Flask.

Every one derives from ``StackError`` and its ``str()`` is one actionable line (what failed, where, what to do):

    StackError
    |-- SettingsError (also a stacksettings.SettingsError, a ValueError): a stack setting has an unusable value.
    |-- UserAppImportError: the user's app could not be found, imported or initialised (file:line when known).
    |   `-- RouteConflictError: the user's app defines a URL the stack reserves (``/metrics``, ``/health...``).
    `-- DebuggerError (also a RuntimeError): the remote debugger could not be started.
"""

from __future__ import annotations

import os
import traceback
from pathlib import Path
from types import TracebackType

import stacksettings
from oneline import first_line


class StackError(Exception):
    """Base class of the runtime's own errors; ``str(err)`` is one line."""


class SettingsError(StackError, stacksettings.SettingsError):
    """A stack setting has a value that cannot be used (message names the setting and the accepted values); the
    registry's parsers raise its base, ``stacksettings.SettingsError`` (a ValueError), which the runtime turns
    into this one."""


class UserAppImportError(StackError):
    """The user's package failed to load.

    ``str(err)`` is ``summary``, one line such as
    ``userapp failed to import: /p/__init__.py:7: SyntaxError: invalid syntax``.

    Attributes:
        summary (str): the one-line message.
        filename (str | None): the file at fault (absolute path) when known.
        lineno (int | None): the line in ``filename`` (1-based) when known.
    """

    def __init__(self, summary: str, filename: str | None = None, lineno: int | None = None):
        super().__init__(summary)
        self.summary = summary
        self.filename = filename
        self.lineno = lineno

    @classmethod
    def from_exception(
        cls, what: str, exc: BaseException, user_dir: str | None, module_name: str = "userapp"
    ) -> "UserAppImportError":
        """Build the one-line error for exception ``exc`` raised while ``what`` ran (e.g. "userapp failed to import").

        The location is the SyntaxError's own file/line, else the innermost traceback frame inside ``user_dir``,
        else the innermost frame.
        """
        filename, lineno = _locate(exc, user_dir)
        if isinstance(exc, SyntaxError):
            message = exc.msg or "invalid syntax"
        else:
            message = first_line(exc)
        if len(message) > 300:
            message = message[:297] + "..."
        hint = ""
        if isinstance(exc, ModuleNotFoundError) and exc.name:
            hint = _missing_module_hint(exc.name.split(".")[0], user_dir, module_name)
        where = f"{filename}:{lineno}: " if filename else ""
        kind = type(exc).__name__
        text = f"{what}: {where}{kind}: {message}{hint}" if message else f"{what}: {where}{kind}{hint}"
        return cls(text, filename, lineno)


def _missing_module_hint(top: str, user_dir: str | None, module_name: str) -> str:
    """What to do about ``No module named TOP``: nothing to add for a submodule of the user's own module; for a
    name of the project's own code, how to import it; else, add the package to the file the project declares its
    packages in (:func:`stackdeps.detect.hint`: requirements.txt, pyproject.toml, Pipfile)."""
    if top == module_name.split(".")[0]:
        return ""
    own = user_dir is not None and (top == os.path.basename(os.path.abspath(user_dir))
                                    or os.path.exists(os.path.join(user_dir, top))
                                    or os.path.exists(os.path.join(user_dir, top + ".py")))
    if own:
        return (f" ({top!r} is your project's own code, imported by the stack as {module_name!r}: import it "
                f"relatively, from . import ..., or as {module_name!r}; it does not belong in {_declaration(user_dir)})")
    return f" (add the package to your project's {_declaration(user_dir)})"


def _declaration(user_dir: str | None) -> str:
    """Return the file the project declares its packages in, for the hint (requirements.txt when unknown)."""
    try:
        from stackdeps.detect import hint
    except ImportError:  # the runtime without the stack's dependency tools: name the most common file
        return "requirements.txt"
    return hint(Path(user_dir) if user_dir else None)


class RouteConflictError(UserAppImportError):
    """The user's package registered a URL the stack reserves (``/metrics``, ``/health``, ``/health/*``)."""


class DebuggerError(StackError, RuntimeError):
    """The remote debugger could not start (not installed, unknown kind, or the port is taken)."""


def _is_under(path: str, directory: str) -> bool:
    try:
        return os.path.commonpath([os.path.abspath(path), os.path.abspath(directory)]) == os.path.abspath(directory)
    except ValueError:
        return False


def _locate(exc: BaseException, user_dir: str | None) -> tuple[str | None, int | None]:
    if isinstance(exc, SyntaxError) and exc.filename and not exc.filename.startswith("<"):
        return os.path.abspath(exc.filename), exc.lineno
    tb: TracebackType | None = exc.__traceback__
    frames = [f for f in traceback.extract_tb(tb) if not f.filename.startswith("<frozen")] if tb else []
    if user_dir:
        mine = [f for f in frames if _is_under(f.filename, user_dir)]
        if mine:
            return os.path.abspath(mine[-1].filename), mine[-1].lineno
    if frames:
        return os.path.abspath(frames[-1].filename), frames[-1].lineno
    return None, None
