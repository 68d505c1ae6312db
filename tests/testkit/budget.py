"""Time budgets: pytest-timeout (``timeout = 300`` in pyproject.toml) covers a test's fixture setup as well as the
test, so a wait longer than the budget that covers it could never be reached (pytest-timeout would fire first).

A test whose own waits add up to more than 300 s says so with ``@pytest.mark.timeout(N)``; a session or module
fixture that builds something (a venv, an image) adds its own bound to every test that uses it, through
:func:`extend_for_fixtures` in the directory's ``conftest.py`` (the first test to use it pays for the build).
"""

from __future__ import annotations

import pytest

DEFAULT_SECONDS = 300.0  # pyproject.toml's [tool.pytest.ini_options] timeout


def extend_for_fixtures(items: list[pytest.Item], seconds_by_fixture: dict[str, float]) -> None:
    """Give each item that uses a fixture of ``seconds_by_fixture`` that many more seconds than its own budget
    (its ``timeout`` marker, else the default)."""
    for item in items:
        extra = sum(seconds for name, seconds in seconds_by_fixture.items() if name in item.fixturenames)
        if not extra:
            continue
        own = item.get_closest_marker("timeout")
        base = float(own.args[0]) if own is not None and own.args else DEFAULT_SECONDS
        item.add_marker(pytest.mark.timeout(base + extra))
