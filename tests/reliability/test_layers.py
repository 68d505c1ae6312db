"""The production supervisor stays small: the process ``serve`` starts (PID 1 in a container) and the server's master
never import Flask, Werkzeug, flasgger or prometheus_client (issue 17), even when a worker dies and its metric files
are folded, and with nginx in front (the front's access lines are counted by a child process)."""

from __future__ import annotations

import os
import signal

import pytest
from testkit.net import wait_until
from testkit.serve import get

pytestmark = pytest.mark.slow

HEAVY = ("flask", "werkzeug", "flasgger", "prometheus_client", "jinja2")

# Written into a directory put on PYTHONPATH: each Python process of the server writes its sys.modules at exit.
SITECUSTOMIZE = """\
import atexit, os, sys
_out = os.environ.get("STACK_TEST_MODULES_OUT")
def _dump():
    with open(os.path.join(_out, "%d.txt" % os.getpid()), "w") as fh:
        fh.write("\\n".join(sorted(sys.modules)))
if _out:
    atexit.register(_dump)
"""


def _modules(directory, pid: int) -> set[str]:
    path = directory / f"{pid}.txt"
    assert path.exists(), f"process {pid} wrote no module list (did it exit normally?)"
    return {name.split(".")[0] for name in path.read_text().split()}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("server,front", [("gunicorn", "none"), ("gunicorn", "nginx"), ("granian", "nginx"),
                                          ("uwsgi", "nginx")])
def test_supervisor_imports_no_flask(start_server, tmp_path, server, front):
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    out = tmp_path / "modules"
    out.mkdir()
    srv = start_server(server=server, env={"STACK_FRONT": front, "PYTHONPATH": str(hook),
                                           "STACK_TEST_MODULES_OUT": str(out)})
    supervisor, master = srv.proc.pid, srv.master_pid()
    assert get(srv.port, "/hello")[0] == 200
    # a worker that counted a request (its counter file exists, written within 0.05 s): its counts are what a fold
    # keeps
    victim = wait_until(lambda: next((pid for pid in srv.worker_pids()
                                      if (srv.metrics_dir / f"counter_{pid}.db").exists()), None), 5)
    os.kill(victim, signal.SIGKILL)
    folded = srv.metrics_dir / "counter_folded.db"
    try:
        wait_until(lambda: True if folded.exists() else None, 20)  # the dead worker's counters folded
    except TimeoutError:
        raise AssertionError(f"worker {victim}'s counters not folded:\n{srv.log_tail()}") from None
    assert srv.stop() == 0, srv.log_tail()
    for pid in {supervisor, master}:
        heavy = sorted(_modules(out, pid) & set(HEAVY))
        assert heavy == [], f"process {pid} imported {heavy}"
    others = [int(p.stem) for p in out.iterdir() if int(p.stem) not in (supervisor, master)]
    # the fold's short-lived process (and the front's access relays) import prometheus_client: the hook works
    assert any("prometheus_client" in _modules(out, pid) for pid in others), others
