"""The development image (image/Dockerfile-stack) and `flask-stack run/debug/test/stop --engine <podman|docker>`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import socket
import time
from pathlib import Path
from typing import Iterator

import pytest

from flask_stack import container_image
from flask_stack.container import ContainerEngine

from testkit.dap import add_greet_view, attach, break_in_view, dap_initialize

from .conftest import (
    base_image_name,
    engine_object,
    flask_stack,
    free_port,
    host_addresses,
    http_get,
    reach_from_another_container,
    start_flask_stack,
    stop_process,
    wait_for,
)

pytestmark = pytest.mark.container

APPSODY_VARS = (
    "APPSODY_PROJECT_DIR", "APPSODY_MOUNTS", "APPSODY_DEPS", "APPSODY_WATCH_DIR", "APPSODY_WATCH_REGEX",
    "APPSODY_PREP", "APPSODY_RUN", "APPSODY_RUN_ON_CHANGE", "APPSODY_RUN_KILL", "APPSODY_DEBUG",
    "APPSODY_DEBUG_ON_CHANGE", "APPSODY_DEBUG_KILL", "APPSODY_DEBUG_PORT", "APPSODY_TEST", "APPSODY_TEST_ON_CHANGE",
    "APPSODY_TEST_KILL", "APPSODY_USER_RUN_AS_LOCAL",
)


def inspect(engine: str, what: str, name: str) -> dict:
    """Return ``<engine> <what> inspect NAME`` as a dict."""
    result = subprocess.run([engine, what, "inspect", name], capture_output=True, text=True, check=True, timeout=60)
    data = json.loads(result.stdout)
    return data[0] if isinstance(data, list) else data


def container_uid(engine: str, name: str) -> int:
    """Return the real uid of PID 1 in the running container ``name``."""
    status = subprocess.run([engine, "exec", name, "cat", "/proc/1/status"], capture_output=True, text=True,
                            check=True, timeout=60).stdout
    return int(re.search(r"^Uid:\s+(\d+)", status, re.M).group(1))


def files_owned_by_root(root: Path, before: set[Path]) -> list[Path]:
    """Return the files and dirs under ``root`` (not in ``before``) owned by uid 0."""
    return [p for p in [root, *root.rglob("*")] if p not in before and p.lstat().st_uid == 0]


@pytest.fixture
def dev_project(engine: str, project: Path) -> Iterator[Path]:
    """A fresh template project for the CLI; its containers and dependency volume are removed afterwards."""
    cli_engine = ContainerEngine(engine)
    try:
        yield project
    finally:
        for name in (cli_engine.container_name(project), cli_engine.container_name(project, "test")):
            subprocess.run([engine, "rm", "-f", name], capture_output=True, check=False, timeout=60)
        subprocess.run([engine, "volume", "rm", "-f", cli_engine.volume_name(project)],
                       capture_output=True, check=False, timeout=60)


def test_dev_image_contract(engine: str, dev_image: str) -> None:
    """The image runs as a numeric non-root user, exposes 8080/5678, carries the stack hash and the Appsody env."""
    engine_object(engine)._image()  # rebuilds (from cache) if a stack file changed since the session began
    config = inspect(engine, "image", dev_image)["Config"]
    assert config["User"] == "1001:1001"
    assert {"8080/tcp", "5678/tcp"} <= set(config["ExposedPorts"])
    labels = config["Labels"]
    assert labels[container_image.HASH_LABEL] == container_image.source_hash(base_image_name())
    assert labels[container_image.BASE_LABEL] == base_image_name()  # `flask-stack dev-image` keeps this base
    env = dict(item.split("=", 1) for item in config["Env"])
    missing = [name for name in APPSODY_VARS if name not in env]
    assert not missing
    assert env["APPSODY_MOUNTS"] == ".:/project/userapp"
    assert env["APPSODY_DEPS"] == "/project/deps"
    regex = env["APPSODY_WATCH_REGEX"]
    assert not re.search(r"\(\?[=!<]", regex), "Go's RE2 has no lookaround"
    watch = re.compile(regex)
    assert watch.match("/project/userapp/__init__.py") and watch.match("/project/userapp/Pipfile")
    assert watch.match("/project/userapp/Pipfile.lock") and not watch.match("/project/userapp/README.md")
    for name in ("requirements.txt", "requirements-dev.txt", "requirements/dev.txt", "pyproject.toml", "uv.lock"):
        assert watch.match(f"/project/userapp/{name}"), name  # every declaration file (stackdeps.detect.WATCHED)
    assert not watch.match("/project/userapp/docs/requirements.txt.bak")


@pytest.mark.timeout(390)  # its waits add up to 330 s
def test_run_serves_reloads_and_stops(engine: str, dev_image: str, dev_project: Path, tmp_path: Path) -> None:
    """`flask-stack run --engine X`: every endpoint from the host, reload on save, worker uid, stop."""
    project = dev_project
    port = free_port()
    before = {project, *project.rglob("*")}
    proc = start_flask_stack("run", "--engine", engine, "--port", str(port), cwd=project, log=tmp_path / "run.log")
    name = ContainerEngine(engine).container_name(project)
    try:
        base = f"http://127.0.0.1:{port}"
        assert wait_for(f"{base}/hello", proc=proc) == "Hello from Appsody!"
        for path in ("/health", "/health/live", "/health/ready", "/health/started"):
            status, body, _ = http_get(base + path)
            assert status == 200 and json.loads(body)["status"] == "UP", (path, body)
        status, body, _ = http_get(base + "/metrics")
        assert status == 200 and "http_requests_total" in body
        status, body, _ = http_get(base + "/apispec_1.json")
        assert status == 200 and "/hello" in json.loads(body)["paths"]
        status, body, _ = http_get(base + "/apidocs/")
        assert status == 200 and "swagger" in body.lower()
        status, _, headers = http_get(base + "/")
        assert status in (301, 302, 308) and "/apidocs" in headers["Location"]

        # published on loopback only, served by a non-root process, packages in the project's volume
        ports = subprocess.run([engine, "port", name], capture_output=True, text=True, check=True, timeout=60).stdout
        assert f"8080/tcp -> 127.0.0.1:{port}" in ports
        assert container_uid(engine, name) == 1001
        mounts = {m["Destination"]: m for m in inspect(engine, "container", name)["Mounts"]}
        assert mounts["/project/deps"]["Type"] == "volume"

        source = project / "__init__.py"
        source.write_text(source.read_text().replace("Hello from Appsody!", "Hello after a save!"))
        assert wait_for(f"{base}/hello", timeout=30, expect="Hello after a save!", proc=proc) == "Hello after a save!"

        stopped = flask_stack("stop", "--engine", engine, cwd=project, timeout=120)
        assert stopped.returncode == 0, stopped.stderr
        assert proc.wait(timeout=60) == 0
        gone = subprocess.run([engine, "container", "exists", name] if engine == "podman"
                              else [engine, "container", "inspect", name], capture_output=True, check=False)
        assert gone.returncode != 0, f"container {name} is still there after stop"
        assert files_owned_by_root(project, before) == []
    finally:
        stop_process(proc)
        subprocess.run([engine, "rm", "-f", name], capture_output=True, check=False, timeout=60)


def test_cli_sigterm_stops_the_container(engine: str, dev_image: str, dev_project: Path, tmp_path: Path) -> None:
    """SIGTERM to `flask-stack run` reaches the dev loop; the CLI exits 0 and no container is left."""
    project = dev_project
    port = free_port()
    proc = start_flask_stack("run", "--engine", engine, "--port", str(port), cwd=project, log=tmp_path / "run.log")
    name = ContainerEngine(engine).container_name(project)
    try:
        wait_for(f"http://127.0.0.1:{port}/health/ready", proc=proc)
        assert stop_process(proc, timeout=60) == 0, (tmp_path / "run.log").read_text()[-2000:]
        left = subprocess.run([engine, "ps", "-a", "--filter", f"name={name}", "--format", "{{.Names}}"],
                              capture_output=True, text=True, check=True, timeout=60).stdout.split()
        assert name not in left
    finally:
        stop_process(proc)
        subprocess.run([engine, "rm", "-f", name], capture_output=True, check=False, timeout=60)


@pytest.mark.parametrize("signal_name", ["TERM", "INT"])
def test_plain_engine_run_without_cli(engine: str, dev_image: str, project: Path, container_cleanup: list[str],
                                      signal_name: str) -> None:
    """`podman run -p ... -v "$PWD":/project/userapp IMAGE` alone serves the project; the dev loop as PID 1
    exits 0 on SIGTERM and on SIGINT (no SIGKILL needed)."""
    port = free_port()
    name = f"flask-stack-test-plain-{signal_name.lower()}-{os.getpid()}"
    container_cleanup.append(name)
    subprocess.run([engine, "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8080",
                    "-v", f"{project}:/project/userapp", dev_image], check=True, capture_output=True, timeout=120)
    assert wait_for(f"http://127.0.0.1:{port}/hello") == "Hello from Appsody!"
    # the dev loop's URL line (devloop.approute inside the image) names the template's route, as flask-stack run does
    deadline = time.monotonic() + 10
    while "API docs " not in (logs := subprocess.run([engine, "logs", name], capture_output=True, text=True,
                                                       timeout=60).stdout) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "[INFO] app http://127.0.0.1:8080/hello  (http://127.0.0.1:8080/ redirects to the API docs)  " in logs, logs
    subprocess.run([engine, "kill", "--signal", signal_name, name], check=True, capture_output=True, timeout=60)
    waited = subprocess.run([engine, "wait", name], capture_output=True, text=True, timeout=60, check=False)
    assert waited.stdout.strip().splitlines()[-1] == "0", waited


def container_addresses(engine: str, name: str) -> list[str]:
    """The IPv4 addresses the container ``name`` has on the engine's networks (none with slirp4netns)."""
    settings = inspect(engine, "container", name)["NetworkSettings"]
    found = {settings.get("IPAddress")} | {n.get("IPAddress") for n in (settings.get("Networks") or {}).values()}
    return sorted(a for a in found if a)


