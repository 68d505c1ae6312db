"""Watch the user's project for saves, with watchfiles, on a background thread.

Only ``*.py`` files, the project's own settings file (``settings.yaml``, ``settings.yml``, ``settings.toml``: its
profiles, read by ``server.userconfig``) and the project's dependency declaration files (:data:`stackdeps.detect.WATCHED`:
``pyproject.toml``, ``uv.lock``, ``Pipfile``, ``Pipfile.lock``, ``requirements.txt``, ``requirements-dev.txt``,
``requirements/dev.txt``) count; ``__pycache__``, ``.git``,
virtualenvs, caches and the deps dir are ignored (watchfiles' ``DefaultFilter`` plus a few names).
Batches of changes are handed to the main loop through a pipe so it can ``select`` on them together
with signals. Set ``WATCHFILES_FORCE_POLLING=1`` where inotify does not see changes (some bind
mounts); watchfiles reads it itself.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import watchfiles
from stackdeps.detect import WATCHED

#: The declaration files, relative to the project root.
DEP_FILES = WATCHED
#: The user's settings files (``server.userconfig.FILES``; not imported here: it imports Flask), at the root.
CONFIG_FILES = ("settings.yaml", "settings.yml", "settings.toml")
#: Milliseconds without new events after which a batch is handed over (watchfiles' ``step``). watchfiles' Rust
#: side sleeps this long between checks and hands a batch over at the first check that finds no new event, so a
#: save is seen 1-2 steps after it: 10-20 ms. The writes of one save (editors' write, or write-then-rename) come
#: within a millisecond or two of each other.
STEP_MS = 10
#: Maximum milliseconds to group events of one save (watchfiles' ``debounce``).
DEBOUNCE_MS = 400
#: Milliseconds of the watcher's idle wake-up; the first one marks it ready.
READY_MS = 200


class ProjectFilter(watchfiles.DefaultFilter):
    """Accept ``*.py`` anywhere in the project and the declaration files (:data:`DEP_FILES`) where they belong."""

    ignore_dirs = tuple(watchfiles.DefaultFilter.ignore_dirs) + (
        "venv", ".flask-stack", ".deps", "site-packages", ".eggs")

    def __init__(self, project: Path, ignore_paths: list[Path]):
        super().__init__(ignore_paths=[str(p) for p in ignore_paths])
        self._root = str(project)

    def __call__(self, change: watchfiles.Change, path: str) -> bool:
        name = os.path.basename(path)
        if name.endswith(".py") or os.path.relpath(path, self._root) in CONFIG_FILES:
            pass
        elif name.endswith((".txt", ".toml", ".lock")) or name.startswith("Pipfile"):
            if os.path.relpath(path, self._root) not in DEP_FILES:
                return False
        else:
            return False
        return super().__call__(change, path)


class Watcher:
    """Collects changed paths under ``project`` on a daemon thread.

    ``fileno()`` becomes readable when a batch is ready; :meth:`take` returns and clears the paths.
    """

    def __init__(self, project: Path, ignore_paths: list[Path] | None = None):
        self.project = project.resolve()
        self._filter = ProjectFilter(self.project, [p.resolve() for p in ignore_paths or []])
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._pending: set[str] = set()
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        self._thread = threading.Thread(target=self._run, name="devloop-watch", daemon=True)
        self.error: BaseException | None = None
        #: Set once watchfiles is watching (its first timeout passed); changes before that may be missed.
        self.ready = threading.Event()

    def start(self) -> "Watcher":
        """Start watching; returns self."""
        self._thread.start()
        return self

    def fileno(self) -> int:
        """The pipe end to ``select`` on."""
        return self._read_fd

    def fds(self) -> tuple[int, int]:
        """Both pipe ends (an app process closes them after fork)."""
        return self._read_fd, self._write_fd

    def _run(self) -> None:
        try:
            for changes in watchfiles.watch(self.project, watch_filter=self._filter, stop_event=self._stop,
                                            step=STEP_MS, debounce=DEBOUNCE_MS, rust_timeout=READY_MS,
                                            yield_on_timeout=True, raise_interrupt=False):
                if not changes:
                    if not self.ready.is_set():
                        self.ready.set()
                        os.write(self._write_fd, b"r")
                    continue
                self.ready.set()
                with self._lock:
                    self._pending.update(path for _, path in changes)
                os.write(self._write_fd, b"x")
        except BaseException as exc:  # reported by the main loop, which keeps serving without reloads
            self.error = exc
            os.write(self._write_fd, b"!")

    def take(self) -> list[str]:
        """Return the changed paths collected so far (sorted, absolute) and forget them."""
        try:
            while os.read(self._read_fd, 512):
                pass
        except BlockingIOError:
            pass
        with self._lock:
            paths, self._pending = sorted(self._pending), set()
        return paths

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the thread, waiting at most ``timeout`` seconds."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)


def describe(paths: list[str], project: Path) -> str:
    """Return ``a.py, pkg/b.py`` (paths relative to ``project``; at most 5 named)."""
    rel = []
    for p in paths:
        try:
            rel.append(str(Path(p).relative_to(project)))
        except ValueError:
            rel.append(p)
    text = ", ".join(rel[:5])
    return text + (f" and {len(rel) - 5} more" if len(rel) > 5 else "")


def touches_deps(paths: list[str], project: Path) -> bool:
    """True when one of the declaration files (:data:`DEP_FILES`, relative to ``project``) is among ``paths``."""
    return any(os.path.relpath(p, project) in DEP_FILES for p in paths)
