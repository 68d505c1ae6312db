"""The local engine's virtual environment: one per project, made once, reused, remade when the lock changes.

Where: ``<cache>/envs/<project name>-<12 hex digits of sha256(project path)>``, with ``<cache>`` =
``$STACK_CACHE_DIR``, else ``$XDG_CACHE_HOME/flask-stack``, else ``~/.cache/flask-stack``. The user cache
dir rather than a directory inside the project, because the project directory is what the container engine
mounts, what ``build`` copies into an image, what the dev loop watches for changes and what the user commits:
~100 MB of site-packages belongs in none of them. One venv per project (not one shared) because the dev
loop installs the project's own Pipfile packages into it; pip's download cache makes a second project's
venv quick to make.

What: the stack's runtime lock ``image/project/Pipfile.lock``, sections ``default`` and ``develop``
(debugpy, watchfiles, pipenv, pytest), installed with ``pip install --require-hashes --no-compile``
(byte-compiling every module up front took two thirds of the install time; Python compiles what is
imported on first use and caches it in the venv). A stamp file
(written last) records the lock's digest and the interpreter; an environment without a matching stamp is
removed and made again, so a failed or interrupted install is never reused.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from collections.abc import Callable, Iterator

from . import __version__
from .errors import StackError
from .lockfile import lock_digest, requirements_from_lock
from .paths import runtime_dir

STAMP = ".flask-stack-stamp"
#: The oldest Python the runtime lock installs on (its packages' python_version markers).
MIN_PYTHON = (3, 11)
REQUIREMENTS = ".flask-stack-requirements.txt"

Echo = Callable[[str], None]


def cache_root() -> Path:
    """Return the flask-stack cache directory (see the module docstring for the lookup order)."""
    explicit = os.environ.get("STACK_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "flask-stack"


def env_dir(project: Path) -> Path:
    """Return the virtual environment directory of ``project`` (it may not exist yet)."""
    resolved = project.resolve()
    slug = re.sub(r"[^a-z0-9]+", "-", resolved.name.lower()).strip("-")[:40] or "project"
    digest = hashlib.sha256(os.fsencode(resolved)).hexdigest()[:12]
    return cache_root() / "envs" / f"{slug}-{digest}"


def project_dir(project: Path) -> Path:
    """Return the cache directory of ``project``'s own state (server record, its packages); may not exist yet."""
    resolved = project.resolve()
    slug = re.sub(r"[^a-z0-9]+", "-", resolved.name.lower()).strip("-")[:40] or "project"
    digest = hashlib.sha256(os.fsencode(resolved)).hexdigest()[:12]
    return cache_root() / "projects" / f"{slug}-{digest}"


def base_python() -> str:
    """Return the interpreter the venv is made from: ``$STACK_PYTHON``, else the one running flask-stack."""
    return os.environ.get("STACK_PYTHON") or sys.executable


def env_python(venv: Path) -> Path:
    """Return the venv's interpreter path."""
    return venv / "bin" / "python"


def ensure_env(project: Path, echo: Echo) -> Path:
    """Return the project's ready virtual environment, making or remaking it first when needed.

    Progress lines go to ``echo``. Concurrent callers for the same project wait on a file lock.

    Raises:
        StackError: the venv cannot be made or a package does not install (one line naming the
            failing step or package); the half-made venv has been removed.
    """
    venv = env_dir(project)
    lock_path = runtime_dir() / "Pipfile.lock"
    wanted = _wanted_stamp(lock_path)
    if _read_stamp(venv) == wanted and env_python(venv).exists():
        return venv
    venv.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(venv.with_name(venv.name + ".lock")):
        if _read_stamp(venv) == wanted and env_python(venv).exists():
            return venv  # another flask-stack made it while we waited
        _build(venv, lock_path, wanted, echo)
    return venv


