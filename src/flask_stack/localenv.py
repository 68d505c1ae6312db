"""The local engine's environments: the stack's, shared by every project, and each project's own layer.

**The stack's environment** holds the stack's locked runtime and dev packages (``image/project/Pipfile.lock``,
sections ``default`` and ``develop``: Flask, gunicorn, debugpy, watchfiles, pipenv, pytest, ...). It is made
once per machine, stack lock and interpreter, and shared read-only by every project:
``<cache>/stack/<16 hex digits of the lock's sha256>-py<X.Y>-<8 hex digits naming the interpreter>``, with
``<cache>`` = ``$STACK_CACHE_DIR``, else ``$XDG_CACHE_HOME/flask-stack``, else ``~/.cache/flask-stack``. A new
stack version with another lock gets a new directory; the old one is left for a flask-stack still using it.

**A project's own layer**: ``<cache>/projects/<name>-<12 hex digits of sha256(project path)>/`` holds the
project's declared packages (``deps/``, installed by the dev loop with ``--deps-dir``, put first on ``sys.path``,
as the container's dependency volume does) and the record of its running server. The user cache dir rather
than a directory inside the project, because the project directory is what the container engine mounts, what
``build`` copies into an image, what the dev loop watches and what the user commits.

Installer: ``uv`` (``uv venv``, then ``uv pip install --require-hashes --no-deps`` from the lock: every file is
checked against the lock's sha256 hashes, nothing is resolved; its cache makes a second environment take
well under a second), the one installed with flask-stack, ``$STACK_UV``, or ``uv`` on PATH. Where uv cannot run,
or ``STACK_UV=pip``: ``python -m venv`` and ``pip install --require-hashes --no-compile``. Then only the modules
a start imports are byte-compiled (:func:`_compile_what_starts`): all of them would take longer than the install.
A stamp file (written last) records the lock's digest and the interpreter; an environment without a matching
stamp is removed and made again, so a failed or interrupted install is never reused.
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
import tempfile
import time
from pathlib import Path
from collections.abc import Callable, Iterator

from . import __version__
from .errors import CliError
from .lockfile import lock_digest, requirements_from_lock
from .paths import devloop_parent, runtime_dir, stacksettings

STAMP = ".flask-stack-stamp"
#: ``STACK_UV`` value that makes the local engine install with pip instead of uv.
PIP = "pip"
#: The oldest Python the runtime lock installs on (its packages' python_version markers).
MIN_PYTHON = (3, 11)
REQUIREMENTS = ".flask-stack-requirements.txt"

Echo = Callable[[str], None]


def cache_root() -> Path:
    """Return the flask-stack cache directory (see the module docstring for the lookup order)."""
    explicit = stacksettings().value("STACK_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "flask-stack"


def project_dir(project: Path) -> Path:
    """Return the cache directory of ``project``'s own state (server record, its packages); may not exist yet."""
    resolved = project.resolve()
    slug = re.sub(r"[^a-z0-9]+", "-", resolved.name.lower()).strip("-")[:40] or "project"
    digest = hashlib.sha256(os.fsencode(resolved)).hexdigest()[:12]
    return cache_root() / "projects" / f"{slug}-{digest}"


def base_python() -> str:
    """Return the interpreter the venv is made from: ``$STACK_PYTHON``, else the one running flask-stack."""
    return stacksettings().value("STACK_PYTHON") or sys.executable


def env_python(venv: Path) -> Path:
    """Return the venv's interpreter path."""
    return venv / "bin" / "python"


def stack_env_dir(stamp: dict[str, str]) -> Path:
    """Return the directory of the stack's environment described by ``stamp`` (see :func:`_wanted_stamp`)."""
    version = stamp["python"].split()[1]
    python_id = hashlib.sha256(stamp["python"].encode()).hexdigest()[:8]
    return cache_root() / "stack" / f"{stamp['lock'][:16]}-py{'.'.join(version.split('.')[:2])}-{python_id}"


