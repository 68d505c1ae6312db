"""Request bodies against the real production server, on every server: the size limit (413 before the body is read;
a chunked body past it 413 too),
bodies cut short or broken (400 and one warning line), JSON nested too deeply (400, no traceback), and requests
the server itself could reject still answered by the app, counted and logged."""

from __future__ import annotations

import json
import re
import socket
import time

import pytest
from testkit.limits import documented, known_limit
from testkit.serve import SERVERS, get, raw_exchange, read_answer, rss_bytes, status_of

from .harness import sample_value, scrape

pytestmark = pytest.mark.slow

LIMIT = 16 * 1024 * 1024  # the default STACK_MAX_CONTENT_LENGTH


def _new_log(srv, since: int, until: str, timeout: float = 10.0) -> str:
    """The server's log written after offset ``since`` (characters), once it holds ``until`` (the access line the
    test waits for: INFO lines are written in batches every 0.25 s); AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while until not in (log := srv.log_text()[since:]):
        assert time.monotonic() < deadline, f"no {until!r} in the log within {timeout:.0f} s:\n{log[-3000:]}"
        time.sleep(0.05)
    return log


def _post_streaming(port: int, length: int, chunk: int = 1 << 20, timeout: float = 30.0) -> bytes:
    """POST /size announcing ``length`` bytes and sending them in ``chunk``-byte writes until the server answers or
    closes; return its answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(b"POST /size HTTP/1.1\r\nHost: t\r\nContent-Type: application/octet-stream\r\n"
                     b"Content-Length: %d\r\n\r\n" % length)
        block = b"x" * chunk
        sent = 0
        try:
            while sent < length:
                sock.sendall(block[: min(chunk, length - sent)])
                sent += chunk
        except (BrokenPipeError, ConnectionResetError):
            pass  # answered and closed before the whole body: that is the point
        return read_answer(sock)


def test_body_over_the_limit_is_413_before_it_is_read(server):
    """A 100 MiB body announced by Content-Length is refused with 413 without being read into a worker: no worker
    grows by 5 MiB over two such requests. Each worker's own growth is what counts: a worker's first refused
    request costs it up to about 3 MiB once (granian's buffers, the error path's first run), whatever the body."""
    _post_streaming(server.port, LIMIT + 1, chunk=64 * 1024)  # that first run, on one worker at least
    before = {pid: rss_bytes(pid) for pid in server.worker_pids()}
    for _ in range(2):  # both workers, most likely
        answer = _post_streaming(server.port, 100 * 1024 * 1024)
        assert status_of(answer) == 413, answer[:300]
    growth = max(rss_bytes(pid) - rss for pid, rss in before.items())
    assert growth < 5 * 1024 * 1024, f"a worker grew by {growth / 2**20:.1f} MiB reading a body it refused"
    status, _, body = get(server.port, "/size", method="POST", body=b"x" * 1000)
    assert status == 200 and b'"size":1000' in body.replace(b" ", b"")


def test_body_at_the_limit_is_read(server):
    answer = _post_streaming(server.port, LIMIT)
    assert status_of(answer) == 200, answer[:300]