def test_debug_attaches_over_dap_from_the_host_only(engine: str, dev_image: str, dev_project: Path, tmp_path: Path,
                                                   container_cleanup: list[str]) -> None:
    """`flask-stack debug --engine X`: a DAP client completes `initialize` on the host's loopback port, and a
    second container reaches neither the debugger nor the app's port (the Werkzeug console): not through the
    host's addresses, and the debug container has no address on a network other containers share. Control:
    the same image started plainly on the default network answers that second container (the probe works)."""
    project = dev_project
    port, debug_port = free_port(), free_port()
    proc = start_flask_stack("debug", "--engine", engine, "--port", str(port), "--debug-port", str(debug_port),
                             cwd=project, log=tmp_path / "debug.log")
    name = ContainerEngine(engine).container_name(project)
    plain = f"flask-stack-test-plain-debug-{os.getpid()}"
    container_cleanup.append(plain)
    try:
        wait_for(f"http://127.0.0.1:{port}/hello", proc=proc)
        response = dap_initialize(debug_port)
        assert response["command"] == "initialize" and response["success"] is True
        assert container_addresses(engine, name) == []
        targets = [f"{host}:{p}" for host in host_addresses(engine) for p in (port, debug_port)]
        found = reach_from_another_container(engine, targets)
        assert all(what == "ConnectionRefusedError" for what in found.values()), found

        subprocess.run([engine, "run", "-d", "--name", plain, "-p", f"127.0.0.1:{free_port()}:5678",
                        "-v", f"{project}:/project/userapp", dev_image, "debug"],
                       check=True, capture_output=True, timeout=120)
        (address,) = container_addresses(engine, plain)
        deadline = time.monotonic() + 60
        while True:
            control = reach_from_another_container(engine, [f"{address}:5678", f"{address}:8080"])
            if all(what.startswith("answered") for what in control.values()) or time.monotonic() > deadline:
                break
            time.sleep(1)
        # debugpy answers with a DAP frame, Werkzeug with an error page
        assert "Content-Length" in control[f"{address}:5678"], control
        assert control[f"{address}:8080"].startswith("answered"), control
    finally:
        stop_process(proc, timeout=60)
        subprocess.run([engine, "rm", "-f", name], capture_output=True, check=False, timeout=60)


