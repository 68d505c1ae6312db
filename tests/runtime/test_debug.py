"""start_debugger: a real process listens, and a DAP ``initialize`` request gets its response over TCP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from server.debug import start_debugger
from server.exceptions import DebuggerError
from testkit.dap import frame, read_message

from .support import free_port, subprocess_env

_CHILD = r"""
import logging, sys, time
from server.debug import start_debugger
from server.logs import configure_logging
configure_logging()
port = int(sys.argv[1])
start_debugger(port, host="127.0.0.1")
start_debugger(port, host="127.0.0.1")  # idempotent
print("LISTENING", flush=True)
time.sleep(120)
"""


@pytest.fixture
def debuggee():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(port)], env=subprocess_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        lines = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("LISTENING"):
                break
        assert lines and lines[-1].startswith("LISTENING"), "".join(lines)
        yield port, lines
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the debuggee and debugpy's adapter process
        proc.wait(10)


def test_dap_initialize_roundtrip(debuggee):
    port, lines = debuggee
    assert any("listening on 127.0.0.1:%d" % port in line for line in lines)
    assert any("already listening" in line for line in lines)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.settimeout(30)
        sock.sendall(frame({"seq": 1, "type": "request", "command": "initialize",
                             "arguments": {"clientID": "pytest", "adapterID": "debugpy", "linesStartAt1": True,
                                           "columnsStartAt1": True, "pathFormat": "path"}}))
        buffer = bytearray()
        for _ in range(20):
            message = read_message(sock, buffer)
            if message.get("type") == "response":
                break
        assert message["command"] == "initialize"
        assert message["request_seq"] == 1
        assert message["success"] is True
        assert isinstance(message.get("body"), dict) and message["body"].get("supportsConfigurationDoneRequest")


def test_port_in_use_is_a_clear_error():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code = ("import sys\nfrom server.debug import start_debugger\nfrom server.exceptions import DebuggerError\n"
                "try:\n    start_debugger(%d, host='127.0.0.1')\nexcept DebuggerError as e:\n"
                "    print('ERR', e)\n    sys.exit(3)\n" % port)
        proc = subprocess.run([sys.executable, "-c", code], env=subprocess_env(), capture_output=True, text=True,
                              timeout=120, start_new_session=True)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert f"cannot listen for the debugger on 127.0.0.1:{port}" in proc.stdout


@pytest.mark.parametrize("kwargs, message", [
    ({"kind": "pdb"}, "unknown debugger 'pdb'"),
    ({"port": 0}, "is not a TCP port"),
    ({"port": "x"}, "is not a TCP port"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(DebuggerError, match=message):
        start_debugger(**kwargs)


def test_ptvsd_missing_is_a_clear_error():
    try:
        import ptvsd  # noqa: F401
    except ImportError:
        with pytest.raises(DebuggerError, match="ptvsd is not installed"):
            start_debugger(free_port(), kind="ptvsd", host="127.0.0.1")
    else:
        pytest.skip("ptvsd is installed here")
