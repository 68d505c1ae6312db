"""Install the project's packages as it declares them (:mod:`stackdeps.detect`: ``uv.lock`` with
``pyproject.toml``, ``Pipfile``, ``pyproject.toml``, ``requirements.txt``), runtime and development packages
alike: this is the development environment; the deployable image gets the runtime set only.

Steps, each skipped when not needed:

1. No declaration in the project: nothing to install (the stack's packages only).
2. A stamp (JSON: sha256 of each declaration file, of the stack's ranges and lock, and the install key) says
   nothing changed since the last successful install: nothing to do, no command runs (~1 ms).
3. The declaration's lock is made current where the format has one: ``pipenv lock`` for a missing or stale
   ``Pipfile.lock`` (:mod:`devloop.locking`), ``uv lock`` for a ``pyproject.toml`` (``uv.lock`` written next to
   it; both into a copy under the deps dir or the stamp's directory when the project cannot be written).
4. One resolution by uv of the stack's ranges and the project's packages (:mod:`stackdeps.resolve`): the
   project's pins win wherever the stack's ranges allow, a true conflict is one line naming both requirements.
5. ``uv pip install --require-hashes --no-deps`` (``pip install`` with ``STACK_UV=pip``), byte-compiled, of
   what the stack's environment does not already hold at that version: with a deps dir
   (``--deps-dir``/``APPSODY_DEPS``) into ``DEPS/site-<key>`` via ``--target`` (a fresh directory, first on
   ``sys.path``, so a project's version shadows the stack's; the app keeps running on the previous one until the
   loop restarts); without one, everything into the running interpreter's environment.

The install key is the sha256 of the resolved hashed lines plus the Python ABI tag, so editing a comment
re-resolves but does not reinstall. Failures raise :class:`DevloopError` with one line; a directory that cannot
be written (deps dir, stamp) raises it too, naming the path.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import stacksettings
from stackdeps import DepsError
from stackdeps.detect import PIPFILE, Declaration, detect, poetry_only
from stackdeps.resolve import HERE as STACKDEPS_DIR, Resolution, normalize, parse_requirements, project_inputs, \
    resolve, stack_pins, uv_env

from .errors import DevloopError
from .locking import LOCKFILE, ensure_lock, run_command, summarize_failure
from .logs import get_logger

__all__ = ["LOCKFILE", "PIPFILE", "DepsState", "activate", "current_state", "ensure_deps", "pythonpath"]

log = get_logger()
#: Declaration files that locking writes (their digest is taken after the install).
_LOCKS = ("Pipfile.lock", "uv.lock", "<kind>")


@dataclass
class DepsState:
    """The result of :func:`ensure_deps`.

    Attributes:
        key (str | None): the install key (hex) of the installed set; None when the project declares nothing.
        site_dir (Path | None): the directory to put on ``sys.path`` (deps-dir mode only).
        installed (bool): True when this call installed packages.
        source (str | None): the file the project declares its packages in (``requirements.txt``...).
    """

    key: str | None
    site_dir: Path | None
    installed: bool = False
    source: str | None = None


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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


def _file_hashes(project: Path, declaration: Declaration) -> dict[str, str]:
    """sha256 of each declaration file ("" for a missing one), and of the stack's ranges and lock."""
    hashes = {}
    for name in declaration.files:
        try:
            hashes[name] = _sha((project / name).read_bytes())
        except FileNotFoundError:
            hashes[name] = ""
    stack = b"".join(p.read_bytes() for p in (STACKDEPS_DIR / "runtime.txt", STACKDEPS_DIR / "devtools.txt",
                                              STACKDEPS_DIR.parent / LOCKFILE) if p.is_file())
    hashes["<stack>"] = _sha(stack)
    hashes["<kind>"] = declaration.kind or ""
    return hashes


def site_dir_for(deps_dir: Path, key: str) -> Path:
    """Return the ``--target`` directory of install key ``key`` inside ``deps_dir``."""
    return deps_dir / f"site-{key}"


