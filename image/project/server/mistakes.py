"""Clients' mistakes in the log: one WARNING line per kind per minute, never ERROR.

A malformed request (a bad chunked body, a broken request line, a body cut short) is the client's mistake, not the
server's: it is worth a line, but a client repeating it must not flood the log or page anyone. ``client_mistake``
logs the first mistake of a kind at WARNING, the rest of that kind within ``WINDOW`` seconds at DEBUG, and the next
WARNING of the kind after the window says how many it held back. Kinds are counted per process (each worker has its
own minute). No Flask import: the serving layer uses it too.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from typing import Any, Callable

#: Seconds during which a kind of mistake is logged at WARNING at most once.
WINDOW = 60.0
#: Kinds remembered at once (the oldest is forgotten beyond it): bounds memory whatever clients send.
MAX_KINDS = 256


class MistakeLog:
    """Rate limit of WARNING lines by kind (see the module docstring).

    Args:
        window: seconds during which a kind is logged at WARNING at most once.
        clock: monotonic time source, seconds (tests pass their own).
    """

    def __init__(self, window: float = WINDOW, clock: Callable[[], float] = time.monotonic):
        self.window = window
        self.clock = clock
        self._lock = threading.Lock()
        self._kinds: OrderedDict[str, list[float | int]] = OrderedDict()  # kind -> [last WARNING time, held back]

    def log(self, logger: logging.Logger, kind: str, msg: str, *args: Any, **kwargs: Any) -> bool:
        """Log ``msg % args`` on ``logger``: at WARNING when no mistake of ``kind`` was logged so in the last window
        (returns True), else at DEBUG (returns False). ``kwargs`` go to ``Logger.log`` (``extra=``)."""
        now = self.clock()
        with self._lock:
            entry = self._kinds.get(kind)
            if entry is not None and now - entry[0] < self.window:
                entry[1] += 1
                held = -1
            else:
                held = int(entry[1]) if entry is not None else 0
                self._kinds[kind] = [now, 0]
                self._kinds.move_to_end(kind)
                while len(self._kinds) > MAX_KINDS:
                    self._kinds.popitem(last=False)
        if held < 0:
            logger.log(logging.DEBUG, msg, *args, **kwargs)
            return False
        if held:
            msg += " (%d more like it in the last %.0f s, logged at DEBUG)"
            args = (*args, held, self.window)
        logger.log(logging.WARNING, msg, *args, **kwargs)
        return True


_MISTAKES = MistakeLog()


def client_mistake(logger: logging.Logger, kind: str, msg: str, *args: Any, **kwargs: Any) -> bool:
    """Log a client's mistake of ``kind`` through the process-wide :class:`MistakeLog` (WARNING at most once per
    kind per minute, DEBUG otherwise); return True when it was logged at WARNING."""
    return _MISTAKES.log(logger, kind, msg, *args, **kwargs)
