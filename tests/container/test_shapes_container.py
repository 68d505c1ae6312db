"""An app factory in a sub-package (Flask's tutorial layout), unchanged, through the container engine: its own tests
under ``flask-stack test``, an app command through ``flask-stack flask``, ``flask-stack run`` in the development
container, and the deployable image built with ``--app`` (the package keeps its name in both containers)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from flask_stack.container import ContainerEngine
from testkit.apps import FACTORY, lay_out

from .conftest import flask_stack, free_port, http_get, start_flask_stack, stop_process, wait_for

pytestmark = pytest.mark.container

@pytest.fixture
def factory_project(engine: str, tmp_path: Path) -> Iterator[Path]:
    root = lay_out(tmp_path / "shop-project", FACTORY)
    cli_engine = ContainerEngine(engine)
    try:
        yield root
    finally:
        for name in (cli_engine.container_name(root), cli_engine.container_name(root, "test"),
                     cli_engine.container_name(root, "flask")):
            subprocess.run([engine, "rm", "-f", name], capture_output=True, check=False, timeout=60)
        subprocess.run([engine, "volume", "rm", "-f", cli_engine.volume_name(root)],
                       capture_output=True, check=False, timeout=60)


@pytest.mark.timeout(1000)  # `flask-stack test` up to 600 s, `flask` up to 300 s
def test_factory_app_in_the_development_container(engine: str, dev_image: str, factory_project: Path,
                                                  tmp_path: Path) -> None:
    project = factory_project
    tested = flask_stack("test", "--engine", engine, "-q", cwd=project, timeout=600)
    assert tested.returncode == 0, tested.stdout[-3000:] + tested.stderr[-2000:]
    assert "8 passed" in tested.stdout and "1 skipped" in tested.stdout, tested.stdout[-2000:]  # 2 own + 6 checks

    command = flask_stack("flask", "--engine", engine, "count-items", "4", cwd=project, timeout=300)
    assert command.returncode == 0, command.stdout[-2000:] + command.stderr[-2000:]
    assert command.stdout.strip().splitlines()[-1] == "4 items in shop"

    (project / ".flaskenv").write_text("STACK_APP_VERSION=2.5.0\n")  # read in the container as `flask run` reads it
    port = free_port()
    proc = start_flask_stack("run", "--engine", engine, "--port", str(port), cwd=project, log=tmp_path / "run.log")
    try:
        base = f"http://127.0.0.1:{port}"
        body = json.loads(wait_for(f"{base}/items/5", proc=proc))
        assert body == {"id": 5, "url": "/items/5", "shop": "corner shop", "module": "shop.views"}
        status, health, _ = http_get(f"{base}/health")
        assert status == 200 and json.loads(health)["status"] == "UP"
        status, metrics, _ = http_get(f"{base}/metrics")
        assert status == 200 and 'endpoint="/items/<int:item_id>"' in metrics
        assert 'app_version="2.5.0"' in metrics, metrics[:3000]
    finally:
        stop_process(proc)


@pytest.mark.timeout(1260)  # its waits add up to 1200 s
def test_deployable_image_of_a_factory_app_named_with_app(engine: str, factory_project: Path) -> None:
    project = factory_project
    tag = f"localhost/flask-stack-shapes-test:{free_port()}"
    (project / "wsgi.py").write_text("raise SystemExit('not this one: --app names the factory')\n")
    built = flask_stack("build", "--engine", engine, "--app", "shop:create_app({'SHOP_NAME': 'built shop'})",
                        "-t", tag, cwd=project, timeout=900)
    name = f"shapes-{free_port()}"
    try:
        assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-2000:]
        port = free_port()
        subprocess.run([engine, "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8080", tag],
                       check=True, capture_output=True, timeout=120)
        body = json.loads(wait_for(f"http://127.0.0.1:{port}/items/2"))
        assert body == {"id": 2, "url": "/items/2", "shop": "built shop", "module": "shop.views"}
        status, health, _ = http_get(f"http://127.0.0.1:{port}/health/ready")
        assert status == 200
    finally:
        subprocess.run([engine, "rm", "-f", name], capture_output=True, check=False, timeout=60)
        subprocess.run([engine, "rmi", "-f", tag], capture_output=True, check=False, timeout=120)
        shutil.rmtree(project / "__pycache__", ignore_errors=True)
