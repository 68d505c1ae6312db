"""The stack's images for the container engine: the development image (built on first use and rebuilt
when the stack's files change) and the build context of a project's deployable image.

The development image is built from ``image/Dockerfile-stack`` with ``image/`` as context and tagged
``dev.local/python-flask:<major.minor>`` (the ``stack:`` id in .appsody-config.yaml, as Appsody names a
locally packaged stack). It carries the label :data:`HASH_LABEL`: a sha256 over every file the build
context holds plus the base image's name, so a changed stack file or base image means a rebuild.

The deployable image's context is what ``appsody extract`` lays out: the stack's ``image/project``
contents plus the user's project in ``userapp/``.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from .errors import CliError
from .localenv import project_dir
from .paths import stack_root
from .project import stack_id

#: Image label holding the hash of the stack files (and base image) the development image was built from.
HASH_LABEL = "dev.flask-stack.source-hash"
#: Image labels saying what the development image was built from, so a rebuild says what changed: the base
#: image's name, a sha256 over the stack's files but the runtime's lock, and one over that lock.
BASE_LABEL = "dev.flask-stack.base-image"
FILES_LABEL = "dev.flask-stack.files-hash"
LOCK_LABEL = "dev.flask-stack.lock-hash"
#: The runtime's lock file, relative to ``image/``.
LOCK_FILE = "project/Pipfile.lock"
#: Environment variable naming the base image for every build (dev and deployable images).
BASE_IMAGE_ENV = "STACK_BASE_IMAGE"
#: Names never copied into a build context (and never hashed): caches, VCS data, virtual environments.
IGNORED_NAMES = ("__pycache__", "*.pyc", "*.pyo", ".pytest_cache", ".git", ".hg", ".svn", ".venv", "venv",
                 "node_modules", ".mypy_cache", ".ruff_cache", ".tox")
#: Extra names left out of the user's project in the deployable image's context.
PROJECT_EXCLUDED = (".deps", ".flask-stack", "deploy")
#: Names private to a project, left out of the deployable image's context at any depth (image/project/.dockerignore
#: says the same for an ``appsody extract`` context): environment files with secrets, Flask's instance folder
#: (configuration with secrets), local databases. ``.flaskenv`` stays: it is Flask's public configuration.
PRIVATE_NAMES = (".env", ".env.*", "instance", "*.sqlite", "*.sqlite3", "*.db")
#: A ``NAME=value`` line of an env file, and what makes a setting look secret: its name, or a password in a URL.
_SETTING = re.compile(r"\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)")
_SECRET_NAME = re.compile(r"SECRET|PASSWORD|PASSWD|TOKEN|CREDENTIAL|PRIVATE|(?:^|_)KEY(?:$|_)", re.IGNORECASE)
_URL_PASSWORD = re.compile(r"://[^/@\s:]*:[^/@\s]+@")

#: The Dockerfiles' default base image.
DEFAULT_BASE = "python:3.12-slim-bookworm"

Echo = Callable[[str], None]


def dev_image_tag() -> str:
    """Return the development image's tag, e.g. ``dev.local/python-flask:0.4``."""
    return stack_id()


def base_image(explicit: str | None = None) -> str | None:
    """Return the base image for a build: ``explicit`` (``--base-image``), else ``$STACK_BASE_IMAGE``, else None
    (None: the Dockerfiles' default, the official python:3.12-slim-bookworm)."""
    return explicit or os.environ.get(BASE_IMAGE_ENV) or None


def _ignored(name: str) -> bool:
    """Return True when a file or directory called ``name`` never belongs in a build context."""
    return any(fnmatch.fnmatch(name, pattern) for pattern in IGNORED_NAMES)


def _private(name: str) -> bool:
    """Return True when a file or directory called ``name`` is private to a project (:data:`PRIVATE_NAMES`)."""
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in PRIVATE_NAMES)


