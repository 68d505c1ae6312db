"""``flask-stack init``: files written, config, refusing non-empty dirs, --overwrite, all-or-nothing writes."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from flask_stack import cli as cli_module
from flask_stack import scaffold
from flask_stack.paths import templates_dir

from .conftest import one_line_error

TEMPLATE = templates_dir() / "simple"


def template_files() -> set[str]:
    """Relative paths of the simple template's files, minus what init never copies."""
    found = set()
    for path in TEMPLATE.rglob("*"):
        rel = path.relative_to(TEMPLATE)
        if path.is_file() and "__pycache__" not in rel.parts and ".pytest_cache" not in rel.parts \
                and path.suffix != ".pyc":
            found.add(rel.as_posix())
    return found


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its content (to compare a directory before and after)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_init_writes_the_template_and_config(flask_stack, tmp_path):
    result = flask_stack("init", "My Cool_App", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    project = tmp_path / "My Cool_App"
    written = set(tree(project))
    # deploy/: the manifests `flask-stack deploy` writes by default, which the devfile's kind deploy applies
    manifests = {f"deploy/{name}" for name in ("deployment.yaml", "service.yaml", "hpa.yaml", "pdb.yaml")}
    assert written == template_files() | {".appsody-config.yaml"} | manifests
    for rel in template_files() - {"devfile.yaml"}:
        assert (project / rel).read_bytes() == (TEMPLATE / rel).read_bytes()
    # the devfile names its component after the project (odo names the Kubernetes resources after it), and its
    # deployable image as `flask-stack deploy` does by default
    assert (project / "devfile.yaml").read_text() == (TEMPLATE / "devfile.yaml").read_text().replace(
        "  name: python-flask-app\n", "  name: my-cool-app\n", 1).replace(
        "  IMAGE: python-flask-app:latest\n", "  IMAGE: my-cool-app:latest\n", 1)
    assert "          image: my-cool-app:latest\n" in (project / "deploy" / "deployment.yaml").read_text()
    config = (project / ".appsody-config.yaml").read_text()
    assert config.splitlines() == ["project-name: my-cool-app", "stack: dev.local/python-flask:0.4",
                                   "flask-stack-template: simple"]
    assert "__init__.py" in result.stdout
    assert [p.name for p in tmp_path.iterdir()] == ["My Cool_App"]  # no staging dir left


def test_init_defaults_to_the_current_empty_directory(flask_stack, tmp_path):
    project = tmp_path / "9lives"
    project.mkdir()
    result = flask_stack("init", cwd=project)
    assert result.returncode == 0, result.stderr
    assert (project / "__init__.py").is_file()
    assert "project-name: lives" in (project / ".appsody-config.yaml").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["9lives"]


def test_init_refuses_a_non_empty_directory(flask_stack, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    result = flask_stack("init", str(tmp_path))
    assert "is not empty; pass --overwrite" in one_line_error(result)
    assert tree(tmp_path) == {"notes.txt": b"mine"}


def test_overwrite_replaces_template_files_and_keeps_the_others(flask_stack, tmp_path):
    (tmp_path / "__init__.py").write_text("old = True\n")
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / ".vscode").mkdir()
    (tmp_path / ".vscode" / "settings.json").write_text("{}")
    (tmp_path / ".appsody-config.yaml").write_text("project-name: keep-me\nstack: old\n")
    result = flask_stack("init", str(tmp_path), "--overwrite")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "__init__.py").read_bytes() == (TEMPLATE / "__init__.py").read_bytes()
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert (tmp_path / ".vscode" / "settings.json").read_text() == "{}"
    assert (tmp_path / ".vscode" / "launch.json").is_file()
    assert (tmp_path / ".appsody-config.yaml").read_text().startswith("project-name: keep-me\n")


def test_unknown_template_is_one_line_and_writes_nothing(flask_stack, tmp_path):
    result = flask_stack("init", "p", "--template", "../simple", cwd=tmp_path)
    assert one_line_error(result) == ("flask-stack: unknown template '../simple'; available: "
                                      + ", ".join(scaffold.available_templates()))
    assert scaffold.available_templates() == ["api", "simple", "web"]
    assert list(tmp_path.iterdir()) == []


def test_init_into_a_file_is_one_line(flask_stack, tmp_path):
    (tmp_path / "f").write_text("x")
    assert "is not a directory" in one_line_error(flask_stack("init", "f", cwd=tmp_path))


def test_failed_copy_leaves_nothing(tmp_path, monkeypatch):
    real_copy = scaffold._copy_file
    calls = []

    def failing_copy(src, dst, *args, **kwargs):
        calls.append(src)
        if len(calls) == 3:
            raise OSError(28, "No space left on device", str(dst))
        return real_copy(src, dst, *args, **kwargs)

    monkeypatch.setattr(scaffold, "_copy_file", failing_copy)
    result = CliRunner().invoke(cli_module.cli, ["init", str(tmp_path / "p")], standalone_mode=False)
    assert len(calls) >= 3
    assert "No space left on device" in str(result.exception)
    assert "nothing was written" in str(result.exception)
    assert list(tmp_path.iterdir()) == []


