"""stackdeps: which file declares a project's packages (the documented order, one line when two disagree), the hint
the runtime gives, requirement-file parsing, and the stack's ranges against its own lock. No network."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from stackdeps import build, detect, resolve

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = '[project]\nname = "demo"\nversion = "1"\ndependencies = ["markdown==3.7"]\n'


def lay_out(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@pytest.mark.parametrize(("files", "kind", "read"), [
    ({}, None, ()),
    ({"requirements.txt": "markdown\n"}, "requirements.txt", ("requirements.txt",)),
    ({"requirements.txt": "markdown\n", "requirements-dev.txt": "pytest-mock\n", "requirements/dev.txt": "x\n"},
     "requirements.txt", ("requirements.txt", "requirements-dev.txt")),
    ({"requirements.txt": "markdown\n", "requirements/dev.txt": "pytest-mock\n"},
     "requirements.txt", ("requirements.txt", "requirements/dev.txt")),
    ({"pyproject.toml": PYPROJECT}, "pyproject.toml", ("pyproject.toml",)),
    ({"pyproject.toml": PYPROJECT, "uv.lock": ""}, "uv.lock", ("pyproject.toml", "uv.lock")),
    ({"Pipfile": "[packages]\nmarkdown = '*'\n"}, "Pipfile", ("Pipfile", "Pipfile.lock")),
    # a pyproject.toml for tools only (no [project] dependencies) is not a declaration: requirements.txt is
    ({"pyproject.toml": "[tool.ruff]\nline-length = 100\n", "requirements.txt": "markdown\n"},
     "requirements.txt", ("requirements.txt",)),
    ({"pyproject.toml": "not toml [", "requirements.txt": "markdown\n"}, "requirements.txt", ("requirements.txt",)),
])
def test_detects_the_declaration(tmp_path, files, kind, read):
    found = detect.detect(lay_out(tmp_path, files))
    assert (found.kind, found.files, found.note) == (kind, read, None)


@pytest.mark.parametrize(("files", "taken", "left"), [
    ({"pyproject.toml": PYPROJECT, "uv.lock": "", "Pipfile": "[packages]\nflask = '*'\n"}, "uv.lock", "Pipfile"),
    ({"Pipfile": "[packages]\nflask = '*'\n", "requirements.txt": "markdown\n"}, "Pipfile", "requirements.txt"),
    ({"pyproject.toml": PYPROJECT, "requirements.txt": "inflection\n"}, "pyproject.toml", "requirements.txt"),
])
def test_two_that_disagree_are_one_line_saying_which_is_taken_and_why(tmp_path, files, taken, left):
    found = detect.detect(lay_out(tmp_path, files))
    assert found.note is not None and "\n" not in found.note
    assert found.note.startswith(f"using {taken} ") and f"not {left}" in found.note and "order" in found.note


def test_two_that_agree_say_nothing(tmp_path):
    found = detect.detect(lay_out(tmp_path, {"pyproject.toml": PYPROJECT, "requirements.txt": "Markdown==3.7\n"}))
    assert (found.kind, found.note) == ("pyproject.toml", None)


@pytest.mark.parametrize(("files", "hint"), [
    ({}, "requirements.txt"),
    ({"requirements.txt": ""}, "requirements.txt"),
    ({"pyproject.toml": PYPROJECT}, "pyproject.toml ([project] dependencies)"),
    ({"Pipfile": "[packages]\n"}, "Pipfile ([packages])"),
])
def test_the_hint_names_the_file_the_project_uses(tmp_path, files, hint):
    assert detect.hint(lay_out(tmp_path, files)) == hint


def test_module_not_found_names_the_projects_file(tmp_path):
    from server.exceptions import _missing_module_hint

    project = lay_out(tmp_path, {"pyproject.toml": PYPROJECT})
    assert _missing_module_hint("markdown", str(project), "userapp") == \
        " (add the package to your project's pyproject.toml ([project] dependencies))"


def test_poetry_only_project_is_told_what_to_add(tmp_path):
    project = lay_out(tmp_path, {"pyproject.toml": '[tool.poetry.dependencies]\npython = "^3.11"\nflask = "*"\n'})
    assert detect.detect(project).kind is None and detect.poetry_only(project)


def test_parses_continued_hashed_and_marked_lines():
    text = ("# c\nPyYAML==6.0.2 \\\n    --hash=sha256:aa \\\n    --hash=sha256:bb\n"
            "flask>=3.1 ; python_version >= '3.11'\n")
    assert resolve.parse_requirements(text) == [
        ("PyYAML==6.0.2", "pyyaml", "6.0.2", {"sha256:aa", "sha256:bb"}),
        ("flask>=3.1 ; python_version >= '3.11'", "flask", None, set()),
    ]


def test_uv_failures_are_one_line():
    conflict = ["error: No solution found when resolving dependencies",
                "  cause: Because you require flask>=3.1,<4 and flask==2.0.0, we can conclude that your",
                "         requirements are unsatisfiable."]
    assert resolve.one_line(conflict) == ("Because you require flask>=3.1,<4 and flask==2.0.0, we can conclude that "
                                          "your requirements are unsatisfiable")
    missing = ["  cause: Because zz-nope was not found in the package registry and you require zz-nope==1, ..."]
    assert resolve.one_line(missing) == "no package 'zz-nope' on the package index"


def test_the_stacks_lock_satisfies_its_own_ranges():
    lock = json.loads((REPO / "image" / "project" / "Pipfile.lock").read_text())
    for name, sections in (("runtime.txt", ("default",)), ("devtools.txt", ("develop",))):
        pins = {resolve.normalize(n): e["version"].lstrip("=") for s in sections for n, e in lock[s].items()}
        for line in (resolve.HERE / name).read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                requirement = Requirement(line)
                assert requirement.specifier.contains(pins[resolve.normalize(requirement.name)]), line


def test_build_usage_is_one_line(capsys):
    assert build.main(["nonsense"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
