"""Helpers of the reliability tests beside ``testkit.serve`` (the production server, HTTP, wrk): the fixture
projects, /metrics samples, ``serve`` run to fail."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from testkit.serve import METRICS_SETTLE_SECONDS, REPO, SERVE, VENV_BIN, get

TEMPLATE = REPO / "templates" / "simple"
FIXTURE_USERAPP = Path(__file__).resolve().parent / "userapp"


def scrape(port: int) -> list:
    """Scrape /metrics ``METRICS_SETTLE_SECONDS`` after the requests made before the call (every worker's counts
    are there then) and return its samples (prometheus_client.parser Sample tuples)."""
    from prometheus_client.parser import text_string_to_metric_families

    time.sleep(METRICS_SETTLE_SECONDS)
    status, _, body = get(port, "/metrics", timeout=10)
    assert status == 200, f"/metrics answered {status}"
    return [s for family in text_string_to_metric_families(body.decode()) for s in family.samples]


def sample_value(samples, name: str, **labels) -> float:
    """Sum of the values of samples called ``name`` whose labels include ``labels``."""
    return sum(s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def series_keys(samples, ignore_labels=("pid",)) -> set:
    """The set of series identities (name + labels), leaving out series carrying any of ``ignore_labels``."""
    return {
        (s.name, tuple(sorted(s.labels.items())))
        for s in samples
        if not any(label in s.labels for label in ignore_labels)
    }


def run_serve(env_extra: dict, tmp_path, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run ``serve`` expecting it to fail fast; return the finished process (stdout+stderr in .stdout). Its temporary
    files go under ``tmp_path`` (TMPDIR)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STACK_", "PROMETHEUS_")) and k != "WEB_CONCURRENCY"}
    env.update(PATH=f"{VENV_BIN}:{env.get('PATH', '/usr/bin:/bin')}", STACK_HOST="127.0.0.1", PORT="1",
               STACK_PROBE_PORT="0", TMPDIR=str(tmp_path))
    env.pop("PYTHONPATH", None)
    env.update(env_extra)
    return subprocess.run(
        [str(SERVE)], env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        timeout=timeout,
    )


def left_in(tmp_path) -> list:
    """What ``serve`` left in its TMPDIR (the test's own files aside)."""
    return [p.name for p in tmp_path.iterdir() if p.name.startswith(("flask-stack", "tmp"))]
