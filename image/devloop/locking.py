"""pipenv and pip as subprocesses, and making sure a project has a current ``Pipfile.lock``.

:func:`ensure_lock` runs ``pipenv verify`` and, when the lock is missing or stale, ``pipenv lock``, with
``VIRTUAL_ENV`` set to the running interpreter's environment so pipenv never creates a virtualenv.
When this process cannot write to the project (a read-only mount; a container running as another uid
than the project's owner) it locks a copy of the Pipfile in a directory the caller names instead, and
logs one warning line saying why the lock was not written back. Output of failed commands is cut to one
line by :func:`summarize_failure`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import tomllib
from pathlib import Path
from typing import Callable

from .errors import DevloopError
from .logs import get_logger

PIPFILE = "Pipfile"
LOCKFILE = "Pipfile.lock"
#: Pipfile tables that are not package categories (pipenv's hash leaves them out or puts them in ``_meta``).
_NOT_CATEGORIES = ("source", "packages", "dev-packages", "requires", "scripts", "pipfile", "pipenv",
                   "default", "develop")
#: Upper bound, in seconds, of one pipenv or pip command.
COMMAND_TIMEOUT = 900.0

log = get_logger()


def unwritable_reason(directory: Path) -> str | None:
    """Return None when this process can create files in ``directory``, else why not (a short phrase)."""
    if os.access(directory, os.W_OK | os.X_OK):
        return None
    try:
        if os.statvfs(directory).f_flag & os.ST_RDONLY:
            return "it is on a read-only file system"
        owner = directory.stat().st_uid
    except OSError as exc:
        return exc.strerror or str(exc)
    return f"permission denied: it belongs to uid {owner} and the dev loop runs as uid {os.geteuid()}"


def run_command(argv: list[str], *, env: dict[str, str] | None = None, on_line: Callable[[str], None] | None = None,
                timeout: float = COMMAND_TIMEOUT) -> tuple[int, list[str]]:
    """Run ``argv``, merging stderr into stdout; return (exit status, output lines).

    Each line is passed to ``on_line`` as it arrives (progress). The process is killed after
    ``timeout`` seconds (status then -9) and whenever this call is interrupted (``StopRequested``).
    """
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=env, text=True, errors="replace", bufsize=1)
    timer = threading.Timer(timeout, proc.kill)
    timer.daemon = True
    timer.start()
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip()
            lines.append(line)
            if on_line and line.strip():
                on_line(line)
        return proc.wait(), lines
    finally:
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def pipenv_env(project: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PIPENV_IGNORE_VIRTUALENVS", None)
    env.pop("PYTHONPATH", None)
    env.update({
        "VIRTUAL_ENV": sys.prefix,  # use this environment, never create a virtualenv
        "PIPENV_PIPFILE": str(project / PIPFILE),
        "PIPENV_VERBOSITY": "-1",
        "PIPENV_NOSPIN": "1",
        "PIPENV_YES": "1",
        "PIPENV_HIDE_EMOJIS": "1",
        "COLUMNS": "1000",  # keep pip's messages on one line each
    })
    # pipenv creates <env>/src for editable checkouts unless PIP_SRC is set; the env may belong to another uid.
    src = Path(sys.prefix) / "src"
    if not env.get("PIP_SRC") and not os.access(src if src.is_dir() else sys.prefix, os.W_OK):
        env["PIP_SRC"] = str(Path(tempfile.gettempdir()) / f"flask-stack-pip-src-{os.geteuid()}")
    return env


def summarize_failure(lines: list[str]) -> str:
    """Return one line saying why pipenv/pip failed, from its output ``lines``."""
    text = "\n".join(lines)
    match = re.search(r"No matching distribution found for ([^\s]+)", text)
    if match:
        return f"no version of '{match.group(1)}' is available from the package index"
    match = re.search(r"Could not find a version that satisfies the requirement ([^\s]+)", text)
    if match:
        return f"no version of '{match.group(1)}' is available from the package index"
    if "ResolutionImpossible" in text or "conflict is caused by" in text:
        causes: list[str] = []
        for i, line in enumerate(lines):
            if "conflict is caused by" in line:
                for nxt in lines[i + 1:]:
                    if not nxt.startswith(" ") or not nxt.strip():
                        break
                    causes.append(nxt.strip())
                break
        detail = "; ".join(dict.fromkeys(causes)) or "see `pipenv lock` for details"
        return f"conflicting requirements ({detail})"
    match = re.search(r"Because ([^\s]+) was not found in the package registry", text)  # uv
    if match:
        return f"no version of '{match.group(1)}' is available from the package index"
    errors = [ln.strip() for ln in lines if ln.strip().startswith(("ERROR:", "error:"))]
    if errors:
        causes = [ln.split(":", 1)[1].strip() for ln in lines if re.match(r"^\s+(Caused by|cause):", ln)]
        return "; ".join([re.sub(r"^((ERROR|error):\s*)+", "", errors[-1]), *causes[-1:]])
    tail = [ln.strip() for ln in lines if ln.strip()]
    return tail[-1] if tail else "no output"


def pipenv(project: Path, *args: str) -> tuple[int, list[str]]:
    """Run ``python -m pipenv ARGS`` on ``project``'s Pipfile in this environment; return (status, output lines).

    Raises:
        DevloopError: pipenv is not installed here.
    """
    if importlib.util.find_spec("pipenv") is None:
        raise DevloopError(f"pipenv is not installed in {sys.prefix}; install it there (pip install pipenv) "
                           f"or remove {project / PIPFILE}")
    return run_command([sys.executable, "-m", "pipenv", *args], env=pipenv_env(project))


def pipfile_hash(pipfile: Path) -> str:
    """Return the sha256 pipenv records in ``Pipfile.lock``'s ``_meta.hash`` for ``pipfile``: the digest of
    the JSON (sorted keys, no spaces) of its sources (pipenv's default PyPI source when it names none),
    ``requires``, ``packages`` as ``default``, ``dev-packages`` as ``develop`` and any other package category.

    Raises:
        OSError: the file cannot be read.
        ValueError: it is not valid TOML.
    """
    data = tomllib.loads(pipfile.read_text(encoding="utf-8"))
    sources = data.get("source") or [{"name": "pypi", "url": "https://pypi.org/simple", "verify_ssl": True}]
    meta = {"_meta": {"sources": sources, "requires": data.get("requires", {})},
            "default": data.get("packages", {}), "develop": data.get("dev-packages", {})}
    for category, values in data.items():
        if category not in _NOT_CATEGORIES:
            meta[category] = values
    return hashlib.sha256(json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def lock_matches(project: Path) -> bool:
    """Return True when the project's Pipfile.lock was made from its Pipfile as it is (the hash pipenv
    recorded equals :func:`pipfile_hash`), without running pipenv (~1 s). False means "not sure": the caller
    asks ``pipenv verify``, so a difference between this and pipenv's hashing only costs time."""
    try:
        lock = json.loads((project / LOCKFILE).read_text(encoding="utf-8"))
        return lock["_meta"]["hash"]["sha256"] == pipfile_hash(project / PIPFILE)
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _lock_copy_dir(project: Path, where: Path) -> tuple[Path, bool]:
    """Copy the project's Pipfile into ``where`` (else a new temporary directory); return (the directory,
    whether it is temporary)."""
    temporary = False
    try:
        where.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(project / PIPFILE, where / PIPFILE)
    except OSError:
        where = Path(tempfile.mkdtemp(prefix="flask-stack-lock-"))
        temporary = True
        shutil.copyfile(project / PIPFILE, where / PIPFILE)
    return where, temporary


