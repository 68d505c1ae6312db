"""``flask-stack init``: copy a template into a project directory, all or nothing.

The template is first copied into a staging directory beside the target (same filesystem, so moves are
renames), with ``.appsody-config.yaml`` added. A target that does not exist is then made by one rename.
Into an existing directory (empty, or any with ``--overwrite``) the files are moved one by one; a file of
the same name is first moved aside, and on any error every moved file is taken back and every moved-aside
file restored, so the directory ends as it was. The staging directory is always removed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from collections.abc import Callable

from .devenv import DEVFILE, USER_DIRS, kept_user_files, name_devfile, write_manifests
from .errors import CliError
from .paths import import_runtime, templates_dir
from .project import CONFIG_FILE, read_config, sanitise_name, stack_id, stack_info

#: Never copied out of a template (left there by running the stack's own tests on it).
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache", CONFIG_FILE)


def available_templates() -> list[str]:
    """Return the names of the stack's templates (sub-directories of ``templates/``), sorted."""
    root = templates_dir()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))


def describe_template(name: str) -> str:
    """Return the one-line description of template ``name``: the first line of its ``__init__.py``'s docstring
    ('' when it has none)."""
    import ast

    try:
        source = (templates_dir() / name / "__init__.py").read_text(encoding="utf-8")
        docstring = ast.get_docstring(ast.parse(source)) or ""
    except (OSError, SyntaxError, UnicodeDecodeError):
        return ""
    return docstring.strip().splitlines()[0] if docstring.strip() else ""


def is_stack_project(directory: Path) -> bool:
    """Return True when ``directory`` already is a stack project: it holds ``__init__.py`` and a
    ``.appsody-config.yaml`` naming a ``stack``."""
    return (directory / "__init__.py").is_file() and bool(read_config(directory).get("stack"))


def init_project(target: Path, template: str | None = None, overwrite: bool = False,
                 echo: Callable[[str], None] = lambda _line: None) -> list[Path]:
    """Write template ``template`` (default: stack.yaml's ``default-template``) into ``target``.

    Returns the files written, relative to ``target``.

    Raises:
        CliError: unknown template; ``target`` is a file, non-empty without ``overwrite``, or has a
            directory where the template has a file (or the reverse); its parent does not exist; a copy
            or move failed (``target`` is then as it was before).
    """
    names = available_templates()
    name = template or stack_info().get("default-template") or "simple"
    if name not in names:
        raise CliError(f"unknown template {name!r}; available: {', '.join(names) or 'none'}")
    target = Path(os.path.abspath(target.expanduser()))
    if target.exists() and not target.is_dir():
        raise CliError(f"cannot init {target}: it exists and is not a directory")
    if not target.parent.is_dir():
        raise CliError(f"cannot init {target}: its parent directory does not exist")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise CliError(f"{target} is not empty; pass --overwrite to write the template's files over it")

    previous_name = read_config(target).get("project-name") if target.is_dir() else None
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.flask-stack-init-", dir=target.parent))
    except OSError as exc:
        raise CliError(f"cannot write in {target.parent}: {exc.strerror}") from None
    try:
        new = staging / "new"
        try:
            shutil.copytree(templates_dir() / name, new, ignore=IGNORED, symlinks=True, copy_function=_copy_file)
            config = f"project-name: {sanitise_name(previous_name or target.name)}\nstack: {stack_id()}\n"
            (new / CONFIG_FILE).write_text(config, encoding="utf-8")
            if (new / DEVFILE).is_file():
                name_devfile(new / DEVFILE, sanitise_name(previous_name or target.name))
                write_manifests(new, sanitise_name(previous_name or target.name))  # the devfile's deploy/
        except (OSError, shutil.Error) as exc:
            raise CliError(f"copying template {name!r} failed: {_reason(exc)}; nothing was written") from None
        written = sorted(p.relative_to(new) for p in _files(new))
        kept = kept_user_files(target, written) if target.exists() else []  # a user's own dev environment stays
        written = [rel for rel in written if rel not in kept]
        if target.exists():
            _merge(new, target, staging / "aside", written)
        else:
            try:
                os.rename(new, target)
            except OSError as exc:
                raise CliError(f"cannot create {target}: {exc.strerror}; nothing was written") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for rel in written:
        echo(f"  {rel}")
    for rel in sorted({rel.parts[0] for rel in kept}):
        echo(f"  {rel}{'/' if rel in USER_DIRS else ''} kept as it is (yours)")
    return written


def _copy_file(src: str, dst: str) -> str:
    """Copy one template file with its permission bits (``shutil.copy2``); returns ``dst``."""
    return shutil.copy2(src, dst)


def _files(root: Path) -> list[Path]:
    """Return every file and symlink under ``root`` (directories excluded)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        found += [Path(dirpath, f) for f in filenames]
        found += [Path(dirpath, d) for d in dirnames if Path(dirpath, d).is_symlink()]
    return found


def _merge(new: Path, target: Path, aside: Path, files: list[Path]) -> None:
    """Move ``files`` (relative paths) from ``new`` into ``target``; on failure restore ``target`` exactly."""
    for rel in files:  # check every conflict before changing anything
        for parent in reversed(rel.parents[:-1]):
            if (target / parent).exists() and not (target / parent).is_dir():
                raise CliError(f"cannot write {rel}: {target / parent} is a file; nothing was written")
        if (target / rel).is_dir() and not (target / rel).is_symlink():
            raise CliError(f"cannot write {rel}: {target / rel} is a directory; nothing was written")
    made_dirs: list[Path] = []
    moved: list[tuple[Path, bool]] = []
    try:
        for rel in files:
            for parent in reversed(rel.parents[:-1]):
                if not (target / parent).exists():
                    os.mkdir(target / parent)
                    made_dirs.append(target / parent)
            replaced = os.path.lexists(target / rel)
            if replaced:
                (aside / rel).parent.mkdir(parents=True, exist_ok=True)
                os.replace(target / rel, aside / rel)
            moved.append((rel, replaced))
            os.replace(new / rel, target / rel)
    except OSError as exc:
        _undo(target, aside, moved, made_dirs)
        raise CliError(f"writing {target} failed: {_reason(exc)}; the directory was restored") from None


def _undo(target: Path, aside: Path, moved: list[tuple[Path, bool]], made_dirs: list[Path]) -> None:
    """Take back moved files, restore the moved-aside ones and remove the directories made (best effort)."""
    for rel, replaced in reversed(moved):
        try:
            if os.path.lexists(target / rel) and (not replaced or os.path.lexists(aside / rel)):
                os.unlink(target / rel)
            if replaced and os.path.lexists(aside / rel):
                os.replace(aside / rel, target / rel)
        except OSError:
            pass
    for directory in reversed(made_dirs):
        try:
            os.rmdir(directory)
        except OSError:
            pass


def _reason(exc: BaseException) -> str:
    """Return a one-line reason for an OSError or shutil.Error."""
    if isinstance(exc, shutil.Error) and exc.args and isinstance(exc.args[0], list) and exc.args[0]:
        src, _dst, why = exc.args[0][0]
        return f"{src}: {why}"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    return import_runtime("oneline").first_line(exc, type(exc).__name__)
