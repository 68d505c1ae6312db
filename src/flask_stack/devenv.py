"""Dev Containers and devfiles: the development image for ``devcontainer.json``, and adding the two definitions
(``.devcontainer/devcontainer.json``, ``devfile.yaml``) to a project made before the templates had them.

Every template carries both (see README "Dev Containers and devfiles"). They run the stack's development image,
``dev.local/python-flask:<major.minor>``, which only exists where ``flask-stack`` built it: the Dev Container's
``initializeCommand`` runs ``flask-stack dev-image`` on the host, which builds it when missing or out of date.

The devfile's kind ``deploy`` (``odo deploy``) builds the deployable image from the template's ``.devfile/Dockerfile``
and ``.dockerignore`` (:mod:`flask_stack.odo`) and applies the manifests in ``deploy/``, which ``init`` and
:func:`add_dev_files` write as ``flask-stack deploy`` does by default (:func:`write_manifests`).

A user's own definitions always win: :func:`add_dev_files` and ``flask-stack init --overwrite`` leave an existing
``.devcontainer/``, ``.devfile/`` or ``deploy/`` directory (whatever it holds) and an existing ``devfile.yaml`` or
``.dockerignore`` as they are.
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
#: What ``odo deploy`` (the devfile's kind ``deploy``) needs besides the devfile: the Dockerfile directory and the
#: build's ignore file (:mod:`flask_stack.odo`), and the manifests ``flask-stack deploy`` writes (:mod:`flask_stack.deploy`).
ODO_DIR, DOCKERIGNORE, DEPLOY_DIR = ".devfile", ".dockerignore", "deploy"
#: The directories and files of a project's dev environment that a user may own: never replaced once there.
USER_DIRS = (DEVCONTAINER_DIR, ODO_DIR, DEPLOY_DIR)
USER_FILES = (DEVFILE, DOCKERIGNORE)
#: The devfile's component name line in the templates; init and :func:`add_dev_files` put the project's name there.
DEVFILE_NAME_LINE = "  name: python-flask-app\n"
#: The devfile's deployable image line in the templates; the project's name goes there too (``flask-stack deploy``'s
#: default image is ``<name>:latest``).
DEVFILE_IMAGE_LINE = "  IMAGE: python-flask-app:latest\n"

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
    version of and must keep: everything under one of :data:`USER_DIRS` (``.devcontainer/``, ``.devfile/``,
    ``deploy/``) when ``target`` has that directory, and each of :data:`USER_FILES` (``devfile.yaml``,
    ``.dockerignore``) that ``target`` has."""
    dirs = {name for name in USER_DIRS if os.path.lexists(target / name)}
    own = {name for name in USER_FILES if os.path.lexists(target / name)}
    return [rel for rel in files if rel.parts[0] in dirs or (len(rel.parts) == 1 and rel.parts[0] in own)]


def name_devfile(devfile: Path, name: str) -> None:
    """Put ``name`` (a DNS-1123 label: odo names the component's Kubernetes resources after it) in ``devfile``'s
    ``metadata.name``, and ``<name>:latest`` in its variable ``IMAGE``, where they still have the template's.
    OSError propagates."""
    text = devfile.read_text(encoding="utf-8")
    named = text.replace(DEVFILE_NAME_LINE, f"  name: {name}\n", 1).replace(
        DEVFILE_IMAGE_LINE, f"  IMAGE: {name}:latest\n", 1)
    if named != text:
        devfile.write_text(named, encoding="utf-8")


def write_manifests(project: Path, name: str) -> list[Path]:
    """Write the manifests ``flask-stack deploy`` writes by default (image ``<name>:latest``, the devfile's
    ``IMAGE``) into ``project/deploy``, which the devfile's kubernetes components name (odo reads them whenever it
    reads the devfile, ``odo dev`` included); return their paths.

    Raises:
        CliError: they cannot be written.
    """
    from .deploy import generate

    return generate(project, project / DEPLOY_DIR, f"{name}:latest", name=name)


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
    if not all((source / rel).exists() for rel in (DEVFILE, DEVCONTAINER_DIR, ODO_DIR, DOCKERIGNORE)):
        raise CliError(f"template {name!r} lacks {DEVCONTAINER_DIR}/, {ODO_DIR}/, {DEVFILE} or {DOCKERIGNORE}; "
                         f"reinstall flask-stack")
    written: list[Path] = []
    try:
        for directory in (DEVCONTAINER_DIR, ODO_DIR):
            if os.path.lexists(project / directory):
                echo(f"  {directory}/ kept as it is (yours)")
            else:
                shutil.copytree(source / directory, project / directory)
                written += sorted(p.relative_to(project) for p in (project / directory).rglob("*") if p.is_file())
        for filename in (DEVFILE, DOCKERIGNORE):
            if os.path.lexists(project / filename):
                echo(f"  {filename} kept as it is (yours)")
            else:
                shutil.copyfile(source / filename, project / filename)
                written.append(Path(filename))
        if Path(DEVFILE) in written:
            name_devfile(project / DEVFILE, project_name(project))
        if os.path.lexists(project / DEPLOY_DIR):
            echo(f"  {DEPLOY_DIR}/ kept as it is (yours)")
        else:
            written += [path.relative_to(project) for path in write_manifests(project, project_name(project))]
    except OSError as exc:
        raise CliError(f"cannot write into {project}: {exc.strerror}"
                         + (f": {exc.filename}" if exc.filename else "")) from None
    for rel in written:
        echo(f"  {rel}")
    return written