def dockerignore_rules(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    """Parse a ``.dockerignore`` as Docker reads it: one pattern a line, ``#`` comments, ``!`` re-includes,
    ``*`` and ``?`` within one path segment, ``**`` across segments, a leading ``/`` ignored; a pattern matching a
    directory matches everything under it. Return ``(re_include, regex)`` pairs in file order (the last that
    matches a path decides)."""
    rules = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = os.path.normpath(line[1:].strip() if negate else line).lstrip("/")
        if pattern in ("", "."):
            continue
        rules.append((negate, re.compile(_pattern_regex(pattern) + "(?:/.*)?", re.DOTALL)))
    return rules


def _pattern_regex(pattern: str) -> str:
    """Return the regular expression (to ``fullmatch``) for one .dockerignore pattern (Go's filepath.Match plus
    ``**``); a malformed class (``[`` without ``]``) matches itself literally."""
    out, i = [], 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):
                out.append("(?:.*/)?")
                i += 1
            else:
                out.append(".*")
            continue
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[" and "]" in pattern[i + 2:]:
            end = pattern.index("]", i + 2)
            body = pattern[i + 1:end]
            out.append("[" + ("^" + body[1:] if body[0] in "^!" else body).replace("\\", "\\\\") + "]")
            i = end
        elif char == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(char))
        i += 1
    return "".join(out)


def _excluded(rules: list[tuple[bool, re.Pattern[str]]], rel: str) -> bool:
    """Return True when the project's .dockerignore ``rules`` leave out the path ``rel`` (relative, with /)."""
    excluded = False
    for negate, regex in rules:
        if regex.fullmatch(rel):
            excluded = not negate
    return excluded


def private_files(project: Path) -> list[str]:
    """Return the project's private files and directories (:data:`PRIVATE_NAMES`) that the deployable image's
    build context leaves out, as paths relative to ``project`` (directories end in ``/``), sorted; caches,
    VCS data and virtual environments are not searched."""
    found = []
    for root, dirs, names in os.walk(project):
        rel = Path(root).relative_to(project)
        for name in sorted(d for d in dirs if _private(d)):
            found.append((rel / name).as_posix() + "/")
        dirs[:] = [d for d in dirs if not _ignored(d) and not _private(d)
                   and not (rel == Path(".") and d in PROJECT_EXCLUDED)]
        found.extend((rel / name).as_posix() for name in names if _private(name))
    return sorted(found)


def flaskenv_secrets(project: Path) -> list[str]:
    """Return the names ``project/.flaskenv`` sets that look like secrets (``*SECRET*``, ``*PASSWORD*``,
    ``*TOKEN*``, ``*_KEY*``, a ``*_URL`` with a password in it); [] when there is no readable .flaskenv.
    The image keeps .flaskenv (Flask's public configuration), so such values would ship."""
    try:
        text = (project / ".flaskenv").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    settings = [m for m in map(_SETTING.fullmatch, text.splitlines()) if m]
    return [m[1] for m in settings if _SECRET_NAME.search(m[1]) or _URL_PASSWORD.search(m[2])]


