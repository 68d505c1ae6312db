"""``python -m devloop test``: the stack's checks plus the project's tests, pytest's exit status."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from .conftest import HELLO

#: the stack's checks (server/checks), as JUnit names them
STACK_CHECKS = sorted(["test_health_is_up", "test_probe_is_up[/health/live]", "test_probe_is_up[/health/ready]",
                       "test_probe_is_up[/health/started]", "test_metrics_parse_and_count",
                       "test_apispec_lists_user_routes", "test_user_blueprints_registered"])


def test_template_tests_pass_with_junit_report(devloop, project, tmp_path):
    report = tmp_path / "report.xml"
    loop = devloop("test", project, "--junitxml", str(report))
    assert loop.wait_exit(120) == 0, loop.output()
    out = loop.output()
    assert "test_hello.py" in out and "passed" in out
    suites = ET.parse(report).getroot()
    cases = [case.get("name") for case in suites.iter("testcase")]
    assert "test_hello_says_hello" in cases
    assert sorted(c for c in cases if c != "test_hello_says_hello") == STACK_CHECKS, cases


def test_failing_test_gives_nonzero_status(devloop, project):
    init = project / "__init__.py"
    init.write_text(init.read_text().replace(f'return "{HELLO}"', 'return "Goodbye"'))
    loop = devloop("test", project)
    assert loop.wait_exit(120) == 1, loop.output()
    assert "test_hello_says_hello" in loop.output() and "failed" in loop.output()


def test_broken_user_code_fails_the_tests_without_hanging(devloop, project):
    (project / "__init__.py").write_text("def broken(:\n")
    loop = devloop("test", project)
    assert loop.wait_exit(120) not in (0, None)
    assert "SyntaxError" in loop.output()


def test_watch_reruns_on_save(devloop, project):
    loop = devloop("test", project, "--watch")
    loop.wait_log("tests finished with status 0", timeout=120)
    init = project / "__init__.py"
    init.write_text(init.read_text().replace(f'return "{HELLO}"', 'return "Goodbye"'))
    loop.wait_log("tests finished with status 1", timeout=120)
    assert loop.proc.poll() is None
