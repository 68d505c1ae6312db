"""Process hygiene: orphans re-parented to the loop are reaped, also when it is PID 1 (as in a container)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

from testkit.need import missing
from testkit.procs import parent_of, zombies_of

from .conftest import HELLO, alive, children_of

ORPHAN_CODE = (
    "\nimport subprocess as _subprocess\n"
    "_subprocess.Popen(['sh', '-c', 'sleep 0.3 & exit 0'])\n"
)


def assert_no_zombies_for(pid: int, seconds: float = 2.0) -> None:
    """Fail if ``pid`` keeps a zombie child for ``seconds`` (orphans exit after 0.3 s)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.2)
    assert zombies_of(pid) == []


def test_orphans_of_the_app_are_reaped(devloop, project):
    init = project / "__init__.py"
    init.write_text(init.read_text() + ORPHAN_CODE)
    loop = devloop("run", project)
    loop.wait_text(HELLO)
    assert_no_zombies_for(loop.proc.pid)
    assert loop.proc.poll() is None


def _unshare_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    try:
        return subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True,
                              timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def test_as_pid_1_reaps_and_stops_on_sigterm(devloop, project):
    if not _unshare_works():
        missing("cannot make a PID namespace here (unshare --pid needs CAP_SYS_ADMIN)")
    init = project / "__init__.py"
    init.write_text(init.read_text() + ORPHAN_CODE)
    loop = devloop("run", project, wrapper=("unshare", "--pid", "--fork", "--mount-proc", "--kill-child"))
    loop.wait_text(HELLO)
    unshare_kids = [pid for pid in children_of(loop.proc.pid) if parent_of(pid) == loop.proc.pid]
    assert len(unshare_kids) == 1
    pid1 = unshare_kids[0]
    with open(f"/proc/{pid1}/status") as f:
        assert [line.split()[-1] for line in f if line.startswith("NSpid:")] == ["1"]
    kids = children_of(pid1)
    assert kids
    assert_no_zombies_for(pid1)
    os.kill(pid1, signal.SIGTERM)
    assert loop.wait_exit(20) == 0, loop.output()
    assert not [pid for pid in kids if alive(pid)]
    assert "stopped" in loop.output()
