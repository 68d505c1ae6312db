"""Logging: the text and JSON line formats, one access line per request, the request id, werkzeug silenced."""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import urllib.request
from pathlib import Path

import pytest
from werkzeug.serving import make_server

TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \[(DEBUG|INFO|WARNING|ERROR|CRITICAL)\] .+$")


@pytest.fixture(autouse=True)
def restore_logging():
    """create_app configures the root logger; put the level back (and buffering off) afterwards."""
    from server.logs import StdoutHandler

    root = logging.getLogger()
    level = root.level
    yield
    root.setLevel(level)
    for handler in root.handlers:
        if isinstance(handler, StdoutHandler):
            handler.set_flush_seconds(0)


def access_lines(out: str, path: str) -> list[str]:
    return [line for line in out.splitlines() if f" {path} " in line or f'"path": "{path}"' in line]


def test_text_access_line(make_app, capsys):
    client = make_app("basic").test_client()
    capsys.readouterr()
    response = client.get("/hello", headers={"X-Request-ID": "req-42"})
    out = capsys.readouterr().out
    lines = access_lines(out, "/hello")
    assert len(lines) == 1
    line = lines[0]
    assert TEXT_LINE.match(line), line
    assert re.search(r"\[INFO\] GET /hello 200 \d+\.\dms id=req-42 client=127\.0\.0\.1$", line), line
    assert response.headers["X-Request-ID"] == "req-42"


def test_json_lines(make_app, capsys):
    client = make_app("basic", LOG_FORMAT="json").test_client()
    capsys.readouterr()
    client.get("/users/9?secret=1", headers={"X-Request-ID": "abc"})
    logging.getLogger("userapp").warning("custom %s", "event", extra={"order_id": 17})
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]  # every line is JSON
    access = [r for r in records if r["logger"] == "server.access"]
    assert len(access) == 1
    rec = access[0]
    assert rec["level"] == "INFO"
    assert rec["method"] == "GET" and rec["path"] == "/users/9" and rec["status"] == 200
    assert rec["request_id"] == "abc" and rec["client"] == "127.0.0.1"
    assert isinstance(rec["duration_ms"], float)
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d$", rec["time"])
    assert "secret" not in rec["message"]  # the query string is not logged
    custom = [r for r in records if r["logger"] == "userapp"][0]
    assert custom["message"] == "custom event" and custom["order_id"] == 17 and custom["level"] == "WARNING"


def test_json_traceback_field(make_app, capsys):
    make_app(None, LOG_FORMAT="json")
    capsys.readouterr()
    try:
        raise KeyError("k")
    except KeyError:
        logging.getLogger("x").exception("failed")
    record = json.loads(capsys.readouterr().out.strip())
    assert record["message"] == "failed"
    assert "KeyError" in record["traceback"]


def test_log_level(make_app, capsys):
    client = make_app("basic", LOG_LEVEL="WARNING").test_client()
    capsys.readouterr()
    client.get("/hello")
    assert access_lines(capsys.readouterr().out, "/hello") == []


@pytest.mark.parametrize("incoming", ["abc-123", "a.b_c:d-e+f=g/h@i", "x" * 128, "0"])
def test_safe_request_id_kept(make_app, incoming):
    """An incoming id of 1-128 safe characters is echoed as it came."""
    response = make_app(None).test_client().get("/health", headers={"X-Request-ID": incoming})
    assert response.headers["X-Request-ID"] == incoming


@pytest.mark.parametrize("incoming", [None, "", "<<>>", "a b;c<script>\"", "abc%0d%0aFAKE", "abc\tdef", "x" * 129,
                                      "caf\u00e9"])
def test_request_id_generated(make_app, incoming):
    """No id, or an unsafe one (any other character, or too long), gets a fresh random id: never a cleaned or
    cut copy of what the client sent."""
    headers = {} if incoming is None else {"X-Request-ID": incoming}
    client = make_app(None).test_client()
    first = client.get("/health", headers=headers).headers["X-Request-ID"]
    second = client.get("/health", headers=headers).headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", first) and re.fullmatch(r"[0-9a-f]{32}", second) and first != second


