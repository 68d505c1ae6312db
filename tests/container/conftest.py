"""Fixtures for the container tests: real images built with podman/docker, real containers, real HTTP.

Tests marked ``container`` need a working engine and the base image (env ``STACK_BASE_IMAGE``, default
``localhost/debian-python3:bookworm``, made by shared/container-engine/setup). Without them they skip
locally, and FAIL when env CI is "true". Both images are built once per session (session fixtures);
every container a test starts is removed in a ``finally``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "src"))

from flask_stack import container_image  # noqa: E402
from flask_stack.container import ContainerEngine, detect_container_engine  # noqa: E402
from testkit.budget import extend_for_fixtures
from testkit.cli import flask_stack_env, run_flask_stack
from testkit.cli import start_flask_stack as testkit_start
from testkit.need import in_ci, missing  # noqa: F401  (in_ci: used by the tests here)
from testkit.net import free_port, http_get, wait_until  # noqa: F401  (re-exported to the tests here)

DEFAULT_BASE = "localhost/debian-python3:bookworm"
START_TIMEOUT = 120.0  # seconds for a container to answer HTTP (image already built; deps may install)
BUILD_TIMES: dict[str, float] = {}  # what the session fixtures measured, printed at the end
BUILD_OUTPUT: dict[str, str] = {}  # what `flask-stack build` printed (app_image)


def unavailable(reason: str) -> None:
    """Skip the test (locally) or fail it (CI) because the container engine or base image is missing."""
    missing(reason)


def wait_for(url: str, timeout: float = START_TIMEOUT, expect: str | None = None,
             proc: subprocess.Popen | None = None) -> str:
    """Poll ``url`` until it answers 200 (and its body contains ``expect``); return the body.

    Fails the test after ``timeout`` seconds, or at once when ``proc`` (the process serving it) exits.
    """
    last = "no answer"

    def attempt() -> str | None:
        nonlocal last
        status, body, _ = http_get(url, timeout=2.0)
        last = f"{status}: {body[:200]}"
        return body if status == 200 and (expect is None or expect in body) else None

    try:
        return wait_until(attempt, timeout, interval=0.25,
                          running=None if proc is None else lambda: proc.poll() is None)
    except ChildProcessError as exc:
        pytest.fail(f"the server process exited with {proc.returncode} before {url} answered ({last}; {exc})")
    except TimeoutError as exc:
        pytest.fail(f"{url} did not answer 200{' with ' + repr(expect) if expect else ''} within {timeout:.0f} s "
                    f"(last: {last}; {exc})")


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
    """Send ``sig`` to ``proc`` and wait up to ``timeout`` seconds (then SIGKILL); return its exit status."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    return proc.returncode


@pytest.fixture(scope="session")
def engine() -> str:
    """The container engine's command (podman or docker); skip/fail when none works or no base image."""
    binary = detect_container_engine()
    if binary is None:
        unavailable("no working container engine (docker or podman)")
    base = base_image_name()
    check = subprocess.run([binary, "image", "inspect", base], capture_output=True, check=False, timeout=60)
    if check.returncode != 0:
        unavailable(f"the base image {base} is not present (run shared/container-engine/setup)")
    return binary


def base_image_name() -> str:
    """The base image every build here uses."""
    return os.environ.get("STACK_BASE_IMAGE") or DEFAULT_BASE


def cli_env(**extra: str) -> dict[str, str]:
    """Environment of a ``flask-stack`` subprocess (``testkit.cli.flask_stack_env``), the base image chosen."""
    return flask_stack_env(**{"STACK_BASE_IMAGE": base_image_name(), **extra})


def flask_stack(*args: str, cwd: Path | None = None, timeout: float = 120.0, **extra: str) -> subprocess.CompletedProcess:
    """Run ``flask-stack args`` (this checkout) to completion; return the result with text output."""
    return run_flask_stack(*args, env=cli_env(**extra), cwd=cwd, timeout=timeout)


def start_flask_stack(*args: str, cwd: Path, log: Path, **extra: str) -> subprocess.Popen:
    """Start ``flask-stack args`` in the background with its output in ``log`` (``extra``: more environment)."""
    return testkit_start(*args, env=cli_env(**extra), cwd=cwd, log=log)