def find_uv() -> str | None:
    """Return the uv binary to install with, or None for pip: ``$STACK_UV`` (``pip``: None), else the uv
    installed with flask-stack (the ``uv`` package), else ``uv`` on PATH; None when none is found or it cannot
    run here (``uv --version`` fails)."""
    explicit = stacksettings().value("STACK_UV") or ""
    if explicit == PIP:
        return None
    candidate = explicit or None
    if candidate is None:
        try:
            from uv import find_uv_bin

            candidate = find_uv_bin()
        except (ImportError, FileNotFoundError):
            candidate = shutil.which("uv")
    if candidate is None:
        return None
    try:
        subprocess.run([candidate, "--version"], capture_output=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return candidate


def ensure_stack_env(echo: Echo) -> Path:
    """Return the stack's ready environment, making it first when this machine has none for this lock.

    Progress lines go to ``echo``. Concurrent callers wait on a file lock; the first makes it.

    Raises:
        CliError: the environment cannot be made or a package does not install (one line naming the
            failing step or package); the half-made environment has been removed.
    """
    lock_path = runtime_dir() / "Pipfile.lock"
    wanted = _wanted_stamp(lock_path)
    venv = stack_env_dir(wanted)
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
        CliError: the interpreter cannot be run or is older than ``MIN_PYTHON``.
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
            raise CliError(
                f"cannot run the Python interpreter {python}; set STACK_PYTHON to a Python 3.11+") from None
    try:
        numbers = tuple(int(part) for part in version.split()[0].split(".")[:2])
    except (ValueError, IndexError):
        numbers = (0, 0)
    if numbers < MIN_PYTHON:
        raise CliError(f"{python} is Python {version.split()[0] if version else '?'}; the stack needs "
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
        echo(f"the stack's environment {venv} is incomplete: remaking it")
        shutil.rmtree(venv)
    uv = find_uv()
    try:
        echo(f"installing the stack's packages into {venv} with {'uv' if uv else 'pip'} "
             "(once per machine and stack version)")
        requirements = venv.parent / f".{venv.name}-requirements.txt"
        requirements.write_text(requirements_from_lock(lock_path), encoding="utf-8")
        try:
            if uv:
                _uv_install(uv, venv, requirements, echo)
            else:
                _make_venv(venv)
                _pip_install(venv, requirements, echo)
        finally:
            requirements.unlink(missing_ok=True)
        _compile_what_starts(venv)
        (venv / STAMP).write_text(json.dumps({**stamp, "flask_stack": __version__}) + "\n", encoding="utf-8")
    except BaseException:
        shutil.rmtree(venv, ignore_errors=True)
        raise
    echo(f"the stack's environment is ready in {time.monotonic() - started:.1f} s")


#: Run in a new environment: import what the dev loop, an app process and ``test`` import; Python writes the
#: ``.pyc`` files of the environment's modules as it goes (read later even under PYTHONDONTWRITEBYTECODE).
_COMPILE_SCRIPT = """
from devloop import process
process.warm_imports()
import devloop.__main__, devloop.child, pytest, watchfiles
"""


def _compile_what_starts(venv: Path) -> None:
    """Byte-compile the modules of ``venv`` that a dev loop, an app process and ``test`` import, by importing them
    once with bytecode writing on (about 1.5 s of CPU; compiling every module, as ``uv --compile-bytecode`` does,
    takes 10 s or more), so every start reads ``.pyc`` files: Python writes them on first import too, but not
    under PYTHONDONTWRITEBYTECODE. The stack's own packages are imported from a temporary copy, so no ``.pyc`` is
    written among its files. Best effort."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.pop("VIRTUAL_ENV", None)
    try:
        with tempfile.TemporaryDirectory(prefix="flask-stack-compile-") as tmp:
            skip = shutil.ignore_patterns("__pycache__", "*.pyc")
            shutil.copytree(runtime_dir() / "server", Path(tmp) / "server", ignore=skip)
            shutil.copytree(devloop_parent() / "devloop", Path(tmp) / "devloop", ignore=skip)
            shutil.copytree(runtime_dir() / "stacksettings", Path(tmp) / "stacksettings", ignore=skip)
            shutil.copy2(runtime_dir() / "oneline.py", Path(tmp) / "oneline.py")
            env["PYTHONPATH"] = tmp
            subprocess.run([str(env_python(venv)), "-c", _COMPILE_SCRIPT], env=env, cwd=tmp, capture_output=True,
                           timeout=300)
    except (OSError, subprocess.SubprocessError, shutil.Error):
        pass


def _uv_install(uv: str, venv: Path, requirements: Path, echo: Echo) -> None:
    """Make ``venv`` with ``uv venv`` and install ``requirements`` into it (hash-checked, no resolution),
    echoing uv's progress lines; raise CliError with uv's reason in one line."""
    env = dict(os.environ, NO_COLOR="1", UV_PYTHON_DOWNLOADS="never")
    # the system's certificate store, as pip uses it (a proxy's CA there), not uv's bundled roots (as stackdeps does)
    env.setdefault("UV_SYSTEM_CERTS", "1")
    for name in ("PYTHONPATH", "VIRTUAL_ENV", "UV_SYSTEM_PYTHON"):
        env.pop(name, None)
    steps = [
        ("creating the virtual environment", [uv, "venv", "--quiet", "--python", base_python(), str(venv)]),
        ("installing the stack's runtime packages", [
            uv, "pip", "install", "--python", str(env_python(venv)), "--require-hashes", "--no-deps",
            "--no-progress", "-r", str(requirements)]),
    ]
    for what, cmd in steps:
        errors: list[str] = []

        def on_line(line: str) -> None:
            if line.startswith(("Resolved ", "Prepared ", "Installed ", "Downloading ")):
                echo(f"  {line[0].lower()}{line[1:]}")
            elif line.startswith("error:") or re.match(r"^\s+(Caused by|cause):", line):
                errors.append(line.split(":", 1)[1].strip())

        status = _stream(cmd, env, on_line)
        if status != 0:
            detail = "; ".join(errors) or f"uv exited with status {status}"
            raise CliError(f"{what} with uv failed: {detail}")


def _stream(cmd: list[str], env: dict[str, str], on_line: Callable[[str], None]) -> int:
    """Run ``cmd`` with stdout and stderr merged, handing each output line (right-stripped) to ``on_line`` as it
    comes; return its exit status. The process is killed if this is interrupted (Ctrl-C, SIGTERM)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            on_line(raw.rstrip())
        return proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _make_venv(venv: Path) -> None:
    """Run ``python -m venv``; raise CliError naming the step when it fails."""
    python = base_python()
    try:
        result = subprocess.run(
            [python, "-m", "venv", str(venv)], capture_output=True, text=True, timeout=300
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise CliError(f"creating the virtual environment with {python} failed: {exc}") from None
    if result.returncode != 0:
        last = _last_line(result.stderr or result.stdout) or f"exit status {result.returncode}"
        hint = " (on Debian/Ubuntu: apt-get install python3-venv)" if "ensurepip" in result.stderr else ""
        raise CliError(f"creating the virtual environment with {python} failed: {last}{hint}")


_ERROR_LINE = re.compile(r"^(ERROR|error):\s*(.+)$")
_COLLECTING = re.compile(r"^Collecting (\S+)")
_PROCESSING = re.compile(r"^Processing \S*?([^/\s]+?)-([^-/\s]+?)(?:-py\S*|-cp\S*|\.tar\.gz|\.zip)?\s")


def _pip_install(venv: Path, requirements: Path, echo: Echo) -> None:
    """Install ``requirements`` with hash checking, echoing progress; raise CliError naming the package."""
    cmd = [
        str(env_python(venv)), "-m", "pip", "install", "--require-hashes", "--no-input", "--no-compile",
        "--disable-pip-version-check", "--progress-bar", "off", "-r", str(requirements),
    ]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("PYTHONPATH", None)
    current = None
    errors: list[str] = []

    def on_line(line: str) -> None:
        nonlocal current
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

    status = _stream(cmd, env, on_line)
    if status != 0:
        named = re.search(r"requirement (\S+)", errors[0]) if errors else None
        where = f" at {current or named.group(1)}" if current or named else ""
        detail = errors[0] if errors else f"pip exited with status {status}"
        raise CliError(f"installing the stack's runtime packages failed{where}: {detail}")


def _last_line(text: str) -> str:
    """Return the last non-empty line of ``text`` ('' when none)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""
