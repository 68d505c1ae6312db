"""``python -m devloop debug``: a DAP debugger on STACK_DEBUG_PORT in every app process, the Werkzeug debugger."""

from __future__ import annotations

import signal
import socket
import threading
import time

import pytest
import requests

from testkit.dap import add_greet_view, attach, break_in_view

from testkit.procs import descendants

from .conftest import HELLO, alive, free_port


def _probe(port: int) -> None:
    """What a port check (``nc -z``, a "wait for port" task) does: connect, then close without a word."""
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass


def test_debugpy_breakpoint_in_a_view_after_probes_and_again_after_a_detach_and_a_reload(devloop, project):
    """VS Code's attach through `python -m devloop debug`: a breakpoint in the user's view stops the request
    there, a local is read, continue answers it. A port probe before attaching (debugpy issue 1308) does not
    stop the client from attaching, nor does a detach stop the next one, nor a reload."""
    init = project / "__init__.py"
    line, _ = add_greet_view(init)
    debug_port = free_port()
    loop = devloop("debug", project, env={"STACK_DEBUG_PORT": str(debug_port)})
    loop.wait_watching()
    for round in ("first attach", "after a detach", "after a reload"):
        if round == "after a reload":
            init.write_text(init.read_text().replace(HELLO, "debugged"))
            loop.wait_text("debugged", timeout=30)
        _probe(debug_port)
        _probe(debug_port)
        session = attach(debug_port, {str(init): [line]})
        try:
            name, (status, body, _) = break_in_view(session, f"{loop.url}/greet?name=dap", str(init), line, "name")
            assert (round, name, status, body) == (round, "'dap'", 200, "Hello, dap")
            assert session.request("disconnect")["success"] is True
        finally:
            session.close()
    assert "Traceback" not in loop.output()
    kids = list(descendants(loop.proc.pid))
    assert len(kids) >= 3  # the debug port's relay, the app process and debugpy's adapter
    loop.proc.send_signal(signal.SIGTERM)
    assert loop.wait_exit(20) == 0
    deadline = time.monotonic() + 5
    while any(alive(pid) for pid in kids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in kids if alive(pid)]


def test_breakpoint_on_a_line_that_never_runs_is_never_reported(devloop, project):
    """The control of the test above: its check fails when the breakpoint's line does not run."""
    init = project / "__init__.py"
    _, never = add_greet_view(init)
    debug_port = free_port()
    loop = devloop("debug", project, env={"STACK_DEBUG_PORT": str(debug_port)})
    loop.wait_watching()
    session = attach(debug_port, {str(init): [never]})
    try:
        with pytest.raises(AssertionError, match="without stopping at"):
            break_in_view(session, f"{loop.url}/greet?name=dap", str(init), never, "name", timeout=30)
    finally:
        session.close()


def test_wait_serves_no_request_before_the_client_attaches(devloop, project):
    """STACK_DEBUG_WAIT=1 (`flask-stack debug --wait`): the app process waits for the debugger client before it
    serves; a request made meanwhile (and a port probe) is answered only once a client has attached."""
    init = project / "__init__.py"
    line, _ = add_greet_view(init)
    debug_port = free_port()
    loop = devloop("debug", project, env={"STACK_DEBUG_PORT": str(debug_port), "STACK_DEBUG_WAIT": "1"})
    loop.wait_log("waiting for a debugger client to attach")
    answered: dict[str, object] = {}
    early = threading.Thread(target=lambda: answered.update(r=requests.get(loop.url + "/hello", timeout=60)),
                             daemon=True)
    early.start()
    _probe(debug_port)
    early.join(3)  # the request waits in the listening socket's backlog
    assert early.is_alive() and not answered, answered
    assert "app ready" not in loop.output() and "debugger client attached" not in loop.output()
    session = attach(debug_port, {str(init): [line]})
    try:
        early.join(30)
        assert answered["r"].status_code == 200 and answered["r"].text == HELLO
        assert "debugger client attached" in loop.output()
        name, (status, body, _) = break_in_view(session, f"{loop.url}/greet", str(init), line, "name")
        assert (name, status, body) == ("'world'", 200, "Hello, world")
    finally:
        session.close()


def test_debug_mode_shows_werkzeug_debugger_on_errors(devloop, project):
    loop = devloop("debug", project, env={"STACK_DEBUG_PORT": str(free_port())})
    loop.wait_watching()
    init = project / "__init__.py"
    init.write_text(init.read_text() + "\n\n@blueprint.get('/boom')\ndef boom():\n    raise RuntimeError('kaboom')\n")
    response = loop.wait_for(lambda r: r.status_code == 500, path="/boom", timeout=30)
    assert "Werkzeug Debugger" in response.text and "kaboom" in response.text
