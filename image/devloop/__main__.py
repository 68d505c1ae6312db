"""Command line of the dev loop: ``python -m devloop {run,debug,test}``; see :mod:`devloop`."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import click

try:
    import stacksettings
    from oneline import first_line
except ImportError as _exc:  # the runtime's directory is not on PYTHONPATH: one line, no traceback
    sys.stderr.write(f"devloop: cannot import stacksettings ({_exc}); run the dev loop with the stack's "
                     "image/project on PYTHONPATH\n")
    sys.exit(1)

from .errors import DevloopError, StopRequested
from .logs import configure as configure_logging
from .logs import get_logger

log = get_logger()


def _in_container() -> bool:
    return bool(stacksettings.raw("APPSODY_PROJECT_DIR") or os.environ.get("container")  # podman's marker
                or os.path.exists("/.dockerenv") or os.path.exists("/run/.containerenv"))


def default_project() -> str:
    """STACK_USERAPP_DIR, else $APPSODY_PROJECT_DIR/userapp, else the current directory."""
    appsody = stacksettings.value("APPSODY_PROJECT_DIR")
    return stacksettings.value("STACK_USERAPP_DIR") or (os.path.join(appsody, "userapp") if appsody else ".")


def default_host() -> str:
    """STACK_HOST, else 0.0.0.0 inside a container and 127.0.0.1 elsewhere."""
    return stacksettings.value("STACK_HOST") or ("0.0.0.0" if _in_container() else "127.0.0.1")


def _setting(name: str):
    """The dev loop's setting ``name`` from the registry; an unusable value is DevloopError's one line."""
    try:
        return stacksettings.value(name)
    except stacksettings.SettingsError as exc:
        raise DevloopError(str(exc)) from None


def _check_settings() -> None:
    """Raise DevloopError with the runtime's one-line message when a stack setting (LOG_FORMAT, STACK_*) is
    unusable: every app process would fail on it, and a save cannot fix the environment."""
    try:
        from server.settings import load_settings
    except ImportError:  # reported by warm_imports/testcmd with the PYTHONPATH hint
        return
    try:
        load_settings()
    except stacksettings.SettingsError as exc:
        raise DevloopError(first_line(exc, type(exc).__name__)) from None


def _project(path: str) -> Path:
    """The project directory (the runtime finds the app in it, or reports in one line that it cannot)."""
    project = Path(path).expanduser().resolve()
    if not project.is_dir():
        raise DevloopError(f"project directory {project} does not exist; pass --project DIR")
    return project


def _require_app(project: Path) -> None:
    """Raise DevloopError with the runtime's one line when no app can be found in ``project`` (none there, or
    several packages and no FLASK_APP): nothing to serve or test, and no save of a file is waited for.

    Only finds, never imports (``server.discovery.locate``); an app that fails to import is the loop's to report."""
    try:
        from server.discovery import locate
        from server.exceptions import StackError as RuntimeStackError
        from server.settings import load_settings
    except ImportError:  # reported by warm_imports/testcmd with the PYTHONPATH hint
        return
    try:
        settings = load_settings()
        if settings.userapp == "":  # USERAPP="": the stack's endpoints only
            return
        app = settings.app or _dotenv_value(project, "FLASK_APP")
        locate(app, str(project), settings.userapp or None)
    except RuntimeStackError as exc:
        message = first_line(exc, type(exc).__name__)
        parent = project.parent
        if message.startswith("no Flask app found") and any(
                (parent / name).exists() for name in ("__init__.py", "app.py", "wsgi.py", ".appsody-config.yaml")):
            message += f"; the project may be {parent} (run there, or pass --project {parent})"
        raise DevloopError(message) from None


def _dotenv_value(project: Path, name: str) -> str | None:
    """``name`` in the project's ``.env``, else its ``.flaskenv`` (read as ``flask run`` reads them, without
    setting anything); None when neither sets it or python-dotenv is missing."""
    try:
        from dotenv import dotenv_values
    except ImportError:
        return None
    for filename in (".env", ".flaskenv"):
        if (project / filename).is_file():
            value = dotenv_values(project / filename).get(name)
            if value:
                return value
    return None


def _prepare(project_arg: str, deps_dir_arg: str | None, need_app: bool = True):
    """Common start: check the settings, resolve the project, check that it holds an app (``need_app``), export
    STACK_USERAPP_DIR, install deps."""
    from . import deps

    project = _project(project_arg)
    if need_app:
        _require_app(project)
    os.environ["STACK_USERAPP_DIR"] = str(project)
    deps_dir = Path(deps_dir_arg).expanduser().resolve() if deps_dir_arg else None
    state = deps.ensure_deps(project, deps_dir)
    deps.activate(state)
    # after activate: the runtime imports Flask and flasgger (PyYAML...), whose versions the project may choose
    _check_settings()
    return project, deps_dir, state


