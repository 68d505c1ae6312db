"""The ``flask-stack`` command (click): init, run, debug, test, stop, build, deploy; dev-image and devcontainer
are :mod:`flask_stack.devcommands`, shared options and helpers :mod:`flask_stack.cliopts`.

Every expected failure is a ``CliError`` caught once, in :func:`main`, and printed as one line
``flask-stack: <message>`` on stderr with a non-zero exit status; usage errors (unknown option, bad
``--engine``) are shown the same way with status 2; Ctrl-C while preparing exits 130 quietly.
Progress and status lines go to stderr; the served app's own log goes to stdout.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import click

from . import __version__, devcommands, launch
from .cliopts import (ENGINES, app_env, app_option, base_image_option, build_engine_option, engine_for,
                      engine_option, env_option, port_option, project_option, say)
from .engine import RunOptions
from .errors import CliError
from .paths import stacksettings
from .project import find_project, project_name

@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="flask-stack")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """python-flask stack: write a Flask Blueprint, get health, metrics, API docs, reload, debugging,
    tests, a production image and Kubernetes manifests."""
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


def _template_names() -> list[str]:
    """The stack's template names (for ``--template``'s choices); [] when the stack's files are missing."""
    from .scaffold import available_templates

    try:
        return available_templates()
    except CliError:
        return []


