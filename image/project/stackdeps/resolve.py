"""One resolution for the stack and the project, by uv (no resolver of the stack's own).

:func:`project_inputs` turns the project's declaration into requirement files uv reads: ``requirements.txt``
(and its development file) as they are; a Pipfile through its ``Pipfile.lock`` (pipenv locks it when missing or
stale); ``pyproject.toml`` through its ``uv.lock`` (``uv lock`` writes it into the project when missing or stale,
the project keeps it; where the project cannot be written, into a copy in the caller's work directory), exported
by ``uv export`` with hashes. :func:`resolve` then runs ``uv pip compile --generate-hashes`` on the stack's ranges
(``runtime.txt``; ``devtools.txt`` too for development) plus those files, preferring the stack's locked versions
(``Pipfile.lock`` next to this package) wherever the project asks for nothing else, so a transitive the project
pins (PyYAML, mistune) takes the project's version whenever the stack's ranges allow it. The development set is
resolved with the runtime set as constraints, so both sets agree on every runtime package, and the deployable image
(runtime set) runs what development ran. Packages the project locked keep the hashes of its lock (hash-checked at
install).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import stacksettings

from . import DepsError
from .detect import DEV_GROUPS, PIPFILE, PYPROJECT, REQUIREMENTS, UV, Declaration

#: ``runner(argv, env) -> (exit status, output lines)``; the dev loop passes one that is interruptible.
Runner = Callable[[list[str], dict[str, str]], tuple[int, list[str]]]
HERE = Path(__file__).resolve().parent
#: Seconds one uv or pipenv command may take.
TIMEOUT = 900

_NAME = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?=\s*($|[\[<>=!~;@\s]))")
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*==\s*([^\s;\\]+)")


def normalize(name: str) -> str:
    """PEP 503 name normalization (``PyYAML`` -> ``pyyaml``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def default_runner(argv: list[str], env: dict[str, str]) -> tuple[int, list[str]]:
    """Run ``argv`` with stderr merged into stdout, at most :data:`TIMEOUT` seconds; return (status, lines)."""
    try:
        done = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              errors="replace", timeout=TIMEOUT, stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired:
        return -9, [f"{Path(argv[0]).name} took longer than {TIMEOUT} s"]
    return done.returncode, done.stdout.splitlines()


def find_uv() -> str:
    """Return the uv binary that resolves and locks: ``$STACK_UV`` (unless ``pip``), else ``uv`` on PATH, else the
    one of the ``uv`` package installed here.

    Raises:
        DepsError: none is found.
    """
    explicit = stacksettings.value("STACK_UV") or ""
    if explicit and explicit != "pip":
        return explicit
    found = shutil.which("uv")
    if found:
        return found
    try:
        from uv import find_uv_bin

        return find_uv_bin()
    except (ImportError, FileNotFoundError):
        raise DepsError("uv is needed to resolve the project's packages and is not installed here; "
                        "install it (pip install uv) or set STACK_UV to its path") from None


def uv_env() -> dict[str, str]:
    """Return the environment uv runs in: no colour, no Python downloads, the system's certificates, no inherited
    PYTHONPATH or venv."""
    env = dict(os.environ, NO_COLOR="1", UV_PYTHON_DOWNLOADS="never", COLUMNS="1000")
    # the system's certificate store, as pip's and the base image's (a proxy's CA there), not uv's bundled roots
    env.setdefault("UV_SYSTEM_CERTS", "1")
    for name in ("PYTHONPATH", "VIRTUAL_ENV", "UV_SYSTEM_PYTHON", "UV_PROJECT_ENVIRONMENT"):
        env.pop(name, None)
    return env


def stack_pins(sections: tuple[str, ...] = ("default", "develop"), lock: Path | None = None) -> dict[str, str]:
    """Return {normalized name: version} of the stack's ``Pipfile.lock`` (next to this package) ``sections``.

    Raises:
        DepsError: the lock cannot be read.
    """
    lock = lock or HERE.parent / "Pipfile.lock"
    try:
        data = json.loads(lock.read_text(encoding="utf-8"))
        return {normalize(name): str(entry["version"]).lstrip("=")
                for section in sections for name, entry in data[section].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DepsError(f"cannot read the stack's lock {lock}: {exc}") from None


def one_line(lines: list[str]) -> str:
    """Return why uv or pipenv failed, in one line, from its output ``lines``."""
    text = "\n".join(lines)
    match = re.search(r"Because ([^\s]+) was not found in the package registry", text)
    if match:
        return f"no package '{match.group(1)}' on the package index"
    match = re.search(r"No matching distribution found for ([^\s]+)", text)
    if match:
        return f"no version of '{match.group(1)}' is available from the package index"
    causes = []
    collecting = False
    for line in lines:
        if re.match(r"^\s*(cause|Caused by|hint):", line) or line.strip().startswith("Because "):
            collecting = not line.strip().startswith("hint:")
            if collecting:
                causes.append(line.split(":", 1)[1].strip() if ":" in line.split()[0] else line.strip())
            continue
        if collecting and line.startswith(" ") and line.strip():
            causes.append(line.strip())
        else:
            collecting = False
    if causes:
        return " ".join(causes).rstrip(".")
    errors = [ln.strip() for ln in lines if ln.strip().lower().startswith(("error:", "error "))]
    if errors:
        return re.sub(r"^(error:\s*)+", "", errors[-1], flags=re.I)
    tail = [ln.strip() for ln in lines if ln.strip()]
    return tail[-1] if tail else "no output"


@dataclass
class Inputs:
    """The project's requirement files for uv (absolute paths) and the hashes its lock pins.

    Attributes:
        runtime (list[Path]): files of the runtime packages.
        dev (list[Path]): files of the development-only packages (may repeat runtime ones).
        hashes (dict[str, tuple[str, set[str]]]): normalized name -> (version, hashes) the project's lock or
            hashed requirements pin; kept at install.
        source (str): what the user edits, for messages (``requirements.txt``, ``pyproject.toml``...).
    """

    runtime: list[Path]
    dev: list[Path]
    hashes: dict[str, tuple[str, set[str]]]
    source: str


def parse_requirements(text: str) -> list[tuple[str, str | None, str | None, set[str]]]:
    """Parse requirement-file text into (requirement without hashes, normalized name or None, pinned version or
    None, hashes), joining backslash continuations and dropping comments."""
    entries = []
    for logical in re.sub(r"\\\r?\n", " ", text).splitlines():
        line = re.sub(r"(^|\s)#.*$", "", logical).strip()
        if not line:
            continue
        hashes = set(re.findall(r"--hash[=\s]+(\S+)", line))
        requirement = re.sub(r"\s*--hash[=\s]+\S+", "", line).strip()
        match = _PIN.match(requirement)
        named = _NAME.match(requirement) if not requirement.startswith("-") else None
        entries.append((requirement, normalize(named.group(1)) if named else None,
                        match.group(3) if match else None, hashes))
    return entries


def _hashes_of(files: list[Path]) -> dict[str, tuple[str, set[str]]]:
    found: dict[str, tuple[str, set[str]]] = {}
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError:
            continue
        for _, name, version, hashes in parse_requirements(text):
            if name and version and hashes:
                found[name] = (version, hashes)
    return found


def _writable_copy(project: Path, names: tuple[str, ...], work: Path) -> Path:
    """Return ``project`` when it can be written, else ``work/lock`` holding copies of ``names``."""
    if os.access(project, os.W_OK | os.X_OK):
        return project
    where = work / "lock"
    where.mkdir(parents=True, exist_ok=True)
    for name in names:
        if (project / name).is_file():
            shutil.copyfile(project / name, where / name)
    return where


def uv_lock(project: Path, work: Path, run: Runner, log: Callable[[str], None]) -> Path:
    """Make sure ``uv.lock`` matches ``pyproject.toml`` (``uv lock``, which changes nothing when it does); return
    the directory holding both (the project, or a copy in ``work`` when the project cannot be written).

    Raises:
        DepsError: pyproject.toml does not resolve (uv's reason in one line).
    """
    where = _writable_copy(project, (PYPROJECT, UV), work)
    uv = find_uv()
    if run([uv, "lock", "--check", "--quiet", "--project", str(where)], uv_env())[0] == 0:
        return where
    existed = (where / UV).is_file()
    log(f"{'uv.lock is out of date' if existed else 'no uv.lock'}; locking pyproject.toml (uv lock) into "
        f"{where / UV}")
    status, lines = run([uv, "lock", "--no-progress", "--project", str(where)], uv_env())
    if status != 0:
        raise DepsError(f"pyproject.toml does not resolve: {one_line(lines)}; fix [project] dependencies in "
                        f"{project / PYPROJECT}")
    return where


def _uv_export(where: Path, work: Path, name: str, flags: list[str], run: Runner) -> Path:
    out = work / name
    status, lines = run([find_uv(), "export", "--frozen", "--no-emit-project", "--no-emit-workspace",
                         "--format", "requirements-txt", "--no-header", "--no-annotate", "--no-progress",
                         "--project", str(where), "-o", str(out), *flags], uv_env())
    if status != 0:
        raise DepsError(f"cannot export {where / UV}: {one_line(lines)}")
    return out


def project_inputs(declaration: Declaration, project: Path, work: Path, *, dev: bool, run: Runner = default_runner,
                   log: Callable[[str], None] = lambda _: None,
                   lock_pipfile: Callable[[Path], Path] | None = None) -> Inputs:
    """Return the project's requirement files for :func:`resolve` (see the module docstring).

    Args:
        declaration: what :func:`stackdeps.detect.detect` found (kind not None).
        project: the project directory.
        work: an existing directory for exports and lock copies.
        dev: also the development packages.
        run: runs uv and pipenv.
        log: progress lines.
        lock_pipfile: makes the Pipfile's lock current and returns the directory holding it (the dev loop's
            pipenv locking); required for a Pipfile.

    Raises:
        DepsError: the declaration cannot be read, locked or exported (one line).
    """
    kind = declaration.kind
    if kind == REQUIREMENTS:
        runtime = [project / REQUIREMENTS]
        devs = [project / name for name in declaration.files[1:]] if dev else []
        return Inputs(runtime, devs, _hashes_of(runtime + devs), REQUIREMENTS)
    if kind == PIPFILE:
        if lock_pipfile is None:
            raise DepsError("a Pipfile needs pipenv to lock it")
        where = lock_pipfile(project)
        try:
            lock = json.loads((where / "Pipfile.lock").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DepsError(f"cannot read {where / 'Pipfile.lock'} ({exc}); delete it to have it locked again") \
                from None
        files = []
        for section, name in (("default", "pipfile-runtime.txt"), ("develop", "pipfile-dev.txt")):
            if section == "develop" and not dev:
                continue
            (work / name).write_text("".join(line + "\n" for line in lock_lines(lock, section)), encoding="utf-8")
            files.append(work / name)
        return Inputs(files[:1], files[1:], _hashes_of(files), PIPFILE)
    if kind in (UV, PYPROJECT):
        where = uv_lock(project, work, run, log)
        runtime = [_uv_export(where, work, "uv-runtime.txt", ["--no-default-groups"], run)]
        devs = []
        if dev:
            data = tomllib.loads((where / PYPROJECT).read_text(encoding="utf-8"))
            groups = [g for g in DEV_GROUPS if g in (data.get("dependency-groups") or {})]
            extras = [e for e in DEV_GROUPS if e in (data.get("project", {}).get("optional-dependencies") or {})]
            if groups or extras:
                flags = ["--no-default-groups", *[f"--group={g}" for g in groups], *[f"--extra={e}" for e in extras]]
                devs = [_uv_export(where, work, "uv-dev.txt", flags, run)]
        return Inputs(runtime, devs, _hashes_of(runtime + devs), PYPROJECT)
    raise DepsError(f"unknown declaration {kind!r}")


def lock_lines(lock: dict, section: str) -> list[str]:
    """Return hashed requirement lines of one section of a parsed ``Pipfile.lock`` (VCS/path entries as given)."""
    lines = []
    for name, entry in sorted((lock.get(section) or {}).items()):
        entry = entry if isinstance(entry, dict) else {}
        extras = f"[{','.join(sorted(entry['extras']))}]" if entry.get("extras") else ""
        if entry.get("path") or entry.get("file"):
            requirement = str(entry.get("path") or entry.get("file"))
        elif entry.get("git"):
            requirement = f"{name}{extras} @ git+{entry['git']}" + (f"@{entry['ref']}" if entry.get("ref") else "")
        else:
            requirement = f"{name}{extras}{entry.get('version', '')}"
        if entry.get("markers"):
            requirement += f" ; {entry['markers']}"
        lines.append(requirement + "".join(f" --hash={h}" for h in entry.get("hashes") or []))
    return lines


def _compile(sources: list[Path], constraints: list[Path], prefer: dict[str, str], out: Path, python: str,
             run: Runner) -> None:
    out.write_text("".join(f"{name}=={version}\n" for name, version in sorted(prefer.items())), encoding="utf-8")
    argv = [find_uv(), "pip", "compile", "--generate-hashes", "--no-header", "--no-annotate", "--no-progress",
            "--quiet", "--python", python, "-o", str(out), *map(str, sources)]
    for path in constraints:
        argv += ["-c", str(path)]
    status, lines = run(argv, uv_env())
    if status != 0:
        raise DepsError(one_line(lines))


def _stack_blame(message: str, ranges: list[Path]) -> str:
    """Return which of the stack's ranges ``message`` names ("flask>=3.1,<4"), joined; '' when none."""
    named = []
    for path in ranges:
        for requirement, name, _, _ in parse_requirements(path.read_text(encoding="utf-8")):
            if name and re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", message.lower().replace("_", "-")):
                named.append(requirement)
    return ", ".join(named)


@dataclass
class Resolution:
    """The resolved sets: hashed requirement lines, and {normalized name: version} of each.

    Attributes:
        runtime (list[str]): what the deployable image installs (the stack's runtime and the project's packages).
        dev (list[str]): what development adds (the dev loop's tools, the project's development packages).
        versions (dict[str, str]): every package of both sets.
    """

    runtime: list[str]
    dev: list[str]
    versions: dict[str, str]


def _entries(path: Path, pinned: dict[str, tuple[str, set[str]]]
             ) -> tuple[list[tuple[str, str | None]], dict[str, str]]:
    """Read a compiled file into (hashed line, name) pairs (the project's lock hashes for what it locked) and
    versions."""
    lines: list[tuple[str, str | None]] = []
    versions: dict[str, str] = {}
    for requirement, name, version, hashes in parse_requirements(path.read_text(encoding="utf-8")):
        if name and version:
            versions[name] = version
            if name in pinned and pinned[name][0] == version and pinned[name][1]:
                hashes = pinned[name][1]
        lines.append((requirement + "".join(f" --hash={h}" for h in sorted(hashes)), name))
    return lines, versions


def resolve(inputs: Inputs, work: Path, *, python: str, dev: bool, run: Runner = default_runner,
            runtime_ranges: Path = HERE / "runtime.txt", dev_ranges: Path = HERE / "devtools.txt",
            prefer: dict[str, str] | None = None) -> Resolution:
    """Resolve the stack's ranges with the project's files into hashed sets (see the module docstring).

    Args:
        inputs: from :func:`project_inputs`.
        work: an existing directory for uv's files.
        python: the interpreter the packages are for (its version and platform decide markers and wheels).
        dev: also resolve the development set.
        prefer: versions preferred where nothing else decides (default: the stack's lock).

    Raises:
        DepsError: one line: the project's packages conflict with the stack's ranges (naming both), a package
            does not exist, or uv fails.
    """
    prefer = stack_pins() if prefer is None else prefer
    # the versions the project's own files pin (its lock's development packages included) come first
    for path in [*inputs.runtime, *inputs.dev]:
        for _, name, version, _ in parse_requirements(path.read_text(encoding="utf-8")):
            if name and version:
                prefer = {**prefer, name: version}
    runtime_out = work / "resolved-runtime.txt"
    try:
        _compile([runtime_ranges, *inputs.runtime], [], prefer, runtime_out, python, run)
    except DepsError as exc:
        raise _explained(exc, inputs, [runtime_ranges]) from None
    runtime_entries, versions = _entries(runtime_out, inputs.hashes)
    runtime = [line for line, _ in runtime_entries]
    dev_lines: list[str] = []
    if dev:
        pins = work / "runtime-constraints.txt"
        pins.write_text("".join(f"{n}=={v}\n" for n, v in sorted(versions.items())), encoding="utf-8")
        dev_out = work / "resolved-dev.txt"
        try:
            _compile([dev_ranges, *inputs.dev], [pins], prefer, dev_out, python, run)
        except DepsError as exc:
            raise _explained(exc, inputs, [runtime_ranges, dev_ranges]) from None
        all_dev, dev_versions = _entries(dev_out, inputs.hashes)
        dev_lines = [line for line, name in all_dev if name not in versions]
        versions = {**dev_versions, **versions}
    return Resolution(runtime, dev_lines, versions)


def _explained(exc: DepsError, inputs: Inputs, ranges: list[Path]) -> DepsError:
    message = str(exc)
    blamed = _stack_blame(message, ranges) if "unsatisfiable" in message else ""
    if blamed:
        return DepsError(f"{inputs.source} conflicts with what the stack needs ({blamed}): {message}")
    return DepsError(f"{inputs.source} does not resolve: {message}; fix it in the project's {inputs.source}")
