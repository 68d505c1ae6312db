"""Request ids: the incoming ``X-Request-ID`` when it is safe to echo and log, else a new one from the operating
system's CSPRNG.

An incoming id is kept when it is 1-128 characters, every one from ``A-Z a-z 0-9 . _ : - + = / @``. Any other id
(empty, longer, or with any other character: spaces, quotes, ``%``, control characters) is replaced by a fresh one,
never cleaned or cut: a cleaned id could equal another request's, and a log search for the id the client sent would
find nothing either way. New ids are 32 lowercase hex digits (128 bits) from ``os.urandom``: unpredictable from any
number of earlier ids, and different in every forked worker without reseeding. This module must not use ``random``
(a test checks).
"""

from __future__ import annotations

import os
import re

REQUEST_ID_HEADER = "X-Request-ID"
#: Longest incoming id kept (characters).
MAX_REQUEST_ID = 128
_SAFE = re.compile(r"[A-Za-z0-9._:\-+=/@]{1,%d}" % MAX_REQUEST_ID)
_urandom = os.urandom


def new_request_id() -> str:
    """Return a new request id: 32 lowercase hex digits, 128 bits from ``os.urandom`` (the kernel's CSPRNG)."""
    return _urandom(16).hex()


def request_id_from(header: str | None) -> str:
    """Return the request id for a request whose ``X-Request-ID`` header is ``header`` (None: absent): ``header``
    itself when it is 1-128 safe characters, else a new id (:func:`new_request_id`)."""
    if header and _SAFE.fullmatch(header):
        return header
    return _urandom(16).hex()
