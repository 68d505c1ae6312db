"""Logging to stdout (the access line itself: ``server.access_log``).

Formats (LOG_FORMAT):
    text (default): ``2024-05-01 12:00:00 [INFO] message`` (local time, ``logging`` level names).
    json: one JSON object per line: ``time`` (ISO 8601 with milliseconds and UTC offset), ``level``, ``logger``,
        ``message``, any ``extra={...}`` fields of the record, and ``traceback`` when an exception was logged.

LOG_LEVEL sets the root logger's level. ``configure_logging`` installs one handler on the root logger (idempotent:
calling it again reconfigures the same handler); ``configure_process_logging`` calls it once per process, for the
entry that owns the process, and ``adopt_logging`` (``Stack.init_app``) only where nobody configured logging. Werkzeug's own per-request lines are dropped (the stack's access
line replaces them); its other messages (e.g. "Running on ...") stay.

Buffered writing (STACK_LOG_FLUSH_SECONDS > 0; ``serve`` sets 0.25 in production): INFO and DEBUG lines wait in
the process for at most that many seconds and go to stdout in one write per batch, not one write (and one
wake-up of the container runtime's log reader) per request. A WARNING or worse line writes everything pending,
then itself, at once, so lines keep their order and errors are never delayed. Pending lines are written at
interpreter exit (``atexit``) and by ``flush_pending_lines``; a process killed with SIGKILL loses at most the
last interval's INFO lines. 0 (the default) writes and flushes every line as it is logged.
"""

from __future__ import annotations

import atexit
import collections
import json
import logging
import os
import sys
import threading
import weakref
from datetime import datetime, timezone
from typing import Any

ACCESS_LOGGER = "server.access"
TEXT_FORMAT = "%(asctime)s [%(levelname)s] %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
#: Pending lines that trigger a write before the interval is up (bounds memory: about 100 KiB of text lines).
MAX_PENDING_LINES = 1000

# Attributes every LogRecord has; anything else came from ``extra=`` and goes into the JSON object.
_STANDARD = set(vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None))) | {"message", "asctime", "taskName"}


class StdoutHandler(logging.StreamHandler):
    """A StreamHandler writing to whatever ``sys.stdout`` is at emit time (works under pytest's capture).

    ``stack_format`` ("text" or "json") and ``stack_formatter`` record what ``configure_logging`` installed, so
    ``server.access_log`` can tell whether the handler still formats records the stack's way. ``flush_seconds`` > 0
    buffers lines below WARNING for at most that many seconds (see the module docstring); a daemon thread
    ("log-flush", one per process, started on the first buffered line) writes them.
    """

    def __init__(self) -> None:
        super().__init__(sys.stdout)
        self.stack_format = "text"
        self.stack_formatter: logging.Formatter | None = None
        self.flush_seconds = 0.0
        self._pending: collections.deque[str] = collections.deque()
        self._write_lock = threading.Lock()
        self._flusher: threading.Thread | None = None
        self._wake = threading.Event()
        _BUFFERED.add(self)

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stdout

    @stream.setter
    def stream(self, value: Any) -> None:  # StreamHandler.__init__ assigns it; always follow sys.stdout instead
        pass

    def handle(self, record: logging.LogRecord) -> bool:
        """``logging.Handler.handle``; a WARNING or worse record, when lines are buffered, first has what other
        layers hold for this handler queued (``before_urgent_write``: the request batches' access lines), outside
        the handler's lock, so the warning comes after them."""
        if record.levelno >= logging.WARNING and self.flush_seconds > 0:
            for hook in before_urgent_write:
                hook()
        return super().handle(record)

    def emit(self, record: logging.LogRecord) -> None:
        """Write the record's line now (``flush_seconds`` 0, or WARNING and worse) or queue it."""
        if self.flush_seconds <= 0:
            super().emit(record)
            return
        try:
            line = self.format(record) + self.terminator
        except RecursionError:
            raise
        except Exception:  # noqa: BLE001 - as StreamHandler.emit: report on stderr, never fail the caller
            self.handleError(record)
            return
        self.queue_line(line, urgent=record.levelno >= logging.WARNING)

    def queue_line(self, line: str, urgent: bool = False) -> None:
        """Queue one complete line (with its newline); write all pending lines now when ``urgent``, when
        ``MAX_PENDING_LINES`` are pending, or when buffering is off. Safe from any thread without the handler lock
        (``deque.append`` is atomic)."""
        pending = self._pending
        pending.append(line)
        if urgent or self.flush_seconds <= 0 or len(pending) >= MAX_PENDING_LINES:
            self.write_pending()
        elif self._flusher is None:
            self._start_flusher()

    def write_pending(self) -> None:
        """Write every pending line to stdout in one write, in order. Never raises: a failed write is reported
        on stderr in one line and the lines are dropped (as logging drops a record it cannot emit)."""
        with self._write_lock:
            pending = self._pending
            if not pending:
                return
            popleft = pending.popleft
            lines = [popleft() for _ in range(len(pending))]  # lines queued meanwhile wait for the next write
            try:
                stream = sys.stdout
                stream.write("".join(lines))
                stream.flush()
            except Exception as exc:  # noqa: BLE001 - logging must never take the process down
                try:
                    sys.stderr.write(f"server.logs: could not write {len(lines)} log lines to stdout: {exc}\n")
                except Exception:  # noqa: BLE001
                    pass

    def flush(self) -> None:
        """Write pending lines, then flush the stream (``logging.shutdown`` and ``Handler.flush`` callers)."""
        self.write_pending()
        super().flush()

    def _start_flusher(self) -> None:
        with self._write_lock:
            if self._flusher is not None:
                return
            self._wake.clear()  # a wake-up for an earlier interval change must not cut this thread's first wait
            self._flusher = threading.Thread(target=self._flush_every_interval, name="log-flush", daemon=True)
            self._flusher.start()

    def _flush_every_interval(self) -> None:
        while True:
            interval = self.flush_seconds
            if interval <= 0:  # buffering switched off: lines are written as they come; this thread ends
                with self._write_lock:
                    self._flusher = None
                self.write_pending()
                return
            self._wake.wait(interval)
            self._wake.clear()
            self.write_pending()

    def set_flush_seconds(self, seconds: float) -> None:
        """Change the buffering interval (seconds, 0 = off); pending lines are written now when it is switched
        off, and the flusher thread takes a new interval at once."""
        self.flush_seconds = max(0.0, float(seconds))
        if self.flush_seconds <= 0:
            for hook in before_urgent_write:
                hook()
            self.write_pending()
        self._wake.set()

    def _after_fork_in_child(self) -> None:
        # The child has no flusher thread, and lines the parent had pending are the parent's to write.
        self._pending = collections.deque()
        self._write_lock = threading.Lock()
        self._flusher = None
        self._wake = threading.Event()