@pytest.fixture(scope="session")
def template_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project made by ``flask-stack init`` (read-only use: copy it before changing files)."""
    root = tmp_path_factory.mktemp("projects")
    result = flask_stack("init", str(root / "demo-app"))
    assert result.returncode == 0, result.stderr
    return root / "demo-app"


@pytest.fixture
def project(template_project: Path, tmp_path: Path) -> Path:
    """A fresh copy of the template project for one test."""
    target = tmp_path / "demo-app"
    shutil.copytree(template_project, target)
    return target


@pytest.fixture(scope="session")
def dev_image(engine: str) -> str:
    """The stack's development image, built (or found current) once per session on the base image."""
    started = time.monotonic()
    tag = container_image.ensure_dev_image(engine, base_image_name(), lambda line: print(line, file=sys.stderr))
    BUILD_TIMES["dev image (build or reuse)"] = time.monotonic() - started
    return tag


def image_size(engine: str, image: str) -> int:
    """Return the image's size in bytes as the engine reports it."""
    result = subprocess.run([engine, "image", "inspect", "--format", "{{.Size}}", image],
                            capture_output=True, text=True, check=True, timeout=60)
    return int(result.stdout.strip())


@pytest.fixture
def container_cleanup(engine: str) -> Iterator[list[str]]:
    """A list to append container names to; each is force-removed after the test."""
    names: list[str] = []
    try:
        yield names
    finally:
        for name in names:
            subprocess.run([engine, "rm", "-f", name], capture_output=True, check=False, timeout=60)


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ARG001 - pytest hook
    """Print the build times and image sizes the session measured."""
    if BUILD_TIMES:
        terminalreporter.section("container images")
        for what, value in BUILD_TIMES.items():
            unit = "MB" if what.endswith("size") else "s"
            terminalreporter.write_line(f"{what}: {value:.1f} {unit}")


def engine_object(binary: str) -> ContainerEngine:
    """A ContainerEngine on ``binary`` using this session's base image, printing status lines to stderr."""
    return ContainerEngine(binary, base=base_image_name(), echo=lambda line: print(line, file=sys.stderr))


BOOM_ROUTE = '''

@blueprint.get("/boom")
def boom():
    """Always fails (tests: no traceback and no debugger may leave the production server)."""
    raise RuntimeError("secret-internal-detail")


@blueprint.post("/size")
def size():
    """Reads the whole request body (tests: slow bodies must not reach the app)."""
    from flask import request

    return {"size": len(request.get_data())}
'''


#: Private files of app_project: none may be in an image built from it.
PRIVATE_FILES = {
    ".env": "SECRET_KEY=never-in-an-image\nDATABASE_URL=postgresql://admin:pw@db/shop\n",
    ".env.production": "SECRET_KEY=never-in-an-image\n",
    "instance/config.py": "SECRET_KEY = 'never-in-an-image'\n",
    "app.sqlite3": "SQLite format 3\0",
}