@pytest.mark.timeout(480)  # its waits add up to 405 s
@pytest.mark.parametrize("debugger", ["debugpy", "ptvsd"])
def test_breakpoint_in_the_users_view(engine: str, dev_image: str, dev_project: Path, tmp_path: Path,
                                      debugger: str) -> None:
    """`flask-stack debug` in the development container, with debugpy (the default) and with the original stack's
    ptvsd 4.3.2 (in the project's [dev-packages], STACK_DEBUGGER=ptvsd): after a port check, a DAP client
    attaches, sets a breakpoint in the user's view, sees the request stop there, reads a local, continues; the
    request then completes."""
    project = dev_project
    extra: list[str] = []
    if debugger == "ptvsd":
        pipfile = project / "Pipfile"
        pipfile.write_text(pipfile.read_text().replace("[dev-packages]\n", '[dev-packages]\nptvsd = "==4.3.2"\n', 1))
        extra = ["-e", "STACK_DEBUGGER=ptvsd"]
    line, _ = add_greet_view(project / "__init__.py")
    port, debug_port = free_port(), free_port()
    proc = start_flask_stack("debug", "--engine", engine, "--port", str(port), "--debug-port", str(debug_port),
                             *extra, cwd=project, log=tmp_path / "debug.log")
    name = ContainerEngine(engine).container_name(project)
    session = None
    try:
        wait_for(f"http://127.0.0.1:{port}/health/ready", timeout=280, proc=proc)
        assert f"debugger ({debugger}" in (tmp_path / "debug.log").read_text()
        with socket.create_connection(("127.0.0.1", debug_port), timeout=5):
            pass  # a port check (it used to wedge debugpy: microsoft/debugpy#1308)
        remote = "/project/userapp/__init__.py"
        session = attach(debug_port, {remote: [line]})
        value, (status, body, _) = break_in_view(session, f"http://127.0.0.1:{port}/greet?name=box", remote, line,
                                                 "name")
        assert (value, status, body) == ("'box'", 200, "Hello, box")
    finally:
        if session is not None:
            session.close()
        stop_process(proc, timeout=60)
        subprocess.run([engine, "rm", "-f", name], capture_output=True, check=False, timeout=60)


