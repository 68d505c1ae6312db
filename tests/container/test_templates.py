"""Every template's own tests pass in the development container (``flask-stack test --engine podman|docker``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import REPO, flask_stack

pytestmark = [pytest.mark.container, pytest.mark.slow]


@pytest.mark.timeout(960)  # `flask-stack test` of up to 900 s
@pytest.mark.parametrize("template", ["web", "api"])
def test_template_tests_pass_in_the_dev_container(engine: str, dev_image: str, tmp_path: Path, template: str) -> None:
    project = tmp_path / f"{template}-app"
    made = flask_stack("init", str(project), "--template", template)
    assert made.returncode == 0, made.stderr
    assert (project / "tests").is_dir() and (REPO / "templates" / template / "tests").is_dir()
    report = tmp_path / "junit.xml"
    result = flask_stack("test", "--engine", engine, "--project", str(project), "--junitxml", str(report),
                         timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    xml = report.read_text()
    assert 'failures="0"' in xml and 'errors="0"' in xml
    own = {"web": "test_signing_redirects_and_flashes_once", "api": "test_create_read_update_delete"}[template]
    assert own in xml