def ensure_lock(project: Path, copy_dir: Path) -> tuple[Path, bool]:
    """Make sure a Pipfile.lock matching the project's Pipfile exists; return (its directory, temporary).

    The directory is the project itself or, when the project cannot be written, ``copy_dir`` holding a copy
    of the Pipfile and its lock (a temporary directory, to be removed by the caller, when ``copy_dir``
    cannot be written either).

    Raises:
        DevloopError: the Pipfile does not resolve (one line naming the package), or pipenv is missing.
        OSError: neither ``copy_dir`` nor a temporary directory can be written.
    """
    if (project / LOCKFILE).is_file():
        if lock_matches(project) or pipenv(project, "verify")[0] == 0:
            return project, False
        why = "Pipfile.lock is out of date"
    else:
        why = "no Pipfile.lock"
    where, temporary = project, False
    blocked = unwritable_reason(project)
    if blocked is not None:
        where, temporary = _lock_copy_dir(project, copy_dir)
        if (where / LOCKFILE).is_file() and (lock_matches(where) or pipenv(where, "verify")[0] == 0):
            log.warning("%s in %s, which cannot be written (%s); using the lock made earlier in %s",
                        why, project, blocked, where)
            return where, temporary
        (where / LOCKFILE).unlink(missing_ok=True)
    log.info("%s; locking (pipenv lock)...", why)
    status, lines = pipenv(where, "lock")
    if status != 0:
        if temporary:
            shutil.rmtree(where, ignore_errors=True)
        raise DevloopError(f"Pipfile does not resolve: {summarize_failure(lines)}; fix [packages] in "
                           f"{project / PIPFILE}")
    if blocked is not None:
        log.warning("could not write Pipfile.lock back to %s (%s); locked in %s and installing from there "
                    "(make the project writable, or commit an up-to-date Pipfile.lock)", project, blocked, where)
    else:
        log.info("locked: Pipfile.lock written")
    return where, temporary
