"""Request ids: the incoming ``X-Request-ID`` when it is safe to echo and log, else a new one from the operating
system's CSPRNG.

An incoming id is kept when it is 1-128 characters, every one from ``A-Z a-z 0-9 . _ : - + = / @``. Any other id
(empty, longer, or with any other character: spaces, quotes, ``%``, control characters) is replaced by a fresh one,
never cleaned or cut: a cleaned id could equal another request's, and a log search for the id the client sent would
find nothing either way. New ids are 32 lowercase hex digits (128 bits) from ``secrets.token_bytes`` (the kernel's
CSPRNG, ``os.urandom``): unpredictable from any number of earlier ids. This module must not use ``random`` (a test
checks).

The bytes are read ``IDS_PER_READ`` ids at a time (4 KiB, one ``getrandom`` system call per 256 ids): a system call
per request cost about 12 microseconds of wall time in a worker (the call and what it evicts), more than the rest
of the request id's work. Unused ids are dropped in a forked child (``os.register_at_fork``), so no two processes
hand out the same id; ids are never reused.
"""

from __future__ import annotations

import collections
import os
import re
import secrets

REQUEST_ID_HEADER = "X-Request-ID"
#: Longest incoming id kept (characters).
MAX_REQUEST_ID = 128
#: New ids read from the CSPRNG at once (16 bytes each).
IDS_PER_READ = 256
_SAFE = re.compile(r"[A-Za-z0-9._:\-+=/@]{1,%d}" % MAX_REQUEST_ID)
#: ``fullmatch`` of the safe-id pattern: a match object for an incoming id that is kept, else None.
is_safe_request_id = _SAFE.fullmatch
_token_bytes = secrets.token_bytes
_ready: collections.deque[str] = collections.deque()  # ids read and not handed out yet (thread-safe popleft)
#: The next id read already (``deque.popleft``; raises IndexError when none is left): ``new_request_id``'s common
#: case, which ``server.observe`` calls inline.
next_ready_id = _ready.popleft


def new_request_id() -> str:
    """Return a new request id: 32 lowercase hex digits, 128 bits of ``secrets.token_bytes`` (the kernel's CSPRNG),
    read ``IDS_PER_READ`` ids at a time. Thread-safe."""
    try:
        return next_ready_id()
    except IndexError:
        hexed = _token_bytes(16 * IDS_PER_READ).hex()
        _ready.extend([hexed[start:start + 32] for start in range(32, len(hexed), 32)])
        return hexed[:32]


os.register_at_fork(after_in_child=_ready.clear)