def _list_templates(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    """``init --list``: print each template with its one-line description, then exit 0."""
    if not value or ctx.resilient_parsing:
        return
    from .scaffold import describe_template

    names = _template_names()
    width = max((len(name) for name in names), default=0)
    for name in names:
        click.echo(f"{name:<{width}}  {describe_template(name)}")
    ctx.exit(0)


@cli.command()
@click.argument("directory", type=click.Path(path_type=Path), default=".", required=False, metavar="[DIR]")
@click.option("--template", default=None, metavar=f"[{'|'.join(_template_names())}]",
              help="Template to copy (`--list` describes each). Default: the stack's default-template, simple.")
@click.option("--overwrite", is_flag=True, help="Write into a non-empty directory, replacing same-named files.")
@click.option("--list", "list_", is_flag=True, expose_value=False, is_eager=True, callback=_list_templates,
              help="List the templates, one line each, and exit.")
@click.option("--engine", type=click.Choice(ENGINES), default=None,
              help="Record the engine the project's commands use (`flask-stack-engine:` in its "
                   ".appsody-config.yaml); without it they run on the local engine.")
def init(directory: Path, template: str | None, overwrite: bool, engine: str | None) -> int:
    """Make a new project in DIR (default: the current directory) from a template.

    DIR may be missing or empty; a DIR that already is a stack project made from the same template is left as
    it is (exit 0), so running the same command twice works; one made from another template is refused (exit 1).
    """
    from .engines import record_engine
    from .nextsteps import TEMPLATE_KEY, default_template, record, require_same_template, say_next
    from .scaffold import init_project, is_stack_project

    target = Path(directory)
    if not overwrite and target.is_dir() and is_stack_project(target):
        require_same_template(target.resolve(), template)
        say(f"{target.resolve()} already is a python-flask stack project; nothing written "
            "(--overwrite writes the template over it)")
    else:
        written = init_project(target, template, overwrite, echo=click.echo)
        record(target.resolve(), TEMPLATE_KEY, template or default_template())
        say(f"project ready in {target.resolve()} ({len(written)} files)")
    if engine:
        record_engine(target.resolve(), engine)
        say(f"engine {engine} recorded in {target.resolve() / '.appsody-config.yaml'}")
    say_next(target.resolve(), say)
    return 0


@cli.command()
@project_option
@app_option
@port_option
@engine_option
@click.option("--production", is_flag=True, help="Serve with the production server and config (no reload).")
@env_option
@base_image_option
def run(project_dir: Path | None, app_spec: str | None, port: int, engine: str, production: bool,
        env_pairs: tuple[str, ...], base_image: str | None) -> int:
    """Serve the project with hot reload until Ctrl-C."""
    project = find_project(project_dir, app_spec)
    opts = RunOptions(project=project, port=port, production=production, env=app_env(env_pairs, app_spec))
    return launch.serve(opts, lambda: engine_for(engine, project, base_image), say)


@cli.command()
@project_option
@app_option
@port_option
@engine_option
@click.option("--debug-port", type=click.IntRange(1, 65535), default=5678, show_default=True, metavar="PORT",
              help="Host TCP port of the debugger (DAP, debugpy; 127.0.0.1).")
@click.option("--wait", is_flag=True, help="Wait for a debugger to attach before serving.")
@env_option
@base_image_option
def debug(project_dir: Path | None, app_spec: str | None, port: int, engine: str, debug_port: int, wait: bool,
          env_pairs: tuple[str, ...], base_image: str | None) -> int:
    """Serve the project in debug mode: Flask debugger, and debugpy for VS Code to attach."""
    project = find_project(project_dir, app_spec)
    opts = RunOptions(project=project, port=port, debug=True, debug_port=debug_port, debug_wait=wait,
                      env=app_env(env_pairs, app_spec))
    return launch.serve(opts, lambda: engine_for(engine, project, base_image), say, debug_port)


@cli.command(context_settings={"ignore_unknown_options": True})
@project_option
@app_option
@engine_option
@click.option("--junitxml", type=click.Path(path_type=Path, dir_okay=False), default=None, metavar="FILE",
              help="Also write a JUnit XML report to FILE.")
@env_option
@click.argument("pytest_args", nargs=-1, type=click.UNPROCESSED, metavar="[PYTEST ARGS]...")
def test(project_dir: Path | None, app_spec: str | None, engine: str, junitxml: Path | None,
         env_pairs: tuple[str, ...], pytest_args: tuple[str, ...]) -> int:
    """Run the project's tests as pytest would in the project directory (its pytest settings, its conftest.py
    fixtures first), plus the stack's checks when no test path is given; exit with pytest's status.

    PYTEST ARGS go to pytest as they are (`flask-stack test -k hello -x`, or after `--`)."""
    project = find_project(project_dir, app_spec)
    return engine_for(engine, project).test(project, junitxml, tuple(pytest_args), app_env(env_pairs, app_spec, urls=False))


@cli.command(context_settings={"ignore_unknown_options": True, "help_option_names": []})
@project_option
@app_option
@engine_option
@env_option
@click.argument("flask_args", nargs=-1, type=click.UNPROCESSED, metavar="[FLASK ARGS]...")
def flask(project_dir: Path | None, app_spec: str | None, engine: str, env_pairs: tuple[str, ...],
          flask_args: tuple[str, ...]) -> int:
    """Run the Flask CLI on the project's app, with the stack applied, in the project's environment
    (`flask-stack flask init-db`, `flask-stack flask routes`, `flask-stack flask --help`)."""
    project = find_project(project_dir, app_spec)
    return engine_for(engine, project).flask(project, tuple(flask_args), app_env(env_pairs, app_spec, urls=False))


@cli.command()
@project_option
@engine_option
def stop(project_dir: Path | None, engine: str | None) -> int:
    """Stop the project's server started by `run` or `debug` (any engine), and its containers (with
    --engine docker or podman, or the project's recorded container engine). Prints one line."""
    from .procs import read_record, stop_server

    project = find_project(project_dir)
    record_path = launch.record_path_of(project)
    running = read_record(record_path)
    if running is not None:
        stop_server(running)
        record_path.unlink(missing_ok=True)
        say(f"stopped the server of {project} (pid {running.pid}, port {running.port}, {running.engine} engine)")
        return 0
    from .engines import recorded_engine

    engine = engine or recorded_engine(project) or "local"
    if engine != "local":
        stopped = _stop_containers(project, engine)
        if stopped:
            say(f"stopped {stopped} of {project}")
            return 0
    say(f"nothing of {project} is running")
    return 0


def _stop_containers(project: Path, engine: str) -> str:
    """Stop the project's containers left without a flask-stack serving them (an ``appsody run``, a killed
    flask-stack) with container engine ``engine``; return what was stopped ('' for nothing).

    Raises:
        CliError: ``engine`` does not work.
    """
    from .container import ContainerEngine, detect_container_engine

    binary = detect_container_engine(required=engine)
    lines: list[str] = []
    ContainerEngine(binary, echo=lines.append).stop(project)
    return next((line.removeprefix("stopped ") for line in lines if line.startswith("stopped ")), "")


@cli.command()
@project_option
@app_option
@build_engine_option
@click.option("-t", "--tag", default=None, metavar="TAG", help="Image tag (default: <project-name>:latest).")
@base_image_option
def build(project_dir: Path | None, app_spec: str | None, engine: str, tag: str | None,
          base_image: str | None) -> int:
    """Build the project's deployable image (needs docker or podman); --app is recorded in it (FLASK_APP)."""
    project = find_project(project_dir, app_spec)
    if app_spec:
        os.environ["FLASK_APP"] = app_spec  # the build passes it on as the image's FLASK_APP
    return engine_for(engine, project, build=True).build(project, tag or f"{project_name(project)}:latest", base_image)


@cli.command()
@project_option
@click.option("--generate-only", is_flag=True, help="Only write the manifests; do not apply them.")
@click.option("--output", type=click.Path(path_type=Path, file_okay=False), default=None, metavar="DIR",
              help="Directory for the manifests (default: <project>/deploy).")
@click.option("--image", default=None, metavar="IMAGE",
              help="Image the Deployment runs (default: the tag of the project's last `flask-stack build`, else "
                   "<project-name>:latest).")
@click.option("--min-replicas", type=click.IntRange(1), default=2, show_default=True, metavar="N",
              help="Fewest pods the autoscaler keeps.")
@click.option("--max-replicas", type=click.IntRange(1), default=10, show_default=True, metavar="N",
              help="Most pods the autoscaler starts.")
@click.option("--cpu-target", type=click.IntRange(1, 100), default=70, show_default=True, metavar="PERCENT",
              help="The autoscaler's target average CPU use, percent of the pods' CPU request.")
@click.option("--openshift", is_flag=True,
              help="No fixed uid/gid in the pod spec: OpenShift's restricted policy assigns an arbitrary uid.")
@click.option("--service-monitor", is_flag=True,
              help="Also write a ServiceMonitor for the Prometheus Operator.")
@click.option("--url-prefix", default="", metavar="PATH",
              help="Path the app is mounted at (/your/path): the pods' STACK_URL_PREFIX; probes and scrape path follow.")
@click.option("--max-content-length", type=click.IntRange(0), default=stacksettings().DEFAULT_MAX_CONTENT_LENGTH, show_default=True,
              metavar="BYTES", help="Largest request body (0: no limit): the pods', the Ingress's and nginx's.")
@click.option("--ingress", "ingress_host", default="", metavar="HOST",
              help="Also write an Ingress for ingress-nginx routing HOST (and the --url-prefix) to the app.")
@click.option("--tls-secret", default="", metavar="NAME", help="The Ingress serves HTTPS with this TLS Secret.")
@click.option("--nginx-sidecar", is_flag=True, help="nginx in front of the app in each pod (buffers bodies).")
@click.option("--nginx-image", default=None, metavar="IMAGE",
              help="The nginx sidecar's image (default: docker.io/library/nginx:1.27-bookworm).")
@click.option("--nginx-static", is_flag=True, help="The nginx sidecar serves the project's static/ files.")
def deploy(project_dir: Path | None, generate_only: bool, output: Path | None, image: str | None,
           min_replicas: int, max_replicas: int, cpu_target: int, openshift: bool, service_monitor: bool,
           url_prefix: str, max_content_length: int, **front: object) -> int:
    """Write Kubernetes manifests (Deployment, Service, HorizontalPodAutoscaler, PodDisruptionBudget; a
    ServiceMonitor, an Ingress, an nginx sidecar when asked) for the project, and apply them unless --generate-only."""
    project = find_project(project_dir)
    from . import deploy as deployer
    from .front import Front

    image, note = (image, None) if image else _deploy_image(project)
    config = deployer.production_config(project)
    paths = deployer.generate(project, output or project / "deploy", image, config=config,
                              min_replicas=min_replicas, max_replicas=max_replicas, cpu_target=cpu_target,
                              openshift=openshift, service_monitor=service_monitor, url_prefix=url_prefix,
                              max_content_length=max_content_length, front=Front(**front))
    for path in paths:
        say(f"wrote {path}")
    secret_keys = config.secret_keys
    if secret_keys:
        from .appconfig import secret_hint
        from .project import project_name

        say(secret_hint(project_name(project), secret_keys))
    if note:
        say(note)
    if generate_only:
        return 0
    return deployer.apply(paths)


for _command in devcommands.COMMANDS:
    cli.add_command(_command)


def _deploy_image(project: Path) -> tuple[str, str]:
    """The image ``deploy`` writes when no --image is given: the last ``build``'s tag, else ``<name>:latest``;
    and the line saying which and that the cluster must be able to pull it."""
    from .container_image import last_build

    built = last_build(project)
    if built:
        return built, (f"image {built}: the last `flask-stack build` of this project; push it to a registry the "
                       f"cluster pulls from (or pass --image)")
    image = f"{project_name(project)}:latest"
    return image, (f"image {image} assumed (no `flask-stack build` of this project recorded): build it and push it "
                   f"to a registry the cluster pulls from (or pass --image)")


def _first_line(text: str) -> str:
    """Return the first non-empty line of ``text`` ('' when none), so every error stays one line."""
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


class Terminated(BaseException):
    """SIGTERM arrived while flask-stack itself was working (not while a server ran: that one is forwarded)."""


def _terminate(_signum: int, _frame: object) -> None:
    """SIGTERM handler: unwind like Ctrl-C, so half-made work (a venv being installed) is cleaned up."""
    raise Terminated()


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``flask-stack``: run the command, turn expected failures into one line; never returns.

    Exit status: the command's (a served app's or pytest's), 1 (or CliError.exit_code) for an expected
    failure, 2 for a usage error, 130 after Ctrl-C, 143 after SIGTERM.
    """
    signal.signal(signal.SIGTERM, _terminate)
    try:
        status = cli.main(args=argv, prog_name="flask-stack", standalone_mode=False)
    except CliError as exc:
        say(_first_line(str(exc)) or type(exc).__name__)
        sys.exit(exc.exit_code)
    except click.UsageError as exc:
        where = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
        say(f"{_first_line(exc.format_message())}{where}")
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        say(_first_line(exc.format_message()))
        sys.exit(exc.exit_code)
    except (click.Abort, KeyboardInterrupt):
        sys.exit(130)
    except Terminated:
        sys.exit(143)
    except OSError as exc:  # e.g. the cache directory is not writable
        say(f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""))
        sys.exit(1)
    sys.exit(status if isinstance(status, int) else 0)