def _wanted_stamp(lock_path: Path) -> dict[str, str]:
    """Return what the stamp of a current venv holds: the lock digest and the base interpreter's identity.

    Raises:
        StackError: the interpreter cannot be run or is older than ``MIN_PYTHON``.
    """
    python = base_python()
    if python == sys.executable:
        version = f"{sys.version.split()[0]} {sys.prefix}"
    else:
        try:
            version = subprocess.run(
                [python, "-c", "import sys; print(sys.version.split()[0], sys.prefix)"],
                capture_output=True, text=True, timeout=30, check=True,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            raise StackError(
                f"cannot run the Python interpreter {python}; set STACK_PYTHON to a Python 3.11+") from None
    try:
        numbers = tuple(int(part) for part in version.split()[0].split(".")[:2])
    except (ValueError, IndexError):
        numbers = (0, 0)
    if numbers < MIN_PYTHON:
        raise StackError(f"{python} is Python {version.split()[0] if version else '?'}; the stack needs "
                         f"{'.'.join(map(str, MIN_PYTHON))}+: set STACK_PYTHON to a newer interpreter")
    return {"lock": lock_digest(lock_path), "python": f"{python} {version}"}


def _read_stamp(venv: Path) -> dict[str, str] | None:
    """Return the stamp a finished build wrote, or None when absent or unreadable."""
    try:
        data = json.loads((venv / STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return {k: data.get(k) for k in ("lock", "python")} if isinstance(data, dict) else None


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` for the duration of the block."""
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build(venv: Path, lock_path: Path, stamp: dict[str, str], echo: Echo) -> None:
    """Make ``venv`` from scratch and install the lock into it; remove it on any failure or interrupt."""
    started = time.monotonic()
    if venv.exists():
        echo(f"the virtual environment {venv} is out of date or incomplete: remaking it")
        shutil.rmtree(venv)
    try:
        echo(f"creating the local engine's virtual environment {venv} (once per project)")
        _make_venv(venv)
        requirements = venv / REQUIREMENTS
        requirements.write_text(requirements_from_lock(lock_path), encoding="utf-8")
        _pip_install(venv, requirements, echo)
        (venv / STAMP).write_text(json.dumps({**stamp, "flask_stack": __version__}) + "\n", encoding="utf-8")
    except BaseException:
        shutil.rmtree(venv, ignore_errors=True)
        raise
    echo(f"virtual environment ready in {time.monotonic() - started:.1f} s")


def _make_venv(venv: Path) -> None:
    """Run ``python -m venv``; raise StackError naming the step when it fails."""
    python = base_python()
    try:
        result = subprocess.run(
            [python, "-m", "venv", str(venv)], capture_output=True, text=True, timeout=300
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise StackError(f"creating the virtual environment with {python} failed: {exc}") from None
    if result.returncode != 0:
        last = _last_line(result.stderr or result.stdout) or f"exit status {result.returncode}"
        hint = " (on Debian/Ubuntu: apt-get install python3-venv)" if "ensurepip" in result.stderr else ""
        raise StackError(f"creating the virtual environment with {python} failed: {last}{hint}")


_ERROR_LINE = re.compile(r"^(ERROR|error):\s*(.+)$")
_COLLECTING = re.compile(r"^Collecting (\S+)")
_PROCESSING = re.compile(r"^Processing \S*?([^/\s]+?)-([^-/\s]+?)(?:-py\S*|-cp\S*|\.tar\.gz|\.zip)?\s")


def _pip_install(venv: Path, requirements: Path, echo: Echo) -> None:
    """Install ``requirements`` with hash checking, echoing progress; raise StackError naming the package."""
    cmd = [
        str(env_python(venv)), "-m", "pip", "install", "--require-hashes", "--no-input", "--no-compile",
        "--disable-pip-version-check", "--progress-bar", "off", "-r", str(requirements),
    ]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("PYTHONPATH", None)
    current = None
    errors: list[str] = []
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip()
            collecting = _COLLECTING.match(line)
            processing = _PROCESSING.match(line)
            if collecting:
                current = collecting.group(1)
                echo(f"  collecting {current}")
            elif processing:
                current = f"{processing.group(1)}=={processing.group(2)}"
                echo(f"  collecting {current}")
            elif line.startswith("Installing collected packages"):
                echo(f"  installing {len(line.split(':', 1)[1].split(','))} packages")
            elif "DO NOT MATCH THE HASHES" in line:
                errors.append("a downloaded file does not match its hash in the lock")
            elif _ERROR_LINE.match(line):
                errors.append(_ERROR_LINE.match(line).group(2))
            elif re.match(r"^\s+\S+==\S+ from ", line) and errors:
                current = line.split()[0]
        status = proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if status != 0:
        named = re.search(r"requirement (\S+)", errors[0]) if errors else None
        where = f" at {current or named.group(1)}" if current or named else ""
        detail = errors[0] if errors else f"pip exited with status {status}"
        raise StackError(f"installing the stack's runtime packages failed{where}: {detail}")


def _last_line(text: str) -> str:
    """Return the last non-empty line of ``text`` ('' when none)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""
