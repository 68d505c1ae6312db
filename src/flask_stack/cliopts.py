"""What the ``flask-stack`` commands share: the status line (:func:`say`), the engine choice said in one line
(:func:`engine_for`), ``-e`` pairs, and the options several commands take (click decorators).
"""

from __future__ import annotations

from pathlib import Path

import click

from .engine import Engine
from .engines import BUILD_ENGINE_NAMES, ENGINE_NAMES, resolve_engine_name, select_engine
from .errors import CliError

#: The engines ``--engine`` accepts where a command runs the app.
ENGINES = list(ENGINE_NAMES)
#: The engines that can build an image (``build``): the local engine cannot.
BUILD_ENGINES = list(BUILD_ENGINE_NAMES)


def say(message: str) -> None:
    """Print a status line ``flask-stack: <message>`` to stderr."""
    click.echo(f"flask-stack: {message}", err=True)


def env_pairs(pairs: tuple[str, ...]) -> dict[str, str]:
    """Return ``-e KEY=VALUE`` options as a dict; raise CliError for one without ``=``."""
    result = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CliError(f"--env {pair!r}: expected KEY=VALUE")
        result[key] = value
    return result


def engine_for(option: str | None, project: Path | None, base_image: str | None = None, build: bool = False) -> Engine:
    """Return the engine for ``--engine`` (``option``: its value, from the command line or STACK_ENGINE; None:
    the project's recorded choice, else local; see :mod:`flask_stack.engines`), with ``--base-image`` for its
    image builds, and say in one line which one is used and why.

    Raises:
        CliError: the container engine asked for does not work.
    """
    ctx = click.get_current_context(silent=True)
    from_env = ctx is not None and ctx.get_parameter_source("engine") == click.core.ParameterSource.ENVIRONMENT
    name, why = resolve_engine_name(option, from_env, project, build)
    engine = select_engine(name)
    binary = getattr(engine, "binary", None)
    say(f"engine: {engine.name}" + (f" ({binary})" if binary and binary != engine.name else "") + f" ({why})")
    if base_image is not None:
        if hasattr(engine, "base"):
            engine.base = base_image
        else:
            say(f"--base-image {base_image} is not used: the {engine.name} engine builds no image")
    return engine


def app_env(pairs: tuple[str, ...], app_spec: str | None = None, urls: bool = True) -> dict[str, str]:
    """Return the ``-e`` pairs, plus ``FLASK_APP`` for ``--app``, plus ``STACK_SHOW_URLS=0`` (the CLI prints the
    URLs, the dev loop need not); an explicit ``-e`` wins."""
    env = {"STACK_SHOW_URLS": "0"} if urls else {}
    if app_spec:
        env["FLASK_APP"] = app_spec
    return {**env, **env_pairs(pairs)}


engine_option = click.option(
    "--engine", type=click.Choice(ENGINES), default=None, envvar="STACK_ENGINE",
    show_default="the project's `init --engine`, else local", show_envvar=True,
    help="Where to run: local (this machine's Python, no container), docker or podman (the stack's development "
         "image, built on first use).")
build_engine_option = click.option(
    "--engine", type=click.Choice(BUILD_ENGINES), default=None,
    show_default="STACK_ENGINE or the project's `init --engine` when a container engine, else docker if its "
                 "daemon answers, else podman",
    help="Container engine that builds: docker or podman (the local engine cannot build images).")
project_option = click.option(
    "--project", "project_dir", type=click.Path(path_type=Path, file_okay=False), default=None, metavar="DIR",
    help="The project directory. Default: the current directory.")
app_option = click.option(
    "--app", "app_spec", default=None, metavar="MODULE[:NAME]", envvar="FLASK_APP", show_envvar=True,
    help="Where the app is, as `flask --app` takes it: module, module:name or module:create_app(args) "
         "(default: wsgi.py, app.py, the project's __init__.py, or its one package).")
port_option = click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True, metavar="PORT",
                           envvar="FLASK_RUN_PORT", show_envvar=True,
                           help="Host TCP port the app is served on (127.0.0.1); `flask run`'s variable too.")
env_option = click.option("-e", "--env", "env_pairs", multiple=True, metavar="KEY=VALUE",
                          help="An environment variable for the app (repeatable).")
base_image_option = click.option(
    "--base-image", default=None, metavar="IMAGE",
    help="Base image of the images built (default: $STACK_BASE_IMAGE, else python:3.12-slim-bookworm).")