@pytest.mark.timeout(660)  # two `flask-stack test` of up to 300 s
def test_cli_test_exit_status(engine: str, dev_image: str, dev_project: Path, tmp_path: Path) -> None:
    """`flask-stack test --engine X` exits 0 on the template, writes JUnit XML, and fails with a failing test."""
    project = dev_project
    report = tmp_path / "reports" / "junit.xml"
    passed = flask_stack("test", "--engine", engine, "--junitxml", str(report), cwd=project, timeout=300)
    assert passed.returncode == 0, passed.stdout[-3000:] + passed.stderr[-2000:]
    assert "test_hello" in report.read_text()

    (project / "tests" / "test_broken.py").write_text("def test_broken():\n    assert 1 + 1 == 3\n")
    failed = flask_stack("test", "--engine", engine, cwd=project, timeout=300)
    assert failed.returncode == 1, failed.stdout[-3000:]
    assert "test_broken" in failed.stdout


@pytest.mark.timeout(360)  # a container run of up to 300 s
def test_appsody_controller_commands(engine: str, dev_image: str, project: Path, container_cleanup: list[str]) -> None:
    """The Appsody controller's way: APPSODY_PREP then APPSODY_TEST, run by a shell inside the image, succeed."""
    name = f"flask-stack-test-appsody-{os.getpid()}"
    container_cleanup.append(name)
    result = subprocess.run([engine, "run", "--name", name, "-v", f"{project}:/project/userapp",
                             "--entrypoint", "/bin/sh", dev_image, "-c", 'eval "$APPSODY_PREP" && eval "$APPSODY_TEST"'],
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "passed" in result.stdout


@pytest.mark.timeout(360)  # a container run of up to 300 s
def test_appsody_as_root_runs_the_app_as_worker(engine: str, dev_image: str, project: Path,
                                                container_cleanup: list[str]) -> None:
    """Appsody with APPSODY_USER_RUN_AS_LOCAL=true and a root host user starts the container with `-u 0:0`; its
    controller runs APPSODY_PREP and APPSODY_TEST, which run the dev loop (and the user's tests) as worker."""
    (project / "tests" / "test_uid.py").write_text("import os\n\n\ndef test_uid():\n    assert os.getuid() == 1001\n")
    name = f"flask-stack-test-appsody-root-{os.getpid()}"
    container_cleanup.append(name)
    result = subprocess.run([engine, "run", "--name", name, "--user", "0:0", "-v", f"{project}:/project/userapp",
                             "--entrypoint", "/bin/sh", dev_image, "-c",
                             'id -u && eval "$APPSODY_PREP" && eval "$APPSODY_TEST"'],
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert result.stdout.splitlines()[0] == "0"  # the controller's shell is root; the tests ran as worker:
    assert "test_uid" in result.stdout and "passed" in result.stdout


@pytest.mark.timeout(420)  # a container run of up to 300 s, cleanups of 60 s
def test_any_uid_with_user_deps(engine: str, dev_image: str, project: Path, container_cleanup: list[str]) -> None:
    """As docker runs it for a non-root host user (`--user UID:GID`): the dev loop locks a changed Pipfile
    and installs its package into the deps volume; every file written into the project is that user's."""
    uid = 4242
    pipfile = project / "Pipfile"
    pipfile.write_text(pipfile.read_text().replace("[packages]\n", '[packages]\nsix = "==1.17.0"\n', 1))
    (project / "tests" / "test_six.py").write_text("import six\n\n\ndef test_six():\n    assert six.PY3\n")
    for path in [project, *project.rglob("*")]:
        os.chown(path, uid, uid)
    volume = f"flask-stack-test-deps-{os.getpid()}"
    name = f"flask-stack-test-uid-{os.getpid()}"
    container_cleanup.append(name)
    try:
        result = subprocess.run([engine, "run", "--name", name, "--user", f"{uid}:{uid}",
                                 "-v", f"{project}:/project/userapp", "-v", f"{volume}:/project/deps", dev_image, "test"],
                                capture_output=True, text=True, timeout=300, check=False)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
        lock = json.loads((project / "Pipfile.lock").read_text())
        assert "six" in lock["default"]
        owners = {p.relative_to(project).as_posix(): p.lstat().st_uid for p in project.rglob("*")}
        assert {o for o in owners.values()} == {uid}, owners
    finally:
        subprocess.run([engine, "rm", "-f", name], capture_output=True, check=False, timeout=60)
        subprocess.run([engine, "volume", "rm", "-f", volume], capture_output=True, check=False, timeout=60)


def test_dev_image_rebuilt_when_stack_files_change(engine: str, dev_image: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A different stack hash makes ensure_dev_image rebuild (new label); the current hash reuses the image."""
    real = container_image.source_hash(base_image_name())
    image_id = inspect(engine, "image", dev_image)["Id"]
    engine_object(engine)._image()  # current: reused as is
    assert inspect(engine, "image", dev_image)["Id"] == image_id

    monkeypatch.setattr(container_image, "source_hash", lambda base: "0" * 64)
    container_image.ensure_dev_image(engine, base_image_name(), lambda line: None)
    assert inspect(engine, "image", dev_image)["Config"]["Labels"][container_image.HASH_LABEL] == "0" * 64

    monkeypatch.undo()
    container_image.ensure_dev_image(engine, base_image_name(), lambda line: None)
    assert inspect(engine, "image", dev_image)["Config"]["Labels"][container_image.HASH_LABEL] == real


@pytest.mark.timeout(360)  # a refused build of up to 300 s
@pytest.mark.parametrize("command", ["run", "debug"])
def test_base_image_option_reaches_the_build(engine: str, dev_image: str, project: Path, command: str) -> None:
    """`run`/`debug --base-image IMG` build the development image on IMG (and say so): with an image that does
    not exist the build fails in one `flask-stack:` line, the current development image left as it was."""
    image_id = inspect(engine, "image", dev_image)["Id"]
    result = flask_stack(command, "--engine", engine, "--port", str(free_port()), "--base-image",
                         "localhost/flask-stack-no-such-base:0", cwd=project, timeout=300)
    assert result.returncode != 0
    assert "base localhost/flask-stack-no-such-base:0" in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("flask-stack: building the development image") and "Traceback" not in result.stderr
    assert last.endswith("if the base image localhost/flask-stack-no-such-base:0 cannot be pulled, pass --base-image "
                         "IMAGE (or set STACK_BASE_IMAGE) naming one you have, or use --engine local (no image needed)")
    assert (f"(the base image changed from {base_image_name()} to localhost/flask-stack-no-such-base:0; "
            "base localhost/flask-stack-no-such-base:0)") in result.stderr
    assert inspect(engine, "image", dev_image)["Id"] == image_id
