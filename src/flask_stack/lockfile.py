"""Turn a Pipfile.lock into a pip requirements file with hashes, without pipenv.

Format read: pipenv's Pipfile.lock (pipfile-spec 6): a JSON object whose ``default`` and ``develop``
sections map a package name to ``{"version": "==X", "hashes": ["sha256:..."], "markers": "...",
"extras": [...]}``. Format written: pip's requirements file format, one line per package,
``name[extras]==X ; markers --hash=sha256:... --hash=...``, for ``pip install --require-hashes -r``.
pipenv is not needed because the local engine must install before pipenv itself is present.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .errors import CliError


def lock_digest(lock_path: Path) -> str:
    """Return the sha256 hex digest of the lock file's bytes (used to notice a changed lock).

    Raises:
        CliError: the file cannot be read.
    """
    try:
        return hashlib.sha256(lock_path.read_bytes()).hexdigest()
    except OSError as exc:
        raise CliError(f"cannot read {lock_path}: {exc.strerror}") from None


def requirements_from_lock(lock_path: Path, sections: tuple[str, ...] = ("default", "develop")) -> str:
    """Return the text of a hashed requirements file holding ``sections`` of the lock, in that order.

    A package in several sections is written once; the first section's version wins.

    Raises:
        CliError: the lock is not valid JSON, lacks a section, or has an entry without a pinned
            version and hashes (a VCS/path entry, which hash-checking mode cannot install).
    """
    try:
        data = json.loads(lock_path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CliError(f"cannot read {lock_path}: {exc.strerror}") from None
    except ValueError as exc:
        raise CliError(f"{lock_path} is not valid JSON ({exc}); regenerate it with `pipenv lock`") from None
    if not isinstance(data, dict):
        raise CliError(f"{lock_path} is not a Pipfile.lock (no JSON object); regenerate it with `pipenv lock`")

    lines: list[str] = []
    seen: set[str] = set()
    for section in sections:
        entries = data.get(section)
        if not isinstance(entries, dict):
            raise CliError(f"{lock_path} has no [{section}] section; regenerate it with `pipenv lock`")
        for name in sorted(entries):
            key = name.lower().replace("_", "-")
            if key in seen:
                continue
            seen.add(key)
            lines.append(_requirement_line(lock_path, name, entries[name]))
    return "".join(line + "\n" for line in lines)


def _requirement_line(lock_path: Path, name: str, entry: object) -> str:
    """Return one requirements line for the lock entry ``name`` (see the module docstring)."""
    if not isinstance(entry, dict):
        raise CliError(f"{lock_path}: entry {name!r} is not an object; regenerate it with `pipenv lock`")
    version = entry.get("version")
    hashes = entry.get("hashes")
    if not isinstance(version, str) or not version.startswith("==") or not hashes:
        raise CliError(
            f"{lock_path}: {name} has no pinned version with hashes (VCS or path entries are not supported); "
            "pin it to a release in the Pipfile and run `pipenv lock`"
        )
    extras = entry.get("extras") or []
    requirement = name + (f"[{','.join(sorted(extras))}]" if extras else "") + version
    markers = entry.get("markers")
    if markers:
        requirement += f" ; {markers}"
    return requirement + "".join(f" --hash={h}" for h in hashes)