_BUFFERED: "weakref.WeakSet[StdoutHandler]" = weakref.WeakSet()
#: Called (no arguments, never under a handler's lock) before a buffered handler writes a WARNING or worse and
#: when buffering is switched off: ``server.request_batch`` queues its pending access lines there.
before_urgent_write: list = []


def flush_pending_lines() -> None:
    """Write the lines the stack's handlers hold (buffered writing); called at exit and by servers before a
    worker process ends with ``os._exit`` (which skips ``atexit``)."""
    for handler in list(_BUFFERED):
        handler.write_pending()


def buffering() -> bool:
    """True when the stack's handler on the root logger buffers lines (STACK_LOG_FLUSH_SECONDS > 0)."""
    return any(getattr(handler, "flush_seconds", 0) > 0 and getattr(handler, "_flask_stack", False)
               for handler in logging.getLogger().handlers)


def _reset_after_fork() -> None:
    for handler in list(_BUFFERED):
        handler._after_fork_in_child()


atexit.register(flush_pending_lines)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object (see the module docstring for the keys)."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).astimezone().isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                data[key] = value
        if record.exc_info:
            data["traceback"] = self.formatException(record.exc_info)
        elif record.stack_info:
            data["stack"] = record.stack_info
        return json.dumps(data, default=str)


class _DropWerkzeugRequestLines(logging.Filter):
    """Drops werkzeug's ``"GET / HTTP/1.1" 200 -`` lines (the stack logs its own access line)."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.msg if isinstance(record.msg, str) else ""
        return not msg.rstrip().endswith('"%s" %s %s')


_DROP_FILTER = _DropWerkzeugRequestLines()


def make_formatter(fmt: str = "text") -> logging.Formatter:
    """The stack's formatter for log format ``fmt`` ("json": ``JsonFormatter``; anything else: the text line
    ``YYYY-MM-DD HH:MM:SS [LEVEL] message``). The one definition of the line format: the runtime, the production
    servers' own messages (gunicorn's logger class, granian's logging config) and the dev loop all use it."""
    return JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT, DATE_FORMAT)


