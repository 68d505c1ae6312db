"""A plain (non-editable) ``pip install`` of the repository gives a working ``flask-stack`` anywhere."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from .conftest import REPO


@pytest.mark.timeout(760)  # its waits add up to 700 s
@pytest.mark.slow
def test_pip_install_gives_a_flask_stack_that_inits_from_another_directory(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    install = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(REPO)],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=400,
    )
    assert install.returncode == 0, install.stderr[-3000:]

    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "from flask_stack.paths import stack_root; print(stack_root())"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True,
    ).stdout.strip()
    assert where.startswith(str(venv)) and where.endswith("flask_stack/stack"), where  # the packaged copy
    for rel in ("stack.yaml", "image/project/Pipfile.lock", "image/project/stackdeps/runtime.txt",
                "image/project/stackdeps/devtools.txt", "templates/simple/__init__.py",
                "templates/web/templates/layout.html", "templates/web/static/style.css",
                "templates/api/models.py", "templates/api/Pipfile.lock", "templates/api/.vscode/launch.json",
                "templates/simple/.devfile/Dockerfile", "templates/simple/.dockerignore"):
        assert (tmp_path / where / rel).is_file(), rel

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = subprocess.run(
        [str(venv / "bin" / "flask-stack"), "init", "demo"], env=env, cwd=elsewhere,
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    project = elsewhere / "demo"
    assert (project / "__init__.py").read_bytes() == (REPO / "templates" / "simple" / "__init__.py").read_bytes()
    assert (project / "tests" / "test_hello.py").is_file()
    assert (project / ".appsody-config.yaml").read_text().startswith("project-name: demo\n")
    assert not list(project.rglob("__pycache__"))

    empty = tmp_path / "empty"
    empty.mkdir()
    result = subprocess.run(
        [str(venv / "bin" / "flask-stack"), "run", "--engine", "local", "--port", "1"], env=env, cwd=empty,
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1 and "has no Flask app" in result.stderr.strip().splitlines()[-1]
