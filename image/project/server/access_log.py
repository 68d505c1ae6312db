"""The access line: one line per request, ``GET /path 200 1.2ms id=<request id> client=<address>`` (INFO, logger
``server.access``), in the stack's text or JSON format (``server.logs``), with the request id (``server.requestid``).

Written per request, so its normal path is short: when the record would only reach the stack's own handler with
its own formatter, the line is formatted here (``access_line``, the same bytes the handler's formatter gives) and
queued without a LogRecord; otherwise a regular LogRecord goes through ``logging``. ``log_access_records`` does
this for a batch of requests (``server.request_batch``, or one request when lines are not buffered) in one loop.
"""

from __future__ import annotations

import json
import logging
import math
import time
from datetime import datetime, timezone
from typing import Callable

from .logs import ACCESS_LOGGER, DATE_FORMAT, StdoutHandler, printable_path

_ACCESS = logging.getLogger(ACCESS_LOGGER)
_ROOT = logging.getLogger()
_INFO = logging.INFO
_text_time: tuple[int, str] = (-1, "")  # (second, asctime): one strftime per second, not per line
_json_time: tuple[int, str, str] = (-1, "", "")  # (second, "YYYY-MM-DDTHH:MM:SS", "+HH:MM")


def _direct_handler() -> StdoutHandler | None:
    """The stack's handler when an access record would reach it and nothing else: no other handler on the way,
    no filter, the stack's own formatter. Then ``log_access_records`` may format and queue the lines itself."""
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
                request_id: str, client: str = "-") -> str:
    """The access line (without the newline) exactly as the stack's handler formats it in format ``fmt``
    ("text" or "json") for a record made at ``created`` (unix seconds); ``path`` and ``client`` must already be
    printable."""
    message = f"{method} {path} {status} {duration_ms:.1f}ms id={request_id} client={client}"
    if fmt == "json":
        return json.dumps({
            "time": _json_time_of(created), "level": "INFO", "logger": ACCESS_LOGGER, "message": message,
            "method": method, "path": path, "status": status, "duration_ms": round(duration_ms, 3),
            "request_id": request_id, "client": client,
        }, default=str)
    return f"{_text_asctime(created)} [INFO] {message}"


def _access_record(method: str, path: str, status: int, duration_ms: float, request_id: str,
                   client: str) -> logging.LogRecord:
    # makeRecord + handle = logger.info without its caller lookup (a stack walk per request)
    return _ACCESS.makeRecord(
        ACCESS_LOGGER, logging.INFO, __file__, 0, "%s %s %s %.1fms id=%s client=%s",
        (method, path, status, duration_ms, request_id, client), None, "log_access_records",
        {"method": method, "path": path, "status": status, "duration_ms": round(duration_ms, 3),
         "request_id": request_id, "client": client},
    )


def log_access_records(records: list) -> None:
    """Write the access line of each ``server.request_batch.RequestRecord`` (oldest first), made at its request's
    end: ``GET /path 200 1.2ms id=... client=203.0.113.7`` (INFO, logger ``server.access``), with the same values as
    extra fields ``method``, ``path``, ``status``, ``duration_ms``, ``request_id``, ``client``. ``client`` is the
    client's address (``REMOTE_ADDR``, the proxy's unless ``STACK_PROXY_HOPS`` trusts it; None: ``-``).
    Non-printable characters in ``path`` and ``client`` are escaped and ``path`` is cut at 1000 characters.

    When the records would only reach the stack's own handler with its own formatter in the text format (the
    normal case), the lines are formatted in one loop, without LogRecords (the same bytes ``access_line`` gives),
    and handed to the handler in one piece; in JSON through ``access_line``; otherwise (another handler, a filter,
    pytest's caplog, a custom formatter) a regular LogRecord each goes through ``logging``."""
    if not _ACCESS.isEnabledFor(_INFO):
        return
    to_wall = time.time() - time.perf_counter()  # perf_counter seconds -> unix seconds
    handler = _direct_handler()
    if handler is None or handler.stack_format != "text":
        for started, ended, status, method, _endpoint, path, request_id, client in records:
            _log_one(handler, ended + to_wall, method, printable_path(path), int(status[:3]),
                     (ended - started) * 1000.0, request_id, printable_path(client, 100) if client else "-")
        return
    lines: list[str] = []
    first, last = records[0][1] + to_wall, records[-1][1] + to_wall  # in the order they ended, to a thread switch
    if int(first - 0.01) == int(last + 0.01):  # the whole batch in one second (the common case)
        _text_lines(_text_asctime(first), records, lines.append)
    else:
        by_second: dict[int, list] = {}
        for record in records:
            by_second.setdefault(int(record[1] + to_wall), []).append(record)
        for second in sorted(by_second):
            _text_lines(_text_asctime(float(second)), by_second[second], lines.append)
    handler.queue_line("".join(lines))


def _text_lines(asctime: str, records: list, append: Callable[[str], None]) -> None:
    """``append`` the text access line (with its newline) of each record, all made in the second ``asctime``
    names. Runs once per request: the checks are inline (``printable_path`` only for a path or client that needs
    it)."""
    for started, ended, status, method, _endpoint, path, request_id, client in records:
        if len(path) > 1000 or not path.isprintable():
            path = printable_path(path)
        if client is None:
            client = "-"
        elif len(client) > 100 or not client.isprintable():
            client = printable_path(client, 100)
        append(f"{asctime} [INFO] {method} {path} {status[:3]} {(ended - started) * 1000.0:.1f}ms id={request_id} "
               f"client={client}\n")


def _log_one(handler: StdoutHandler | None, created: float, method: str, path: str, status: int,
             duration_ms: float, request_id: str, client: str) -> None:
    """One access line made at ``created`` (unix seconds): through ``handler`` in JSON, else a LogRecord."""
    if handler is not None:
        handler.queue_line(access_line(handler.stack_format, created, method, path, status, duration_ms, request_id,
                                       client) + handler.terminator)
        return
    record = _access_record(method, path, status, duration_ms, request_id, client)
    record.created, record.msecs = created, int(created * 1000) % 1000
    _ACCESS.handle(record)
