"""Dev Containers and devfiles: the development image for ``devcontainer.json``, and adding the two definitions
(``.devcontainer/devcontainer.json``, ``devfile.yaml``) to a project made before the templates had them.

Every template carries both (see README "Dev Containers and devfiles"). They run the stack's development image,
``dev.local/python-flask:<major.minor>``, which only exists where ``flask-stack`` built it: the Dev Container's
``initializeCommand`` runs ``flask-stack dev-image`` on the host, which builds it when missing or out of date.

A user's own definitions always win: :func:`add_dev_files` and ``flask-stack init --overwrite`` leave an existing
``.devcontainer/`` directory (whatever it holds) and an existing ``devfile.yaml`` as they are.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path, PurePath

from . import container_image as images
from .errors import CliError
from .paths import templates_dir
from .project import project_name, stack_info

#: The Dev Container directory and the devfile, as a template holds them (paths relative to the project).
DEVCONTAINER_DIR = ".devcontainer"
DEVFILE = "devfile.yaml"
#: The devfile's component name line in the templates; init and :func:`add_dev_files` put the project's name there.
DEVFILE_NAME_LINE = "  name: python-flask-app\n"

Echo = Callable[[str], None]


def dev_image(binary: str, explicit_base: str | None, echo: Echo) -> str:
    """Return the development image's tag, building it first when missing or built from other stack files.

    The base image is ``explicit_base`` (``--base-image``), else ``$STACK_BASE_IMAGE``, else the one the present
    image was built on (its :data:`container_image.BASE_LABEL`), else the Dockerfile's default: a Dev Container
    started after ``flask-stack run --base-image IMG`` keeps IMG without being told again.

    Raises:
        CliError: the build fails.
    """
    base = images.base_image(explicit_base)
    if base is None:
        recorded = images.image_label(binary, images.dev_image_tag(), images.BASE_LABEL)
        base = recorded or None
    return images.ensure_dev_image(binary, base, echo)


def kept_user_files(target: Path, files: list[PurePath]) -> list[PurePath]:
    """Return those of ``files`` (template paths relative to the project) that ``target`` already has its own
    version of and must keep: everything under ``.devcontainer/`` when ``target/.devcontainer`` exists, and
    ``devfile.yaml`` when ``target/devfile.yaml`` exists."""
    has_dir = os.path.lexists(target / DEVCONTAINER_DIR)
    has_devfile = os.path.lexists(target / DEVFILE)
    return [rel for rel in files
            if (has_dir and rel.parts[:1] == (DEVCONTAINER_DIR,)) or (has_devfile and rel.parts == (DEVFILE,))]


def name_devfile(devfile: Path, name: str) -> None:
    """Put ``name`` (a DNS-1123 label: odo names the component's Kubernetes resources after it) in ``devfile``'s
    ``metadata.name`` when it still has the template's name. OSError propagates."""
    text = devfile.read_text(encoding="utf-8")
    if DEVFILE_NAME_LINE in text:
        devfile.write_text(text.replace(DEVFILE_NAME_LINE, f"  name: {name}\n", 1), encoding="utf-8")


def add_dev_files(project: Path, echo: Echo, template: str | None = None) -> list[Path]:
    """Copy ``.devcontainer/`` and ``devfile.yaml`` from ``template`` (default: the stack's default template; the
    files are the same in each) into ``project``, leaving whichever of them the project already has.

    Returns the files written, relative to ``project``; ``echo`` gets one line per file written or kept.

    Raises:
        CliError: ``project`` is not a directory, the template is unknown, or a file cannot be written.
    """
    project = project.resolve()
    if not project.is_dir():
        raise CliError(f"{project} is not a directory; pass --project DIR")
    name = template or stack_info().get("default-template") or "simple"
    source = templates_dir() / name
    if not (source / DEVFILE).is_file() or not (source / DEVCONTAINER_DIR).is_dir():
        raise CliError(f"template {name!r} has no {DEVCONTAINER_DIR}/ and {DEVFILE}; reinstall flask-stack")
    written: list[Path] = []
    try:
        if os.path.lexists(project / DEVCONTAINER_DIR):
            echo(f"  {DEVCONTAINER_DIR}/ kept as it is (yours)")
        else:
            shutil.copytree(source / DEVCONTAINER_DIR, project / DEVCONTAINER_DIR)
            written += sorted(p.relative_to(project) for p in (project / DEVCONTAINER_DIR).rglob("*") if p.is_file())
        if os.path.lexists(project / DEVFILE):
            echo(f"  {DEVFILE} kept as it is (yours)")
        else:
            shutil.copyfile(source / DEVFILE, project / DEVFILE)
            name_devfile(project / DEVFILE, project_name(project))
            written.append(Path(DEVFILE))
    except OSError as exc:
        raise CliError(f"cannot write into {project}: {exc.strerror}"
                         + (f": {exc.filename}" if exc.filename else "")) from None
    for rel in written:
        echo(f"  {rel}")
    return written
