"""nginx's access lines as the stack's, counted in the app's metrics: ``python -m serving.access_relay FORMAT LEVEL``.

The front (``serving.front``) starts one of these per nginx with nginx's stdout (its ``front`` log format: one JSON
object a line, only requests the app did not answer) as stdin. Each line is written to stdout as the stack's access
line (``server.access_log.access_line``, FORMAT ``text`` or ``json``) with nginx's request id, and counted in the app's
``http_requests_total`` (endpoint ``<unmatched>``) through ``server.metrics.HttpMetrics`` in prometheus_client's
multiprocess mode (the workers' scrapes add this process's file). It is a child process so that the supervising
process never imports prometheus_client. It ends at end of input (nginx gone).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from typing import IO

log = logging.getLogger("nginx")


def start_access_relay(stream: IO[bytes], fmt: str, level: str) -> subprocess.Popen:
    """Start ``python -m serving.access_relay fmt level`` (``level``: a ``logging`` level name, for its own warnings
    about lines it cannot read) reading ``stream`` (nginx's stdout), writing to this process's
    stdout. Returns the process; it ends when ``stream``'s writer closes it.

    Raises:
        OSError: the process cannot be started.
    """
    project = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.pathsep.join(p for p in (project, os.environ.get("PYTHONPATH", "")) if p)
    return subprocess.Popen([sys.executable, "-P", "-m", "serving.access_relay", fmt, level], stdin=stream,
                            env={**os.environ, "PYTHONPATH": path})


def relay_access(stream, fmt: str, metrics=None) -> None:
    """Write each access line nginx writes on ``stream`` (its ``front`` log format: JSON, only requests the app did
    not answer) to stdout as the stack's access line in format ``fmt`` ("text" or "json"), with nginx's request id
    (the one its error answer carries), and count it in ``metrics`` (``server.metrics.HttpMetrics``: the app's
    ``http_requests_total``, endpoint ``<unmatched>``) when given. Returns at end of stream."""
    from server.access_log import access_line
    from server.logs import printable_path

    for raw in iter(stream.readline, b""):
        try:
            entry = json.loads(raw.decode("utf-8", "replace"))  # nginx's escape=json passes bytes >= 0x80 on
            method, _, rest = str(entry["request"]).partition(" ")
            path = rest.rsplit(" ", 1)[0] if " " in rest else rest
            status, seconds = int(entry["status"]), float(entry["seconds"])
            line = access_line(fmt, time.time(), printable_path(method, 20) or "-", printable_path(path or "-"),
                               status, seconds * 1000.0, printable_path(str(entry.get("request_id") or "-"), 64),
                               printable_path(str(entry["client"]), 100))
        except (ValueError, KeyError, TypeError):
            log.warning("%s", printable_path(raw.decode("utf-8", "replace").rstrip("\n")))
            continue
        if metrics is not None:
            metrics.observe(method.upper(), None, status, seconds)
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def front_metrics():
    """The app's request metrics as this process writes them (``server.metrics.HttpMetrics`` in prometheus_client's
    multiprocess mode: the workers' scrapes add this process's file), or None without PROMETHEUS_MULTIPROC_DIR."""
    from server.metrics import HttpMetrics, multiprocess_enabled
    from server.version import __version__

    return HttpMetrics(__version__) if multiprocess_enabled() else None




def main(argv: list[str]) -> int:
    """Relay stdin to stdout (see the module docstring); ``argv`` is ``[FORMAT, LEVEL]``. Returns 0 at end of input, 2 on
    bad arguments."""
    if len(argv) != 2 or argv[0] not in ("text", "json") or not isinstance(logging.getLevelName(argv[1]), int):
        sys.stderr.write("usage: python -m serving.access_relay text|json LEVEL\n")
        return 2
    from server.logs import stderr_logger

    stderr_logger(log, argv[1], argv[0])
    relay_access(sys.stdin.buffer, argv[0], front_metrics())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
