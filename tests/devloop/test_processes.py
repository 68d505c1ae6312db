"""Process hygiene: orphans re-parented to the loop are reaped, also when it is PID 1 (as in a container)."""

from __future__ import annotations

import os
import signal
import time

from testkit.procs import alive, children_of, descendants, pid_namespace_wrapper

from .conftest import HELLO

ORPHAN_SECONDS = "3.21"  # the orphan's lifetime, also its mark in the process table
ORPHAN_CODE = (
    "\nimport subprocess as _subprocess\n"
    f"_subprocess.Popen(['sh', '-c', 'sleep {ORPHAN_SECONDS} & exit 0'])\n"
)


def assert_orphan_adopted_and_reaped(reaper: int, timeout: float = 20.0) -> None:
    """The app's orphan (``sleep 3.21``, its shell gone at once) becomes a child of ``reaper`` and, once it has
    exited, is reaped: its pid vanishes from the process table (a zombie would keep it)."""
    deadline = time.monotonic() + timeout
    mark = f"sleep\0{ORPHAN_SECONDS}\0".encode()
    orphan = None
    while orphan is None:
        for pid in children_of(reaper):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if f.read() == mark:
                        orphan = pid
            except OSError:
                pass
        assert orphan is not None or time.monotonic() < deadline, f"no orphan re-parented to {reaper}"
        time.sleep(0.01)
    while os.path.exists(f"/proc/{orphan}"):
        assert time.monotonic() < deadline, f"orphan {orphan} of {reaper} not reaped ({open(f'/proc/{orphan}/stat').read()})"
        time.sleep(0.01)


def test_orphans_of_the_app_are_reaped(devloop, project):
    init = project / "__init__.py"
    init.write_text(init.read_text() + ORPHAN_CODE)
    loop = devloop("run", project)
    loop.wait_text(HELLO)
    assert_orphan_adopted_and_reaped(loop.proc.pid)
    assert loop.proc.poll() is None


def test_as_pid_1_reaps_and_stops_on_sigterm(devloop, project):
    wrapper = pid_namespace_wrapper()
    init = project / "__init__.py"
    init.write_text(init.read_text() + ORPHAN_CODE)
    loop = devloop("run", project, wrapper=wrapper)
    loop.wait_text(HELLO)
    unshare_kids = [pid for pid in children_of(loop.proc.pid) if alive(pid)]
    assert len(unshare_kids) == 1
    pid1 = unshare_kids[0]
    with open(f"/proc/{pid1}/status") as f:
        assert [line.split()[-1] for line in f if line.startswith("NSpid:")] == ["1"]
    kids = list(descendants(pid1))
    assert kids
    assert_orphan_adopted_and_reaped(pid1)
    os.kill(pid1, signal.SIGTERM)
    assert loop.wait_exit(20) == 0, loop.output()
    assert not [pid for pid in kids if alive(pid)]
    assert "stopped" in loop.output()
