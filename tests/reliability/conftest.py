"""Fixtures of the reliability tests: ``start_server`` starts the real production server and stops it afterwards."""

from __future__ import annotations

import pytest

from .harness import FIXTURE_USERAPP, ProductionServer, copy_project


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
