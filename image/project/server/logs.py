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
import os
import re
import sys
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
    """A StreamHandler writing to whatever ``sys.stdout`` is at emit time (works under pytest's capture)."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

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
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT, DATE_FORMAT))
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
    return os.urandom(16).hex()


def printable_path(path: str, limit: int = 1000) -> str:
    """``path`` safe for one log line: non-printable characters escaped (no forged lines from ``%0A`` in URLs),
    cut at ``limit`` characters (with ``...``)."""
    if not path.isprintable():
        path = path.encode("unicode_escape").decode("ascii")
    return path if len(path) <= limit else path[:limit] + "..."


def log_access(method: str, path: str, status: int, duration_ms: float, request_id: str) -> None:
    """Write the access line ``GET /path 200 1.2ms id=...`` (INFO, logger ``server.access``) with the same values
    as extra fields ``method``, ``path``, ``status``, ``duration_ms``, ``request_id``. Non-printable characters
    in ``path`` are escaped and it is cut at 1000 characters."""
    logger = logging.getLogger(ACCESS_LOGGER)
    if logger.isEnabledFor(logging.INFO):
        path = printable_path(path)
        # makeRecord + handle = logger.info without its caller lookup (a stack walk per request)
        record = logger.makeRecord(
            ACCESS_LOGGER, logging.INFO, __file__, 0, "%s %s %s %.1fms id=%s",
            (method, path, status, duration_ms, request_id), None, "log_access",
            {"method": method, "path": path, "status": status, "duration_ms": round(duration_ms, 3),
             "request_id": request_id},
        )
        logger.handle(record)
