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
    assert ("stack checks: test_stack.py is the python-flask stack's (" in out
            and "not your project's; they check that your app works with the stack" in out), out
    suites = ET.parse(report).getroot()
    cases = [case.get("name") for case in suites.iter("testcase")]
    assert "test_hello_says_hello" in cases
    assert sorted(c for c in cases if c != "test_hello_says_hello") == STACK_CHECKS, cases


def test_the_stack_checks_are_not_announced_when_only_a_path_of_yours_runs(devloop, project):
    loop = devloop("test", project, "--", "tests")
    assert loop.wait_exit(120) == 0, loop.output()
    assert "test_hello.py" in loop.output() and "stack checks:" not in loop.output()


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


def test_a_test_file_that_fails_to_import_is_status_1_under_appsody(devloop, project):
    (project / "tests" / "test_broken.py").write_text("import no_such_module_here\n")
    plain = devloop("test", project)
    assert plain.wait_exit(120) == 2, plain.output()  # pytest's own status when not driven by the Appsody CLI
    driven = devloop("test", project, "--appsody")  # what APPSODY_TEST runs (image/Dockerfile-stack)
    assert driven.wait_exit(120) == 1, driven.output()
    lines = [line for line in driven.output().splitlines() if "[ERROR]" in line]
    assert len(lines) == 1 and lines[0].endswith(
        "pytest exited with status 2 (interrupted: errors while collecting the tests (a test file that fails to "
        "import, say)); reporting it as a test failure (1)"), driven.output()


def test_no_tests_is_status_1_under_appsody(devloop, project):
    loop = devloop("test", project, "--appsody", "--", "-k", "no_test_has_this_name")
    assert loop.wait_exit(120) == 1, loop.output()
    assert "pytest exited with status 5 (no tests collected)" in loop.output()
