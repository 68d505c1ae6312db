"""The project's own dependency declaration in the containers: for each format (``requirements.txt``,
``pyproject.toml``, ``pyproject.toml`` + ``uv.lock``, ``Pipfile``) the development container serves the project with
its versions and runs its tests with the development-only package, and the deployable image built from it serves
it with the same versions and without the development-only package. Reaches the package index.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from testkit.depsapps import EXPECTED, FORMATS, make_project
from testkit.net import free_port

from .conftest import base_image_name, flask_stack, http_get, start_flask_stack, stop_process, wait_for

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("kind", FORMATS)
@pytest.mark.timeout(3300)  # its waits add up to 3240 s (testkit.budget)
def test_dev_container_and_deployable_image_use_the_declaration(engine: str, dev_image: str, tmp_path: Path,
                                                                container_cleanup: list[str], kind: str) -> None:
    project = make_project(tmp_path / "demo", kind)
    port = free_port()
    proc = start_flask_stack("run", "--engine", engine, "--port", str(port), cwd=project, log=tmp_path / "run.log")
    try:
        body = wait_for(f"http://127.0.0.1:{port}/versions", timeout=600, proc=proc)
        assert json.loads(body) == EXPECTED, (tmp_path / "run.log").read_text()[-3000:]
    finally:
        flask_stack("stop", "--engine", engine, cwd=project, timeout=120)
        stop_process(proc)
    tested = flask_stack("test", "--engine", engine, cwd=project, timeout=900)
    assert tested.returncode == 0, tested.stdout[-3000:] + tested.stderr[-2000:]
    assert "test_app.py ." in tested.stdout

    tag = f"localhost/flask-stack-test-deps-{kind.replace('.', '-').lower()}:latest"
    built = flask_stack("build", "--engine", engine, "-t", tag, "--base-image", base_image_name(), cwd=project,
                        timeout=1200)
    try:
        assert built.returncode == 0, built.stdout[-4000:] + built.stderr[-2000:]
        name = f"flask-stack-test-deps-{port}"
        container_cleanup.append(name)
        image_port = free_port()
        subprocess.run([engine, "run", "-d", "--name", name, "-p", f"127.0.0.1:{image_port}:8080", tag],
                       check=True, capture_output=True, timeout=120)
        body = wait_for(f"http://127.0.0.1:{image_port}/versions", timeout=120)
        assert json.loads(body) == EXPECTED
        status, _, _ = http_get(f"http://127.0.0.1:{image_port}/health/ready")
        assert status == 200
        absent = subprocess.run([engine, "exec", name, "python3", "-c", "import pytest_mock"], capture_output=True,
                                text=True, timeout=60)
        assert absent.returncode != 0 and "No module named 'pytest_mock'" in absent.stderr
    finally:
        subprocess.run([engine, "rmi", "-f", tag], capture_output=True, check=False, timeout=120)
