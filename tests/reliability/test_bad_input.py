"""Bad input against the running production server: fuzzing from its own API spec, and malformed HTTP."""

from __future__ import annotations

import subprocess
import time

import pytest
from testkit.limits import documented, known_limit
from testkit.serve import VENV_BIN, get, raw_exchange, status_of

pytestmark = pytest.mark.slow


def test_schemathesis_finds_no_server_error_and_responses_conform(server, tmp_path):
    argv = [
        str(VENV_BIN / "schemathesis"),
        "run",
        f"http://127.0.0.1:{server.port}/apispec_1.json",
        "--checks",
        "all",
        "--exclude-path",
        "/slow",  # the test helper that sleeps; its long sleeps only measure time
        "--max-examples",
        "25",
        "--request-timeout",
        "10",
        "--generation-database",
        "none",
        "--seed",
        "20261122",
        "--no-color",
        "--report-dir",
        str(tmp_path),
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    report = done.stdout[-8000:] + done.stderr[-2000:]
    assert done.returncode == 0, report
    assert "Operations:" in done.stdout and "/apispec_1.json" in done.stdout, report
    assert get(server.port, "/health/live")[0] == 200


MALFORMED = {
    "control character in method": b"G\x01T /hello HTTP/1.1\r\nHost: t\r\n\r\n",
    "unknown method": b"FROBNICATE /hello HTTP/1.1\r\nHost: t\r\n\r\n",
    "not HTTP at all": b"this is not http\r\n\r\n",
    "unsupported HTTP version": b"GET /hello HTTP/9.9\r\nHost: t\r\n\r\n",
    "header without colon": b"GET /hello HTTP/1.1\r\nHost t\r\n\r\n",
    "oversized header": b"GET /hello HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 1_000_000 + b"\r\n\r\n",
    "too many headers": b"GET /hello HTTP/1.1\r\nHost: t\r\n"
    + b"".join(b"X-H%d: v\r\n" % i for i in range(300))
    + b"\r\n",
    "oversized request line": b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: t\r\n\r\n",
    "NUL in path": b"GET /he\x00llo HTTP/1.1\r\nHost: t\r\n\r\n",
    "non-numeric Content-Length": b"POST /parse HTTP/1.1\r\nHost: t\r\nContent-Length: abc\r\n\r\n{}",
    "broken chunked body": b"POST /parse HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
    b"Content-Type: application/json\r\n\r\nZZ\r\n{}\r\n0\r\n\r\n",
    "broken JSON body": b"POST /parse HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
    b"Content-Length: 6\r\nConnection: close\r\n\r\n{\"a\": ",
    "JSON body not UTF-8": b"POST /parse HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
    b"Content-Length: 4\r\nConnection: close\r\n\r\n\xff\xfe{\x00",
    "JSON asked, broken JSON body": b"POST /parse HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
    b"Accept: application/json\r\nContent-Length: 1\r\nConnection: close\r\n\r\n[",
}


# uWSGI's HTTP parsers (its http router and --http-socket alike, 2.0.30) take any request line: the worker's status
# line repeats the client's protocol ("HTTP/9.9 200 OK", "not http 404 ..."); a head they cannot parse (a header
# without a colon, over the buffer) gets the connection closed with no answer at all; 300 header lines are taken.
UWSGI_NO_4XX = {
    "not HTTP at all": "uWSGI answers with the client's own protocol in the status line ('not http 404 NOT FOUND')",
    "unsupported HTTP version": "uWSGI answers HTTP/9.9 with 'HTTP/9.9 200 OK'",
    "header without colon": "uWSGI's http router closes the connection without an answer",
    "oversized header": "uWSGI's http router closes the connection without an answer (no 431)",
    "too many headers": "uWSGI takes 300 header lines and the app answers 200 (no 431)",
    "oversized request line": "uWSGI's http router closes the connection without an answer (no 414)",
}
#: The answer each of those limits gives (what the strict xfail checks): its status line, or nothing.
UWSGI_ANSWERS = {
    "not HTTP at all": lambda answer: answer.split(b"\r\n", 1)[0] == b"not http 404 NOT FOUND",
    "unsupported HTTP version": lambda answer: answer.split(b"\r\n", 1)[0] == b"HTTP/9.9 200 OK",
    "header without colon": lambda answer: answer == b"",
    "oversized header": lambda answer: answer == b"",
    "too many headers": lambda answer: answer.split(b"\r\n", 1)[0] == b"HTTP/1.1 200 OK",
    "oversized request line": lambda answer: answer == b"",
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_http_gets_a_4xx_without_traceback(case, server, request):
    limited = server.server == "uwsgi" and case in UWSGI_NO_4XX
    if limited:
        request.applymarker(known_limit(UWSGI_NO_4XX[case]))
    answer = raw_exchange(server.port, MALFORMED[case])
    if limited:
        assert get(server.port, "/hello")[0] == 200  # the server is none the worse for it
        documented(UWSGI_ANSWERS[case](answer), UWSGI_NO_4XX[case], answer[:200])
    status = status_of(answer)
    assert 400 <= status < 500, f"{case}: {answer[:200]!r}"
    assert b"Traceback" not in answer and b'File "' not in answer, answer[:2000]
    # ... and the server is none the worse for it.
    deadline = time.monotonic() + 5
    while get(server.port, "/hello")[0] != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert get(server.port, "/hello")[0] == 200


def test_broken_json_gets_a_json_error_when_json_is_asked(server):
    status, headers, body = get(
        server.port,
        "/parse",
        method="POST",
        body=b'{"unterminated": ',
        headers={"Content-Type": "application/json", "Accept": "application/json"},
    )
    assert status == 400
    assert headers["content-type"].startswith("application/json")
    assert b"Traceback" not in body
