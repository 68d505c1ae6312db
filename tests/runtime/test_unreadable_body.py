"""A request body the server cannot read is the client's fault: 400 with the stack's error body, one WARNING line
without traceback, counted as 400. Real gunicorn and raw sockets for gunicorn's own errors (broken chunked
encoding, body cut short); the test client for werkzeug's ClientDisconnected."""

from __future__ import annotations

import logging
import subprocess
import sys
from dataclasses import dataclass

import pytest
from prometheus_client.parser import text_string_to_metric_families
from testkit.serve import raw_exchange

from .support import free_port, http_get, stop_group, subprocess_env, wait_ready, write_userapp

_USERAPP = '''
from flask import Blueprint, jsonify, request

blueprint = Blueprint("bodies", __name__)


@blueprint.route("/parse", methods=["POST"])
def parse():
    return jsonify(request.get_json())


@blueprint.route("/upload", methods=["POST"])
def upload():
    return {"bytes": len(request.get_data())}


@blueprint.route("/hello")
def hello():
    return "hello"
'''

HEAD = b"Host: t\r\nTransfer-Encoding: chunked\r\n"
JSON_HEADERS = HEAD + b"Content-Type: application/json\r\n"
HTML_HEADERS = HEAD + b"Accept: text/html\r\n"

# name: (request bytes, send EOF after it, expected body type, gunicorn exception named in the log line)
CASES = {
    "invalid chunk size": (b"POST /parse HTTP/1.1\r\n" + JSON_HEADERS + b"\r\nZZ\r\n{}\r\n0\r\n\r\n",
                           False, "json", "InvalidChunkSize"),
    "chunk missing terminator": (b"POST /upload HTTP/1.1\r\n" + HTML_HEADERS + b"\r\n2\r\n{}XX0\r\n\r\n",
                                 False, "html", "ChunkMissingTerminator"),
    "chunk cut short": (b"POST /upload HTTP/1.1\r\n" + HTML_HEADERS + b"\r\n10\r\n{\"a\"",
                        True, "html", "NoMoreData"),
}


@dataclass
class Served:
    port: int
    proc: subprocess.Popen


@pytest.fixture
def gunicorn_server(tmp_path):
    """gunicorn (1 worker, gthread) serving a user app with body-reading POST views on 127.0.0.1."""
    app_dir = write_userapp(tmp_path / "userapp", _USERAPP)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "1", "--threads", "2",
         "--graceful-timeout", "5", "server:app"],
        env=subprocess_env(STACK_USERAPP_DIR=str(app_dir)),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    try:
        assert wait_ready(f"http://127.0.0.1:{port}", proc), "gunicorn did not become ready"
        yield Served(port, proc)
    finally:
        stop_group(proc)


@pytest.mark.parametrize("case", list(CASES))
def test_unreadable_body_is_400_under_gunicorn(gunicorn_server, case):
    data, half_close, kind, _ = CASES[case]
    answer = raw_exchange(gunicorn_server.port, data, half_close=half_close)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b"\r\n", 1)[0].startswith(b"HTTP/1.1 400 "), answer[:500]
    assert b"Traceback" not in answer and b'File "' not in answer
    headers = head.decode("latin-1").lower()
    if kind == "json":
        assert "content-type: application/json" in headers
        assert b'"status": 400' in body and b'"title": "Bad Request"' in body
    else:
        assert "content-type: text/html" in headers
        assert b"<h1>400 Bad Request</h1>" in body
    assert http_get(f"http://127.0.0.1:{gunicorn_server.port}/hello") == (200, b"hello")  # server unharmed


def test_unreadable_bodies_counted_as_400_and_logged_once(gunicorn_server):
    for data, half_close, _, _ in CASES.values():
        assert raw_exchange(gunicorn_server.port, data, half_close=half_close).startswith(b"HTTP/1.1 400 ")
    status, body = http_get(f"http://127.0.0.1:{gunicorn_server.port}/metrics")
    assert status == 200
    counts: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == "http_requests_total" and sample.labels["method"] == "POST":
                key = (sample.labels["endpoint"], sample.labels["status"])
                counts[key] = counts.get(key, 0) + sample.value
    assert counts == {("/parse", "400"): 1.0, ("/upload", "400"): 2.0}  # and no 500 series
    output = stop_group(gunicorn_server.proc)
    assert gunicorn_server.proc.returncode == 0, output
    assert "Traceback" not in output and "[ERROR]" not in output, output
    warnings = [line for line in output.splitlines() if "[WARNING] unreadable request body:" in line]
    assert len(warnings) == 3, output  # one line per request
    for exception in {case[3] for case in CASES.values()}:
        assert any(f": {exception}" in line for line in warnings), (exception, warnings)
    assert any("POST /parse: InvalidChunkSize: Invalid chunk size: b'ZZ' id=" in line for line in warnings)


def _short_body_request(client, **kwargs):
    # Content-Length promises 100 bytes, 2 arrive: werkzeug's LimitedStream raises ClientDisconnected
    return client.post("/parse", data=b"{}", environ_overrides={"CONTENT_LENGTH": "100"}, **kwargs)


def test_client_disconnected_is_400_with_one_warning(make_app, tmp_path, caplog):
    write_userapp(tmp_path / "userapp", _USERAPP)
    app = make_app(None, USERAPP="userapp", USERAPP_DIR=str(tmp_path / "userapp"), TESTING=False)
    client = app.test_client()
    with caplog.at_level(logging.INFO):
        response = _short_body_request(client, content_type="application/json")
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["status"] == 400 and "ClientDisconnected" in error["detail"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].exc_info is None
    assert warnings[0].getMessage().startswith("unreadable request body: POST /parse: ClientDisconnected")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'http_requests_total{endpoint="/parse",method="POST",status="400"} 1.0' in metrics
    assert 'status="500"' not in metrics


def test_users_400_handler_applies_to_unreadable_bodies(make_app, tmp_path):
    source = _USERAPP + (
        "\n@blueprint.app_errorhandler(400)\n"
        "def bad(e):\n"
        "    return {'mine': e.description}, 400\n"
    )
    write_userapp(tmp_path / "userapp", source)
    client = make_app(None, USERAPP="userapp", USERAPP_DIR=str(tmp_path / "userapp")).test_client()
    response = _short_body_request(client, content_type="application/json")
    assert response.status_code == 400
    assert "could not be read" in response.get_json()["mine"]