def test_failed_move_restores_the_directory_exactly(tmp_path, monkeypatch):
    (tmp_path / "__init__.py").write_text("old = True\n")
    (tmp_path / "Pipfile").write_text("[packages]\n")
    before = tree(tmp_path)
    real_replace = os.replace
    calls = []

    def failing_replace(src, dst):
        calls.append(dst)
        if Path(dst) == tmp_path / "Pipfile" and len(calls) == failed_at[0]:  # the template's Pipfile moving in,
            raise OSError(5, "Input/output error", str(dst))  # after the user's was moved aside
        if Path(src) == tmp_path / "Pipfile":
            failed_at[0] = len(calls) + 1
        return real_replace(src, dst)

    failed_at = [0]

    monkeypatch.setattr(scaffold.os, "replace", failing_replace)
    with pytest.raises(Exception) as info:
        scaffold.init_project(tmp_path, overwrite=True)
    assert "the directory was restored" in str(info.value)
    monkeypatch.setattr(scaffold.os, "replace", real_replace)
    assert failed_at[0] and len(calls) > failed_at[0]  # that one failed, the rest put things back
    assert tree(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Pipfile", "__init__.py"]


def test_conflicting_directory_is_refused_before_any_change(tmp_path):
    (tmp_path / "Pipfile").mkdir()
    (tmp_path / "Pipfile" / "x").write_text("x")
    before = tree(tmp_path)
    with pytest.raises(Exception) as info:
        scaffold.init_project(tmp_path, overwrite=True)
    assert "is a directory; nothing was written" in str(info.value)
    assert tree(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Pipfile"]


def test_caches_in_a_template_are_not_copied(tmp_path, monkeypatch):
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATE, templates / "simple")
    (templates / "simple" / "__pycache__").mkdir(exist_ok=True)
    (templates / "simple" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    (templates / "simple" / ".pytest_cache").mkdir(exist_ok=True)
    monkeypatch.setattr(scaffold, "templates_dir", lambda: templates)
    written = scaffold.init_project(tmp_path / "p")
    names = {part for rel in written for part in rel.parts}
    assert "__pycache__" not in names and ".pytest_cache" not in names
    assert not (tmp_path / "p" / "__pycache__").exists()


def test_init_twice_leaves_the_project_alone(flask_stack, tmp_path):
    assert flask_stack("init", "demo", cwd=tmp_path).returncode == 0
    project = tmp_path / "demo"
    (project / "__init__.py").write_text("# edited\n")
    before = tree(project)
    again = flask_stack("init", "demo", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert again.stderr.splitlines()[:3] == [
        f"flask-stack: {project} already is a python-flask stack project; nothing written "
        "(--overwrite writes the template over it)",
        f"flask-stack: next: cd {project} && flask-stack run",
        f"flask-stack: next: cd {project} && flask-stack test"]
    assert tree(project) == before


@pytest.mark.parametrize("recorded", [True, False], ids=["recorded", "older-project"])
def test_init_with_another_template_on_a_project_is_refused(flask_stack, tmp_path, recorded):
    assert flask_stack("init", "demo", cwd=tmp_path).returncode == 0
    project = tmp_path / "demo"
    if not recorded:  # a project made before the template was recorded
        config = project / ".appsody-config.yaml"
        config.write_text("".join(line for line in config.read_text().splitlines(True) if "template" not in line))
    before = tree(project)
    again = flask_stack("init", "demo", "--template", "api", cwd=tmp_path)
    made_from = "the template 'simple'" if recorded else "another template"
    assert again.returncode == 1
    assert again.stderr == (f"flask-stack: {project} already is a python-flask stack project, made from {made_from}, "
                            f"not 'api'; nothing written (init another directory, or pass --overwrite to write 'api' "
                            f"over it)\n")
    assert tree(project) == before
    same = flask_stack("init", "demo", "--template", "simple", cwd=tmp_path)
    assert same.returncode == 0, same.stderr


def test_init_records_the_engine_the_commands_use(flask_stack, tmp_path):
    made = flask_stack("init", "demo", "--engine", "podman", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    project = tmp_path / "demo"
    assert "flask-stack-engine: podman" in (project / ".appsody-config.yaml").read_text().splitlines()
    assert f"flask-stack: engine podman recorded in {project}/.appsody-config.yaml" in made.stderr.splitlines()
    from flask_stack.engines import resolve_engine_name

    assert resolve_engine_name(None, False, project) == (
        "podman", "recorded in .appsody-config.yaml by `flask-stack init --engine`")
    assert resolve_engine_name("local", True, project) == ("local", "from STACK_ENGINE")
    assert resolve_engine_name(None, False, tmp_path)[0] == "local"
    again = flask_stack("init", "demo", "--engine", "local", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert resolve_engine_name(None, False, project)[0] == "local"


def test_init_list_names_every_template_with_one_line(flask_stack):
    result = flask_stack("init", "--list")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == scaffold.available_templates()
    for line in lines:
        name, description = line.split(None, 1)
        assert description.strip() and description == scaffold.describe_template(name)
    assert "simple  The smallest app: one Blueprint with a /hello route" in result.stdout


def test_init_says_how_to_put_the_cli_on_path_when_it_is_not(flask_stack, tmp_path):
    home = tmp_path / "home"
    (home / ".local" / "bin").mkdir(parents=True)
    (home / ".local" / "bin" / "flask-stack").symlink_to("/bin/true")  # README's link, made in this shell
    result = flask_stack("init", "demo", cwd=tmp_path, HOME=str(home), PATH="/usr/bin:/bin")
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"flask-stack: {home}/.local/bin is not on this shell's PATH: a new login shell has it (~/.profile adds it "
        'when it exists); or run: export PATH="$HOME/.local/bin:$PATH"')
    on_path = flask_stack("init", "demo", cwd=tmp_path, HOME=str(home), PATH=f"{home}/.local/bin:/usr/bin:/bin")
    assert on_path.stderr.splitlines()[-1] == f"flask-stack: next: cd {tmp_path / 'demo'} && flask-stack test"
