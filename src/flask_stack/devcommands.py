"""The ``flask-stack`` commands for Dev Containers and devfiles (:mod:`flask_stack.devenv`): ``dev-image`` (the
Dev Container's ``initializeCommand``) and ``devcontainer`` (adds the two definitions to an older project).

``flask_stack.cli`` registers :data:`COMMANDS` on its group; expected failures are ``CliError`` lines as for every
command.
"""

from __future__ import annotations

from pathlib import Path

import click

from .cliopts import base_image_option, build_engine_option, engine_for, project_option, say
from .errors import CliError
from .project import find_project


@click.command("dev-image")
@build_engine_option
@base_image_option
def dev_image(engine: str, base_image: str | None) -> int:
    """Build the stack's development image when it is missing or out of date, and print its tag (the Dev
    Container's initializeCommand; without --base-image or $STACK_BASE_IMAGE the image keeps the base it has)."""
    from .container import ContainerEngine
    from .devenv import dev_image as ensure

    container = engine_for(engine, None, build=True)
    if not isinstance(container, ContainerEngine):
        raise CliError("dev-image needs a container engine: neither docker nor podman works here")
    click.echo(ensure(container.binary, base_image, say))
    return 0


@click.command()
@project_option
def devcontainer(project_dir: Path | None) -> int:
    """Add .devcontainer/devcontainer.json and devfile.yaml (Dev Containers, odo, Dev Spaces) to a project made
    before the templates had them; a .devcontainer/ or devfile.yaml already there is left as it is."""
    from .devenv import add_dev_files

    project = find_project(project_dir)
    written = add_dev_files(project, click.echo)
    say(f"added {len(written)} file{'s' if len(written) != 1 else ''} to {project}" if written
        else f"nothing added to {project}")
    return 0


#: The commands this module adds to ``flask-stack``.
COMMANDS = (dev_image, devcontainer)