def test_request_ids_come_from_the_os_csprng(monkeypatch):
    """New ids are ``secrets.token_bytes``'s bytes in hex (the kernel's CSPRNG), read 256 ids at a time, 10,000 of
    them all different, none handed out twice across a fork; the module imports no ``random`` (Mersenne Twister:
    predictable from earlier outputs)."""
    import ast
    import secrets

    from server import requestid

    source = Path(requestid.__file__).read_text()
    imported = {alias.name.split(".")[0] for node in ast.walk(ast.parse(source))
                if isinstance(node, (ast.Import, ast.ImportFrom))
                for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")])}
    assert "random" not in imported and requestid._token_bytes is secrets.token_bytes
    ids = [requestid.new_request_id() for _ in range(10_000)]
    assert len(set(ids)) == 10_000 and all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    reads = []
    monkeypatch.setattr(requestid, "_token_bytes", lambda n: reads.append(n) or bytes(range(256)) * (n // 256))
    requestid._ready.clear()
    assert requestid.new_request_id() == bytes(range(16)).hex() and reads == [16 * requestid.IDS_PER_READ]
    assert requestid.new_request_id() == bytes(range(16, 32)).hex() and len(reads) == 1  # from the same read
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child's first id is a new read, never one of the parent's ready ids
        os.write(write, requestid.new_request_id().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 64).decode() == bytes(range(16)).hex() and len(reads) == 1  # the child's read, not ours
    assert requestid.new_request_id() == bytes(range(32, 48)).hex()


def test_control_characters_in_path_escaped(make_app, capsys):
    client = make_app("basic").test_client()
    capsys.readouterr()
    client.get("/x%0a2024-01-01 00:00:00 [INFO] forged")
    out = capsys.readouterr().out
    assert not any(line.startswith("2024-01-01") for line in out.splitlines())
    assert "/x\\n2024" in out


def test_real_server_logs_one_line_and_no_werkzeug_line(make_app, capsys):
    app = make_app("basic", TESTING=False)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        capsys.readouterr()
        url = f"http://127.0.0.1:{server.server_port}/hello"
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.read() == b"Hello, world!"
            request_id = response.headers["X-Request-ID"]
    finally:
        server.shutdown()
        thread.join(10)
        server.server_close()
    out = capsys.readouterr().out
    assert len(access_lines(out, "/hello")) == 1
    assert f"id={request_id}" in out
    assert "HTTP/1.1" not in out  # werkzeug's own request line is dropped


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_direct_access_line_matches_the_handlers_format(fmt):
    """``access_line`` (written without a LogRecord) gives the bytes the stack's formatter gives for the same
    record, at times around second boundaries and datetime's microsecond rounding."""
    from server.access_log import access_line
    from server.logs import ACCESS_LOGGER, configure_logging

    handler = configure_logging("INFO", fmt)
    times = [1700000000.0, 1700000000.9995, 1700000000.9999996, 1700000001.0004999, 1714563600.123456,
             1700000059.999, 1767225599.9999999]
    for created in times:
        for args in [("GET", "/hello", 200, 1.26, "abc", "127.0.0.1"),
                     ("POST", "/a b/ü", 503, 1234.56789, "x" * 32, "2001:db8::1"),
                     ("OTHER", "/\\x00", 404, 0.0, "-", "-")]:
            record = logging.getLogger(ACCESS_LOGGER).makeRecord(
                ACCESS_LOGGER, logging.INFO, __file__, 0, "%s %s %s %.1fms id=%s client=%s", args, None, "f",
                {"method": args[0], "path": args[1], "status": args[2], "duration_ms": round(args[3], 3),
                 "request_id": args[4], "client": args[5]})
            record.created = created
            record.msecs = (created - int(created)) * 1000
            assert access_line(fmt, created, *args) == handler.format(record), (created, args)


def test_access_line_still_reaches_other_handlers(make_app, capsys):
    """With a handler of the user's own on the root logger, the access line goes through logging: the user's
    handler gets the record (with its extra fields) and stdout still gets exactly one line."""
    client = make_app("basic").test_client()
    seen: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    extra = Collect()
    logging.getLogger().addHandler(extra)
    try:
        capsys.readouterr()
        client.get("/hello", headers={"X-Request-ID": "via-logging"})
    finally:
        logging.getLogger().removeHandler(extra)
    access = [r for r in seen if r.name == "server.access"]
    assert len(access) == 1 and access[0].request_id == "via-logging" and access[0].status == 200
    lines = access_lines(capsys.readouterr().out, "/hello")
    assert len(lines) == 1 and lines[0].endswith("id=via-logging client=127.0.0.1"), lines
    capsys.readouterr()
    client.get("/hello", headers={"X-Request-ID": "direct"})  # handler removed: the direct path again
    assert access_lines(capsys.readouterr().out, "/hello")[0].endswith("id=direct client=127.0.0.1")
    assert len(access) == 1


def test_access_line_respects_handler_level_and_filters(make_app, capsys):
    """A level or filter set on the stack's handler still applies to access lines."""
    from server.logs import StdoutHandler

    client = make_app("basic").test_client()
    handler = next(h for h in logging.getLogger().handlers if isinstance(h, StdoutHandler))
    drop = logging.Filter("nothing-matches")
    handler.addFilter(drop)
    try:
        capsys.readouterr()
        client.get("/hello")
        assert access_lines(capsys.readouterr().out, "/hello") == []
    finally:
        handler.removeFilter(drop)
    handler.setLevel(logging.WARNING)
    try:
        client.get("/hello")
        assert access_lines(capsys.readouterr().out, "/hello") == []
    finally:
        handler.setLevel(logging.NOTSET)
    client.get("/hello")
    assert len(access_lines(capsys.readouterr().out, "/hello")) == 1


def test_user_hooks_see_request_id_and_access_line_sees_final_status(make_app, capsys):
    """The stack's observation starts before the user's before_request (which sees g.request_id) and ends after
    the user's after_request (a status it changes is the one logged and counted)."""
    from flask import g

    app = make_app("basic")
    seen = []

    @app.before_request
    def user_before():
        seen.append(g.request_id)

    @app.after_request
    def user_after(response):
        response.status_code = 418
        return response

    client = app.test_client()
    capsys.readouterr()
    response = client.get("/hello", headers={"X-Request-ID": "hooked"})
    assert seen == ["hooked"] and response.status_code == 418
    assert response.headers["X-Request-ID"] == "hooked"
    lines = access_lines(capsys.readouterr().out, "/hello")
    assert len(lines) == 1 and " 418 " in lines[0], lines
    scrape = client.get("/metrics").get_data(as_text=True)
    assert 'http_requests_total{endpoint="/hello",method="GET",status="418"} 1.0' in scrape


def test_buffered_lines_wait_and_a_warning_writes_them_in_order(make_app, capsys):
    """STACK_LOG_FLUSH_SECONDS > 0: access and INFO lines wait in the process; a WARNING writes every pending
    line, then itself, so the order of lines is kept and the warning is not delayed."""
    client = make_app("basic", LOG_FLUSH_SECONDS=60).test_client()
    capsys.readouterr()
    client.get("/hello", headers={"X-Request-ID": "first"})
    logging.getLogger("userapp").info("info after the first request")
    client.get("/hello", headers={"X-Request-ID": "second"})
    assert capsys.readouterr().out == ""  # all pending (60 s interval)
    logging.getLogger("userapp").warning("now write everything")
    lines = capsys.readouterr().out.splitlines()
    assert "userapp loaded from" in lines[0]  # create_app's own INFO line was pending too
    # Access lines are batched (server.request_batch): the first request's may follow the INFO line logged after
    # it, but both come before the warning, in their own order.
    access = [line for line in lines if " GET /hello 200 " in line]
    assert access[0].endswith("id=first client=127.0.0.1") and access[1].endswith("id=second client=127.0.0.1"), lines
    assert any(line.endswith("info after the first request") for line in lines[1:4])
    assert lines[4].endswith("now write everything") and len(lines) == 5, lines


def test_buffered_lines_are_written_within_the_interval(make_app, capsys):
    import time

    client = make_app("basic", LOG_FLUSH_SECONDS=0.2).test_client()
    capsys.readouterr()
    client.get("/hello", headers={"X-Request-ID": "soon"})
    deadline = time.monotonic() + 5
    out = ""
    while "id=soon" not in out and time.monotonic() < deadline:
        time.sleep(0.05)
        out += capsys.readouterr().out
    assert "id=soon" in out, "a buffered line was not written within 5 s (interval 0.2 s)"


def test_buffering_off_writes_pending_lines_at_once(make_app, capsys):
    from server.logs import configure_logging

    client = make_app("basic", LOG_FLUSH_SECONDS=60).test_client()
    capsys.readouterr()
    client.get("/hello", headers={"X-Request-ID": "pending"})
    assert "id=pending" not in capsys.readouterr().out
    configure_logging("INFO", "text", 0)
    assert "id=pending" in capsys.readouterr().out


def test_buffered_lines_are_written_at_exit_and_not_twice_after_fork(tmp_path):
    """A process's pending lines are written at exit (atexit), once: a forked child does not write the lines its
    parent had pending, only its own."""
    import subprocess
    import sys

    from .support import PROJECT

    script = tmp_path / "fork.py"
    script.write_text(
        "import logging, os, sys\n"
        f"sys.path.insert(0, {str(PROJECT)!r})\n"
        "from server.logs import configure_logging, flush_pending_lines\n"
        "configure_logging('INFO', 'text', 60)\n"
        "logging.getLogger('app').info('from the parent')\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    logging.getLogger('app').info('from the child')\n"
        "    flush_pending_lines()\n"
        "    os._exit(0)\n"
        "os.waitpid(pid, 0)\n"
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split("] ", 1)[1] for line in lines] == ["from the child", "from the parent"], lines


def test_a_batch_of_access_lines_gives_each_line_its_own_second(monkeypatch, capsys):
    """``log_access_records`` (the batched access lines) writes the bytes ``access_line`` gives for each request at
    its own end time, when the batch lies in one second and when it spans two; paths and clients that need it are
    escaped."""
    import time
    import types

    from server import access_log
    from server.access_log import access_line, log_access_records
    from server.logs import configure_logging

    configure_logging("INFO", "text", 0)
    capsys.readouterr()
    clock = types.SimpleNamespace(time=lambda: 1_700_000_000.0, perf_counter=lambda: 0.0, strftime=time.strftime,
                                  localtime=time.localtime)
    monkeypatch.setattr(access_log, "time", clock)
    for ends in ([0.2, 0.3, 0.4], [0.95, 0.999, 1.02, 1.5]):
        records = [(end - 0.0012, end, "200 OK", "GET", "/a", f"/a/{index}\n", f"id{index}",
                    "127.0.0.1" if index else None) for index, end in enumerate(ends)]
        log_access_records(records)
        expected = [access_line("text", 1_700_000_000.0 + end, "GET", f"/a/{index}\\n", 200, 1.2, f"id{index}",
                                "127.0.0.1" if index else "-") for index, end in enumerate(ends)]
        assert capsys.readouterr().out.splitlines() == expected