def source_hash(base: str | None) -> str:
    """Return the sha256 hex digest of the development image's inputs: the relative path and bytes of every
    file in its build context (all of ``image/`` but caches, as image/.dockerignore says) and ``base``.

    Raises:
        CliError: a stack file cannot be read.
    """
    image_dir = stack_root() / "image"
    # "labels=2": images built before the labels of :func:`rebuild_reason` existed are rebuilt once
    digest = hashlib.sha256(f"base={base or ''}\nlabels=2\n".encode())
    for path in sorted(_context_files(image_dir)):
        rel = path.relative_to(image_dir).as_posix()
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise CliError(f"cannot read the stack file {path}: {exc.strerror}") from None
        digest.update(f"{rel}\0{len(data)}\0{os.access(path, os.X_OK)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def _part_hashes(base: str | None) -> dict[str, str]:
    """Return the labels :data:`BASE_LABEL`, :data:`FILES_LABEL` and :data:`LOCK_LABEL` for a build from ``base``.

    Raises:
        CliError: a stack file cannot be read.
    """
    image_dir = stack_root() / "image"
    files, lock = hashlib.sha256(), hashlib.sha256()
    for path in sorted(_context_files(image_dir)):
        rel = path.relative_to(image_dir).as_posix()
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise CliError(f"cannot read the stack file {path}: {exc.strerror}") from None
        digest = lock if rel == LOCK_FILE else files
        digest.update(f"{rel}\0{len(data)}\0{os.access(path, os.X_OK)}\0".encode())
        digest.update(data)
    return {BASE_LABEL: base or "", FILES_LABEL: files.hexdigest(), LOCK_LABEL: lock.hexdigest()}


def rebuild_reason(have: dict[str, str] | None, want: dict[str, str]) -> str:
    """Return why the development image is (re)built: ``have`` are its labels (None: no image), ``want`` the
    labels a build now would give it (:func:`_part_hashes`)."""
    if have is None:
        return "not built yet"
    changed = []
    if have.get(BASE_LABEL) != want[BASE_LABEL] and BASE_LABEL in have:
        changed.append(f"the base image changed from {have[BASE_LABEL] or 'the default'} to "
                       f"{want[BASE_LABEL] or 'the default'}")
    if have.get(FILES_LABEL) != want[FILES_LABEL] and FILES_LABEL in have:
        changed.append("the stack's files changed")
    if have.get(LOCK_LABEL) != want[LOCK_LABEL] and LOCK_LABEL in have:
        changed.append("the runtime's Pipfile.lock changed")
    return "; ".join(changed) or "built by another version of flask-stack"


def _context_files(image_dir: Path) -> list[Path]:
    """Return the files of the development image's build context under ``image_dir``."""
    files = []
    for root, dirs, names in os.walk(image_dir):
        dirs[:] = [d for d in dirs if not _ignored(d)]
        files.extend(Path(root) / name for name in names if not _ignored(name))
    return files


@functools.lru_cache(maxsize=8)
def _podman_server(binary: str, docker_host: str | None) -> bool:
    """Return True when ``binary`` (its server at ``docker_host``) is podman or the Docker CLI talking to
    podman's Docker-compatible service (its version lists a "Podman Engine" component)."""
    if os.path.basename(binary) == "podman":
        return True
    try:
        result = subprocess.run([binary, "version", "--format", "{{range .Server.Components}}{{.Name}};{{end}}"],
                                capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "Podman" in result.stdout


def podman_server(binary: str) -> bool:
    """Return True when the engine behind ``binary`` is podman (directly, or behind the Docker CLI through
    ``DOCKER_HOST``): the Docker API then differs from Docker's own engine in a few places (no BuildKit,
    rootful bridge networks not isolated from each other)."""
    return _podman_server(binary, os.environ.get("DOCKER_HOST"))


def build_env(binary: str) -> dict[str, str]:
    """Return the environment for ``binary build``: the Docker CLI talking to podman gets ``DOCKER_BUILDKIT=0``
    (podman's Docker API serves the classic builder's endpoint, not BuildKit's), unless it is set already."""
    env = dict(os.environ)
    if os.path.basename(binary) == "docker" and "DOCKER_BUILDKIT" not in env and podman_server(binary):
        env["DOCKER_BUILDKIT"] = "0"
    return env


def image_label(binary: str, image: str, label: str) -> str | None:
    """Return the value of ``label`` on the local ``image``, "" when the image lacks it, None when the image
    is not present."""
    labels = image_labels(binary, image)
    return None if labels is None else labels.get(label, "")


def image_labels(binary: str, image: str) -> dict[str, str] | None:
    """Return the labels of the local ``image`` ({} when it has none), None when the image is not present."""
    result = subprocess.run([binary, "image", "inspect", "--format", "{{json .Config.Labels}}", image],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        return None
    try:
        labels = json.loads(result.stdout.strip().splitlines()[0]) or {}
    except (ValueError, IndexError):
        return {}
    return {str(key): str(value) for key, value in labels.items()}


def ensure_dev_image(binary: str, base: str | None, echo: Echo) -> str:
    """Return the development image's tag, building it first when missing or built from other stack files.

    The build's own output (each step, pip's progress) streams to the terminal.

    Raises:
        CliError: the build fails (the base image cannot be pulled, no network for PyPI, ...).
    """
    tag = dev_image_tag()
    wanted = source_hash(base)
    labels = image_labels(binary, tag)
    if labels is not None and labels.get(HASH_LABEL) == wanted:
        return tag
    parts = _part_hashes(base)
    reason = rebuild_reason(labels, parts)
    echo(f"building the stack's development image {tag} ({reason}; base {base or 'python:3.12-slim-bookworm'}) "
         "- about a minute the first time")
    image_dir = stack_root() / "image"
    argv = [binary, "build", "-f", str(image_dir / "Dockerfile-stack"), "-t", tag, "--label", f"{HASH_LABEL}={wanted}"]
    for key, value in parts.items():
        argv += ["--label", f"{key}={value}"]
    if base:
        argv += ["--build-arg", f"BASE_IMAGE={base}"]
    previous = _image_id(binary, tag)
    status = subprocess.run([*argv, str(image_dir)], env=build_env(binary), check=False).returncode
    if status != 0:
        raise CliError(f"building the development image {tag} failed (exit {status}; see the output above); "
                         f"if the base image {base or DEFAULT_BASE} cannot be pulled, pass --base-image IMAGE (or set "
                         f"{BASE_IMAGE_ENV}) naming one you have, or use --engine local (no image needed)")
    if previous and previous != _image_id(binary, tag):
        # the replaced image would linger untagged; a container still using it keeps it (rmi fails quietly)
        subprocess.run([binary, "rmi", previous], capture_output=True, check=False)
    return tag


def _image_id(binary: str, image: str) -> str | None:
    """Return the local image's id, or None when it is not present."""
    result = subprocess.run([binary, "image", "inspect", "--format", "{{.Id}}", image],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        return None
    return result.stdout.strip() or None


def layout_build_context(project: Path, dest: Path) -> Path:
    """Lay out the deployable image's build context in the empty directory ``dest`` and return ``dest``.

    ``dest`` gets the stack's ``image/project`` contents (Dockerfile, .dockerignore, server/, Pipfile,
    Pipfile.lock, serve, serving/) and ``dest/userapp`` a copy of ``project`` without caches,
    VCS data, virtual environments, the dev loop's deps dir, ``deploy/``, private files (:data:`PRIVATE_NAMES`:
    ``.env``, ``.env.*``, ``instance/``, databases) and whatever the project's own ``.dockerignore`` leaves out
    (it adds to that list: its ``!`` lines re-include only what its own lines left out).

    Raises:
        CliError: a file cannot be copied, or the project's .dockerignore cannot be read (the message names it).
    """
    runtime = stack_root() / "image" / "project"
    top = project.resolve()
    try:
        rules = dockerignore_rules((project / ".dockerignore").read_text(encoding="utf-8", errors="replace"))
    except FileNotFoundError:
        rules = []
    except OSError as exc:
        raise CliError(f"cannot read {project / '.dockerignore'}: {exc.strerror}") from None

    def skip(_dir: str, names: list[str]) -> set[str]:
        return {n for n in names if _ignored(n)}

    def skip_project(directory: str, names: list[str]) -> set[str]:
        here = Path(directory).resolve()
        rel = here.relative_to(top).as_posix() + "/" if here != top else ""
        left_out = {n for n in names if _ignored(n) or _private(n) or _excluded(rules, rel + n)}
        return left_out | ({n for n in names if n in PROJECT_EXCLUDED} if here == top else set())

    try:
        shutil.copytree(runtime, dest, ignore=skip, dirs_exist_ok=True)
        shutil.copytree(project, dest / "userapp", ignore=skip_project)
    except shutil.Error as exc:
        first = exc.args[0][0] if exc.args and exc.args[0] else ("?", "?", str(exc))
        raise CliError(f"cannot copy {first[0]} into the build context: {first[2]}") from None
    except OSError as exc:
        raise CliError(f"cannot lay out the build context in {dest}: {exc.strerror}: {exc.filename}") from None
    return dest


def last_build_path(project: Path) -> Path:
    """Return the file holding the tag of the project's last ``flask-stack build`` (in the cache, not the project)."""
    return project_dir(project) / "last-build-tag"


def record_last_build(project: Path, tag: str) -> None:
    """Record ``tag`` as the project's last built image (for ``deploy``); a cache that cannot be written is
    skipped: ``deploy`` then says which image it assumed."""
    path = last_build_path(project)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(tag + "\n", encoding="utf-8")
    except OSError:
        pass


def last_build(project: Path) -> str | None:
    """Return the tag of the project's last ``flask-stack build``, or None when none is recorded."""
    try:
        return last_build_path(project).read_text(encoding="utf-8").strip() or None
    except OSError:
        return None