def _serve(debug: bool, project_arg: str, host: str | None, port: int | None, deps_dir: str | None,
           no_watch: bool) -> int:
    from . import deps, process, server
    from .child import ChildSpec

    host = host or default_host()
    port = port if port is not None else _setting("PORT")
    debugger, debug_port, debug_wait = _setting("STACK_DEBUGGER"), _setting("STACK_DEBUG_PORT"), \
        _setting("STACK_DEBUG_WAIT")
    sock = process.listening_socket(host, port)
    project, deps_path, state = _prepare(project_arg, deps_dir)
    shadowed = deps.shadowed_modules(state)
    if shadowed:  # this process imported the stack's version before the project's was installed: start afresh
        log.info("loading the project's versions of %s: restarting the dev loop", ", ".join(shadowed[:5]))
        os.set_inheritable(sock.fileno(), True)
        os.environ[process.FD_ENV] = str(sock.fileno())
        sys.stderr.flush()
        os.execv(sys.executable, [sys.executable, "-m", "devloop", *sys.argv[1:]])
    if debug:
        os.environ["STACK_DEBUG"] = "1"
        os.environ.setdefault("FLASK_DEBUG", "1")
        # debugpy's check for frozen stdlib modules prints 4 lines per restart; user code is never frozen.
        os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    stacksettings.set_default("STACK_PROFILE", "development")  # the user's settings.yaml profile (server.userconfig)
    process.warm_imports(debug=debug)
    spec = ChildSpec(sock_fd=sock.fileno(), host=host, port=sock.getsockname()[1], project=project, debug=debug,
                     debug_port=debug_port, debug_wait=debug_wait, debugger=debugger,
                     debug_host=_setting("STACK_DEBUG_HOST") or "")
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    spec.url_prefix = _url_prefix()
    spec.base_url = f"http://{'[' + shown + ']' if ':' in shown else shown}:{spec.port}{spec.url_prefix}"
    log.info("serving %s on %s:%d%s", project, host, spec.port, "" if no_watch else " (reloads on save)")
    if _setting("STACK_SHOW_URLS"):
        spec.show_urls = True  # the first app process says them once it answers (devloop.child, devloop.approute)
        if debug:
            log.info("debug mode: attach a DAP client (VS Code) to port %d", spec.debug_port)
    loop = server.Loop(sock, spec, deps_dir=deps_path, deps_key=state.key, watch_enabled=not no_watch)  # debug:
    # the loop owns spec.debug_port from here on and relays it to the app processes' debugger (devloop.debuggate)
    return loop.run()


def _url_prefix() -> str:
    """STACK_URL_PREFIX as the app takes it (``/your/path``), for the URLs logged at start; "" when unset or bad
    (the app process then says what is wrong with it)."""
    try:
        return stacksettings.value("STACK_URL_PREFIX")
    except stacksettings.SettingsError:
        return ""


_project_opt = click.option("--project", "project", default=default_project, show_default="STACK_USERAPP_DIR, "
                            "$APPSODY_PROJECT_DIR/userapp, or .", help="The user's project directory (the app is "
                            "found there as `flask run` finds it; FLASK_APP says where when it cannot).")
_deps_opt = click.option("--deps-dir", "deps_dir", default=lambda: stacksettings.value("APPSODY_DEPS"),
                         show_default="APPSODY_DEPS", help="Install the project's declared packages here (--target) "
                         "instead of into this Python environment.")
_serve_opts = [
    click.option("--host", default=None, help="Address to listen on [STACK_HOST; 0.0.0.0 in a container, else 127.0.0.1]."),
    click.option("--port", type=click.IntRange(0, 65535), default=None, help="TCP port [PORT; 8080]."),
    click.option("--no-watch", is_flag=True, help="Do not reload on save."),
]


def _with(opts):
    def deco(f):
        for opt in reversed(opts):
            f = opt(f)
        return f
    return deco


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """The python-flask stack's dev loop."""


@cli.command()
@_with([_project_opt, *_serve_opts, _deps_opt])
def run(project, host, port, no_watch, deps_dir):
    """Serve the project and reload it on save."""
    sys.exit(_serve(False, project, host, port, deps_dir, no_watch))


@cli.command()
@_with([_project_opt, *_serve_opts, _deps_opt])
def debug(project, host, port, no_watch, deps_dir):
    """As run, with Flask debug mode and a DAP debugger on STACK_DEBUG_PORT (5678)."""
    sys.exit(_serve(True, project, host, port, deps_dir, no_watch))


