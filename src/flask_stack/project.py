"""A user's project: finding it, naming it, and the stack facts written into its config.

A project is a directory holding a Flask app where the stack's runtime finds it (``server.discovery``, as
``flask run`` does): ``wsgi.py`` or ``app.py``, an ``__init__.py`` (the project is a package: the Blueprint and
Appsody shapes), or a package below it; ``--app``/``FLASK_APP`` or ``.flaskenv`` say where when it is elsewhere.
``.appsody-config.yaml`` (written by ``flask-stack init`` and by the Appsody CLI) is optional, so a
project made by hand or for the original Appsody python-flask stack works as is.
"""

from __future__ import annotations

import re
from pathlib import Path

from .errors import CliError
from .paths import stack_root

CONFIG_FILE = ".appsody-config.yaml"
#: The stack's id as Appsody names a locally packaged stack (``appsody stack package``): the dev image tag.
STACK_IMAGE_REPO = "dev.local/python-flask"


#: Files or directories (besides a package below the project) that show a directory holds a Flask project.
PROJECT_MARKERS = ("__init__.py", "app.py", "wsgi.py", ".flaskenv", "Pipfile", "pyproject.toml", CONFIG_FILE)


def find_project(directory: Path | None, app_spec: str | None = None) -> Path:
    """Return the absolute project directory: ``directory`` or the current one.

    Args:
        directory: the ``--project`` value, or None.
        app_spec: the ``--app`` value; when given, any directory will do (the runtime reports a wrong one).

    Raises:
        CliError: DIR is missing, or holds nothing of a Flask project (no ``__init__.py``, ``app.py``,
            ``wsgi.py``, ``.flaskenv``, Pipfile, pyproject.toml, or package).
    """
    path = (directory or Path.cwd()).expanduser()
    if not path.is_dir():
        raise CliError(f"not a python-flask stack project: {path} is not a directory")
    path = path.resolve()
    if app_spec or any((path / name).exists() for name in PROJECT_MARKERS):
        return path
    if any((child / "__init__.py").is_file() for child in path.iterdir() if child.is_dir()):
        return path
    parent = path.parent
    if parent != path and any((parent / name).exists() for name in PROJECT_MARKERS):
        raise CliError(f"not a python-flask stack project: {path} has no Flask app; the project may be {parent} "
                         f"(run there, or pass --project {parent})")
    raise CliError(f"not a python-flask stack project: {path} has no Flask app (no app.py, wsgi.py, "
                     f"__init__.py or package); pass --app, or create one with `flask-stack init`")


def sanitise_name(name: str) -> str:
    """Return ``name`` as a Kubernetes/Appsody project name: a DNS-1123 label (lowercase letters, digits and
    ``-``, starting with a letter, at most 63 characters), or ``my-project`` when nothing usable is left."""
    label = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    label = re.sub(r"^[^a-z]+", "", label)[:63].rstrip("-")
    return label or "my-project"


def project_name(project: Path) -> str:
    """Return the project's name: ``project-name`` from its .appsody-config.yaml, else its sanitised dir name."""
    value = read_config(project).get("project-name")
    return sanitise_name(value) if value else sanitise_name(project.resolve().name)


def read_config(project: Path) -> dict[str, str]:
    """Return the top-level ``key: value`` scalars of the project's .appsody-config.yaml ({} when absent).

    Only the flat form Appsody writes is read (no nesting, quotes stripped); other lines are ignored.
    """
    try:
        text = (project / CONFIG_FILE).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return {}
    return _flat_yaml(text)


def stack_info() -> dict[str, str]:
    """Return the top-level scalars of the stack's ``stack.yaml`` (``version``, ``default-template``, ...).

    Raises:
        CliError: stack.yaml cannot be read.
    """
    path = stack_root() / "stack.yaml"
    try:
        return _flat_yaml(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from None


def stack_id() -> str:
    """Return the ``stack:`` value for .appsody-config.yaml, e.g. ``dev.local/python-flask:0.4`` (major.minor)."""
    version = stack_info().get("version", "0.0.0")
    major_minor = ".".join(version.split(".")[:2])
    return f"{STACK_IMAGE_REPO}:{major_minor}"


def _flat_yaml(text: str) -> dict[str, str]:
    """Parse unindented ``key: scalar`` lines (comments and blank lines skipped, quotes stripped)."""
    result: dict[str, str] = {}
    for line in text.splitlines():
        match = re.match(r"^([A-Za-z0-9_-]+):\s*(.*?)\s*$", line)
        if not match or not match.group(2) or match.group(2).startswith("#"):
            continue
        value = re.sub(r"\s+#.*$", "", match.group(2))
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        result[match.group(1)] = value
    return result
