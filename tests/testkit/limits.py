"""Strict xfails that check the failure they document: a known limit of a third-party server, written down.

A test marked with :func:`known_limit` passes as "xfailed" only when it raises :class:`KnownLimit`, which
:func:`documented` raises when the measured outcome is the failure the reason describes (the status line, the
empty answer, the stalled requests). Any other failure (a server that never started, a timeout, another status)
fails the test; the limit lifted (the test's own assertions pass) is an XPASS, which ``strict`` fails too.
"""

from __future__ import annotations

import pytest


class KnownLimit(Exception):
    """The documented failure happened, as documented."""


def known_limit(reason: str) -> pytest.MarkDecorator:
    """A strict xfail that only :class:`KnownLimit` satisfies."""
    return pytest.mark.xfail(strict=True, raises=KnownLimit, reason=reason)


def documented(failure: bool, reason: str, measured: object = "") -> None:
    """Raise :class:`KnownLimit` when ``failure`` (the documented failure was measured); else return, and the test's
    own assertions decide."""
    if failure:
        raise KnownLimit(f"{reason} (measured: {measured!r})"[:2000])
