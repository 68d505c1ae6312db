"""The Docker path for real: the Docker CLI (the client a Docker user has) talking the Docker API to podman's
Docker-compatible service, which the session starts on a socket of its own (``docker_api`` in conftest.py).

`flask-stack run|debug|test|stop|build --engine docker`, the deployable image run with `docker run`, and the
build context that `appsody extract` lays out (the development image's /project plus the project in userapp/,
copied out with `docker cp` as the Appsody CLI does) built with `docker build`.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path
from typing import Iterator

import pytest

from flask_stack import container_image
from flask_stack.container import ContainerEngine

from testkit.dap import dap_initialize

from .conftest import (
    BUILD_TIMES,
    PRIVATE_FILES,
    assert_production_server,
    base_image_name,
    container_processes,
    docker,
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

@pytest.fixture
def docker_project(docker_api: dict[str, str], project: Path) -> Iterator[Path]:
    """A fresh template project; its containers and dependency volume are removed through the Docker API after."""
    cli_engine = ContainerEngine("docker")
    try:
        yield project
    finally:
        for name in (cli_engine.container_name(project), cli_engine.container_name(project, "test")):
            docker(docker_api, "rm", "-f", name, check=False)
        docker(docker_api, "volume", "rm", "-f", cli_engine.volume_name(project), check=False)


def gone(env: dict[str, str], name: str) -> bool:
    """True when the Docker API knows no container ``name``."""
    return docker(env, "container", "inspect", name, check=False).returncode != 0


def test_docker_run_reloads_and_stops(dev_image: str, docker_api: dict[str, str], docker_project: Path,
                                      tmp_path: Path) -> None:
    """`flask-stack run --engine docker`: served on the host's loopback, reloaded on save, as worker (uid 1001);
    `flask-stack stop --engine docker` ends it (the CLI exits 0) and removes the container."""
    project, port = docker_project, free_port()
    proc = start_flask_stack("run", "--engine", "docker", "--port", str(port), cwd=project,
                             log=tmp_path / "run.log", **docker_api)
    name = ContainerEngine("docker").container_name(project)
    try:
        base = f"http://127.0.0.1:{port}"
        assert wait_for(f"{base}/hello", proc=proc) == "Hello from Appsody!"
        assert http_get(f"{base}/health/ready")[0] == 200
        assert f"8080/tcp -> 127.0.0.1:{port}" in docker(docker_api, "port", name).stdout
        assert {uid for uid, *_ in container_processes("docker", name, docker_api)} == {"1001"}
        source = project / "__init__.py"
        source.write_text(source.read_text().replace("Hello from Appsody!", "Hello after a save!"))
        assert wait_for(f"{base}/hello", timeout=30, expect="after a save", proc=proc) == "Hello after a save!"
        stopped = flask_stack("stop", "--engine", "docker", cwd=project, timeout=120, **docker_api)
        assert stopped.returncode == 0, stopped.stderr
        assert proc.wait(timeout=60) == 0, (tmp_path / "run.log").read_text()[-3000:]
        assert gone(docker_api, name)
    finally:
        stop_process(proc)


def test_docker_debug_attaches_and_is_isolated(dev_image: str, docker_api: dict[str, str], docker_project: Path,
                                               tmp_path: Path) -> None:
    """`flask-stack debug --engine docker`: a DAP client attaches on the host's loopback; the container has a
    network of its own (podman's API: slirp4netns), so another container reaches neither port."""
    project, port, debug_port = docker_project, free_port(), free_port()
    proc = start_flask_stack("debug", "--engine", "docker", "--port", str(port), "--debug-port", str(debug_port),
                             cwd=project, log=tmp_path / "debug.log", **docker_api)
    name = ContainerEngine("docker").container_name(project)
    try:
        wait_for(f"http://127.0.0.1:{port}/hello", proc=proc)
        response = dap_initialize(debug_port)
        assert response["command"] == "initialize" and response["success"] is True
        config = json.loads(docker(docker_api, "container", "inspect", name).stdout)[0]
        assert config["HostConfig"]["NetworkMode"] == "slirp4netns"
        # slirp4netns gives the container no address another container can route to: what remains is the
        # host's ports, published on 127.0.0.1 only
        assert not config["NetworkSettings"]["IPAddress"] and not config["NetworkSettings"]["Networks"]
        targets = [f"{host}:{p}" for host in host_addresses("docker", docker_api) for p in (port, debug_port)]
        found = reach_from_another_container("docker", targets, docker_api)
        assert all(what == "ConnectionRefusedError" for what in found.values()), found
    finally:
        stop_process(proc, timeout=60)


@pytest.mark.timeout(660)  # two `flask-stack test` of up to 300 s
def test_docker_test_exit_status(dev_image: str, docker_api: dict[str, str], docker_project: Path) -> None:
    """`flask-stack test --engine docker` exits 0 on the template and 1 when a user test fails."""
    project = docker_project
    passed = flask_stack("test", "--engine", "docker", cwd=project, timeout=300, **docker_api)
    assert passed.returncode == 0, passed.stdout[-3000:] + passed.stderr[-2000:]
    assert re.search(r"=+ 8 passed in [\d.]+s", passed.stdout), passed.stdout[-3000:]  # test_hello, 7 checks
    (project / "tests" / "test_broken.py").write_text("def test_broken():\n    assert 1 + 1 == 3\n")
    failed = flask_stack("test", "--engine", "docker", cwd=project, timeout=300, **docker_api)
    assert failed.returncode == 1, failed.stdout[-3000:] + failed.stderr[-2000:]
    assert "test_broken" in failed.stdout


def serve_and_check(env: dict[str, str], image: str, label: str) -> None:
    """`docker run` the deployable ``image``: it answers /hello and /health/ready, every process (the serving
    entry as PID 1, running gunicorn, and its workers) runs as uid 1001, its container carries the HEALTHCHECK,
    and `docker stop` ends it with status 0."""
    name, port = f"flask-stack-test-{label}-{time.monotonic_ns()}", free_port()
    try:
        docker(env, "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8080", image)
        assert wait_for(f"http://127.0.0.1:{port}/hello") == "Hello from Appsody!"
        assert json.loads(wait_for(f"http://127.0.0.1:{port}/health/ready"))["status"] == "UP"
        assert_production_server(container_processes("docker", name, env))
        # podman's Docker API leaves the healthcheck out of `docker image inspect`; the container has it
        config = json.loads(docker(env, "container", "inspect", name).stdout)[0]["Config"]
        assert "/health/live" in " ".join(config["Healthcheck"]["Test"])
        docker(env, "stop", "-t", "60", name, timeout=120)
        assert docker(env, "container", "inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip() == "0"
    finally:
        docker(env, "rm", "-f", name, check=False)


@pytest.mark.timeout(1100)  # a build of up to 900 s, then runs
def test_docker_build_and_run(docker_api: dict[str, str], app_project: tuple[Path, str]) -> None:
    """`flask-stack build --engine docker` builds the deployable image through the Docker API (the classic
    builder: podman's API has no BuildKit); `docker run` serves it with gunicorn as uid 1001."""
    project, sha = app_project
    tag = f"localhost/flask-stack-test-docker-build:{time.monotonic_ns()}"
    started = time.monotonic()
    result = flask_stack("build", "--engine", "docker", "-t", tag, cwd=project, timeout=900, **docker_api)
    BUILD_TIMES["deployable image build (docker CLI)"] = time.monotonic() - started
    try:
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
        labels = json.loads(docker(docker_api, "image", "inspect", tag).stdout)[0]["Config"]["Labels"]
        assert labels["org.opencontainers.image.revision"] == sha
        serve_and_check(docker_api, tag, "docker-build")
    finally:
        docker(docker_api, "rmi", "-f", tag, check=False)


@pytest.mark.timeout(1100)  # a docker build of up to 900 s
def test_appsody_extract_layout_builds_with_docker(dev_image: str, docker_api: dict[str, str],
                                                   app_project: tuple[Path, str], tmp_path: Path) -> None:
    """What `appsody extract` + `appsody build` do, with the Docker CLI: copy /project and /config/app-deploy.yaml
    out of the development image, put the project in userapp/, build extract/Dockerfile in that context.
    The image serves the app with the production server as uid 1001, and the context is the one
    `flask-stack build` lays out (same stack files, same bytes)."""
    project, _ = app_project
    extract = tmp_path / "extract"
    created = docker(docker_api, "create", dev_image).stdout.strip().splitlines()[-1]
    try:
        docker(docker_api, "cp", f"{created}:/project", str(extract))
        docker(docker_api, "cp", f"{created}:/config/app-deploy.yaml", str(tmp_path / "app-deploy.yaml"))
    finally:
        docker(docker_api, "rm", "-f", created, check=False)
    assert "kind: AppsodyApplication" in (tmp_path / "app-deploy.yaml").read_text()
    for name in ("Dockerfile", ".dockerignore", "serve", "Pipfile.lock", "server/__init__.py"):
        assert (extract / name).is_file(), name
    shutil.rmtree(extract / "userapp")
    shutil.copytree(project, extract / "userapp")

    laid_out = container_image.layout_build_context(project, tmp_path / "flask-stack-context")

    def stack_files(root: Path) -> dict[str, bytes]:
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*")
                if p.is_file() and p.relative_to(root).parts[0] not in ("userapp", "deps")
                and "__pycache__" not in p.parts}

    assert stack_files(extract) == stack_files(laid_out)

    tag = f"localhost/flask-stack-test-extract:{time.monotonic_ns()}"
    started = time.monotonic()
    built = docker(docker_api, "build", "-t", tag, "-f", str(extract / "Dockerfile"),
                   "--build-arg", f"BASE_IMAGE={base_image_name()}", str(extract),
                   timeout=900, check=False)
    BUILD_TIMES["appsody-extract context build (docker CLI)"] = time.monotonic() - started
    try:
        assert built.returncode == 0, built.stdout[-4000:] + built.stderr[-2000:]
        serve_and_check(docker_api, tag, "extract")
        # the extracted context's .dockerignore leaves the project's private files out, as flask-stack build does
        listed = docker(docker_api, "run", "--rm", "--entrypoint", "find", tag, "/project/userapp").stdout.split()
        assert "/project/userapp/__init__.py" in listed and "/project/userapp/.flaskenv" in listed
        assert not [path for path in listed if any(path.startswith(f"/project/userapp/{name.split('/')[0]}")
                                                   for name in PRIVATE_FILES)], listed
    finally:
        docker(docker_api, "rmi", "-f", tag, check=False)
