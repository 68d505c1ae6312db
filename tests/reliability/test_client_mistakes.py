"""Clients' mistakes in the production servers' logs: never ERROR, a WARNING at most once per kind per minute; a
large body (buffered by the server) is no warning at all."""

from __future__ import annotations

import re
import time

import pytest
from testkit.nginx import require_nginx
from testkit.serve import SERVERS, get, raw_exchange

from .test_bad_input import MALFORMED

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("front", ["none", "nginx"])
@pytest.mark.parametrize("kind", SERVERS)
def test_client_mistakes_are_warnings_once_per_kind(start_server, kind, front):
    """Every malformed request of test_bad_input three times over and bodies of 20 kB and 1 MB: the server keeps
    serving; its log has no ERROR, CRITICAL or traceback, no WARNING line twice (ids and addresses aside), at most one
    WARNING per kind of mistake sent, and none about the bodies; the same behind the nginx front, whose own lines
    about clients (an invalid chunked body, a body buffered to a file) are relayed by the same rule."""
    if front == "nginx":
        require_nginx()
    srv = start_server(server=kind, workers=1, env={"STACK_FRONT": front})
    since = len(srv.log_text())
    for _ in range(3):
        for payload in MALFORMED.values():
            try:
                raw_exchange(srv.port, payload, timeout=5)
            except (AssertionError, OSError):
                pass  # a server may close without an answer; what matters here is its log
    for size in (20_000, 1_000_000):
        status, _, body = get(srv.port, "/size", method="POST", body=b"x" * size,
                              headers={"Content-Type": "application/octet-stream"}, timeout=10)
        assert status == 200 and str(size).encode() in body
    assert get(srv.port, "/hello")[0] == 200
    time.sleep(0.5)  # buffered INFO lines (0.25 s)
    log = srv.log_text()[since:]
    assert not re.search(r"\[(ERROR|CRITICAL)\]|Traceback", log), log[-3000:]
    warnings = [re.sub(r"id=\w+|ip=[\d.]+|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", "", line)
                for line in log.splitlines() if "[WARNING]" in line]
    assert len(warnings) == len(set(warnings)) and len(warnings) <= len(MALFORMED), "\n".join(warnings)
    assert not [line for line in warnings if "buffered" in line.lower() or "/size" in line], warnings
