"""``python -m devloop debug``: a DAP debugger on STACK_DEBUG_PORT in every app process, the Werkzeug debugger."""

from __future__ import annotations

import json
import signal
import socket
import time

from .conftest import HELLO, alive, children_of, free_port

DAP_TIMEOUT = 30.0  # seconds for the debug adapter to answer


def _read_message(sock: socket.socket, buffer: bytearray) -> dict:
    """Read one DAP message (``Content-Length`` header, blank line, JSON body)."""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("debug adapter closed the connection")
        buffer += chunk
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("debug adapter closed the connection")
        rest += chunk
    buffer[:] = rest[length:]
    return json.loads(rest[:length])


def dap_initialize(port: int, timeout: float = DAP_TIMEOUT) -> dict:
    """Connect to 127.0.0.1:port (retrying until ``timeout``), send ``initialize``, return its response."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    with sock:
        sock.settimeout(max(1.0, deadline - time.monotonic()))
        body = json.dumps({"seq": 1, "type": "request", "command": "initialize",
                           "arguments": {"clientID": "devloop-tests", "adapterID": "debugpy", "linesStartAt1": True,
                                         "columnsStartAt1": True, "pathFormat": "path"}}).encode()
        sock.sendall(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        buffer = bytearray()
        while True:
            message = _read_message(sock, buffer)
            if message.get("type") == "response" and message.get("command") == "initialize":
                return message


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
