"""The local engine's environments: requirements from the lock, one stack environment shared by every project
(made with uv, or pip where uv cannot run), and failed installs removed with a one-line reason."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from flask_stack import localenv
from flask_stack.errors import CliError
from flask_stack.lockfile import requirements_from_lock
from flask_stack.paths import runtime_dir

LOCK = runtime_dir() / "Pipfile.lock"


def test_requirements_cover_both_lock_sections_with_hashes():
    data = json.loads(LOCK.read_text())
    text = requirements_from_lock(LOCK)
    lines = text.splitlines()
    names = {line.split("==")[0].split("[")[0] for line in lines}
    assert names == set(data["default"]) | set(data["develop"])
    assert {"flask", "gunicorn", "debugpy", "watchfiles", "pipenv", "pytest"} <= names
    for line in lines:
        name = line.split("==")[0]
        section = data["default"].get(name) or data["develop"][name]
        assert line.startswith(f"{name}{section['version']}")
        assert line.count("--hash=sha256:") == len(section["hashes"])


def test_lock_problems_are_one_line(tmp_path):
    bad = tmp_path / "Pipfile.lock"
    bad.write_text("{not json")
    with pytest.raises(CliError, match=r"is not valid JSON .*regenerate it with `pipenv lock`$"):
        requirements_from_lock(bad)
    bad.write_text(json.dumps({"default": {"x": {"git": "https://example.invalid/x.git"}}, "develop": {}}))
    with pytest.raises(CliError, match="x has no pinned version with hashes"):
        requirements_from_lock(bad)
    bad.write_text(json.dumps({"default": {}}))
    with pytest.raises(CliError, match=r"has no \[develop\] section"):
        requirements_from_lock(bad)


def test_project_dir_is_per_project_under_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("STACK_CACHE_DIR", str(tmp_path / "c"))
    one, two = tmp_path / "a" / "My App", tmp_path / "b" / "My App"
    assert localenv.project_dir(one).parent == tmp_path / "c" / "projects"
    assert localenv.project_dir(one).name.startswith("my-app-")
    assert localenv.project_dir(one) != localenv.project_dir(two)
    monkeypatch.delenv("STACK_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert localenv.project_dir(one).parent == tmp_path / "xdg" / "flask-stack" / "projects"


def test_stack_env_dir_is_keyed_by_the_lock_and_the_interpreter(tmp_path, monkeypatch):
    monkeypatch.setenv("STACK_CACHE_DIR", str(tmp_path / "c"))
    stamp = {"lock": "ab" * 32, "python": "/usr/bin/python3 3.11.2 /usr"}
    where = localenv.stack_env_dir(stamp)
    assert where.parent == tmp_path / "c" / "stack" and where.name.startswith("ab" * 8 + "-py3.11-")
    assert localenv.stack_env_dir({**stamp, "lock": "cd" * 32}) != where
    assert localenv.stack_env_dir({**stamp, "python": "/opt/py/bin/python3 3.11.2 /opt/py"}) != where


def test_failed_venv_creation_names_the_step_and_leaves_nothing(tmp_path, monkeypatch):
    fake = tmp_path / "python3"
    fake.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = "-m" ]; then mkdir -p "$3/bin"; echo "Error: Command \'ensurepip\' returned 1" >&2; exit 1; fi\n'
        'echo "3.11.0 /fake"\n'
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("STACK_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("STACK_PYTHON", str(fake))
    monkeypatch.setenv("STACK_UV", "pip")  # uv makes venvs without ensurepip; pip's fallback needs it
    with pytest.raises(CliError) as info:
        localenv.ensure_stack_env(lambda _line: None)
    message = str(info.value)
    assert message.startswith(f"creating the virtual environment with {fake} failed: Error: Command 'ensurepip'")
    assert message.endswith("(on Debian/Ubuntu: apt-get install python3-venv)")
    assert "\n" not in message
    assert _envs(tmp_path / "cache") == []


def test_too_old_python_is_refused_before_anything_is_made(tmp_path, monkeypatch):
    fake = tmp_path / "python3"
    fake.write_text('#!/bin/sh\necho "3.9.2 /usr"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("STACK_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("STACK_PYTHON", str(fake))
    with pytest.raises(CliError, match=r"is Python 3\.9\.2; the stack needs 3\.11\+: set STACK_PYTHON"):
        localenv.ensure_stack_env(lambda _line: None)
    assert not (tmp_path / "cache").exists()


def _lock_with(tmp_path: Path, name: str, version: str, digest: str) -> Path:
    """A stack runtime dir whose Pipfile.lock holds one package (with the given hash) and nothing else."""
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    entry = {"version": f"=={version}", "hashes": [f"sha256:{digest}"]}
    (runtime / "Pipfile.lock").write_text(json.dumps({"default": {name: entry}, "develop": {}}))
    return runtime


def _envs(cache: Path) -> list[str]:
    """Names of the stack environments under ``cache`` (lock files aside)."""
    where = cache / "stack"
    return sorted(p.name for p in where.iterdir() if not p.name.endswith(".lock")) if where.is_dir() else []


@pytest.mark.slow
@pytest.mark.parametrize("installer", ["uv", "pip"])
@pytest.mark.parametrize(
    ("name", "version", "expected"),
    [
        ("six", "1.17.0", {"uv": "with uv failed: Failed to download `six==1.17.0`; Hash mismatch for `six==1.17.0`",
                           "pip": "failed at six==1.17.0: a downloaded file does not match its hash in the lock"}),
        ("flask-stack-no-such-package-zz", "1.0",
         {"uv": "with uv failed: ", "pip": "failed at flask-stack-no-such-package-zz==1.0: "}),
    ],
)
def test_failed_install_names_the_package_and_leaves_nothing(tmp_path, monkeypatch, name, version, expected,
                                                             installer):
    runtime = _lock_with(tmp_path, name, version, "0" * 64)
    monkeypatch.setattr(localenv, "runtime_dir", lambda: runtime)
    monkeypatch.setenv("STACK_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv-cache"))
    monkeypatch.delenv("STACK_PYTHON", raising=False)
    if installer == "pip":
        monkeypatch.setenv("STACK_UV", "pip")
    progress: list[str] = []
    with pytest.raises(CliError) as info:
        localenv.ensure_stack_env(progress.append)
    message = str(info.value)
    assert message.startswith("installing the stack's runtime packages " + expected[installer]), message
    assert name in message and "\n" not in message
    assert progress[0].startswith(f"installing the stack's packages into {tmp_path / 'cache' / 'stack'}")
    assert progress[0].endswith(f"with {installer} (once per machine and stack version)")
    if name == "six" and installer == "pip":  # downloaded before its hash was checked
        assert "  collecting six==1.17.0" in progress
    assert _envs(tmp_path / "cache") == []


@pytest.mark.slow
@pytest.mark.parametrize(("signame", "status"), [("SIGINT", 130), ("SIGTERM", 143)])
def test_interrupt_during_the_install_exits_quietly_and_removes_the_venv(tmp_path, cli_env, signame, status):
    import os
    import signal
    import subprocess
    import sys
    import time

    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "__init__.py").write_text("")
    proc = subprocess.Popen(
        [sys.executable, "-m", "flask_stack", "test", "--engine", "local", "--project", str(tmp_path / "p")],
        env=cli_env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, start_new_session=True,
    )
    try:
        seen = []
        deadline = time.monotonic() + 120
        for line in proc.stderr:  # wait until the installer is busy
            seen.append(line)
            if "installing the stack's packages" in line or time.monotonic() > deadline:
                break
        assert any("installing the stack's packages" in line for line in seen), seen
        time.sleep(0.3)
        if signame == "SIGINT":
            os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        else:
            os.kill(proc.pid, signal.SIGTERM)  # what `kill` or a supervisor does
        rest = proc.stderr.read()
        assert proc.wait(timeout=60) == status
        assert "Traceback" not in rest and "KeyboardInterrupt" not in rest
        assert _envs(Path(cli_env["STACK_CACHE_DIR"])) == []
        assert _group_members(proc.pid) == []  # the installer was stopped too
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``, from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def _runtime_with(tmp_path: Path, names: list[str]) -> Path:
    """A stack runtime dir whose lock holds ``names`` with their real entries from the stack's lock."""
    real = json.loads(LOCK.read_text())
    runtime = tmp_path / "runtime"
    runtime.mkdir(exist_ok=True)
    default = {name: real["default"][name] for name in names}
    (runtime / "Pipfile.lock").write_text(json.dumps({"default": default, "develop": {}}))
    return runtime


