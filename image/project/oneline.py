"""An exception (or a tool's message) as one line: what every layer's one-line errors are made of.

Standard library only, beside ``stacksettings``: the runtime (``server``), the serving layer, the dev loop and
the CLI (``flask_stack.paths.import_runtime("oneline")``) import it, so "the first line of an exception, cut short"
is written once.
"""

from __future__ import annotations

LIMIT = 200  # characters: the longest reason a one-line message quotes


def first_line(text: object, default: str = "") -> str:
    """The first non-blank line of ``str(text)`` (an exception's message, a tool's output), stripped; ``default``
    when there is none."""
    for line in str(text).splitlines():
        if line.strip():
            return line.strip()
    return default


def reason(exc: BaseException, limit: int = LIMIT) -> str:
    """``"<ExceptionType>: <first line of its message>"`` (the type alone when the message is empty), cut at
    ``limit`` characters with ``...``."""
    line = first_line(exc)
    text = f"{type(exc).__name__}: {line}" if line else type(exc).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."
