"""``python -m devloop debug``: a DAP debugger on STACK_DEBUG_PORT in every app process, the Werkzeug debugger."""

from __future__ import annotations

import signal
import time

from .conftest import HELLO, alive, children_of, free_port
from testkit.dap import dap_initialize



def test_debug_mode_answers_dap_initialize_and_again_after_reload(devloop, project):
    debug_port = free_port()
    loop = devloop("debug", project, env={"STACK_DEBUG_PORT": str(debug_port)})
    loop.wait_watching()
    response = dap_initialize(debug_port)
    assert response["success"] is True
    assert response["body"]["supportsConfigurationDoneRequest"] is True
    init = project / "__init__.py"
    init.write_text(init.read_text().replace(HELLO, "debugged"))
    loop.wait_text("debugged", timeout=30)
    assert dap_initialize(debug_port)["success"] is True
    assert "Traceback" not in loop.output()
    kids = children_of(loop.proc.pid)
    assert len(kids) >= 2  # the app process and debugpy's adapter
    loop.proc.send_signal(signal.SIGTERM)
    assert loop.wait_exit(20) == 0
    deadline = time.monotonic() + 5
    while any(alive(pid) for pid in kids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in kids if alive(pid)]


def test_debug_mode_shows_werkzeug_debugger_on_errors(devloop, project):
    loop = devloop("debug", project, env={"STACK_DEBUG_PORT": str(free_port())})
    loop.wait_watching()
    init = project / "__init__.py"
    init.write_text(init.read_text() + "\n\n@blueprint.get('/boom')\ndef boom():\n    raise RuntimeError('kaboom')\n")
    response = loop.wait_for(lambda r: r.status_code == 500, path="/boom", timeout=30)
    assert "Werkzeug Debugger" in response.text and "kaboom" in response.text
