"""A minimal Debug Adapter Protocol client, the one every debugger test uses: enough to do what VS Code does to
attach (``attach``), stop at a breakpoint in a view (``break_in_view``) and read a variable there.

DAP messages are JSON bodies framed by a ``Content-Length: N`` header and a blank line (the same base protocol
as LSP; see the DAP specification's "Base Protocol").
"""

from __future__ import annotations

import socket
import threading
import time

from pathlib import Path

from .dapwire import INITIALIZE_ARGUMENTS, dap_initialize, frame, read_message  # noqa: F401 - re-exported
from .net import http_get

#: A view appended to a Blueprint-shape project (``blueprint``) by :func:`add_greet_view`: a local to read at the
#: line that runs on every request, and a line that never runs (a breakpoint there must not be hit).
GREET_VIEW = """

from flask import request as _greet_request


@blueprint.get("/greet")
def greet():
    name = _greet_request.args.get("name", "world")
    if name == "a name no test sends":
        name = "never"  # NEVER RUNS
    return "Hello, " + name  # STOPS HERE
"""

class DapSession:
    """One DAP client connection: send requests, wait for their responses and for events.

    Args:
        port (int): the debug adapter's TCP port on ``host``.
        host (str): address to connect to.
        timeout (float): seconds to keep retrying the connection (the adapter may still be starting).
    """

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 30.0):
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.create_connection((host, port), timeout=5)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        self.buffer = bytearray()
        self.seq = 0
        self.events: list[dict] = []
        self.responses: dict[int, dict] = {}

    def close(self) -> None:
        """Close the connection."""
        self.sock.close()

    def send(self, command: str, **arguments: object) -> int:
        """Send the request ``command`` with ``arguments``; return its sequence number."""
        self.seq += 1
        self.sock.sendall(frame({"seq": self.seq, "type": "request", "command": command, "arguments": arguments}))
        return self.seq

    def _next(self, deadline: float) -> dict:
        self.sock.settimeout(max(0.1, deadline - time.monotonic()))
        return read_message(self.sock, self.buffer)

    def response(self, seq: int, timeout: float = 30.0) -> dict:
        """Wait for the response to request ``seq`` (events meanwhile are kept); return it.

        Raises:
            OSError: no response within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while seq not in self.responses:
            self._keep(self._next(deadline))
        return self.responses.pop(seq)

    def _keep(self, message: dict) -> None:
        if message.get("type") == "response":
            self.responses[message.get("request_seq")] = message
        elif message.get("type") == "event":
            self.events.append(message)

    def request(self, command: str, timeout: float = 30.0, **arguments: object) -> dict:
        """Send ``command`` and return its response."""
        return self.response(self.send(command, **arguments), timeout)

    def event(self, name: str, timeout: float = 30.0) -> dict:
        """Return the first event called ``name`` (one seen before, or the next to arrive).

        Raises:
            OSError: none within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            for index, message in enumerate(self.events):
                if message.get("event") == name:
                    return self.events.pop(index)
            self._keep(self._next(deadline))


def add_greet_view(init: Path) -> tuple[int, int]:
    """Append :data:`GREET_VIEW` to ``init``; return (the line every ``GET /greet`` runs, a line it never runs)."""
    init.write_text(init.read_text() + GREET_VIEW)
    lines = init.read_text().splitlines()
    return (next(n for n, text in enumerate(lines, 1) if "# STOPS HERE" in text),
            next(n for n, text in enumerate(lines, 1) if "# NEVER RUNS" in text))


def attach(port: int, breakpoints: dict[str, list[int]], timeout: float = 60.0,
           host: str = "127.0.0.1") -> DapSession:
    """Attach to the debugger on ``host:port`` as VS Code does (``initialize``, ``attach``, the ``initialized``
    event, ``setBreakpoints`` per file, ``configurationDone``) and return the session.

    Args:
        breakpoints: remote file path (as the debuggee sees it) -> line numbers (1-based).
        timeout: seconds for the connection (retried while refused) and for each answer.

    Raises:
        AssertionError: a request failed, or a breakpoint was not verified at its line.
        OSError: the debugger did not answer within ``timeout``.
    """
    session = DapSession(port, host=host, timeout=timeout)
    try:
        initialized = session.request("initialize", timeout, **INITIALIZE_ARGUMENTS)
        assert initialized["success"] is True, initialized
        attaching = session.send("attach", justMyCode=False)
        session.event("initialized", timeout)
        for path, lines in breakpoints.items():
            placed = session.request("setBreakpoints", timeout, source={"path": path},
                                     breakpoints=[{"line": line} for line in lines])
            assert placed["success"] is True, placed
            assert [(b["verified"], b.get("line")) for b in placed["body"]["breakpoints"]] == \
                [(True, line) for line in lines], placed
        assert session.request("configurationDone", timeout)["success"] is True
        attached = session.response(attaching, timeout)
        assert attached["success"] is True, attached
    except BaseException:
        session.close()
        raise
    return session


def break_in_view(session: DapSession, url: str, path: str, line: int, variable: str,
                  timeout: float = 60.0) -> tuple[str, tuple[int, str, dict[str, str]]]:
    """GET ``url`` (in a thread), expect the debuggee to stop at ``path:line`` (a breakpoint set by
    :func:`attach`), read the local ``variable`` there, check the request is held, continue; return the variable's
    value (its DAP ``value`` text) and the request's answer ``(status, body, headers)``.

    Raises:
        AssertionError: the view answered without stopping (the line never ran), it stopped elsewhere or for
            another reason, the variable is not a local there, or no answer came after ``continue``.
    """
    answer: dict[str, object] = {}

    def fetch() -> None:
        try:
            answer["response"] = http_get(url, timeout=timeout)
        except OSError as exc:
            answer["error"] = exc

    request = threading.Thread(target=fetch, daemon=True)
    request.start()
    deadline = time.monotonic() + timeout
    stopped = None
    while stopped is None:
        try:
            stopped = session.event("stopped", timeout=0.5)
        except OSError:
            if not request.is_alive():
                raise AssertionError(f"{url} answered {answer} without stopping at {path}:{line}") from None
            if time.monotonic() > deadline:
                raise AssertionError(f"no stop at {path}:{line} within {timeout:.0f} s of GET {url}") from None
    thread_id = stopped["body"]["threadId"]
    assert stopped["body"]["reason"] == "breakpoint", stopped
    frames = session.request("stackTrace", timeout, threadId=thread_id)["body"]["stackFrames"]
    assert (frames[0]["source"]["path"], frames[0]["line"]) == (path, line), frames[0]
    scopes = session.request("scopes", timeout, frameId=frames[0]["id"])["body"]["scopes"]
    local = next(scope for scope in scopes if scope["name"].lower() == "locals")
    names = session.request("variables", timeout, variablesReference=local["variablesReference"])["body"]
    values = {v["name"]: v["value"] for v in names["variables"]}
    assert variable in values, f"{variable!r} is not a local at {path}:{line}: {sorted(values)}"
    assert request.is_alive() and not answer, f"the request was not held at the breakpoint: {answer}"
    assert session.request("continue", timeout, threadId=thread_id)["success"] is True
    request.join(timeout)
    assert "response" in answer, f"no answer from {url} after continue: {answer or 'still waiting'}"
    return values[variable], answer["response"]  # type: ignore[return-value]