def current_state(project: Path, deps_dir: Path | None) -> DepsState | None:
    """Return the installed state when the stamp matches the project's declaration files, else None.

    Never runs a command; used at startup and to decide whether a file event needs any work.
    """
    declaration = detect(project)
    if declaration.kind is None:
        return DepsState(None, None)
    try:
        files = _file_hashes(project, declaration)
    except OSError:
        return None
    stamp = _read_stamp(_stamp_path(project, deps_dir))
    if stamp.get("files") != files or not stamp.get("key"):
        return None
    key = stamp["key"]
    if deps_dir is None:
        return DepsState(key, None, source=declaration.label)
    site = site_dir_for(deps_dir, key)
    return DepsState(key, site, source=declaration.label) if (site / ".complete").is_file() else None


def installer() -> str | None:
    """Return the uv binary that installs the project's packages (``$STACK_UV``, else ``uv`` on PATH), or
    None for pip (``STACK_UV=pip``, or no uv)."""
    explicit = stacksettings.value("STACK_UV") or ""
    if explicit == "pip":
        return None
    return explicit or shutil.which("uv")


def _run(argv: list[str], env: dict[str, str]) -> tuple[int, list[str]]:
    """Run a uv or pipenv command interruptibly (SIGINT/SIGTERM kill it), logging nothing."""
    return run_command(argv, env=env)


def _pip_install(source: str, requirements: list[str], target: Path | None) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".txt", prefix="devloop-req-", delete=False) as f:
        f.write("\n".join(requirements) + "\n")
        req_file = f.name
    hashed = all("--hash=" in line for line in requirements)
    uv = installer()
    if uv:
        argv = [uv, "pip", "install", "--no-deps", "--no-progress", "--compile-bytecode", "--python", sys.executable,
                "-r", req_file]
    else:
        argv = [sys.executable, "-m", "pip", "install", "--no-deps", "--disable-pip-version-check", "--no-input",
                "--progress-bar", "off", "--no-warn-script-location", "-r", req_file]
    argv += ["--target", str(target)] if target is not None else []
    if hashed:
        argv.append("--require-hashes")
    env = uv_env()
    tool = "uv" if uv else "pip"
    try:
        status, lines = run_command(argv, env=env, on_line=lambda line: log.info("%s: %s", tool, line.strip()))
    except OSError as exc:  # uv named by STACK_UV cannot run
        raise DevloopError(f"cannot run {argv[0]} ({exc.strerror}); set STACK_UV to uv's path, or to pip") from None
    finally:
        os.unlink(req_file)
    if status != 0:
        raise DevloopError(f"installing the project's packages failed: {summarize_failure(lines)}; fix {source}")