def _post_chunked(port: int, path: str, body: bytes, chunk: int, timeout: float = 30.0) -> bytes:
    """POST ``body`` to ``path`` with ``Transfer-Encoding: chunked`` in chunks of ``chunk`` bytes (until the server
    answers or closes); return its answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(b"POST %s HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n" % path.encode())
        try:
            for start in range(0, len(body), chunk):
                part = body[start:start + chunk]
                sock.sendall(b"%x\r\n%s\r\n" % (len(part), part))
            sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # answered and closed before the whole body
        return read_answer(sock)


@pytest.mark.parametrize("chunk", [1 << 20, 20 * 1024 * 1024], ids=["1MiB-chunks", "one-chunk"])
def test_chunked_body_over_the_limit_is_413(server, chunk):
    """A 20 MiB chunked body (no Content-Length: the server de-chunks it) is 413, not its first 16 MiB as a 200;
    the server keeps serving."""
    since = len(server.log_text())
    answer = _post_chunked(server.port, "/size", b"x" * (20 * 1024 * 1024), chunk)
    assert status_of(answer) == 413, answer[:300]
    _new_log(server, since, "POST /size 413")
    assert get(server.port, "/hello")[0] == 200


@pytest.mark.parametrize("kind", SERVERS)
def test_chunked_body_limit_follows_the_setting(start_server, kind):
    """STACK_MAX_CONTENT_LENGTH=1000: a chunked body of 1,000 bytes is read whole, 1,001 bytes is 413 (in one chunk or
    in many)."""
    srv = start_server(server=kind, workers=1, env={"STACK_MAX_CONTENT_LENGTH": "1000"})
    answer = _post_chunked(srv.port, "/size", b"x" * 1000, 300)
    assert status_of(answer) == 200 and b'"size":1000' in answer.replace(b" ", b""), answer[:300]
    for chunk in (1001, 100):
        answer = _post_chunked(srv.port, "/size", b"x" * 1001, chunk)
        assert status_of(answer) == 413, (chunk, answer[:300])


def test_chunked_body_reaches_the_app_whole(server):
    """Valid chunked bodies reach the app whole on every server (uWSGI once handed the app an empty one): a JSON
    object in odd-sized chunks comes back equal, and a body exactly at the limit is read in full."""
    document = b'{"name": "chunked", "items": [' + b",".join(b"%d" % i for i in range(5000)) + b"]}"
    answer = _post_chunked(server.port, "/echo", document, 777)
    assert status_of(answer) == 200, answer[:300]
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1]) == json.loads(document)  # jsonify: a Content-Length body
    answer = _post_chunked(server.port, "/size", b"x" * LIMIT, 1 << 20)
    assert status_of(answer) == 200 and b'"size":%d' % LIMIT in answer.replace(b" ", b""), answer[:300]


GRANIAN_CHUNKED = ("granian 2.8.7 hands the WSGI app an empty body, and no error, for a broken chunked encoding "
                   "(emmett-framework/granian#909 family); the app cannot tell it from an empty body")
SHORT_BODY = (b"POST /size HTTP/1.1\r\nHost: t\r\nContent-Type: application/octet-stream\r\nContent-Length: 100000\r\n"
              b"\r\n0123456789")
BROKEN_CHUNKED = (b"POST /size HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n"
                  b"ZZ\r\n{}\r\n0\r\n\r\n")


def _send_then_close_write(port: int, payload: bytes, timeout: float = 10.0) -> bytes:
    """Send ``payload``, wait a moment, shut the write side (the client is gone: EOF), then read the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(payload)
        time.sleep(0.3)
        sock.shutdown(socket.SHUT_WR)
        return read_answer(sock)


def test_body_shorter_than_its_content_length_is_400_with_one_warning(server):
    since = len(server.log_text())
    answer = _send_then_close_write(server.port, SHORT_BODY)
    log = _new_log(server, since, "POST /size 400")
    warnings = [line for line in log.splitlines() if "unreadable request body: POST /size" in line]
    assert len(warnings) == 1, log
    assert "Traceback" not in log
    # The client shut its side: a server may answer (400) or not, but never 200 with the 10 bytes.
    if answer:
        assert status_of(answer) == 400, answer[:300]
    assert "POST /size 400" in log, log


@pytest.mark.parametrize("server", [
    "gunicorn",
    pytest.param("granian", marks=known_limit(GRANIAN_CHUNKED)),
], indirect=True)
def test_broken_chunked_body_is_400_with_one_warning(server):
    since = len(server.log_text())
    answer = raw_exchange(server.port, BROKEN_CHUNKED)
    documented(server.server == "granian" and answer.startswith(b"HTTP/1.1 200 ")
               and answer.endswith(b'{"size":0}\n'), GRANIAN_CHUNKED, answer[-300:])
    assert status_of(answer) == 400, answer[:300]
    log = _new_log(server, since, "POST /size ")
    warnings = [line for line in log.splitlines() if "unreadable request body: POST /size" in line]
    assert len(warnings) == 1, log


def test_json_nested_too_deep_is_400_without_traceback(server):
    since = len(server.log_text())
    depth = 100_000
    status, headers, body = get(server.port, "/parse", method="POST", body=b"[" * depth + b"]" * depth,
                                headers={"Content-Type": "application/json", "Accept": "application/json"})
    assert status == 400, body[:300]
    assert headers["content-type"].startswith("application/json")
    log = _new_log(server, since, "POST /parse 400")
    assert "Traceback" not in log and "RecursionError" not in log, log[-3000:]
    assert "POST /parse 400" in log


def test_lower_case_method_is_answered_by_the_app_counted_and_logged(server):
    """``get`` is not gunicorn's convention (it would answer an uncounted HTML 400 itself): the app answers it
    (werkzeug upper-cases the method), counts it and logs it."""
    before = sample_value(scrape(server.port), "http_requests_total", endpoint="/hello")
    since = len(server.log_text())
    answer = raw_exchange(server.port, b"get /hello HTTP/1.1\r\nHost: t\r\nAccept: application/json\r\n\r\n")
    assert status_of(answer) == 200, answer[:300]
    head = answer.split(b"\r\n\r\n")[0].decode()
    request_id = re.search(r"(?im)^x-request-id: *(\S+)", head)
    assert request_id, head  # the app answered
    assert sample_value(scrape(server.port), "http_requests_total", endpoint="/hello") == before + 1
    log = _new_log(server, since, f"id={request_id.group(1)}")
    assert [line for line in log.splitlines() if f"id={request_id.group(1)}" in line][0].count("GET /hello 200 ") == 1