@pytest.fixture(scope="session")
def app_project(template_project: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A template project with a failing /boom route, a body-reading POST /size, a runtime package (six) whose lock is stale,
    private files (PRIVATE_FILES), a .flaskenv and a git commit; returns (project, commit sha)."""
    project = tmp_path_factory.mktemp("build") / "shop-api"
    shutil.copytree(template_project, project)
    (project / "__init__.py").write_text((project / "__init__.py").read_text() + BOOM_ROUTE)
    pipfile = project / "Pipfile"
    pipfile.write_text(pipfile.read_text().replace("[packages]\n", '[packages]\nsix = "==1.17.0"\n', 1))
    (project / ".venv").mkdir()
    (project / ".venv" / "junk.txt").write_text("must not reach the build context")
    for name, text in PRIVATE_FILES.items():  # must never reach an image (nor git: the template's .gitignore)
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text(text)
    (project / ".flaskenv").write_text("FLASK_RUN_PORT=8080\n")  # public: ships
    (project / "app-deploy.yaml").write_text("# what `appsody deploy` writes: never part of the image\n")
    if shutil.which("git") is None:
        return project, ""
    git = ["git", "-C", str(project), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run([*git, "init", "-q"], check=True, timeout=60)
    subprocess.run([*git, "add", "-A"], check=True, timeout=60)
    subprocess.run([*git, "commit", "-qm", "app"], check=True, timeout=60)
    sha = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=60)
    return project, sha.stdout.strip()


@pytest.fixture(scope="session")
def docker_api(engine: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The Docker CLI's environment for talking to podman's Docker-compatible API: ``podman system service``
    on a unix socket of its own (in a temp dir), stopped at the end of the session. Returns the variables
    to add to a ``docker`` (or ``flask-stack --engine docker``) subprocess: DOCKER_HOST, DOCKER_BUILDKIT=0."""
    docker, podman = shutil.which("docker"), shutil.which("podman")
    if docker is None or podman is None:
        unavailable("the Docker CLI tests need both docker (the client) and podman (its API service)")
    folder = tmp_path_factory.mktemp("docker-api")
    socket_path = folder / "podman.sock"
    log = open(folder / "service.log", "wb")  # noqa: SIM115 - closed below
    service = subprocess.Popen([podman, "system", "service", "--time=0", f"unix://{socket_path}"],
                               stdout=log, stderr=subprocess.STDOUT)
    env = {"DOCKER_HOST": f"unix://{socket_path}", "DOCKER_BUILDKIT": "0"}
    try:
        deadline = time.monotonic() + 60
        while True:
            probe = subprocess.run([docker, "version", "--format", "{{.Server.Version}}"], env={**os.environ, **env},
                                   capture_output=True, text=True, timeout=30, check=False)
            if probe.returncode == 0:
                break
            if service.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"podman's Docker API did not start: {probe.stderr.strip()} "
                            f"{(folder / 'service.log').read_text()[-1000:]}")
            time.sleep(0.2)
        yield env
    finally:
        stop_process(service, timeout=30)
        log.close()


def docker(env: dict[str, str], *args: str, timeout: float = 120.0, check: bool = True) -> subprocess.CompletedProcess:
    """Run the Docker CLI ``docker args`` with ``env`` (from :func:`docker_api`); return its text result."""
    return subprocess.run(["docker", *args], env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=timeout, check=check)


#: Run by a second container: connects to each host:port given (argv) and sends a DAP ``initialize``; prints
#: one JSON line {"host:port": exception name | "silent" (connected, no answer) | "answered: <first line>"}.
#: A DAP adapter answers with a DAP frame, an HTTP server (the Werkzeug console's port) with a 400.
REACH_PROBE = r"""
import json, socket, sys
body = json.dumps({"seq": 1, "type": "request", "command": "initialize", "arguments": {"adapterID": "x"}}).encode()
result = {}
for target in sys.argv[1:]:
    host, port = target.rsplit(":", 1)
    try:
        sock = socket.create_connection((host, int(port)), timeout=2)
    except OSError as exc:
        result[target] = type(exc).__name__
        continue
    result[target] = "silent"
    try:
        sock.settimeout(5)
        sock.sendall(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        answer = sock.recv(65536)
        if answer:
            result[target] = "answered: " + answer.decode("latin-1").splitlines()[0]
    except OSError:
        pass
    sock.close()
print(json.dumps(result))
"""