def stderr_logger(logger: logging.Logger, level: str, fmt: str) -> logging.Logger:
    """Make ``logger`` write its records (at ``level`` and above, a ``logging`` level name) to stderr in the stack's
    format ``fmt`` and nowhere else: for the processes that watch a server (uWSGI's supervisor, the nginx front),
    which never configure the root logger. Returns ``logger``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(make_formatter(fmt))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    return logger


def configure_logging(level: str = "INFO", fmt: str = "text", flush_seconds: float = 0.0) -> logging.Handler:
    """Send log records to stdout in format ``fmt`` ("text" or "json") at ``level`` (a ``logging`` level name),
    buffering lines below WARNING for at most ``flush_seconds`` seconds (0: write every line at once).

    Returns:
        logging.Handler: the stack's handler on the root logger.
    """
    root = logging.getLogger()
    handler = next((h for h in root.handlers if getattr(h, "_flask_stack", False)), None)
    if handler is None:
        handler = StdoutHandler()
        handler._flask_stack = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    formatter = make_formatter(fmt)
    handler.setFormatter(formatter)
    if isinstance(handler, StdoutHandler):
        handler.stack_format = "json" if fmt == "json" else "text"
        handler.stack_formatter = formatter
        handler.set_flush_seconds(flush_seconds)
    root.setLevel(level)
    werkzeug = logging.getLogger("werkzeug")
    if _DROP_FILTER not in werkzeug.filters:
        werkzeug.addFilter(_DROP_FILTER)
    return handler


_process_configured = False  # inherited through fork: a forked app process keeps its parent's handler


def configure_process_logging(level: str = "INFO", fmt: str = "text", flush_seconds: float = 0.0,
                              environ: Any = None) -> logging.Handler | None:
    """Configure this process's logging once, for the entry that owns the process (the dev loop, the serving
    layer's ``server.app``, ``flask-stack test``): the stack's handler on the root logger (``configure_logging``),
    from ``LOG_LEVEL``/``LOG_FORMAT``/``STACK_LOG_FLUSH_SECONDS`` when ``environ`` is given (a mapping, or True
    for ``os.environ``; unusable values fall back to INFO/text/0, the settings check reports them), else from
    the arguments. Later calls in the process (and in processes forked from it) leave logging as it is.

    Returns:
        logging.Handler | None: the stack's handler, or None when logging was configured already.
    """
    global _process_configured
    if _process_configured:
        return None
    if environ is not None:
        level, fmt, flush_seconds = _from_environment(None if environ is True else environ)
    _process_configured = True
    return configure_logging(level, fmt, flush_seconds)


def mark_process_configured() -> None:
    """Record that this process's entry configured logging (the dev loop, which reconfigures its handler itself
    when asked), so ``adopt_logging`` and ``configure_process_logging`` leave it alone."""
    global _process_configured
    _process_configured = True


def _from_environment(environ: Any) -> tuple[str, str, float]:
    import stacksettings

    values = []
    for name, fallback in (("LOG_LEVEL", "INFO"), ("LOG_FORMAT", "text"), ("STACK_LOG_FLUSH_SECONDS", 0.0)):
        try:
            values.append(stacksettings.value(name, environ))
        except stacksettings.SettingsError:
            values.append(fallback)
    return values[0], values[1], values[2]


def adopt_logging(level: str, fmt: str, flush_seconds: float, explicit: bool = False) -> logging.Handler | None:
    """``Stack.init_app``'s part. Logging is configured only when no entry did in this process and nothing else is
    on the root logger (a bare ``Stack(app)`` under ``flask run`` or a server of the user's own); with ``explicit``
    log settings (the app's ``app.config["STACK_LOG_FORMAT"]``..., or ``Stack(config=...)``), the stack's own
    handler takes them. An app's own logging setup (handlers on the root logger, none of them the stack's) stays
    as it is either way.

    Returns:
        logging.Handler | None: the stack's handler when this call configured it, else None.
    """
    handlers = logging.getLogger().handlers
    if explicit and any(getattr(h, "_flask_stack", False) for h in handlers):
        return configure_logging(level, fmt, flush_seconds)
    if _process_configured or handlers:
        return None
    return configure_process_logging(level, fmt, flush_seconds)


def printable_path(path: str, limit: int = 1000) -> str:
    """``path`` safe for one log line: non-printable characters escaped (no forged lines from ``%0A`` in URLs),
    cut at ``limit`` characters (with ``...``)."""
    if not path.isprintable():
        path = path.encode("unicode_escape").decode("ascii")
    return path if len(path) <= limit else path[:limit] + "..."
