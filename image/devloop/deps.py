"""Install the user's project dependencies from its Pipfile (``[packages]`` and ``[dev-packages]``, as
``pipenv install --dev`` does: this is the development environment; the deployable image gets ``[packages]`` only).

Steps, each skipped when not needed:

1. No ``Pipfile`` in the project: nothing to install.
2. A stamp (JSON: sha256 of the Pipfile and Pipfile.lock bytes, and the install key) says both
   files are unchanged since the last successful install: nothing to do, no pipenv call (~1 ms).
3. A current ``Pipfile.lock`` (its recorded Pipfile hash checked here, else ``pipenv verify``;
   ``pipenv lock`` when missing or stale), see :mod:`devloop.locking`. When the project cannot be written, the Pipfile is locked in a copy:
   ``DEPS/lock/`` with a deps dir, else ``<env>/flask-stack-deps/<project tag>-lock/`` (a temporary
   directory when that is not writable either), and the packages are installed from that lock.
4. The lock's default and develop packages become requirement lines with their hashes; the packages the
   stack itself pins (image/project/Pipfile.lock, found next to the ``server`` package) are left out, with
   one warning line when the user's lock pins another version of one of them (the stack's version is used).
5. ``uv pip install --require-hashes --no-deps`` of the rest (the lock is complete, so nothing is
   resolved; uv is ``$STACK_UV``, else ``uv`` on PATH; ``pip install`` where there is none or
   ``STACK_UV=pip``), byte-compiled (pip's default; uv's ``--compile-bytecode``), so every app process
   and the loop's preloading read ``.pyc`` files even under ``PYTHONDONTWRITEBYTECODE``: with a deps dir (``--deps-dir``/``APPSODY_DEPS``) into ``DEPS/site-<key>`` via
   ``--target`` (a fresh directory, so the app keeps running on the previous one until the loop
   restarts); without one, into the running interpreter's environment.

The install key is the sha256 of the lock's ``default`` and ``develop`` sections plus the Python ABI tag, so editing
a comment in Pipfile re-verifies but does not reinstall. Failures raise :class:`DevloopError` with
one line naming the package (from pip's/pipenv's ``ERROR:`` lines); a directory that cannot be
written (deps dir, stamp) raises it too, naming the path.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import DevloopError
from .locking import LOCKFILE, PIPFILE, ensure_lock, run_command, summarize_failure
from .logs import get_logger

# Used when the stack's own Pipfile.lock cannot be found: the runtime's direct packages.
_FALLBACK_PROTECTED = ("flask", "werkzeug", "jinja2", "markupsafe", "itsdangerous", "click", "blinker",
                       "flasgger", "prometheus-client", "gunicorn", "debugpy", "watchfiles", "pipenv", "pytest")
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*==\s*([^\s;]+)")

log = get_logger()


@dataclass
class DepsState:
    """The result of :func:`ensure_deps`.

    Attributes:
        key (str | None): the install key (hex) of the installed set; None when there is no Pipfile.
        site_dir (Path | None): the directory to put on ``sys.path`` (deps-dir mode only).
        installed (bool): True when this call ran pip.
    """

    key: str | None
    site_dir: Path | None
    installed: bool = False


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _normalize(name: str) -> str:
    """PEP 503 name normalization (``Prometheus_Client`` -> ``prometheus-client``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _stamp_path(project: Path, deps_dir: Path | None) -> Path:
    if deps_dir is not None:
        return deps_dir / "stamp.json"
    tag = _sha(str(project.resolve()).encode())[:16]
    return Path(sys.prefix) / "flask-stack-deps" / f"{tag}.json"


def _read_stamp(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _write_stamp(path: Path, stamp: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".stamp-")
    with os.fdopen(fd, "w") as f:
        json.dump(stamp, f)
    os.replace(tmp, path)


def _file_hashes(project: Path) -> dict[str, str]:
    """sha256 of the project's Pipfile and Pipfile.lock ("" for a missing lock); raises OSError."""
    try:
        lock = _sha((project / LOCKFILE).read_bytes())
    except FileNotFoundError:
        lock = ""
    return {"pipfile": _sha((project / PIPFILE).read_bytes()), "lock": lock}


def site_dir_for(deps_dir: Path, key: str) -> Path:
    """Return the ``--target`` directory of install key ``key`` inside ``deps_dir``."""
    return deps_dir / f"site-{key}"


def current_state(project: Path, deps_dir: Path | None) -> DepsState | None:
    """Return the installed state when the stamp matches the project's Pipfile and lock, else None.

    Never runs a command; used at startup and to decide whether a file event needs any work.
    """
    if not (project / PIPFILE).is_file():
        return DepsState(None, None)
    try:
        files = _file_hashes(project)
    except OSError:
        return None
    stamp = _read_stamp(_stamp_path(project, deps_dir))
    if stamp.get("pipfile") != files["pipfile"] or stamp.get("lock") != files["lock"] or not stamp.get("key"):
        return None
    key = stamp["key"]
    if deps_dir is None:
        return DepsState(key, None)
    site = site_dir_for(deps_dir, key)
    return DepsState(key, site) if (site / ".complete").is_file() else None


def protected_versions() -> dict[str, str]:
    """Return {normalized name: version} of the packages the stack itself provides.

    Read from ``Pipfile.lock`` next to the ``server`` package (default and develop sections); when
    that file is absent, the stack's direct packages as installed here.
    """
    spec = importlib.util.find_spec("server")
    if spec and spec.origin:
        lock = Path(spec.origin).resolve().parent.parent / LOCKFILE
        try:
            data = json.loads(lock.read_text())
            pins = {}
            for section in ("develop", "default"):
                for name, entry in data.get(section, {}).items():
                    pins[_normalize(name)] = str(entry.get("version", "")).lstrip("=")
            return pins
        except (OSError, ValueError, AttributeError):
            pass
    pins = {}
    for name in _FALLBACK_PROTECTED:
        try:
            pins[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return pins


def filter_requirements(lines: list[str], protected: dict[str, str]) -> tuple[list[str], int]:
    """Drop the stack's own packages from exported requirement ``lines``.

    Returns (lines to pass to ``pip install -r``, number of packages in them). Logs one warning per
    package whose pinned version differs from the stack's.
    """
    kept, count = [], 0
    for line in lines:
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = _PIN.match(stripped)
        if match:
            name, version = _normalize(match.group(1)), match.group(3)
            if name in protected:
                if protected[name] and protected[name] != version:
                    log.warning("Pipfile.lock pins %s==%s but the stack provides %s==%s; the stack's version is used",
                                name, version, name, protected[name])
                continue
        if not stripped.startswith("-"):
            count += 1
        kept.append(stripped)
    return kept, count


def _read_lock(lock_dir: Path) -> dict:
    try:
        return json.loads((lock_dir / LOCKFILE).read_text())
    except (OSError, ValueError) as exc:
        raise DevloopError(f"cannot read {lock_dir / LOCKFILE} ({exc}); delete it to have it locked again") from None


def _install_key(lock: dict) -> str:
    default = json.dumps([lock.get("default", {}), lock.get("develop", {})], sort_keys=True, separators=(",", ":"))
    tag = f"{sys.implementation.cache_tag}-{sys.platform}-{os.uname().machine}"
    return _sha(f"{default}\n{tag}".encode())[:16]


def lock_requirements(lock: dict, sections: tuple[str, ...] = ("default",)) -> list[str]:
    """Return pip requirement lines (``name[extras]==X ; markers --hash=sha256:...``) for ``sections`` of a
    parsed Pipfile.lock (a package in several is written once, from the first); an entry without a pinned
    version (a VCS or path package) is passed as its name or path without hashes, and then the install runs
    without hash checking."""
    lines, seen = [], set()
    entries = [(name, entry) for section in sections for name, entry in sorted((lock.get(section) or {}).items())]
    for name, entry in entries:
        if _normalize(name) in seen:
            continue
        seen.add(_normalize(name))
        entry = entry if isinstance(entry, dict) else {}
        extras = f"[{','.join(sorted(entry['extras']))}]" if entry.get("extras") else ""
        if entry.get("path") or entry.get("file"):
            requirement = f"{entry.get('path') or entry.get('file')}"
        elif entry.get("git"):
            requirement = f"{name}{extras} @ git+{entry['git']}" + (f"@{entry['ref']}" if entry.get("ref") else "")
        else:
            requirement = f"{name}{extras}{entry.get('version', '')}"
        if entry.get("markers"):
            requirement += f" ; {entry['markers']}"
        lines.append(requirement + "".join(f" --hash={h}" for h in entry.get("hashes") or []))
    return lines


def installer() -> str | None:
    """Return the uv binary that installs the Pipfile's packages (``$STACK_UV``, else ``uv`` on PATH), or
    None for pip (``STACK_UV=pip``, or no uv)."""
    explicit = os.environ.get("STACK_UV", "").strip()
    if explicit == "pip":
        return None
    return explicit or shutil.which("uv")


def _pip_install(project: Path, requirements: list[str], target: Path | None) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".txt", prefix="devloop-req-", delete=False) as f:
        f.write("\n".join(requirements) + "\n")
        req_file = f.name
    hashed = all("--hash=" in line for line in requirements)
    uv = installer()
    if uv:
        argv = [uv, "pip", "install", "--no-deps", "--no-progress", "--compile-bytecode", "--python", sys.executable,
                "-r", req_file]
        argv += ["--target", str(target)] if target is not None else []
    else:
        argv = [sys.executable, "-m", "pip", "install", "--no-deps", "--disable-pip-version-check", "--no-input",
                "--progress-bar", "off", "--no-warn-script-location", "-r", req_file]
        argv += ["--target", str(target)] if target is not None else []
    if hashed:
        argv.append("--require-hashes")
    env = dict(os.environ, NO_COLOR="1", UV_PYTHON_DOWNLOADS="never")
    env.pop("PYTHONPATH", None)
    env["COLUMNS"] = "1000"
    tool = "uv" if uv else "pip"
    try:
        status, lines = run_command(argv, env=env, on_line=lambda line: log.info("%s: %s", tool, line.strip()))
    except OSError as exc:  # uv named by STACK_UV cannot run
        raise DevloopError(f"cannot run {argv[0]} ({exc.strerror}); set STACK_UV to uv's path, or to pip") from None
    finally:
        os.unlink(req_file)
    if status != 0:
        raise DevloopError(f"installing the Pipfile's packages failed: {summarize_failure(lines)}; "
                           f"fix [packages] in {project / PIPFILE}")


def ensure_deps(project: Path, deps_dir: Path | None, *, cleanup: bool = True) -> DepsState:
    """Make the project's ``[packages]`` importable; see the module docstring for the steps.

    Args:
        project: the directory holding the user's Pipfile.
        deps_dir: where to install (``--target`` mode), or None for the running environment.
        cleanup: remove other ``site-*`` directories of ``deps_dir`` (only safe when no app process
            is using them).

    Raises:
        DevloopError: the Pipfile does not resolve, pipenv is missing, or pip fails.
        StopRequested: SIGINT/SIGTERM arrived; the running command was killed.
    """
    try:
        state = current_state(project, deps_dir)
        if state is None:
            state = _install(project, deps_dir)
    except OSError as exc:  # a directory or file this process cannot write (deps dir, stamp, lock copy)
        place = f" {exc.filename}" if exc.filename else ""
        raise DevloopError(f"cannot write{place}: {exc.strerror or exc}; make it writable by uid {os.geteuid()}"
                           f"{' or pass another --deps-dir' if deps_dir is not None else ''}") from None
    if cleanup and deps_dir is not None and deps_dir.is_dir():
        for child in deps_dir.iterdir():
            if child.name.startswith("site-") and child != state.site_dir:
                shutil.rmtree(child, ignore_errors=True)
    return state


def _install(project: Path, deps_dir: Path | None) -> DepsState:
    pipfile_sha = _sha((project / PIPFILE).read_bytes())  # before locking: a save meanwhile is seen next time
    stamp = _stamp_path(project, deps_dir)
    copy_dir = deps_dir / "lock" if deps_dir is not None else stamp.with_name(stamp.stem + "-lock")
    lock_dir, temporary = ensure_lock(project, copy_dir)
    try:
        key, site, installed = _install_locked(project, lock_dir, deps_dir)
    finally:
        if temporary:
            shutil.rmtree(lock_dir, ignore_errors=True)
    files = _file_hashes(project)
    files["pipfile"] = pipfile_sha
    _write_stamp(_stamp_path(project, deps_dir), {**files, "key": key})
    return DepsState(key, site, installed)


def _install_locked(project: Path, lock_dir: Path, deps_dir: Path | None) -> tuple[str, Path | None, bool]:
    """Install the default and develop packages of ``lock_dir``'s Pipfile.lock unless the stamp has them; return
    (install key, site dir or None, whether pip ran)."""
    lock = _read_lock(lock_dir)
    key = _install_key(lock)
    previous = _read_stamp(_stamp_path(project, deps_dir))
    site = site_dir_for(deps_dir, key) if deps_dir is not None else None
    installed = False
    if previous.get("key") == key and (site is None or (site / ".complete").is_file()):
        return key, site, installed
    requirements, count = filter_requirements(lock_requirements(lock, ("default", "develop")), protected_versions())
    staging = None
    if site is not None:
        staging = site.with_name(site.name + ".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    try:
        if count:
            where = str(site) if site is not None else sys.prefix
            log.info("installing %d package%s from Pipfile.lock into %s...", count, "" if count == 1 else "s", where)
            _pip_install(project, requirements, staging)
            installed = True
        if staging is not None:
            (staging / ".complete").write_text(key)
            shutil.rmtree(site, ignore_errors=True)
            staging.rename(site)
    finally:
        if staging is not None and staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    if installed:
        log.info("dependencies installed")
    return key, site, installed


def activate(state: DepsState) -> None:
    """Put ``state.site_dir`` first on ``sys.path``, processing its .pth files.

    The user's packages then win over anything else installed in the environment except the
    stack's own packages, which are never installed there.
    """
    if state.site_dir is None:
        return
    import site

    before = list(sys.path)
    site.addsitedir(str(state.site_dir))
    added = [p for p in sys.path if p not in before]
    sys.path[:] = added + before


def pythonpath(state: DepsState) -> str:
    """Return the PYTHONPATH value for a subprocess that must see the project's packages first."""
    parts = [str(state.site_dir)] if state.site_dir is not None else []
    if os.environ.get("PYTHONPATH"):
        parts.append(os.environ["PYTHONPATH"])
    return os.pathsep.join(parts)
