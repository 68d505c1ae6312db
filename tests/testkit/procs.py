"""The process table from Linux ``/proc``, for tests that prove no process is left behind.

Each ``/proc/PID/stat`` line is ``pid (comm) state ppid ... starttime ...`` (proc(5)); the command name may hold
spaces and parentheses, so fields are read after the last ``)``. ``start`` is field 22, the start time in clock
ticks since boot: a pid together with its start time names one process even if the pid is reused.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import NamedTuple

from .need import missing

#: Runs a command as PID 1 of a new PID namespace (what a container's first process is), killed with ``unshare``.
PID_NAMESPACE = ("unshare", "--pid", "--fork", "--mount-proc", "--kill-child")


class ProcStat(NamedTuple):
    """One process: ``state`` (``R``, ``S``, ``Z``...), parent pid, start time (clock ticks since boot, as text)."""

    state: str
    ppid: int
    start: str


def _read(pid: int | str) -> ProcStat | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return ProcStat(fields[0], int(fields[1]), fields[19])


def proc_stats() -> dict[int, ProcStat]:
    """Every process now on the machine (zombies included), by pid."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _read(entry)) is not None:
            table[int(entry)] = stat
    return table


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    stat = _read(pid)
    return stat is not None and stat.state != "Z"


def parent_of(pid: int) -> int:
    """The parent pid of ``pid``. Raises OSError when there is no such process."""
    stat = _read(pid)
    if stat is None:
        raise ProcessLookupError(pid)
    return stat.ppid


def children_of(pid: int) -> list[int]:
    """Pids of the direct children of ``pid``, zombies included."""
    return [child for child, stat in proc_stats().items() if stat.ppid == pid]


def zombies_of(pid: int) -> list[int]:
    """Pids of the zombie children of ``pid``."""
    return [child for child, stat in proc_stats().items() if stat.ppid == pid and stat.state == "Z"]


def descendants(pid: int) -> dict[int, str]:
    """{pid: start time} of every live (non-zombie) descendant of ``pid``."""
    live = {child: stat for child, stat in proc_stats().items() if stat.state != "Z"}
    found: dict[int, str] = {}
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for child, stat in live.items():
            if stat.ppid == parent and child not in found:
                found[child] = stat.start
                frontier.append(child)
    return found


def still_running(processes: dict[int, str]) -> list[int]:
    """Those of ``processes`` ({pid: start time}) still alive: same pid and same start time, not a zombie."""
    table = proc_stats()
    return [pid for pid, start in processes.items()
            if pid in table and table[pid].start == start and table[pid].state != "Z"]


def pid_namespace_wrapper() -> tuple[str, ...]:
    """``PID_NAMESPACE`` when this machine can make a PID namespace (``unshare``, as root); otherwise
    ``testkit.need.missing`` (skipped locally, failed in CI)."""
    works = False
    if shutil.which("unshare") is not None:
        try:
            works = subprocess.run([*PID_NAMESPACE[:-1], "true"], capture_output=True, timeout=20).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            works = False
    if not works:
        missing("cannot make a PID namespace here (unshare --pid needs CAP_SYS_ADMIN)")
    return PID_NAMESPACE
