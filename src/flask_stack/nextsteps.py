"""What ``flask-stack init`` records and says besides the template's files: the template a project was made from
(``flask-stack-template:`` in its ``.appsody-config.yaml``, so ``init`` with another template is refused), and the
``next:`` lines, commands that work as printed in a new login shell."""

from __future__ import annotations

import shlex
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from .errors import CliError
from .paths import templates_dir
from .project import CONFIG_FILE, read_config, stack_info

#: The key of ``.appsody-config.yaml`` recording the template a project was made from.
TEMPLATE_KEY = "flask-stack-template"


def default_template() -> str:
    """The stack's default template (stack.yaml's ``default-template``, else ``simple``)."""
    return stack_info().get("default-template") or "simple"


def record(project: Path, key: str, value: str) -> None:
    """Set ``key: value`` in the project's .appsody-config.yaml (the line replaced, else appended)."""
    path = project / CONFIG_FILE
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if not line.startswith(f"{key}:")]
    path.write_text("\n".join([*lines, f"{key}: {value}"]) + "\n", encoding="utf-8")


def require_same_template(project: Path, template: str | None) -> None:
    """Raise CliError when ``init --template NAME`` names another template than the one ``project`` was made
    from (recorded at init; for an older project, guessed from the template's top-level files)."""
    if template is None:
        return
    made_from = read_config(project).get(TEMPLATE_KEY)
    if made_from is None:
        wanted = templates_dir() / template
        own = [p.name for p in wanted.glob("*.py")] if wanted.is_dir() else []
        if all((project / name).is_file() for name in own):
            return
        made_from = "another template"
    elif made_from == template:
        return
    else:
        made_from = f"the template {made_from!r}"
    raise CliError(f"{project} already is a python-flask stack project, made from {made_from}, not {template!r}; "
                     f"nothing written (init another directory, or pass --overwrite to write {template!r} over it)")


def say_next(project: Path, say: Callable[[str], None]) -> None:
    """Say the commands to run next (each a line ``next: ...`` that works as printed in a new login shell), and
    when ``flask-stack`` is not on this shell's PATH, the line that puts it there."""
    where = shlex.quote(str(project))
    say(f"next: cd {where} && flask-stack run")
    say(f"next: cd {where} && flask-stack test")
    if shutil.which("flask-stack") is None:
        local_bin = Path.home() / ".local" / "bin"
        if (local_bin / "flask-stack").exists():
            say(f"{local_bin} is not on this shell's PATH: a new login shell has it (~/.profile adds it when it "
                'exists); or run: export PATH="$HOME/.local/bin:$PATH"')
        elif Path(sys.argv[0]).name == "flask-stack":
            say(f"flask-stack is not on PATH: run `mkdir -p ~/.local/bin && ln -sf "
                f"{shlex.quote(str(Path(sys.argv[0]).absolute()))} ~/.local/bin/`, then open a new login shell")
