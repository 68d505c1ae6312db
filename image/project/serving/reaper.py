"""Dead workers' metric files, for servers whose master has no hook on a worker's exit (granian, uWSGI): a thread
in the main process scans the metrics directory and calls ``serving.supervisor.worker_exited`` for each worker gone.
(gunicorn's master calls it itself, from its ``child_exit`` hook.)"""

from __future__ import annotations

import logging
import os
import re
import threading

from .supervisor import worker_exited

_PID_IN_NAME = re.compile(r"_(\d+)\.db$")  # prometheus_client names files <type>[_<mode>]_<pid>.db


def reap_dead_workers(directory: str, handled: set[int]) -> list[int]:
    """Call ``worker_exited`` for each pid named in ``directory``'s metric files whose process is gone and not yet
    in ``handled`` (updated in place). Returns the pids handled by this call."""
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    pids = {int(m.group(1)) for m in map(_PID_IN_NAME.search, names) if m}
    reaped = []
    for pid in sorted(pids):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            if pid not in handled:
                worker_exited(pid)
                handled.add(pid)
                reaped.append(pid)
            continue
        except PermissionError:
            pass  # alive, another user's: not ours to clean
        handled.discard(pid)  # alive (again, should a new worker reuse the pid): clean it when it dies
    return reaped


def watch_dead_workers(directory: str, stop: threading.Event, logger: logging.Logger,
                       interval: float = 1.0) -> None:
    """Thread body: ``reap_dead_workers`` every ``interval`` seconds until ``stop`` is set; never raises."""
    handled: set[int] = set()
    while not stop.wait(interval):
        try:
            for pid in reap_dead_workers(directory, handled):
                logger.info("cleaned the metric files of dead worker %s", pid)
        except Exception as exc:  # noqa: BLE001 - keep watching; a failed scan only delays the cleanup
            logger.warning("metrics cleanup failed: %s", exc)

