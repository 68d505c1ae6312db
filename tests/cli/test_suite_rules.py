"""Rules of the stack's own test suite, checked by reading its files: one place decides skip-or-fail."""

from __future__ import annotations

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


def test_the_rules_see_what_they_forbid():
    """Control: the patterns match the ways this file forbids."""
    for line in ('os.environ.get("CI") == "true"', "os.environ['CI']", 'os.getenv("CI", "")'):
        assert READS_CI.search(line), line
    for line in ("pytest.skip('x')", "pytest.importorskip('ptvsd')", "@pytest.mark.skipif(True, reason='x')"):
        assert SKIPS.search(line), line
    for line in ("pytest.mark.xfail(strict=True, reason=r)", "pytest.xfail('x')", "marks=xfail(reason='x')"):
        assert XFAILS.search(line), line
    assert not READS_CI.search('os.environ.get("CIRCLE")') and not SKIPS.search("skipped = 1")
