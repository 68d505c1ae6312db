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
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from .errors import StackError
from .paths import stack_root
from .project import stack_id

#: Image label holding the hash of the stack files (and base image) the development image was built from.
HASH_LABEL = "dev.flask-stack.source-hash"
#: Image label holding the base image the development image was built on ("" for the Dockerfile's default).
BASE_LABEL = "dev.flask-stack.base-image"
#: Environment variable naming the base image for every build (dev and deployable images).
BASE_IMAGE_ENV = "STACK_BASE_IMAGE"
#: Names never copied into a build context (and never hashed): caches, VCS data, virtual environments.
IGNORED_NAMES = ("__pycache__", "*.pyc", "*.pyo", ".pytest_cache", ".git", ".hg", ".svn", ".venv", "venv",
                 "node_modules", ".mypy_cache", ".ruff_cache", ".tox")
#: Extra names left out of the user's project in the deployable image's context.
PROJECT_EXCLUDED = (".deps", ".flask-stack", "deploy")

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


def source_hash(base: str | None) -> str:
    """Return the sha256 hex digest of the development image's inputs: the relative path and bytes of every
    file in its build context (all of ``image/`` but caches, as image/.dockerignore says) and ``base``.

    Raises:
        StackError: a stack file cannot be read.
    """
    image_dir = stack_root() / "image"
    digest = hashlib.sha256(f"base={base or ''}\n".encode())
    for path in sorted(_context_files(image_dir)):
        rel = path.relative_to(image_dir).as_posix()
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise StackError(f"cannot read the stack file {path}: {exc.strerror}") from None
        digest.update(f"{rel}\0{len(data)}\0{os.access(path, os.X_OK)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


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
    result = subprocess.run([binary, "image", "inspect", "--format", "{{json .Config.Labels}}", image],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        return None
    try:
        labels = json.loads(result.stdout.strip().splitlines()[0]) or {}
    except (ValueError, IndexError):
        return ""
    return str(labels.get(label, ""))


def ensure_dev_image(binary: str, base: str | None, echo: Echo) -> str:
    """Return the development image's tag, building it first when missing or built from other stack files.

    The build's own output (each step, pip's progress) streams to the terminal.

    Raises:
        StackError: the build fails (the base image cannot be pulled, no network for PyPI, ...).
    """
    tag = dev_image_tag()
    wanted = source_hash(base)
    have = image_label(binary, tag, HASH_LABEL)
    if have == wanted:
        return tag
    reason = "not built yet" if have is None else "the stack's files changed"
    echo(f"building the stack's development image {tag} ({reason}; base {base or 'python:3.12-slim-bookworm'}) "
         "- about a minute the first time")
    image_dir = stack_root() / "image"
    argv = [binary, "build", "-f", str(image_dir / "Dockerfile-stack"), "-t", tag, "--label", f"{HASH_LABEL}={wanted}",
            "--label", f"{BASE_LABEL}={base or ''}"]
    if base:
        argv += ["--build-arg", f"BASE_IMAGE={base}"]
    previous = _image_id(binary, tag)
    status = subprocess.run([*argv, str(image_dir)], env=build_env(binary), check=False).returncode
    if status != 0:
        raise StackError(f"building the development image {tag} failed (exit {status}; see the output above); "
                         f"if the base image cannot be pulled, set {BASE_IMAGE_ENV} to one you have")
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
    Pipfile.lock, serve, gunicorn.conf.py) and ``dest/userapp`` a copy of ``project`` without caches,
    VCS data, virtual environments, the dev loop's deps dir and ``deploy/``.

    Raises:
        StackError: a file cannot be copied (the message names it).
    """
    runtime = stack_root() / "image" / "project"

    def skip(_dir: str, names: list[str]) -> set[str]:
        return {n for n in names if _ignored(n)}

    def skip_project(directory: str, names: list[str]) -> set[str]:
        top = Path(directory).resolve() == project.resolve()
        return skip(directory, names) | ({n for n in names if n in PROJECT_EXCLUDED} if top else set())

    try:
        shutil.copytree(runtime, dest, ignore=skip, dirs_exist_ok=True)
        shutil.copytree(project, dest / "userapp", ignore=skip_project)
    except shutil.Error as exc:
        first = exc.args[0][0] if exc.args and exc.args[0] else ("?", "?", str(exc))
        raise StackError(f"cannot copy {first[0]} into the build context: {first[2]}") from None
    except OSError as exc:
        raise StackError(f"cannot lay out the build context in {dest}: {exc.strerror}: {exc.filename}") from None
    return dest
