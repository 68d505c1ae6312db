"""Dev Containers and devfiles, with the real clients: each template's ``.devcontainer/devcontainer.json`` brought up
by the Dev Containers reference CLI (``@devcontainers/cli``) on podman, and its ``devfile.yaml`` validated against
the devfile 2.2 schema (``@devfile/api``) with each command run in the development image as odo runs it."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest
import yaml

from testkit.dap import dap_initialize

from . import devcontainers as dc
from .conftest import BUILD_TIMES, REPO, flask_stack, http_get, reach_from_another_container, unavailable, wait_for

pytestmark = [pytest.mark.container, pytest.mark.slow]

TEMPLATES = ["simple", "web", "api"]
#: A page each template serves (and what it says), to tell the app from the stack's own routes.
PAGES = {"simple": ("/hello", "Hello from Appsody!"), "web": ("/", "Guestbook"), "api": ("/items", "[]")}


@pytest.fixture(scope="module")
def podman(engine: str) -> str:
    """podman (the Dev Containers CLI is driven with --docker-path podman)."""
    if shutil.which("podman") is None:
        unavailable("podman is not installed")
    return "podman"


def make_project(root: Path, template: str) -> Path:
    project = root / f"{template}-devc"
    made = flask_stack("init", str(project), "--template", template)
    assert made.returncode == 0, made.stderr
    assert ".devcontainer/devcontainer.json" in made.stdout and "devfile.yaml" in made.stdout
    return project


# --- the files as the templates have them ------------------------------------------------------------------


@pytest.mark.parametrize("template", TEMPLATES)
def test_devcontainer_json_says_what_the_stack_needs(template: str) -> None:
    config = dc.read_jsonc(REPO / "templates" / template / ".devcontainer" / "devcontainer.json")
    sys.path.insert(0, str(REPO / "src"))
    from flask_stack.container_image import dev_image_tag

    assert config["image"] == dev_image_tag()
    assert config["initializeCommand"] == "flask-stack dev-image"
    assert config["workspaceFolder"] == "/project/userapp"
    assert "target=/project/userapp" in config["workspaceMount"]
    assert [m["target"] for m in config["mounts"]] == ["/project/deps"]
    assert config["forwardPorts"] == [8080, 5678]
    assert config["appPort"] == ["127.0.0.1::8080"]  # loopback only, never 0.0.0.0
    assert config["containerUser"] == config["remoteUser"] == "worker" and config["updateRemoteUserUID"] is True
    assert {"ms-python.python", "ms-python.debugpy"} <= set(config["customizations"]["vscode"]["extensions"])
    assert "features" not in config  # nothing downloaded at build time
    # every template carries the same two files
    for other in TEMPLATES:
        for rel in (".devcontainer/devcontainer.json", "devfile.yaml"):
            assert (REPO / "templates" / other / rel).read_bytes() == (REPO / "templates" / template / rel).read_bytes()


@pytest.mark.parametrize("template", TEMPLATES)
def test_devfile_validates_against_the_devfile_schema(template: str) -> None:
    schema = dc.devfile_schema()
    devfile = yaml.safe_load((REPO / "templates" / template / "devfile.yaml").read_text(encoding="utf-8"))
    jsonschema.Draft7Validator(schema).validate(devfile)
    assert devfile["schemaVersion"].startswith("2.2.")
    kinds = {c["exec"]["group"]["kind"]: c["exec"]["commandLine"] for c in devfile["commands"] if "exec" in c}
    assert kinds == {"build": "python -m devloop deps --project .", "run": "python -m devloop run --project .",
                     "debug": "python -m devloop debug --project .", "test": "python -m devloop test --project ."}
    (runtime,) = [c["container"] for c in devfile["components"] if "container" in c]
    assert runtime["sourceMapping"] == "/project/userapp" and runtime["mountSources"] is True
    endpoints = {e["targetPort"]: e["exposure"] for e in runtime["endpoints"]}
    assert endpoints == {8080: "public", 5678: "internal"}


def test_a_devfile_that_breaks_the_schema_is_refused() -> None:
    """The validation above can fail: a command of an unknown kind and a misspelt key are both errors."""
    validator = jsonschema.Draft7Validator(dc.devfile_schema())
    devfile = yaml.safe_load((REPO / "templates" / "simple" / "devfile.yaml").read_text(encoding="utf-8"))
    devfile["commands"][0]["exec"]["group"]["kind"] = "serve"
    assert not validator.is_valid(devfile)
    devfile = yaml.safe_load((REPO / "templates" / "simple" / "devfile.yaml").read_text(encoding="utf-8"))
    devfile["components"][0]["container"]["mountSource"] = True
    assert not validator.is_valid(devfile)


# --- devcontainer up, with the reference CLI ----------------------------------------------------------------


@pytest.mark.parametrize("template", TEMPLATES)
@pytest.mark.timeout(1620)  # its waits add up to 1502 s (testkit.budget)
def test_devcontainer_up_serves_reloads_tests_and_debugs(podman: str, dev_image: str, tmp_path: Path,
                                                         template: str) -> None:
    dc.devcontainer_cli()
    project = make_project(tmp_path, template)
    dc.for_this_engine(project)
    try:
        started = time.monotonic()
        outcome = dc.up(project)
        container = outcome["containerId"]
        assert outcome["remoteUser"] == "worker" and outcome["remoteWorkspaceFolder"] == "/project/userapp"
        port = dc.published(container, 8080)
        path, text = PAGES[template]
        wait_for(f"http://127.0.0.1:{port}{path}", expect=text)
        BUILD_TIMES[f"devcontainer up to first response ({template})"] = time.monotonic() - started
        assert "UP" in wait_for(f"http://127.0.0.1:{port}/health")

        # every process of the container runs as worker (uid 1001; the host user's uid when it is not root)
        table = subprocess.run([podman, "exec", container, "python3", "-c", PROCESSES], capture_output=True,
                               text=True, timeout=60, check=True).stdout.split()
        expected = "1001" if os.getuid() == 0 else str(os.getuid())
        assert table and set(table) == {expected}, table

        # the debugger answers a DAP client inside the container (where VS Code's attach connects), not elsewhere
        dap = dc.devcontainer("exec", "python3", "-c", dc.DAP_CLIENT, "5678", project=project, timeout=120)
        assert dap.returncode == 0, dap.stdout + dap.stderr
        answer = json.loads(dap.stdout.strip().splitlines()[-1])
        assert answer["command"] == "initialize" and answer["success"] is True
        address = subprocess.run([podman, "container", "inspect", "--format",
                                  "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", container],
                                 capture_output=True, text=True, timeout=60, check=True).stdout.strip()
        if address:
            reached = reach_from_another_container(podman, [f"{address}:5678"])
            assert not reached[f"{address}:5678"].startswith("answered"), reached

        # a save on the host is served within 1 s (hot reload, as under flask-stack run; the loop has settled: a
        # few seconds have passed since the first response)
        token = secrets.token_hex(8)
        route = f'\n\n@blueprint.get("/saved")\ndef saved():\n    return "{token}"\n'
        init = project / "__init__.py"
        init.write_text(init.read_text() + route)
        saved_at = time.monotonic()
        while time.monotonic() - saved_at < 10:
            try:
                if http_get(f"http://127.0.0.1:{port}/saved", timeout=2)[1] == token:
                    break
            except OSError:
                pass
            time.sleep(0.02)
        served_after = time.monotonic() - saved_at
        assert served_after < 1.0, f"the save was served after {served_after:.2f} s"

        # devcontainer exec runs the project's tests, and carries their exit status
        tests = dc.devcontainer("exec", "python", "-m", "devloop", "test", project=project, timeout=600)
        assert tests.returncode == 0, tests.stdout[-3000:] + tests.stderr[-3000:]
        assert "passed" in tests.stdout
        (project / "tests" / "test_devc_fails.py").write_text("def test_fails():\n    assert 1 == 2\n")
        failing = dc.devcontainer("exec", "python", "-m", "devloop", "test", project=project, timeout=600)
        assert failing.returncode == 1, failing.stdout[-3000:] + failing.stderr[-3000:]
        assert "test_fails" in failing.stdout

        # devcontainer up again reuses the running container, and a stopped one is started again
        assert dc.up(project)["containerId"] == container
        subprocess.run([podman, "stop", "-t", "10", container], capture_output=True, timeout=60, check=True)
        assert dc.up(project)["containerId"] == container
        wait_for(f"http://127.0.0.1:{dc.published(container, 8080)}/saved", expect=token)
    finally:
        dc.remove_dev_container(project)


#: Sends SIGTERM to every ``python -m devloop KIND`` process of the container (KIND: argv[1]); prints their pids.
STOP = r"""
import os, signal, sys
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
    except OSError:
        continue
    if argv[:4] == [b"python", b"-m", b"devloop", sys.argv[1].encode()]:
        print(pid)
        os.kill(int(pid), signal.SIGTERM)
