"""The devfile's kind ``deploy`` (``odo deploy``): the templates' ``.devfile/Dockerfile`` and ``.dockerignore`` are
what flask_stack.odo makes of the stack's own, the devfile's deploy command builds that image and applies the
manifests ``flask-stack deploy`` writes, and ``init``/``devcontainer`` put those manifests where the devfile names
them. (The image built as odo builds it: tests/container/test_odo_deploy.py.)"""

from __future__ import annotations

import re
import shutil

import pytest
import yaml

from flask_stack import deploy, odo
from flask_stack.container_image import dev_image_tag
from flask_stack.paths import runtime_dir, templates_dir

TEMPLATES = ["api", "simple", "web"]


@pytest.mark.parametrize("template", TEMPLATES)
def test_templates_carry_the_generated_files(template):
    for rel, text in odo.expected_template_files().items():
        assert (templates_dir() / template / rel).read_text(encoding="utf-8") == text, (
            f"templates/{template}/{rel} is stale: python -c 'from flask_stack.odo import write_template_files; "
            f"write_template_files()'")


def test_every_copy_of_the_stack_dockerfile_reads_the_context_stage():
    stack = (runtime_dir() / "Dockerfile").read_text(encoding="utf-8")
    made = odo.odo_dockerfile(stack, dev_image_tag())
    assert f"ARG DEV_IMAGE={dev_image_tag()}\n" in made
    assert "FROM ${DEV_IMAGE} AS context\nCOPY . /project/userapp\n" in made
    copies = [line for line in made.splitlines() if line.startswith("COPY ")]
    plain = [line for line in copies if "--from=" not in line]
    assert plain == ["COPY . /project/userapp"], plain
    stack_copies = [line for line in stack.splitlines() if line.startswith("COPY ") and "--from=" not in line]
    assert len([line for line in copies if "--from=context " in line]) == len(stack_copies) > 3
    assert "COPY --from=context /project/userapp /project/userapp" in made
    # everything after the stack's first FROM is the same but for those COPY lines
    tail = stack[stack.index("\nFROM ") + 1:]
    assert [line for line in made[made.index("AS deps"):].splitlines() if not line.startswith("COPY ")] == \
        [line for line in tail[tail.index("AS deps"):].splitlines() if not line.startswith("COPY ")]
    with pytest.raises(ValueError):
        odo.odo_dockerfile("FROM x\nCOPY --chown=1 a b\n", "d")


def test_dockerignore_keeps_out_what_the_stack_keeps_out_of_userapp():
    lines = odo.odo_dockerignore((runtime_dir() / ".dockerignore").read_text(encoding="utf-8")).splitlines()
    entries = [line for line in lines if line and not line.startswith("#")]
    for private in ("**/.env", "**/.env.*", "**/instance", "**/*.sqlite", "**/*.sqlite3", "**/*.db"):
        assert private in entries
    for tooling in ("tests", "deploy", ".devcontainer", ".devfile", "devfile.yaml", ".vscode", ".appsody-config.yaml"):
        assert tooling in entries
    assert "Dockerfile" not in entries and "deps" not in entries and not any(e.startswith("userapp/") for e in entries)


def test_devfile_deploy_builds_the_image_and_applies_the_manifests_deploy_writes():
    devfile = yaml.safe_load((templates_dir() / "simple" / "devfile.yaml").read_text(encoding="utf-8"))
    components = {c["name"]: c for c in devfile["components"]}
    commands = {c["id"]: c for c in devfile["commands"]}
    (deploy_command,) = [c for c in commands.values() if c.get("composite", {}).get("group", {}).get("kind") == "deploy"]
    applied = [commands[cid]["apply"]["component"] for cid in deploy_command["composite"]["commands"]]
    image = components[applied[0]]["image"]
    assert image["imageName"] == "{{IMAGE}}" and image["autoBuild"] is False
    assert image["dockerfile"]["uri"] == odo.ODO_DOCKERFILE and image["dockerfile"]["buildContext"] == "."
    assert image["dockerfile"]["args"] == ["--build-arg", "DEV_IMAGE={{DEV_IMAGE}}",
                                           "--build-arg", "BASE_IMAGE={{BASE_IMAGE}}"]
    kube = [components[name]["kubernetes"] for name in applied[1:]]
    assert [k["uri"] for k in kube] == [f"deploy/{name}" for name in deploy.TEMPLATES]
    assert all(k["deployByDefault"] is False for k in kube)  # odo dev applies none of them
    assert devfile["variables"]["DEV_IMAGE"] == dev_image_tag()
    assert devfile["variables"]["IMAGE"] == "python-flask-app:latest"


def test_init_and_devcontainer_write_the_manifests_for_the_devfiles_image(flask_stack, tmp_path):
    project = tmp_path / "shop"
    assert flask_stack("init", str(project)).returncode == 0
    variables = yaml.safe_load((project / "devfile.yaml").read_text())["variables"]
    assert variables["IMAGE"] == "shop:latest"
    assert re.search(r"^\s+image: shop:latest$", (project / "deploy" / "deployment.yaml").read_text(), re.M)

    # an older project gets them from `flask-stack devcontainer`
    for rel in (".devfile", "deploy"):
        shutil.rmtree(project / rel)
    for rel in (".dockerignore", "devfile.yaml"):
        (project / rel).unlink()
    added = flask_stack("devcontainer", "--project", str(project))
    assert added.returncode == 0, added.stderr
    for rel in (".devfile/Dockerfile", ".dockerignore", "devfile.yaml", "deploy/deployment.yaml", "deploy/pdb.yaml"):
        assert rel in added.stdout and (project / rel).is_file(), added.stdout
    assert "  IMAGE: shop:latest\n" in (project / "devfile.yaml").read_text()

    # a user's own deploy/ and .dockerignore stay, through devcontainer and init --overwrite alike
    (project / "deploy" / "deployment.yaml").write_text("# mine\n")
    (project / ".dockerignore").write_text("secrets/\n")
    for argv in (["devcontainer", "--project", str(project)], ["init", str(project), "--overwrite"]):
        result = flask_stack(*argv)
        assert result.returncode == 0, result.stderr
        assert "deploy/ kept as it is (yours)" in result.stdout and ".dockerignore kept as it is (yours)" in \
            result.stdout, result.stdout
        assert (project / "deploy" / "deployment.yaml").read_text() == "# mine\n"
        assert (project / ".dockerignore").read_text() == "secrets/\n"
