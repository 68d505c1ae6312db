"""Helpers for tests/container/test_devcontainer.py: the Dev Containers reference CLI (``@devcontainers/cli``, installed
by .ci/run from .ci/npm with npm ci) driving podman, and the devfile schema shipped by ``@devfile/api``.

Locally, a missing CLI or Node.js skips the tests; with CI=true it fails them (:func:`conftest.unavailable`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from .conftest import REPO, base_image_name, cli_env, unavailable

#: Where .ci/run installs the npm packages the tests drive (.ci/npm/package.json pins them).
NPM_DIR = REPO / ".ci" / "npm"
#: Seconds `devcontainer up` may take (it may build the development image first: about 2 minutes on 2 cores).
UP_TIMEOUT = 900.0
#: The line README tells rootful podman users to add (the CLI passes --userns=keep-id, which only rootless podman
#: takes; an empty --userns after it restores podman's default).
ROOTFUL_PODMAN_LINE = '"runArgs": ["--userns="],'


def devcontainer_cli() -> str:
    """Return the path of the ``devcontainer`` command (``.ci/npm``'s, else one on PATH); skip/fail when missing."""
    if shutil.which("node") is None:
        unavailable("Node.js (node) is not installed; the Dev Containers CLI needs it")
    local = NPM_DIR / "node_modules" / ".bin" / "devcontainer"
    if local.exists():
        return str(local)
    found = shutil.which("devcontainer")
    if found is None:
        unavailable("the Dev Containers CLI is not installed (npm ci --prefix .ci/npm, as .ci/run does)")
    return found


def devfile_schema() -> dict:
    """Return the devfile 2.2 JSON schema from ``@devfile/api``'s swagger.json (definition ``v2.2.2.Devfile``, with
    every definition it refers to); skip/fail when the package is not installed."""
    swagger = NPM_DIR / "node_modules" / "@devfile" / "api" / "swagger.json"
    if not swagger.is_file():
        unavailable("@devfile/api is not installed (npm ci --prefix .ci/npm, as .ci/run does)")
    definitions = json.loads(swagger.read_text(encoding="utf-8"))["definitions"]
    return {"$ref": "#/definitions/v2.2.2.Devfile", "definitions": definitions}


def read_jsonc(path: Path) -> dict:
    """Parse a devcontainer.json (JSON with ``//`` comment lines, as the templates write it)."""
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if not line.lstrip().startswith("//")]
    return json.loads("\n".join(lines))


def for_this_engine(project: Path) -> None:
    """When this host runs podman as root, add README's rootful-podman line to the project's devcontainer.json."""
    if os.getuid() != 0:
        return
    path = project / ".devcontainer" / "devcontainer.json"
    text = path.read_text(encoding="utf-8")
    anchor = '  "containerUser": "worker",\n'
    assert anchor in text, "the template's devcontainer.json changed: update for_this_engine"
    path.write_text(text.replace(anchor, f"  {ROOTFUL_PODMAN_LINE}\n{anchor}", 1), encoding="utf-8")


def cli_environment() -> dict[str, str]:
    """The environment of a ``devcontainer`` run: ``flask-stack`` (this checkout, for the initializeCommand) on
    PATH, podman as its engine, the session's base image."""
    env = cli_env(STACK_ENGINE="podman", STACK_BASE_IMAGE=base_image_name())
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def devcontainer(*args: str, project: Path, timeout: float = 300.0) -> subprocess.CompletedProcess:
    """Run ``devcontainer COMMAND --workspace-folder PROJECT --docker-path podman [ARGS]``; return its text result."""
    command, *rest = args  # the options go before an `exec` command's own arguments
    argv = [devcontainer_cli(), command, "--workspace-folder", str(project), "--docker-path", "podman", *rest]
    return subprocess.run(argv, env=cli_environment(), capture_output=True, text=True, timeout=timeout, check=False)


def up(project: Path) -> dict:
    """``devcontainer up`` the project; return the CLI's result (``containerId``, ``remoteUser``, ...). Fails the
    test with the CLI's output when the outcome is not success."""
    result = devcontainer("up", project=project, timeout=UP_TIMEOUT)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    outcome = json.loads(lines[-1]) if lines else {}
    assert result.returncode == 0 and outcome.get("outcome") == "success", \
        f"devcontainer up failed ({result.returncode}): {result.stdout[-3000:]} {result.stderr[-3000:]}"
    return outcome


def published(container: str, port: int) -> int:
    """Return the host port (on 127.0.0.1) the container's ``port`` is published on."""
    result = subprocess.run(["podman", "port", container, f"{port}/tcp"], capture_output=True, text=True,
                            timeout=60, check=True)
    match = re.search(r"127\.0\.0\.1:(\d+)", result.stdout)
    assert match, f"port {port} of {container} is not published on 127.0.0.1: {result.stdout!r}"
    return int(match.group(1))


def remove_dev_container(project: Path) -> None:
    """Remove the project's dev containers (by the CLI's label), their deps volumes and their ``-uid`` images."""
    listed = subprocess.run(["podman", "ps", "-aq", "--filter", f"label=devcontainer.local_folder={project}"],
                            capture_output=True, text=True, timeout=60, check=False)
    for container in listed.stdout.split():
        inspect = subprocess.run(["podman", "container", "inspect", "--format", "{{json .Mounts}} {{.ImageName}}",
                                  container], capture_output=True, text=True, timeout=60, check=False)
        mounts_json, _, image = inspect.stdout.strip().rpartition(" ")
        try:
            volumes = [m.get("Name") for m in json.loads(mounts_json or "[]") if m.get("Type") == "volume"]
        except ValueError:
            volumes = []
        subprocess.run(["podman", "rm", "-f", "-t", "5", container], capture_output=True, timeout=120, check=False)
        for volume in filter(None, volumes):
            subprocess.run(["podman", "volume", "rm", "-f", volume], capture_output=True, timeout=60, check=False)
        if image.split("/")[-1].startswith("vsc-"):
            subprocess.run(["podman", "rmi", image], capture_output=True, timeout=60, check=False)


#: Run in the dev container by `devcontainer exec ... python3 -c`: sends a DAP ``initialize`` to 127.0.0.1:PORT (as
#: VS Code's attach does from inside the container) and prints the response as one JSON line.
DAP_CLIENT = (Path(__file__).resolve().parents[1] / "testkit" / "dapwire.py").read_text(encoding="utf-8") + """
import sys
print(json.dumps(dap_initialize(int(sys.argv[1]), timeout=30.0)))
"""
