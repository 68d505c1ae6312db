"""Fixtures of the reliability tests: ``start_server`` starts the real production server and stops it afterwards."""

from __future__ import annotations

import pytest
from testkit.serve import SERVERS, ProductionServer, copy_project

from .harness import FIXTURE_USERAPP


@pytest.fixture
def start_server(tmp_path):
    """Factory: ``start_server(source=FIXTURE_USERAPP, server="gunicorn", workers=2, env=None, ready_path=...)``
    copies the user project to a temp dir, runs ``serve`` on it and returns the started ``ProductionServer``.
    Every server started is stopped (process group SIGTERM, then SIGKILL) when the test ends."""
    started: list[ProductionServer] = []

    def start(source=FIXTURE_USERAPP, server="gunicorn", workers=2, env=None, ready_path="/health/ready", **kw):
        index = len(started)
        workdir = tmp_path / f"server{index}"
        workdir.mkdir()
        project = copy_project(source, workdir / "project")
        srv = ProductionServer(project=project, workdir=workdir, server=server, workers=workers, env=dict(env or {}))
        started.append(srv)
        return srv.start(ready_path=ready_path, **kw)

    try:
        yield start
    finally:
        for srv in started:
            srv.stop()


@pytest.fixture(scope="module", params=SERVERS)
def server(request, tmp_path_factory):
    """One production server (2 workers, default settings) per server kind for a whole module whose cases do not
    change its state; a test may narrow the kinds with ``@pytest.mark.parametrize("server", [...], indirect=True)``."""
    workdir = tmp_path_factory.mktemp(f"{request.module.__name__.rsplit('.', 1)[-1]}-{request.param}")
    srv = ProductionServer(
        project=copy_project(FIXTURE_USERAPP, workdir / "project"), workdir=workdir, server=request.param, workers=2
    )
    try:
        yield srv.start()
    finally:
        srv.stop()
