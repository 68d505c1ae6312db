"""Skip locally, fail in CI: the one place the test suite reads the environment variable ``CI``.

A test that needs a component the machine may lack (a container engine, Chromium, nginx, PostgreSQL, a PID
namespace, Debian's python3...) calls :func:`missing` when it is absent: locally the test is skipped with the
reason; in CI (``CI=true``, any case, as CI services set it) it fails, so CI never passes by skipping. No other
module calls ``pytest.skip`` for a missing component (``tests/cli/test_suite_rules.py`` checks it).
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def in_ci() -> bool:
    """True when the environment variable ``CI`` is ``true`` (any case)."""
    return os.environ.get("CI", "").strip().lower() == "true"


def missing(reason: str) -> NoReturn:
    """The test cannot run here because of ``reason`` (a missing component, and how to get it): skip it locally,
    fail it in CI.

    Raises:
        pytest.fail.Exception: in CI.
        pytest.skip.Exception: elsewhere.
    """
    if in_ci():
        pytest.fail(f"CI=true but {reason}", pytrace=False)
    pytest.skip(reason)
