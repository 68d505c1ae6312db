"""Which file declares a project's packages, in the documented order (README, "Dependencies").

1. ``uv.lock`` with ``pyproject.toml``: uv's lock; the runtime packages are ``[project] dependencies``, the
   development packages the ``dev``/``test`` dependency groups (PEP 735) and ``dev``/``test`` extras.
2. ``Pipfile.lock``/``Pipfile``: pipenv's (``[packages]``; ``[dev-packages]`` for development).
3. ``pyproject.toml`` with a ``[project]`` table (PEP 621), not yet locked: uv locks it into ``uv.lock`` next to it
   (the project keeps that lock), then it is read as 1.
4. ``requirements.txt``; development packages from ``requirements-dev.txt``, else ``requirements/dev.txt``.

``poetry.lock`` is not read: no well-kept installer reads it without Poetry itself (uv does not); a Poetry 2
project's ``[project]`` table is read as 3, and a Poetry 1 project (``[tool.poetry.dependencies]`` only) is
told to add ``[project] dependencies`` or a ``requirements.txt``.

Exactly one declaration is used. When another one is present too and names other packages, :attr:`Declaration.note`
is one line saying which was taken and why. Pure: reads files, runs nothing.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

UV = "uv.lock"
PIPFILE = "Pipfile"
PYPROJECT = "pyproject.toml"
REQUIREMENTS = "requirements.txt"
#: Development requirement files next to ``requirements.txt``, the first present is used.
REQUIREMENTS_DEV = ("requirements-dev.txt", "requirements/dev.txt")
#: Every file whose change may change what is installed (relative to the project); the dev loop watches these.
WATCHED = (PYPROJECT, UV, PIPFILE, "Pipfile.lock", REQUIREMENTS, *REQUIREMENTS_DEV)
#: Dependency groups and extras read as development packages.
DEV_GROUPS = ("dev", "test")

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


@dataclass(frozen=True)
class Declaration:
    """The declaration a project uses.

    Attributes:
        kind (str | None): ``uv.lock``, ``Pipfile``, ``pyproject.toml``, ``requirements.txt``; None: no declaration
            (the stack's packages only).
        files (tuple[str, ...]): the project-relative files it is read from (what is digested to notice a change).
        label (str): the file a user adds a package to ("add it to requirements.txt").
        note (str | None): one line when another declaration was present and left unread, else None.
    """

    kind: str | None
    files: tuple[str, ...] = ()
    label: str = ""
    note: str | None = field(default=None, compare=False)


def _pyproject(project: Path) -> dict | None:
    """Return the parsed pyproject.toml, or None when absent or not valid TOML (then it is not a declaration)."""
    try:
        return tomllib.loads((project / PYPROJECT).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def _has_project_table(data: dict | None) -> bool:
    return isinstance(data, dict) and isinstance(data.get("project"), dict) and (
        "dependencies" in data["project"] or isinstance(data.get("dependency-groups"), dict))


def requirement_names(lines: list[str]) -> set[str]:
    """Return the normalized package names of PEP 508 requirement strings (options and comments skipped)."""
    names = set()
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        match = _NAME.match(line)
        if match and "/" not in line.split()[0]:
            names.add(re.sub(r"[-_.]+", "-", match.group(1)).lower())
    return names


def _declared(project: Path, kind: str, data: dict | None) -> set[str] | None:
    """Return the runtime package names ``kind`` declares in ``project`` (None: cannot tell without running a tool)."""
    try:
        if kind in (UV, PYPROJECT):
            return requirement_names(list((data or {}).get("project", {}).get("dependencies", [])))
        if kind == PIPFILE:
            if not (project / PIPFILE).is_file():
                return None
            packages = tomllib.loads((project / PIPFILE).read_text(encoding="utf-8")).get("packages", {})
            return requirement_names(list(packages))
        if kind == REQUIREMENTS:
            return requirement_names((project / REQUIREMENTS).read_text(encoding="utf-8").splitlines())
    except (OSError, ValueError, UnicodeDecodeError, AttributeError, TypeError):
        return None
    return None


def detect(project: Path) -> Declaration:
    """Return the declaration ``project`` uses (see the module docstring for the order).

    Args:
        project: the project directory.

    Returns:
        Declaration: ``kind`` None when the project declares nothing.
    """
    data = _pyproject(project)
    present: list[Declaration] = []
    if (project / UV).is_file() and _has_project_table(data):
        present.append(Declaration(UV, (PYPROJECT, UV), PYPROJECT))
    if (project / PIPFILE).is_file() or (project / "Pipfile.lock").is_file():
        present.append(Declaration(PIPFILE, (PIPFILE, "Pipfile.lock"), PIPFILE))
    if _has_project_table(data) and not (project / UV).is_file():
        present.append(Declaration(PYPROJECT, (PYPROJECT,), PYPROJECT))
    if (project / REQUIREMENTS).is_file():
        dev = next((name for name in REQUIREMENTS_DEV if (project / name).is_file()), None)
        present.append(Declaration(REQUIREMENTS, (REQUIREMENTS, *([dev] if dev else [])), REQUIREMENTS))
    if not present:
        return Declaration(None)
    chosen, others = present[0], present[1:]
    note = None
    mine = _declared(project, chosen.kind, data)
    differing = [other for other in others if other.label != chosen.label
                 and _declared(project, other.kind, data) != mine]
    if differing:
        left = ", ".join(other.label for other in differing)
        note = (f"using {chosen.files[-1] if chosen.kind == UV else chosen.label} for the project's packages and "
                f"not {left}, which declares others: {chosen.label} comes first in the stack's order "
                "(uv.lock, Pipfile, pyproject.toml, requirements.txt); remove the one you do not use")
    return Declaration(chosen.kind, chosen.files, chosen.label, note)


def poetry_only(project: Path) -> bool:
    """Return True when the project declares its packages only in Poetry 1's ``[tool.poetry.dependencies]``."""
    data = _pyproject(project)
    return (isinstance(data, dict) and not _has_project_table(data)
            and bool(data.get("tool", {}).get("poetry", {}).get("dependencies")))


def hint(project: Path | None) -> str:
    """Return the file the runtime's ``ModuleNotFoundError`` hint names: the project's declaration, else
    ``requirements.txt`` (the most common start) when it has none."""
    if project is None:
        return REQUIREMENTS
    found = detect(project)
    if found.kind is None:
        return REQUIREMENTS
    if found.kind == UV or found.kind == PYPROJECT:
        return "pyproject.toml ([project] dependencies)"
    if found.kind == PIPFILE:
        return "Pipfile ([packages])"
    return found.label
