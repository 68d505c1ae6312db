"""The container engine: ``run``, ``debug``, ``test``, ``stop`` and ``build`` with docker or podman.

``run``/``debug``/``test`` start the stack's development image (see :mod:`flask_stack.container_image`;
built on first use, rebuilt when the stack's files change) with:

* the project bind-mounted at ``/project/userapp`` (the dev loop reloads on save);
* a named volume ``flask-stack-<name>-<hash>-deps`` at ``/project/deps`` (the packages the project declares,
  installed once and kept across restarts);
* ports published on 127.0.0.1 only: ``-p 127.0.0.1:PORT:8080`` and, for debug, ``:DEBUG_PORT:5678``;
* the container named ``flask-stack-<name>-<hash>`` (``-test`` for tests), so ``stop`` finds it;
* in debug mode, a network of its own, so that only the host's loopback reaches the debugger and the
  Werkzeug console, never another container: with podman (or the Docker CLI on podman's Docker API)
  ``--network slirp4netns``, a user-mode network stack nothing else can route to (podman 4's bridge
  networks forward traffic between each other); with Docker's own engine a bridge network
  ``flask-stack-<name>-<hash>`` (Docker isolates bridge networks from each other), removed afterwards.

Who the container runs as, so that nothing it writes into the project is root-owned on the host:

* host user root (rootful podman or docker): the image's user ``worker`` (uid 1001); files the
  container creates in the project belong to uid 1001.
* another host user with podman (rootless): ``--userns=keep-id --user UID:GID``: the host user's uid is
  the same number inside the container, and the container runs as it.
* another host user with docker (a root daemon): ``--user UID:GID`` of that user.

The image's deps volume and HOME are writable by any uid for the last two cases.
``run --production`` builds the deployable image (as ``build`` does) and runs it: its serving layer (granian by
default) as uid 1001.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from . import container_image as images
from .engine import Engine, RunOptions
from .errors import CliError
from .procs import require_free_port, run_foreground
from .project import project_name, stack_info

#: The container engines, in the order `build` tries them when none is named.
ENGINES = ("docker", "podman")
#: Seconds an engine gets to answer ``<engine> info`` before it counts as not working.
PROBE_TIMEOUT = {"docker": 5.0, "podman": 20.0}
#: Seconds ``stop`` gives the container between SIGTERM and SIGKILL.
STOP_TIMEOUT = 15
#: Container paths of the image's contract (see image/Dockerfile-stack).
USERAPP_DIR = "/project/userapp"
DEPS_DIR = "/project/deps"
OUTPUT_DIR = "/project/output"
#: Label on every container the CLI starts: the project directory it serves.
PROJECT_LABEL = "dev.flask-stack.project"


def _probe(binary: str) -> str | None:
    """Return None when ``binary info`` succeeds within its timeout, else a one-line reason."""
    path = shutil.which(binary)
    if path is None:
        return f"{binary} is not installed (not found on PATH)"
    try:
        result = subprocess.run([path, "info"], capture_output=True, text=True,
                                timeout=PROBE_TIMEOUT[binary], check=False)
    except subprocess.TimeoutExpired:
        return f"`{binary} info` did not answer within {PROBE_TIMEOUT[binary]:.0f} s"
    except OSError as exc:
        return f"cannot run {binary}: {exc.strerror}"
    if result.returncode != 0:
        lines = [line.strip() for line in (result.stderr or result.stdout).splitlines() if line.strip()]
        return f"`{binary} info` failed: {lines[-1] if lines else f'exit {result.returncode}'}"
    return None


def detect_container_engine(required: str | None = None) -> str | None:
    """Return the container engine to use: ``"docker"`` or ``"podman"``.

    Args:
        required (str | None): None: automatic: docker when its daemon answers ``docker info`` within
            5 s, else podman when ``podman info`` works, else None. ``"docker"``/``"podman"``: that one.

    Returns:
        str | None: the engine's command name; None only in automatic mode when neither works.

    Raises:
        CliError: ``required`` is not docker/podman, or is not installed or not working (one line
            saying why and what to do instead).
    """
    if required is None:
        for binary in ENGINES:
            if _probe(binary) is None:
                return binary
        return None
    if required not in ENGINES:
        raise CliError(f"--engine {required}: unknown container engine; use docker or podman")
    reason = _probe(required)
    if reason is not None:
        other = [e for e in ENGINES if e != required][0]
        hint = "start its daemon, " if required == "docker" and "not installed" not in reason else ""
        raise CliError(f"--engine {required}: {reason}; {hint}install it, or use --engine {other} or --engine local")
    return required


def project_key(project: Path) -> str:
    """Return ``<name>-<8 hex>``: the project's name and a hash of its absolute path (two checkouts of one
    project get different containers and volumes)."""
    digest = hashlib.sha256(str(project.resolve()).encode()).hexdigest()[:8]
    return f"{project_name(project)}-{digest}"


def _git(project: Path, *args: str) -> str:
    """Return the stripped output of ``git args`` in ``project``, or "" when git or the repository is absent."""
    if shutil.which("git") is None:
        return ""
    try:
        result = subprocess.run(["git", "-C", str(project), *args], capture_output=True, text=True,
                                timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return result.stdout.strip() if result.returncode == 0 else ""


class ContainerEngine(Engine):
    """Runs the stack's commands in containers with ``binary`` (docker or podman).

    Args:
        binary (str): ``"docker"`` or ``"podman"`` (as returned by :func:`detect_container_engine`).
        base (str | None): base image for every build; default ``$STACK_BASE_IMAGE``, else the Dockerfiles'
            default (python:3.12-slim-bookworm).
        echo: where status lines go (default: ``flask-stack: ...`` on stderr).
    """

    def __init__(self, binary: str, base: str | None = None, echo=None):
        self.binary = binary
        self.name = os.path.basename(binary)
        self.base = base
        self._echo = echo

    # --- helpers -------------------------------------------------------------------------------------

    def say(self, message: str) -> None:
        """Print one status line (stderr, ``flask-stack:`` prefix) or pass it to the ``echo`` given."""
        if self._echo is not None:
            self._echo(message)
        else:
            print(f"flask-stack: {message}", file=sys.stderr, flush=True)

    def _cmd(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
        """Run ``<engine> args`` quietly and return the result (never raises for a non-zero status).

        Raises:
            CliError: the engine does not answer within ``timeout`` seconds.
        """
        try:
            return subprocess.run([self.binary, *args], capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise CliError(f"`{self.name} {' '.join(args[:2])}` did not answer within {timeout:.0f} s") from None

    def container_name(self, project: Path, kind: str = "") -> str:
        """Return the name of the project's container: ``flask-stack-<name>-<hash>[-kind]``."""
        return f"flask-stack-{project_key(project)}" + (f"-{kind}" if kind else "")

    def volume_name(self, project: Path) -> str:
        """Return the name of the project's dependency volume: ``flask-stack-<name>-<hash>-deps``."""
        return f"flask-stack-{project_key(project)}-deps"

    def _state(self, name: str) -> str | None:
        """Return the container's state (``running``, ``exited``, ...) or None when there is no such container."""
        result = self._cmd("container", "inspect", "--format", "{{.State.Status}}", name)
        if result.returncode != 0:
            return None
        return result.stdout.strip() or "unknown"

    def _remove(self, name: str) -> None:
        """Remove the container ``name`` if it exists (stopping it first, SIGKILL after STOP_TIMEOUT)."""
        if self._state(name) is not None:
            self._cmd("rm", "-f", name, timeout=STOP_TIMEOUT + 30)

    def user_args(self) -> list[str]:
        """Return the ``run`` options choosing the container's user (see the module docstring)."""
        uid = os.getuid() if hasattr(os, "getuid") else 0
        if uid == 0:
            return []
        user = ["--user", f"{uid}:{os.getgid()}"]
        return ["--userns=keep-id", *user] if self.name == "podman" else user

    @staticmethod
    def _mount(host: Path, target: str) -> str:
        """Return a ``-v`` value; ``:z`` (shared SELinux label) only when SELinux enforces on this host."""
        try:
            enforcing = Path("/sys/fs/selinux/enforce").read_text().strip() == "1"
        except OSError:
            enforcing = False
        return f"{host}:{target}" + (":z" if enforcing else "")

    def _dev_run_args(self, project: Path, name: str) -> list[str]:
        """Return the ``run`` options shared by run/debug/test: name, label, user, mounts."""
        self._remove(name)  # a stopped leftover of an interrupted run would block the name
        return ["run", "--name", name, "--label", f"{PROJECT_LABEL}={project}", *self.user_args(),
                "-v", self._mount(project, USERAPP_DIR), "-v", f"{self.volume_name(project)}:{DEPS_DIR}"]

    def _image(self) -> str:
        """Return the development image's tag, building it when needed (progress on the terminal)."""
        return images.ensure_dev_image(self.binary, images.base_image(self.base), self.say)

    # --- Engine interface ----------------------------------------------------------------------------

    def run(self, opts: RunOptions) -> int:
        """Serve the project in a container until Ctrl-C/SIGTERM; return the container's exit status.

        Raises:
            CliError: a port is in use, the project's container is already running, or the image
                cannot be built.
        """
        project = opts.project.resolve()
        name = self.container_name(project)
        if self._state(name) == "running":
            raise CliError(f"the project is already running in container {name}; run `flask-stack stop` first")
        require_free_port(opts.port)
        if opts.debug:
            require_free_port(opts.debug_port, "--debug-port")
        if opts.production:
            return self._run_production(project, name, opts)
        image = self._image()
        argv = [self.binary, *self._dev_run_args(project, name), "-p", f"127.0.0.1:{opts.port}:8080"]
        if opts.debug:
            argv += [*self._own_network(project, name), "-p", f"127.0.0.1:{opts.debug_port}:5678",
                     "-e", "STACK_DEBUG_PORT=5678",
                     "-e", f"STACK_DEBUG_WAIT={1 if opts.debug_wait else 0}"]
        for key, value in opts.env.items():
            argv += ["-e", f"{key}={value}"]
        argv += [image, "debug" if opts.debug else "run"]
        self.say(f"container {name}: {opts.project} mounted at {USERAPP_DIR}, "
                 f"packages in volume {self.volume_name(project)}")
        return self._foreground(argv, project, name)

    def _run_production(self, project: Path, name: str, opts: RunOptions) -> int:
        """Build the deployable image (tag ``flask-stack-<key>:production``) and run it on 127.0.0.1:PORT."""
        tag = f"localhost/flask-stack-{project_key(project)}:production"
        self.build(project, tag, None)
        argv = [self.binary, "run", "--name", name, "--label", f"{PROJECT_LABEL}={project}",
                "-p", f"127.0.0.1:{opts.port}:8080"]
        for key, value in opts.env.items():
            argv += ["-e", f"{key}={value}"]
        self._remove(name)
        return self._foreground([*argv, tag], project, name)

    def _foreground(self, argv: list[str], project: Path, name: str) -> int:
        """Run the engine client ``argv`` in the foreground (signals forwarded to the container through the
        client's signal proxy); afterwards make sure the container (and a network of its own) is gone;
        return its exit status.

        The containers are started without ``--rm`` and removed here instead: through podman's Docker API
        (4.3), ``docker run --rm`` exits 0 whatever the container's status, which would turn a failing
        ``test`` into a pass; without it the client returns the container's own status on every engine.
        """
        try:
            return run_foreground(argv, dict(os.environ), project)
        finally:
            self._remove(name)
            if "--network" in argv and argv[argv.index("--network") + 1] == name:
                self._cmd("network", "rm", name)

    def _own_network(self, project: Path, name: str) -> list[str]:
        """Return the ``run`` options giving the container ``name`` a network of its own (module docstring).

        Raises:
            CliError: Docker cannot create the bridge network ``name``.
        """
        if images.podman_server(self.binary):
            return ["--network", "slirp4netns"]
        if self._cmd("network", "inspect", name).returncode != 0:
            created = self._cmd("network", "create", "--label", f"{PROJECT_LABEL}={project}", name)
            if created.returncode != 0 and self._cmd("network", "inspect", name).returncode != 0:
                detail = (created.stderr or "").strip().splitlines() or [f"exit {created.returncode}"]
                raise CliError(f"cannot create the network {name} for the debug container: {detail[-1]}")
        return ["--network", name]

    def test(self, project: Path, junitxml: Path | None = None, args: tuple[str, ...] = (),
             env: dict[str, str] | None = None) -> int:
        """Run the stack's checks and the project's tests once in a container; return pytest's exit status.

        ``junitxml`` is written by pytest into a temporary directory mounted at /project/output and copied
        to ``junitxml`` afterwards (so it works whatever uid the container runs as).

        Raises:
            CliError: the image cannot be built or the report cannot be copied.
        """
        project = project.resolve()
        image = self._image()
        name = self.container_name(project, "test")
        argv = [self.binary, *self._dev_run_args(project, name)]
        output = None
        if junitxml is not None:
            output = Path(tempfile.mkdtemp(prefix="flask-stack-junit-"))
            output.chmod(0o777)
            argv += ["-v", self._mount(output, OUTPUT_DIR)]
        for key, value in (env or {}).items():
            argv += ["-e", f"{key}={value}"]
        argv += [image, "test"]
        if output is not None:
            argv += ["--junitxml", f"{OUTPUT_DIR}/junit.xml"]
        argv += ["--", *args]
        try:
            status = self._foreground(argv, project, name)
            if output is not None and (output / "junit.xml").is_file():
                try:
                    junitxml.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(output / "junit.xml", junitxml)
                except OSError as exc:
                    raise CliError(f"cannot write {junitxml}: {exc.strerror}") from None
        finally:
            if output is not None:
                shutil.rmtree(output, ignore_errors=True)
        return status

    def flask(self, project: Path, args: tuple[str, ...], env: dict[str, str] | None = None) -> int:
        """Run ``flask ARGS`` on the project's app in a development container (``<image> flask``), with the
        project mounted as for ``run`` (so files the command writes land in the project); return its status.

        Raises:
            CliError: the image cannot be built.
        """
        project = project.resolve()
        image = self._image()
        name = self.container_name(project, "flask")
        argv = [self.binary, *self._dev_run_args(project, name)]
        if sys.stdin.isatty():
            argv.append("-it")
        for key, value in (env or {}).items():
            argv += ["-e", f"{key}={value}"]
        return self._foreground([*argv, image, "flask", "--", *args], project, name)

    def stop(self, project: Path) -> int:
        """Stop the project's run/debug and test containers (SIGTERM, SIGKILL after 15 s); return 0."""
        project = project.resolve()
        stopped = []
        for name in (self.container_name(project), self.container_name(project, "test")):
            if self._state(name) is None:
                continue
            result = self._cmd("stop", "-t", str(STOP_TIMEOUT), name, timeout=STOP_TIMEOUT + 30)
            if result.returncode != 0 and self._state(name) == "running":
                detail = (result.stderr or "").strip().splitlines() or [f"exit {result.returncode}"]
                raise CliError(f"cannot stop container {name}: {detail[-1]}")
            self._remove(name)
            stopped.append(name)
        self.say(f"stopped {', '.join(stopped)}" if stopped else "nothing running for this project")
        return 0

    def build(self, project: Path, tag: str, base_image: str | None = None) -> int:
        """Build the project's deployable image ``tag`` from a context laid out as ``appsody extract`` does.

        Build args: BASE_IMAGE (``base_image``, else ``$STACK_BASE_IMAGE``, else the Dockerfile's
        default), STACK_COMMIT (``$STACK_COMMIT`` or the project's ``git rev-parse HEAD``), APP_VERSION
        (``$STACK_APP_VERSION`` or ``git describe --tags --always``), APP_NAME, STACK_VERSION, CREATED.
        The engine's build output streams to the terminal; returns 0. One line names the private files left out
        of the context (``.env``, ``instance/``, databases: ``container_image.PRIVATE_NAMES``), one warns about
        secret-looking settings in ``.flaskenv`` (which ships).

        Raises:
            CliError: the context cannot be laid out or the build fails.
        """
        project = project.resolve()
        base = images.base_image(base_image or self.base)
        commit = os.environ.get("STACK_COMMIT") or _git(project, "rev-parse", "HEAD")
        version = os.environ.get("STACK_APP_VERSION") or _git(project, "describe", "--tags", "--always", "--dirty")
        args = {
            "STACK_COMMIT": commit,
            "APP_VERSION": version,
            "APP_NAME": project_name(project),
            "STACK_VERSION": stack_info().get("version", ""),
            "CREATED": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        if base:
            args["BASE_IMAGE"] = base
        if os.environ.get("FLASK_APP"):  # flask-stack build --app: where the image's runtime finds the app
            args["FLASK_APP"] = os.environ["FLASK_APP"]
        with tempfile.TemporaryDirectory(prefix="flask-stack-build-") as tmp:
            context = images.layout_build_context(project, Path(tmp) / "context")
            private = images.private_files(project)
            if private:
                self.say(f"left out of the image (private; never shipped): {', '.join(private)}")
            exposed = images.flaskenv_secrets(project)
            if exposed:
                self.say(f"warning: .flaskenv ships in the image and sets {', '.join(exposed)}; "
                         "move secrets to .env (left out) or the deployment's secrets")
            argv = [self.binary, "build", "-f", str(context / "Dockerfile"), "-t", tag]
            if self.name == "podman":
                argv += ["--format", "docker"]  # the OCI format would drop HEALTHCHECK
            for key, value in args.items():
                argv += ["--build-arg", f"{key}={value}"]
            self.say(f"building image {tag} with {self.name} (base {base or 'python:3.12-slim-bookworm'})")
            started = time.monotonic()
            status = subprocess.run([*argv, str(context)], env=images.build_env(self.binary), check=False).returncode
        if status != 0:
            raise CliError(f"building image {tag} failed (exit {status}); see the build output above (if the base "
                             f"image {base or images.DEFAULT_BASE} cannot be pulled, pass --base-image IMAGE or set "
                             f"{images.BASE_IMAGE_ENV} naming one you have)")
        self.say(f"built image {tag} in {time.monotonic() - started:.0f} s")
        images.record_last_build(project, tag)
        return 0

