"""The deployable image's ``deps`` stage (``image/project/Dockerfile``): ``python3 -m stackdeps.build STEP``.

``stack VENV TOOLS``: make ``VENV`` (``python3 -m venv``) with the stack's locked runtime (``Pipfile.lock`` section
``default``, hash-checked, no resolution) and the throwaway ``TOOLS`` venv with the lock's ``develop`` tools (uv,
pipenv), which never reach the final image. A layer of its own, so a project change does not redo it.

``project PROJECT VENV TOOLS``: install the packages ``PROJECT`` (the copied declaration files) declares, as
the dev loop does (:mod:`stackdeps.resolve`), runtime packages only: one uv resolution of the stack's ranges with
the project's packages, installed hash-checked into ``VENV`` over the stack's set; then ``pip check``, and pip (and
setuptools, unless a package requires it) leave ``VENV``. Without a declaration the stack's set stays as it is.

Every failure is one ``flask-stack: ...`` line on stderr and exit status 1.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import stacksettings

from . import DepsError
from .detect import PIPFILE, detect, poetry_only
from .resolve import HERE, default_runner, lock_lines, one_line, project_inputs, resolve, stack_pins, uv_env

LOCK = HERE.parent / "Pipfile.lock"


def say(message: str) -> None:
    """Print one ``flask-stack:`` line (progress, or the reason of a failure)."""
    print(f"flask-stack: {message}", file=sys.stderr, flush=True)


def _check(argv: list[str], what: str, env: dict[str, str] | None = None) -> None:
    status, lines = default_runner(argv, env or dict(os.environ))
    if status != 0:
        raise DepsError(f"{what} failed: {one_line(lines)}")


def _install_section(python: str, section: str) -> None:
    lock = json.loads(LOCK.read_text(encoding="utf-8"))
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("".join(line + "\n" for line in lock_lines(lock, section)))
    try:
        _check([python, "-m", "pip", "install", "--no-cache-dir", "--quiet", "--disable-pip-version-check",
                "--require-hashes", "--no-deps", "--use-pep517", "-r", f.name], f"installing the stack's [{section}]")
    finally:
        os.unlink(f.name)


def stack(venv: Path, tools: Path) -> None:
    """Make ``venv`` with the stack's locked runtime and ``tools`` with its locked dev tools (see the docstring)."""
    for where, section in ((venv, "default"), (tools, "develop")):
        _check([sys.executable, "-m", "venv", str(where)], f"creating {where}")
        _install_section(str(where / "bin" / "python"), section)


def _lock_pipfile(tools: Path) -> Callable[[Path], Path]:
    """Return the Pipfile locker of the build: ``pipenv verify``, else ``pipenv lock`` (with a line saying so)."""

    def lock(project: Path) -> Path:
        env = dict(os.environ, VIRTUAL_ENV=str(tools), PIPENV_PIPFILE=str(project / PIPFILE), PIPENV_VERBOSITY="-1",
                   PIPENV_YES="1", PIPENV_NOSPIN="1")
        pipenv = [str(tools / "bin" / "python"), "-m", "pipenv"]
        if (project / "Pipfile.lock").is_file() and default_runner([*pipenv, "verify"], env)[0] == 0:
            return project
        say("userapp/Pipfile.lock is missing or out of date; locking now (commit a current lock for repeatable "
            "builds)")
        status, lines = default_runner([*pipenv, "lock"], env)
        if status != 0:
            raise DepsError(f"Pipfile does not resolve: {one_line(lines)}; fix [packages] in userapp/Pipfile")
        return project
    return lock


def project(path: Path, venv: Path, tools: Path) -> None:
    """Install ``path``'s runtime packages into ``venv`` (see the module docstring).

    Raises:
        DepsError: the declaration does not resolve with the stack's ranges, a package does not install, or
            ``pip check`` finds incompatible versions.
    """
    stacksettings.set_default("STACK_UV", str(tools / "bin" / "uv"))
    python = str(venv / "bin" / "python")
    declaration = detect(path)
    if declaration.note:
        say(declaration.note)
    if declaration.kind is None:
        say("no uv.lock, Pipfile, pyproject.toml or requirements.txt in userapp/"
            + (" (Poetry's [tool.poetry.dependencies] is not read: add [project] dependencies)"
               if poetry_only(path) else "") + "; nothing to add to the runtime")
    else:
        with tempfile.TemporaryDirectory(prefix="stackdeps-") as work:
            inputs = project_inputs(declaration, path, Path(work), dev=False, log=say,
                                    lock_pipfile=_lock_pipfile(tools))
            resolution = resolve(inputs, Path(work), python=python, dev=False, prefer=stack_pins(("default",)))
            have = stack_pins(("default",))
            changed = [line for line in resolution.runtime if _differs(line, have)]
            say(f"installing the packages userapp/{declaration.label} declares: {len(changed)} besides or instead "
                f"of the stack's")
            requirements = Path(work) / "runtime.txt"
            requirements.write_text("".join(line + "\n" for line in resolution.runtime), encoding="utf-8")
            hashed = all("--hash=" in line for line in resolution.runtime)
            _check([stacksettings.value("STACK_UV"), "pip", "install", "--no-deps", "--no-progress", "--quiet", "--python",
                    python, *(["--require-hashes"] if hashed else []), "-r", str(requirements)],
                   f"installing userapp/{declaration.label}'s packages", uv_env())
    _check([python, "-m", "pip", "check"], "pip check (incompatible versions in the image)")
    needs_setuptools = subprocess.run(
        [python, "-c", "import importlib.metadata as md, re, sys; sys.exit(any(re.match(r'setuptools\\b', req) "
         "for dist in md.distributions() for req in dist.requires or []))"], check=False).returncode != 0
    if not needs_setuptools:
        subprocess.run([python, "-m", "pip", "uninstall", "--quiet", "--yes", "setuptools"], check=False,
                       capture_output=True)
    _check([python, "-m", "pip", "uninstall", "--quiet", "--yes", "pip"], "removing pip")


def _differs(line: str, have: dict[str, str]) -> bool:
    match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;]+)", line)
    return not match or have.get(re.sub(r"[-_.]+", "-", match.group(1)).lower()) != match.group(2)


def main(argv: list[str]) -> int:
    """Run one step (``stack VENV TOOLS`` or ``project PROJECT VENV TOOLS``); return the exit status."""
    try:
        if len(argv) == 3 and argv[0] == "stack":
            stack(Path(argv[1]), Path(argv[2]))
        elif len(argv) == 4 and argv[0] == "project":
            project(Path(argv[1]), Path(argv[2]), Path(argv[3]))
        else:
            say("usage: python3 -m stackdeps.build stack VENV TOOLS | project PROJECT VENV TOOLS")
            return 2
    except DepsError as exc:
        say(str(exc))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
