"""Logging to stdout, and the request id.

Formats (LOG_FORMAT):
    text (default): ``2024-05-01 12:00:00 [INFO] message`` (local time, ``logging`` level names).
    json: one JSON object per line: ``time`` (ISO 8601 with milliseconds and UTC offset), ``level``, ``logger``,
        ``message``, any ``extra={...}`` fields of the record, and ``traceback`` when an exception was logged.

LOG_LEVEL sets the root logger's level. ``configure_logging`` installs one handler on the root logger (idempotent:
calling it again reconfigures the same handler). Werkzeug's own per-request lines are dropped (the stack's access
line replaces them); its other messages (e.g. "Running on ...") stay.

Request id: an incoming ``X-Request-ID`` is kept when it has 1-128 characters from ``A-Z a-z 0-9 . _ : - + = /
@``, after removing other characters; otherwise a random 32-hex-digit id is generated. It is echoed in the
response's ``X-Request-ID`` header and logged on the access line.
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
import sys
import time
from datetime import datetime, timezone
from typing import Any

ACCESS_LOGGER = "server.access"
REQUEST_ID_HEADER = "X-Request-ID"
MAX_REQUEST_ID = 128
_DISALLOWED = re.compile(r"[^A-Za-z0-9._:\-+=/@]")
TEXT_FORMAT = "%(asctime)s [%(levelname)s] %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"

# Attributes every LogRecord has; anything else came from ``extra=`` and goes into the JSON object.
_STANDARD = set(vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None))) | {"message", "asctime", "taskName"}


class StdoutHandler(logging.StreamHandler):
    """A StreamHandler writing to whatever ``sys.stdout`` is at emit time (works under pytest's capture).

    ``stack_format`` ("text" or "json") and ``stack_formatter`` record what ``configure_logging`` installed, so
    ``log_access`` can tell whether the handler still formats records the stack's way.
    """

    def __init__(self) -> None:
        super().__init__(sys.stdout)
        self.stack_format = "text"
        self.stack_formatter: logging.Formatter | None = None

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stdout

    @stream.setter
    def stream(self, value: Any) -> None:  # StreamHandler.__init__ assigns it; always follow sys.stdout instead
        pass


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


def configure_logging(level: str = "INFO", fmt: str = "text") -> logging.Handler:
    """Send log records to stdout in format ``fmt`` ("text" or "json") at ``level`` (a ``logging`` level name).

    Returns:
        logging.Handler: the stack's handler on the root logger.
    """
    root = logging.getLogger()
    handler = next((h for h in root.handlers if getattr(h, "_flask_stack", False)), None)
    if handler is None:
        handler = StdoutHandler()
        handler._flask_stack = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    formatter = JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT, DATE_FORMAT)
    handler.setFormatter(formatter)
    if isinstance(handler, StdoutHandler):
        handler.stack_format = "json" if fmt == "json" else "text"
        handler.stack_formatter = formatter
    root.setLevel(level)
    werkzeug = logging.getLogger("werkzeug")
    if _DROP_FILTER not in werkzeug.filters:
        werkzeug.addFilter(_DROP_FILTER)
    return handler


def request_id_from(header: str | None) -> str:
    """Return a safe request id: the sanitised ``header`` value when usable, else a new random one."""
    if header:
        cleaned = _DISALLOWED.sub("", header)[:MAX_REQUEST_ID]
        if cleaned:
            return cleaned
    # 128 random bits; ``random`` is reseeded in every forked child (CPython's at-fork hook), so workers differ
    return "%032x" % _getrandbits(128)


def printable_path(path: str, limit: int = 1000) -> str:
    """``path`` safe for one log line: non-printable characters escaped (no forged lines from ``%0A`` in URLs),
    cut at ``limit`` characters (with ``...``)."""
    if not path.isprintable():
        path = path.encode("unicode_escape").decode("ascii")
    return path if len(path) <= limit else path[:limit] + "..."


_ACCESS = logging.getLogger(ACCESS_LOGGER)
_ROOT = logging.getLogger()
_INFO = logging.INFO
_getrandbits = random.getrandbits
_text_time: tuple[int, str] = (-1, "")  # (second, asctime): one strftime per second, not per line
_json_time: tuple[int, str, str] = (-1, "", "")  # (second, "YYYY-MM-DDTHH:MM:SS", "+HH:MM")


def _direct_handler() -> StdoutHandler | None:
    """The stack's handler when an access record would reach it and nothing else: no other handler on the way,
    no filter, the stack's own formatter. Then ``log_access`` may format and write the line itself."""
    logger: logging.Logger | None = _ACCESS
    if _ACCESS.filters or _ACCESS.disabled:
        return None
    while logger is not None and logger is not _ROOT:
        if logger.handlers or not logger.propagate:
            return None
        logger = logger.parent
    handlers = _ROOT.handlers
    if logger is None or len(handlers) != 1:
        return None
    handler = handlers[0]
    if (type(handler) is not StdoutHandler or handler.filters or handler.level > _INFO
            or handler.formatter is not handler.stack_formatter):
        return None
    return handler


def _text_asctime(created: float) -> str:
    """``%(asctime)s`` of the text format (``logging.Formatter`` with DATE_FORMAT: local time, whole seconds)."""
    global _text_time
    second = math.floor(created)
    cached = _text_time
    if cached[0] != second:
        cached = _text_time = (second, time.strftime(DATE_FORMAT, time.localtime(created)))
    return cached[1]


def _json_time_of(created: float) -> str:
    """The JSON ``time`` field, as ``JsonFormatter`` writes it (datetime's microsecond rounding, local offset)."""
    global _json_time
    frac, whole = math.modf(created)
    micro = round(frac * 1e6)
    if micro >= 1000000:
        whole += 1
        micro -= 1000000
    second = int(whole)
    cached = _json_time
    if cached[0] != second:
        text = datetime.fromtimestamp(second, timezone.utc).astimezone().isoformat(timespec="seconds")
        cached = _json_time = (second, text[:19], text[19:])
    return f"{cached[1]}.{micro // 1000:03d}{cached[2]}"


def access_line(fmt: str, created: float, method: str, path: str, status: int, duration_ms: float,
                request_id: str) -> str:
    """The access line (without the newline) exactly as the stack's handler formats it in format ``fmt``
    ("text" or "json") for a record made at ``created`` (unix seconds); ``path`` must already be printable."""
    message = f"{method} {path} {status} {duration_ms:.1f}ms id={request_id}"
    if fmt == "json":
        return json.dumps({
            "time": _json_time_of(created), "level": "INFO", "logger": ACCESS_LOGGER, "message": message,
            "method": method, "path": path, "status": status, "duration_ms": round(duration_ms, 3),
            "request_id": request_id,
        }, default=str)
    return f"{_text_asctime(created)} [INFO] {message}"


def log_access(method: str, path: str, status: int, duration_ms: float, request_id: str) -> None:
    """Write the access line ``GET /path 200 1.2ms id=...`` (INFO, logger ``server.access``) with the same values
    as extra fields ``method``, ``path``, ``status``, ``duration_ms``, ``request_id``. Non-printable characters
    in ``path`` are escaped and it is cut at 1000 characters.

    When the record would only reach the stack's own handler with its own formatter (the normal case), the line
    is formatted by ``access_line`` and written and flushed under the handler's lock, without a LogRecord: the
    same bytes at a fraction of the cost. Otherwise (another handler, a filter, pytest's caplog, a custom
    formatter) a regular LogRecord goes through ``logging``.
    """
    if not _ACCESS.isEnabledFor(_INFO):
        return
    path = printable_path(path)
    handler = _direct_handler()
    if handler is not None:
        line = access_line(handler.stack_format, time.time(), method, path, status, duration_ms, request_id)
        handler.acquire()
        try:
            stream = sys.stdout
            stream.write(line + handler.terminator)
            stream.flush()
        except RecursionError:
            raise
        except Exception:  # noqa: BLE001 - as StreamHandler.emit: report on stderr, never fail the request
            handler.handleError(_access_record(method, path, status, duration_ms, request_id))
        finally:
            handler.release()
        return
    _ACCESS.handle(_access_record(method, path, status, duration_ms, request_id))


def _access_record(method: str, path: str, status: int, duration_ms: float, request_id: str) -> logging.LogRecord:
    # makeRecord + handle = logger.info without its caller lookup (a stack walk per request)
    return _ACCESS.makeRecord(
        ACCESS_LOGGER, logging.INFO, __file__, 0, "%s %s %s %.1fms id=%s",
        (method, path, status, duration_ms, request_id), None, "log_access",
        {"method": method, "path": path, "status": status, "duration_ms": round(duration_ms, 3),
         "request_id": request_id},
    )