"""

#: Prints the real uid of every process in the container, one per line.
PROCESSES = r"""
import os, re
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        print(re.search(r"Uid:\s+(\d+)", open(f"/proc/{pid}/status").read()).group(1))
    except OSError:
        pass
"""


def test_devcontainer_is_added_to_an_older_project_and_a_users_own_is_kept(tmp_path: Path) -> None:
    project = tmp_path / "older"
    assert flask_stack("init", str(project)).returncode == 0
    shutil.rmtree(project / ".devcontainer")
    (project / "devfile.yaml").unlink()
    added = flask_stack("devcontainer", "--project", str(project))
    assert added.returncode == 0, added.stderr
    assert ".devcontainer/devcontainer.json" in added.stdout and "devfile.yaml" in added.stdout
    assert (project / ".devcontainer" / "devcontainer.json").read_bytes() == \
        (REPO / "templates" / "simple" / ".devcontainer" / "devcontainer.json").read_bytes()
    assert "  name: older\n" in (project / "devfile.yaml").read_text()

    mine = {"name": "mine"}
    (project / ".devcontainer" / "devcontainer.json").write_text(json.dumps(mine))
    (project / ".devcontainer" / "Dockerfile").write_text("FROM scratch\n")
    (project / "devfile.yaml").write_text("schemaVersion: 2.2.0\n")
    for argv in (["devcontainer", "--project", str(project)], ["init", str(project), "--overwrite"]):
        result = flask_stack(*argv)
        assert result.returncode == 0, result.stderr
        assert ".devcontainer/ kept as it is (yours)" in result.stdout
        assert "devfile.yaml kept as it is (yours)" in result.stdout
        assert json.loads((project / ".devcontainer" / "devcontainer.json").read_text()) == mine
        assert (project / ".devcontainer" / "Dockerfile").read_text() == "FROM scratch\n"
        assert (project / "devfile.yaml").read_text() == "schemaVersion: 2.2.0\n"


# --- devfile commands, run as odo runs them -----------------------------------------------------------------


@pytest.mark.timeout(1020)  # its waits add up to 960 s (testkit.budget)
def test_devfile_commands_do_what_their_kind_says(podman: str, dev_image: str, tmp_path: Path) -> None:
    """Each exec command's commandLine runs in the component's container as odo runs it: the image with the
    component's command, the project at sourceMapping, PROJECT_SOURCE set, ``sh -c "cd WORKDIR && LINE"``."""
    project = make_project(tmp_path, "simple")
    devfile = yaml.safe_load((project / "devfile.yaml").read_text(encoding="utf-8"))
    variables = devfile.get("variables", {})
    (component,) = [c for c in devfile["components"] if "container" in c]
    spec = component["container"]
    image = spec["image"].replace("{{DEV_IMAGE}}", variables["DEV_IMAGE"])
    assert image == dev_image
    name = f"flask-stack-devfile-{secrets.token_hex(4)}"
    volume = f"{name}-deps"
    source = spec["sourceMapping"]
    argv = [podman, "run", "-d", "--name", name, "-v", f"{project}:{source}", "-v", f"{volume}:/project/deps",
            "-e", f"PROJECT_SOURCE={source}", "-e", f"PROJECTS_ROOT={source}",
            "-p", "127.0.0.1::8080", "-p", "127.0.0.1::5678", "--entrypoint", spec["command"][0], image,
            *spec["args"]]
    commands = {c["exec"]["group"]["kind"]: c["exec"] for c in devfile["commands"] if "exec" in c}

    def run(kind: str, detach: bool = False) -> subprocess.CompletedProcess:
        command = commands[kind]
        line = f'cd {command["workingDir"]} && {command["commandLine"]}'
        return subprocess.run([podman, "exec", *(["-d"] if detach else []), name, "/bin/sh", "-c", line],
                              capture_output=True, text=True, timeout=600, check=False)

    def stop(kind: str) -> None:
        """SIGTERM the command's dev loop (as odo does before the next command) and wait until it is gone."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            found = subprocess.run([podman, "exec", name, "python3", "-c", STOP, kind], capture_output=True,
                                   text=True, timeout=60, check=True).stdout.split()
            if not found:
                return
            time.sleep(0.2)
        pytest.fail(f"the {kind} command's dev loop did not stop within 30 s")

    try:
        started = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        assert started.returncode == 0, started.stderr
        app_port, debug_port = dc.published(name, 8080), dc.published(name, 5678)

        build = run("build")  # installs the Pipfile's packages (locking a stale lock), then exits 0
        assert build.returncode == 0, build.stdout + build.stderr

        assert run("run", detach=True).returncode == 0  # serves, with reload
        wait_for(f"http://127.0.0.1:{app_port}/hello", expect="Hello from Appsody!")
        stop("run")

        assert run("debug", detach=True).returncode == 0  # serves in debug mode with the DAP debugger on 5678
        wait_for(f"http://127.0.0.1:{app_port}/hello", expect="Hello from Appsody!")
        assert dap_initialize(debug_port)["success"] is True
        stop("debug")

        tested = run("test")  # the tests' exit status
        assert tested.returncode == 0, tested.stdout[-3000:] + tested.stderr[-3000:]
        (project / "tests" / "test_devfile_fails.py").write_text("def test_fails():\n    assert False\n")
        failed = run("test")
        assert failed.returncode == 1 and "test_fails" in failed.stdout, failed.stdout[-3000:]
    finally:
        subprocess.run([podman, "rm", "-f", "-t", "5", name], capture_output=True, timeout=120, check=False)
        subprocess.run([podman, "volume", "rm", "-f", volume], capture_output=True, timeout=60, check=False)


def test_dev_image_keeps_the_base_the_image_was_built_on(podman: str, dev_image: str) -> None:
    """`flask-stack dev-image` (the initializeCommand) with no --base-image and no STACK_BASE_IMAGE finds the image
    current on the base it was built on (the session's local one) instead of rebuilding on python:3.12-slim."""
    result = flask_stack("dev-image", "--engine", "podman", STACK_BASE_IMAGE="", timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == dev_image
    assert "building" not in result.stderr