@pytest.mark.slow
def test_one_stack_env_is_shared_and_a_new_lock_gets_its_own(tmp_path, monkeypatch):
    import subprocess

    monkeypatch.setenv("STACK_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("STACK_PYTHON", raising=False)
    runtime = _runtime_with(tmp_path, ["six"])
    monkeypatch.setattr(localenv, "runtime_dir", lambda: runtime)

    first: list[str] = []
    venv = localenv.ensure_stack_env(first.append)
    assert first[0].startswith(f"installing the stack's packages into {venv} with uv")
    assert first[-1].startswith("the stack's environment is ready in ")
    stamp = (venv / localenv.STAMP).stat().st_mtime_ns

    again: list[str] = []
    assert localenv.ensure_stack_env(again.append) == venv  # any project, any number of times
    assert again == [] and (venv / localenv.STAMP).stat().st_mtime_ns == stamp

    def importable(env: Path, module: str) -> bool:
        return subprocess.run([str(localenv.env_python(env)), "-c", f"import {module}"], timeout=60).returncode == 0

    assert importable(venv, "six") and not importable(venv, "typing_extensions")
    _runtime_with(tmp_path, ["six", "typing-extensions"])  # the stack's lock changed (a new stack version)
    newer = localenv.ensure_stack_env(lambda _line: None)
    assert newer != venv and importable(newer, "typing_extensions")
    assert importable(venv, "six")  # the old one is left for a flask-stack still using it

    (newer / localenv.STAMP).unlink()  # as if an install had been interrupted
    remade: list[str] = []
    assert localenv.ensure_stack_env(remade.append) == newer
    assert remade[0] == f"the stack's environment {newer} is incomplete: remaking it"
    assert (newer / localenv.STAMP).is_file()