def ensure_deps(project: Path, deps_dir: Path | None, *, cleanup: bool = True) -> DepsState:
    """Make the project's declared packages importable; see the module docstring for the steps.

    Args:
        project: the project directory.
        deps_dir: where to install (``--target`` mode), or None for the running environment.
        cleanup: remove other ``site-*`` directories of ``deps_dir`` (only safe when no app process
            is using them).

    Raises:
        DevloopError: the declaration does not resolve (with the stack's ranges), a tool is missing, or the
            install fails; one line.
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
    except DepsError as exc:
        raise DevloopError(str(exc)) from None
    if state.key is None and poetry_only(project):
        log.warning("pyproject.toml declares its packages only in [tool.poetry.dependencies], which the stack does "
                    "not read (no installer reads poetry.lock without Poetry); add them to [project] dependencies "
                    "or a requirements.txt")
    if cleanup and deps_dir is not None and deps_dir.is_dir():
        for child in deps_dir.iterdir():
            if child.name.startswith("site-") and child != state.site_dir:
                shutil.rmtree(child, ignore_errors=True)
    return state


def _install(project: Path, deps_dir: Path | None) -> DepsState:
    declaration = detect(project)
    files = _file_hashes(project, declaration)  # before locking: a save meanwhile is seen next time
    if declaration.note:
        log.warning("%s", declaration.note)
    stamp = _stamp_path(project, deps_dir)
    work = deps_dir / "resolve" if deps_dir is not None else stamp.with_name(stamp.stem + "-resolve")
    work.mkdir(parents=True, exist_ok=True)
    temporaries: list[Path] = []

    def lock_pipfile(where: Path) -> Path:
        lock_dir, temporary = ensure_lock(where, deps_dir / "lock" if deps_dir is not None
                                          else stamp.with_name(stamp.stem + "-lock"))
        if temporary:
            temporaries.append(lock_dir)
        return lock_dir

    try:
        inputs = project_inputs(declaration, project, work, dev=True, run=_run, log=log.info,
                                lock_pipfile=lock_pipfile)
        # prefer what is there already: the stack's lock in its environment (a layer), else this environment
        resolution = resolve(inputs, work, python=sys.executable, dev=True, run=_run,
                             prefer=stack_pins() if deps_dir is not None else _installed_here())
    finally:
        for path in temporaries:
            shutil.rmtree(path, ignore_errors=True)
    key, site, installed = _install_resolved(declaration.label, resolution, deps_dir, stamp)
    # what the stamp records: the declaration as read (a save meanwhile is seen next time), the locks as written
    after = _file_hashes(project, detect(project))
    _write_stamp(stamp, {"files": {name: value if name in _LOCKS or name not in files else files[name]
                                   for name, value in after.items()}, "key": key})
    return DepsState(key, site, installed, declaration.label)


def _installed_here() -> dict[str, str]:
    """Return {normalized name: version} of the distributions installed in this interpreter's environment."""
    import importlib.metadata

    return {normalize(dist.metadata["Name"] or ""): dist.version for dist in importlib.metadata.distributions()}


def _install_key(resolution: Resolution) -> str:
    tag = f"{sys.implementation.cache_tag}-{sys.platform}-{os.uname().machine}"
    return _sha("\n".join([*resolution.runtime, *resolution.dev, tag]).encode())[:16]


def _install_resolved(source: str, resolution: Resolution, deps_dir: Path | None,
                      stamp: Path) -> tuple[str, Path | None, bool]:
    """Install what the resolution adds to the stack's environment unless the stamp has it; return
    (install key, site dir or None, whether anything was installed)."""
    key = _install_key(resolution)
    previous = _read_stamp(stamp)
    site = site_dir_for(deps_dir, key) if deps_dir is not None else None
    if previous.get("key") == key and (site is None or (site / ".complete").is_file()):
        return key, site, False
    # The stack's environment already has its locked versions: a layer holds the rest. Without a layer, what this
    # environment lacks is installed into it (no layer is active then, so its metadata is the environment's own).
    have = stack_pins() if site is not None else _installed_here()
    lines = [line for line in [*resolution.runtime, *resolution.dev] for _, name, version, _ in parse_requirements(line)
             if not name or have.get(name) != version]
    staging = None
    if site is not None:
        staging = site.with_name(site.name + ".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    installed = False
    try:
        if lines:
            where = str(site) if site is not None else sys.prefix
            log.info("installing %d package%s from %s into %s...", len(lines), "" if len(lines) == 1 else "s",
                     source, where)
            _pip_install(source, lines, staging)
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


def shadowed_modules(state: DepsState) -> list[str]:
    """Return the top-level modules this process already imported from elsewhere that ``state.site_dir`` holds
    another copy of (the project chose another version than the stack's environment has), sorted."""
    if state.site_dir is None or not state.site_dir.is_dir():
        return []
    names = {entry.name.split(".")[0] for entry in state.site_dir.iterdir()
             if not entry.name.endswith((".dist-info", ".libs", ".pth")) and entry.name not in ("bin", ".complete")}
    site = str(state.site_dir)
    return sorted(name for name in names if name in sys.modules
                  and not (getattr(sys.modules[name], "__file__", None) or site).startswith(site))


def pythonpath(state: DepsState) -> str:
    """Return the PYTHONPATH value for a subprocess that must see the project's packages first."""
    parts = [str(state.site_dir)] if state.site_dir is not None else []
    if os.environ.get("PYTHONPATH"):
        parts.append(os.environ["PYTHONPATH"])
    return os.pathsep.join(parts)
