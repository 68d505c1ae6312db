"""The multiprocess metrics directory (PROMETHEUS_MULTIPROC_DIR): scrapes of it, and dead workers folded into it.

prometheus_client's multiprocess mode gives each process its own mmap files, ``<type>[_<mode>]_<pid>.db``, and its
``mark_process_dead`` removes only the live-gauge files of a dead process: counters, histograms and summaries of
every worker that ever lived stay, and every scrape reads them all again, so a scrape's cost grows with each
worker a server recycles (prometheus/client_python#204, #367; its docs leave compaction to the user). Here:

* ``fold_dead_worker(directory, pid)`` (called by the serving layer once the worker ``pid`` is gone) adds the
  values of that worker's counter, histogram and summary files into one file per type,
  ``<type>_folded.db``, with prometheus_client's own ``MultiProcessCollector.merge(..., accumulate=False)`` (its
  docstring's way of writing merged data back to mmap files) and ``MmapedDict``, then removes the worker's files.
  Totals stay exact and never go down; a scrape reads at most one folded file per type plus the live workers'.
* a scrape (``server.metric_scrape.DirectoryScraper``) reads every ``*.db`` file under a shared ``flock`` on
  ``.metrics.lock`` in the directory (``directory_lock``), while a fold replaces the folded file and removes the
  dead worker's under the exclusive lock, so no scrape ever sees a worker's counts twice or not at all.

Gauges are not folded: live-mode gauges of a dead worker are removed (``mark_process_dead``), the other modes keep
each process's value by design. A fold is skipped while a process with that pid exists (a new worker that reused
the pid keeps writing to the file). Only the serving layer's master folds, one worker at a time, through
``python -m server.metric_files DIRECTORY PID`` (``main``): a short-lived process, so the supervising process never
imports prometheus_client itself.
"""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from typing import Iterable, Iterator

from prometheus_client.metrics_core import Metric
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector

LOCK_NAME = ".metrics.lock"
FOLDED = "folded"  #: stands where a pid stands in a folded file's name: ``counter_folded.db``
FOLDED_TYPES = ("counter", "histogram", "summary")


@contextmanager
def directory_lock(directory: str, operation: int) -> Iterator[None]:
    """Hold ``flock(operation)`` (``fcntl.LOCK_SH`` to read the files, ``LOCK_EX`` to replace or remove one) on the
    directory's lock file (made when missing) for the ``with`` block.

    Raises:
        OSError: the lock file cannot be opened (the directory is gone or not writable).
    """
    fd = os.open(os.path.join(directory, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, operation)
        yield
    finally:
        os.close(fd)  # releases the lock


def metric_file_listing(directory: str) -> list[tuple[str, int, str]]:
    """The directory's metric files (``*.db``, as ``MultiProcessCollector`` globs them), sorted by path, each as
    (path, inode, type: the name's first part, ``counter``...): one ``scandir``, no ``stat`` per file (the inode
    comes with each directory entry).

    Raises:
        OSError: the directory cannot be read.
    """
    with os.scandir(directory) as entries:
        listing = [(entry.path, entry.inode(), entry.name.split("_")[0]) for entry in entries
                   if entry.name.endswith(".db") and not entry.name.startswith(".")]
    listing.sort()
    return listing


def _alive(pid: int) -> bool:
    """True when a process ``pid`` exists (ours or another user's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _write_folded(path: str, metrics: Iterable[Metric]) -> None:
    """Write ``metrics`` (merged with ``accumulate=False``) into a new mmap file ``path``, one value per sample, in
    prometheus_client's key format (``mmap_key``), so that ``merge`` reads it as it reads a worker's file."""
    if os.path.exists(path):
        os.unlink(path)
    folded = MmapedDict(path)
    try:
        for metric in metrics:
            for sample in metric.samples:
                labels = sample.labels
                key = mmap_key(metric.name, sample.name, list(labels), list(labels.values()), metric.documentation)
                folded.write_value(key, sample.value, 0.0)
    finally:
        folded.close()


def fold_dead_worker(directory: str, pid: int) -> bool:
    """Fold the counter, histogram and summary files of the dead worker ``pid`` into ``<type>_folded.db`` and remove
    them. Returns True when something was folded, False when the worker left no such file or a process ``pid``
    exists (nothing is changed then).

    Raises:
        OSError: a file cannot be read, written or removed (the folded files are then as before the call).
        RuntimeError: prometheus_client found a corrupt file.
    """
    staged: list[tuple[str, str, str]] = []  # (new folded file, folded file, the worker's file)
    try:
        for typ in FOLDED_TYPES:
            source = os.path.join(directory, f"{typ}_{pid}.db")
            if not os.path.exists(source):
                continue
            target = os.path.join(directory, f"{typ}_{FOLDED}.db")
            inputs = [source] + ([target] if os.path.exists(target) else [])
            new = os.path.join(directory, f".{typ}_{FOLDED}.new")  # not *.db: no scrape reads it
            _write_folded(new, MultiProcessCollector.merge(inputs, accumulate=False))
            staged.append((new, target, source))
        if not staged:
            return False
        with directory_lock(directory, fcntl.LOCK_EX):
            if _alive(pid):
                return False
            for new, target, source in staged:
                os.replace(new, target)
                os.unlink(source)
            staged.clear()
        return True
    finally:
        for new, _, _ in staged:
            try:
                os.unlink(new)
            except OSError:
                pass


def main(argv: list[str]) -> int:
    """``python -m server.metric_files DIRECTORY PID``: the worker ``PID`` is gone; remove its live-gauge files
    (prometheus_client's ``multiprocess.mark_process_dead``) and fold the rest (``fold_dead_worker``). Returns the exit
    status: 0 done, 1 a file could not be read or written (one line on stderr), 2 bad arguments."""
    import sys

    from prometheus_client import multiprocess

    if len(argv) != 2 or not argv[1].isdigit():
        sys.stderr.write("usage: python -m server.metric_files DIRECTORY PID\n")
        return 2
    directory, pid = argv[0], int(argv[1])
    try:
        multiprocess.mark_process_dead(pid, directory)
        fold_dead_worker(directory, pid)
    except (OSError, RuntimeError) as exc:
        sys.stderr.write(f"{type(exc).__name__}: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