@cli.command()
@_project_opt
@_deps_opt
def deps(project, deps_dir):
    """Install the project's declared packages once (locking a missing or stale lock), then exit."""
    from stackdeps.detect import detect

    from . import deps as deps_mod

    project_path = _project(project)
    deps_path = Path(deps_dir).expanduser().resolve() if deps_dir else None
    if detect(project_path).kind is None:
        log.info("no uv.lock, Pipfile, pyproject.toml or requirements.txt in %s; nothing to install", project_path)
        sys.exit(0)
    state = deps_mod.ensure_deps(project_path, deps_path)
    if not state.installed:
        log.info("dependencies of %s are up to date%s", project_path,
                 f" in {state.site_dir}" if state.site_dir is not None else "")
    sys.exit(0)


@cli.command()
@_project_opt
@_deps_opt
@click.option("--junitxml", type=click.Path(dir_okay=False), default=None, help="Write a JUnit XML report here.")
@click.option("--watch", is_flag=True, help="Run again on every save until interrupted.")
@click.option("--appsody", is_flag=True, help="The Appsody CLI runs it (APPSODY_TEST): exit 0 or 1 only, any other "
              "pytest status (collection error, no tests) is 1 with one line.")
@click.argument("pytest_args", nargs=-1, type=click.UNPROCESSED)
def test(project, deps_dir, junitxml, watch, appsody, pytest_args):
    """Run the stack's checks and the project's tests (pytest); exit with pytest's status."""
    from . import testcmd

    project_path, deps_path, state = _prepare(project, deps_dir)
    sys.exit(testcmd.run_tests(project_path, deps_path, state, junitxml=junitxml, watch=watch,
                               extra=list(pytest_args), appsody=appsody))


@cli.command(context_settings={"ignore_unknown_options": True, "help_option_names": []})
@_project_opt
@_deps_opt
@click.argument("flask_args", nargs=-1, type=click.UNPROCESSED)
def flask(project, deps_dir, flask_args):
    """Run the Flask CLI on the project's app with the stack applied: `flask --app server:app FLASK_ARGS`, in
    the project directory (for the app's own commands, such as a tutorial's `init-db`)."""
    import subprocess

    from . import deps as deps_mod

    project_path, _deps_path, state = _prepare(project, deps_dir, need_app=False)
    env = dict(os.environ)
    env["PYTHONPATH"] = deps_mod.pythonpath(state)
    env.setdefault("LOG_LEVEL", "WARNING")  # a command's output is its own; the stack's INFO lines stay out of it
    argv = [sys.executable, "-m", "flask", "--app", "server:app", *flask_args]
    sys.exit(subprocess.run(argv, cwd=project_path, env=env).returncode)


def _activate_installed(args: list[str]) -> None:
    """Put the project's installed packages (their stamp current, no command run) first on ``sys.path`` before
    anything imports the runtime, so the loop and every app process load the project's versions of the packages
    the runtime imports too (Flask, PyYAML...). A missing or stale install is made later by ``_prepare``."""
    from . import deps

    def value(flag: str, default: str | None) -> str | None:
        for i, arg in enumerate(args):
            if arg == flag and i + 1 < len(args):
                return args[i + 1]
            if arg.startswith(flag + "="):
                return arg.split("=", 1)[1]
        return default

    if not args or args[0] not in ("run", "debug", "test", "flask"):
        return
    try:
        project = Path(value("--project", default_project()) or ".").expanduser().resolve()
        deps_dir = value("--deps-dir", stacksettings.value("APPSODY_DEPS"))
        state = deps.current_state(project, Path(deps_dir).expanduser().resolve() if deps_dir else None)
    except (OSError, ValueError):
        return
    if state is not None:
        deps.activate(state)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; an expected failure logs one ERROR line and exits non-zero."""
    # `python -m` put the current directory first on sys.path; the project is loaded by path instead, and
    # a module of the user's there (say server.py) must not shadow the stack's.
    if sys.path and sys.path[0] in ("", os.getcwd()):
        del sys.path[0]
    _activate_installed(sys.argv[1:] if argv is None else argv)
    configure_logging()

    def stop(signum, frame):  # until the loop installs its own handlers: abandon startup, exit 0
        raise StopRequested()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        cli.main(args=argv, prog_name="python -m devloop", standalone_mode=False)
    except DevloopError as exc:
        log.error("%s", exc)
        return exc.exit_code
    except StopRequested:
        return 0
    except KeyboardInterrupt:
        return 0
    except click.exceptions.Abort:
        return 0
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
