"""Rules of the stack's own test suite, checked by reading its files: one place decides skip-or-fail."""

from __future__ import annotations

import ast
import re
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
DECIDER = TESTS / "testkit" / "need.py"
#: Reading the environment variable CI, in any of Python's ways.
READS_CI = re.compile(r"""(environ(\.get)?\s*[\[(]\s*|getenv\s*\(\s*)["']CI["']""")
#: Skipping a test, in any of pytest's ways.
SKIPS = re.compile(r"\bpytest\.(skip|importorskip)\s*\(|\bmark\.skip(if)?\b|\bskip_if\w*\(")

#: Expecting a failure, in any of pytest's ways.
XFAILS = re.compile(r"\bxfail\s*\(|\bmark\.xfail\b")


def _sources() -> list[Path]:
    """The suite's Python files but the decider and this file (the user apps under fixtures/ are no tests)."""
    return sorted(p for p in TESTS.rglob("*.py") if p not in (DECIDER, Path(__file__).resolve())
                  and "fixtures" not in p.relative_to(TESTS).parts)


def test_the_decider_reads_ci_and_skips():
    source = DECIDER.read_text()
    assert READS_CI.search(source) and "pytest.skip(" in source and "pytest.fail(" in source


def test_no_other_module_reads_ci():
    readers = [f"{p.relative_to(TESTS)}:{n}" for p in _sources()
               for n, line in enumerate(p.read_text().splitlines(), 1) if READS_CI.search(line)]
    assert readers == [], f"read CI through testkit.need (in_ci / missing), not here: {readers}"


def test_no_other_module_skips():
    """A missing component is testkit.need.missing's (skip locally, fail in CI); nothing else skips."""
    skips = [f"{p.relative_to(TESTS)}:{n}: {line.strip()}" for p in _sources()
             for n, line in enumerate(p.read_text().splitlines(), 1) if SKIPS.search(line)]
    assert skips == [], f"call testkit.need.missing(reason) instead: {skips}"


def test_every_xfail_checks_the_failure_it_documents():
    """A strict xfail is testkit.limits.known_limit (raises=KnownLimit), so only the documented failure is expected."""
    xfails = [f"{p.relative_to(TESTS)}:{n}: {line.strip()}" for p in _sources() if p.name != "limits.py"
              for n, line in enumerate(p.read_text().splitlines(), 1) if XFAILS.search(line)]
    assert xfails == [], f"use testkit.limits.known_limit and documented: {xfails}"


#: pytest-timeout's budget of a test without a marker (pyproject.toml; testkit.budget.DEFAULT_SECONDS).
DEFAULT_BUDGET = 300.0
#: Playwright's waits are in milliseconds: its calls are told apart by these names and keywords.
BROWSER_CALLS = {"goto", "click", "fill", "wait_for_selector", "expect_response", "expect_request"}
BROWSER_KEYWORDS = {"state", "wait_until"}


def _waits(test: ast.FunctionDef) -> float:
    """Seconds the literal ``timeout=`` arguments in ``test``'s body add up to (the worst case, in sequence)."""
    total = 0.0
    for call in ast.walk(test):
        if not isinstance(call, ast.Call):
            continue
        names = {kw.arg for kw in call.keywords}
        browser = (isinstance(call.func, ast.Attribute) and call.func.attr in BROWSER_CALLS) or names & BROWSER_KEYWORDS
        for kw in call.keywords:
            if kw.arg == "timeout" and isinstance(kw.value, ast.Constant) and isinstance(kw.value.value, (int, float)):
                total += kw.value.value / (1000 if browser else 1)
    return total


def _budget(test: ast.FunctionDef) -> float:
    for decorator in test.decorator_list:
        if isinstance(decorator, ast.Call) and ast.unparse(decorator.func).endswith("mark.timeout"):
            return float(ast.literal_eval(decorator.args[0]))
    return DEFAULT_BUDGET


def test_every_wait_fits_the_timeout_that_covers_it():
    """A test whose waits (its literal ``timeout=`` arguments, added up) exceed pytest-timeout's budget says so with
    ``@pytest.mark.timeout(N)``; else pytest-timeout would end it before its own wait could."""
    over = [f"{p.relative_to(TESTS)}:{test.lineno} {test.name}: {_waits(test):.0f} s of waits, {_budget(test):.0f} s"
            for p in _sources() if p.name.startswith("test_")
            for test in ast.parse(p.read_text()).body
            if isinstance(test, ast.FunctionDef) and test.name.startswith("test_") and _waits(test) > _budget(test)]
    assert over == [], f"add @pytest.mark.timeout(N) (testkit.budget): {over}"


def test_the_rules_see_what_they_forbid():
    """Control: the patterns match the ways this file forbids."""
    for line in ('os.environ.get("CI") == "true"', "os.environ['CI']", 'os.getenv("CI", "")'):
        assert READS_CI.search(line), line
    for line in ("pytest.skip('x')", "pytest.importorskip('ptvsd')", "@pytest.mark.skipif(True, reason='x')"):
        assert SKIPS.search(line), line
    for line in ("pytest.mark.xfail(strict=True, reason=r)", "pytest.xfail('x')", "marks=xfail(reason='x')"):
        assert XFAILS.search(line), line
    sample = ast.parse("@pytest.mark.timeout(400)\ndef test_x():\n    run(timeout=300)\n    run(timeout=200)\n"
                       "    page.goto(url, timeout=30_000)\n").body[0]
    assert (_waits(sample), _budget(sample)) == (530.0, 400.0)
    assert not READS_CI.search('os.environ.get("CIRCLE")') and not SKIPS.search("skipped = 1")
