"""``odo deploy`` (the devfile's kind ``deploy``): the image component built exactly as odo builds it
(``<engine> build -t IMAGE -f <uri> <buildContext> <args...>``, the devfile's variables substituted) from a project
made by ``flask-stack init`` and nothing else, then run: it serves the app, and holds none of the project's private
files, tests or dev tool files. (odo itself and a cluster are not run: the kubernetes components' files are checked
in tests/cli/test_odo.py.)"""

from __future__ import annotations

import re
import secrets
import subprocess
from pathlib import Path

import pytest
import yaml

from .conftest import PRIVATE_FILES, base_image_name, wait_for

pytestmark = [pytest.mark.container, pytest.mark.slow]


def odo_build_argv(engine: str, project: Path, variables: dict[str, str]) -> tuple[list[str], str]:
    """The build command odo runs for the devfile's image component (odo's DockerCompatibleBackend: the args are
    appended as they are), with ``variables`` over the devfile's own; returns (argv, image name)."""
    devfile = yaml.safe_load((project / "devfile.yaml").read_text(encoding="utf-8"))
    values = {**devfile["variables"], **variables}

    def substitute(text: str) -> str:
        return re.sub(r"\{\{(\w+)\}\}", lambda m: values[m.group(1)], text)

    (image,) = [c["image"] for c in devfile["components"] if "image" in c]
    dockerfile = image["dockerfile"]
    argv = [engine, "build", "-t", substitute(image["imageName"]), "-f", str(project / dockerfile["uri"]),
            dockerfile["buildContext"], *[substitute(arg) for arg in dockerfile["args"]]]
    return argv, substitute(image["imageName"])


@pytest.mark.timeout(1800)
def test_odo_deploy_image_builds_from_the_project_alone(engine: str, dev_image: str, project: Path,
                                                        container_cleanup: list[str]) -> None:
    for name, text in PRIVATE_FILES.items():
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text(text)
    tag = f"localhost/odo-deploy-{secrets.token_hex(4)}:1"
    argv, image = odo_build_argv(engine, project, {"DEV_IMAGE": dev_image, "IMAGE": tag,
                                                   "BASE_IMAGE": base_image_name()})
    assert image == tag
    try:
        built = subprocess.run(argv, cwd=project, capture_output=True, text=True, timeout=1200, check=False)
        assert built.returncode == 0, built.stdout[-4000:] + built.stderr[-4000:]
        listing = subprocess.run([engine, "run", "--rm", "--entrypoint", "sh", tag, "-c",
                                  "cd /project/userapp && find . -mindepth 1 | sort; ls /project"],
                                 capture_output=True, text=True, timeout=120, check=True).stdout.split()
        for gone in ("./.env", "./.env.production", "./instance", "./app.sqlite3", "./tests", "./.devfile",
                     "./deploy", "./.devcontainer", "./devfile.yaml", "./.vscode", "./.appsody-config.yaml"):
            assert gone not in listing, listing
        assert "./__init__.py" in listing and "server" in listing and "serve" in listing, listing
        name = f"odo-deploy-{secrets.token_hex(4)}"
        container_cleanup.append(name)
        subprocess.run([engine, "run", "-d", "--name", name, "-p", "127.0.0.1::8080", tag], check=True,
                       capture_output=True, timeout=120)
        port = subprocess.run([engine, "port", name, "8080"], capture_output=True, text=True, check=True,
                              timeout=60).stdout.split(":")[-1].strip()
        wait_for(f"http://127.0.0.1:{port}/hello", expect="Hello from Appsody!")
    finally:
        subprocess.run([engine, "rmi", "-f", tag], capture_output=True, timeout=120, check=False)