def reach_from_another_container(engine: str, targets: list[str], env: dict[str, str] | None = None) -> dict[str, str]:
    """Start a second container (the base image, on the engine's default network) that tries to connect to
    each ``host:port`` in ``targets``; return what it found for each (see :data:`REACH_PROBE`).

    Only local addresses mean anything here: on these machines an outgoing connection to any other address
    is accepted (and answered with an HTTP 400) by the network's egress proxy."""
    result = subprocess.run([engine, "run", "--rm", base_image_name(), "python3", "-c", REACH_PROBE, *targets],
                            env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=120,
                            check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def host_addresses(engine: str, env: dict[str, str] | None = None) -> list[str]:
    """Addresses by which a container on the default network may reach this host: the default network's
    gateway and the host's own non-loopback IPv4 addresses."""
    found = set()
    names = subprocess.run(["hostname", "-I"], capture_output=True, text=True, check=False, timeout=10).stdout.split()
    found.update(a for a in names if ":" not in a)
    inspect = subprocess.run([engine, "network", "inspect", "podman" if engine == "podman" else "bridge"],
                             env={**os.environ, **(env or {})}, capture_output=True, text=True, check=False,
                             timeout=60)
    found.update(re.findall(r'"[Gg]ateway":\s*"([0-9.]+)"', inspect.stdout))
    return sorted(found)


#: Prints "uid pid ppid cmdline" for every process of the container it runs in (`<engine> exec NAME python3 -c`).
PROCESS_PROBE = r"""
import os, re
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        status = open(f"/proc/{pid}/status").read()
        cmdline = " ".join(open(f"/proc/{pid}/cmdline", "rb").read().decode().replace("\0", " ").split())
    except OSError:
        continue
    print(re.search(r"Uid:\s+(\d+)", status).group(1), pid, re.search(r"PPid:\s+(\d+)", status).group(1), cmdline)
"""


def container_processes(engine: str, name: str, env: dict[str, str] | None = None) -> list[tuple[str, ...]]:
    """(uid, pid, ppid, command line) of every process in the running container ``name``."""
    result = subprocess.run([engine, "exec", name, "python3", "-c", PROCESS_PROBE], env={**os.environ, **(env or {})},
                            capture_output=True, text=True, check=True, timeout=60)
    return [tuple(line.split(" ", 3)) for line in result.stdout.splitlines()]


def assert_production_server(table: list[tuple[str, ...]], workers: int = 2, server: str = "granian_app.py") -> None:
    """Every process runs as uid 1001; PID 1 is the serving layer (``serve``), its children nginx (the image's
    buffering front, STACK_FRONT=nginx) and the production server's main process (``server``: granian by default,
    ``granian_app.py``), which started at least ``workers`` worker processes."""
    assert {uid for uid, *_ in table} == {"1001"}, table
    pid1 = [cmd for _, pid, _, cmd in table if pid == "1"]
    assert pid1 and "serving.supervisor" in pid1[0], table
    children = {pid: cmd for _, pid, ppid, cmd in table if ppid == "1"}
    assert any(cmd.startswith("nginx: master process") for cmd in children.values()), table
    (master,) = [pid for pid, cmd in children.items() if server in cmd]
    if server == "granian_app.py":
        assert len([pid for _, pid, ppid, _ in table if ppid == master]) >= workers, table


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The session's builds count in the budget of the tests that use them (testkit.budget)."""
    extend_for_fixtures(items, {"dev_image": 900, "app_image": 900})


@pytest.fixture(scope="session")
def app_image(engine: str, app_project: tuple[Path, str]) -> Iterator[str]:
    """The project's deployable image, built once with `flask-stack build --engine X -t TAG`; removed at the end."""
    project, _ = app_project
    tag = f"localhost/flask-stack-test-app:{os.getpid()}"
    started = time.monotonic()
    # --base-image must win over STACK_BASE_IMAGE (set to an image that does not exist here)
    result = flask_stack("build", "--engine", engine, "-t", tag, "--base-image", base_image_name(), cwd=project,
                         timeout=900, STACK_BASE_IMAGE="localhost/flask-stack-no-such-base:0")
    BUILD_TIMES["deployable image build"] = time.monotonic() - started
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    BUILD_OUTPUT["stderr"] = result.stderr
    added = image_size(engine, tag) - image_size(engine, base_image_name())
    BUILD_TIMES["deployable image added over base size"] = added / 1e6
    try:
        yield tag
    finally:
        subprocess.run([engine, "rmi", "-f", tag], capture_output=True, check=False, timeout=120)


@pytest.fixture(scope="session")
def running_app(engine: str, app_image: str) -> Iterator[tuple[str, str]]:
    """The deployable image running detached on a free loopback port, with STACK_DEBUG=1 (must be ignored);
    returns (container name, base URL)."""
    name = f"flask-stack-test-prod-{os.getpid()}"
    port = free_port()
    subprocess.run([engine, "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8080", "-e", "STACK_DEBUG=1",
                    "-e", "WEB_CONCURRENCY=2", app_image], check=True, capture_output=True, timeout=120)
    try:
        yield name, f"http://127.0.0.1:{port}"
    finally:
        subprocess.run([engine, "rm", "-f", name], capture_output=True, check=False, timeout=120)
