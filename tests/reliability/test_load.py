"""Sustained load on the production server serving the `simple` template: no failed request, no memory growth."""

from __future__ import annotations

import pytest
from testkit.serve import SERVERS, run_wrk

from .harness import TEMPLATE

pytestmark = pytest.mark.slow

# Long enough for every server's workers to reach their allocators' plateau: uWSGI's grow about 12% over their
# first ~40 s of load, then stay flat (4 further 20 s rounds: +0.3%), so after 5 s a leak-free uWSGI still
# grew 10.2% in the next 30 s. Growth measured after this is a leak, not warm-up.
WARMUP_SECONDS = 30
LOAD_SECONDS = 30
CONNECTIONS = 32
MAX_RSS_GROWTH = 0.10  # fraction of the workers' summed RSS after warm-up


@pytest.mark.parametrize("server", SERVERS)
def test_sustained_load_has_no_errors_and_no_memory_growth(server, start_server):
    srv = start_server(source=TEMPLATE, server=server, workers=2)
    workers = srv.worker_pids()

    warmup = run_wrk(srv.port, "/hello", WARMUP_SECONDS, CONNECTIONS)
    assert warmup.errors == 0, warmup.output
    rss_after_warmup = srv.worker_rss()

    load = run_wrk(srv.port, "/hello", LOAD_SECONDS, CONNECTIONS)
    rss_after_load = srv.worker_rss()

    assert load.requests > LOAD_SECONDS * 100, load.output  # it really was load, not a stalled server
    assert load.non_2xx == 0, load.output
    assert sum(load.socket_errors.values()) == 0, load.output
    # A restarted worker would reset its RSS and hide a leak; none may have crashed or been recycled.
    assert srv.worker_pids() == workers, srv.log_tail()
    growth = (rss_after_load - rss_after_warmup) / rss_after_warmup
    assert growth < MAX_RSS_GROWTH, (
        f"workers' RSS grew {growth:.1%} ({rss_after_warmup} -> {rss_after_load} bytes) over "
        f"{load.requests} requests"
    )
