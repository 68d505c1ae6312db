"""The nginx front (STACK_FRONT=nginx, the deployable image's default) with Debian's real nginx, in front of every
server: what nginx answers itself (413, malformed heads, broken chunked bodies), the client's address through it,
one-line failures, and nginx dying.
Slow clients and SIGTERM behind the front are in test_slow_clients.py and test_shutdown.py."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import threading
import time
import uuid

import pytest
from testkit.nginx import require_nginx
from testkit.net import free_port
from testkit.procs import alive, children_of, descendants
from testkit.serve import (METRICS_SETTLE_SECONDS, SERVERS, ProductionServer, copy_project, get, raw_exchange,
                           status_of)

from .harness import FIXTURE_USERAPP, left_in, run_serve
from .test_bad_input import MALFORMED
from .test_bodies import BROKEN_CHUNKED, _post_streaming

pytestmark = pytest.mark.slow

FRONT = {"STACK_FRONT": "nginx"}


@pytest.fixture(scope="module", params=SERVERS)
def front(request, tmp_path_factory):
    """Each server behind the front, 2 workers, for the whole module."""
    require_nginx()
    workdir = tmp_path_factory.mktemp(f"front-{request.param}")
    srv = ProductionServer(project=copy_project(FIXTURE_USERAPP, workdir / "project"), workdir=workdir,
                           server=request.param, workers=2, env=dict(FRONT))
    try:
        yield srv.start()
    finally:
        srv.stop()


def _access_lines(srv, since: int, request: str) -> list[str]:
    """The access lines (the stack's text format, the app's or nginx's) starting ``request`` (``"POST /size 413"``)
    written after offset ``since``, once there is one (AssertionError after 10 s)."""
    deadline = time.monotonic() + 10
    while not (lines := [line for line in srv.log_text()[since:].splitlines() if f"] {request} " in line]):
        assert time.monotonic() < deadline, f"no {request!r} access line within 10 s:\n{srv.log_tail()}"
        time.sleep(0.05)  # INFO lines are written in batches every 0.25 s
    return lines


def test_nginx_answers_a_body_over_the_limit_before_reading_it(front):
    since = len(front.log_text())
    answer = _post_streaming(front.port, 100 * 1024 * 1024)
    assert status_of(answer) == 413, answer[:300]
    assert b"<h1>413 Request Entity Too Large</h1>" in answer, answer[:600]
    (line,) = _access_lines(front, since, "POST /size 413")  # nginx's: the app never saw the request
    assert line.endswith(" client=127.0.0.1"), line
    status, _, body = get(front.port, "/size", method="POST", body=b"x" * 1000)
    assert status == 200 and b'"size":1000' in body.replace(b" ", b"")


TOO_LARGE = (b"POST /size HTTP/1.1\r\nHost: t\r\nContent-Type: %s\r\nAccept: %s\r\nContent-Length: 20000000\r\n"
             b"Connection: close\r\n\r\n")


@pytest.mark.parametrize(("content_type", "accept", "json_answer"), [
    (b"application/json", b"*/*", True),  # a JSON body
    (b"application/octet-stream", b"application/json", True),
    (b"application/octet-stream", b"text/html, application/json", False),  # equal preference: HTML, as the app
    (b"application/octet-stream", b"*/*", False),
])
def test_nginx_error_answers_follow_the_apps_json_rule(front, content_type, accept, json_answer):
    since = len(front.log_text())
    answer = raw_exchange(front.port, TOO_LARGE % (content_type, accept))
    head, _, body = answer.partition(b"\r\n\r\n")
    assert status_of(answer) == 413, answer[:300]
    (line,) = _access_lines(front, since, "POST /size 413")
    request_id = re.search(r" id=([0-9a-f]{32}) ", line)
    assert request_id, line
    if json_answer:
        assert b"\r\nContent-Type: application/json" in head, head
        assert json.loads(body) == {"error": {"status": 413, "title": "Request Entity Too Large", "request_id":
                                              request_id[1], "detail": "The data value transmitted exceeds the "
                                              "capacity limit."}}
    else:
        assert b"\r\nContent-Type: text/html" in head and b"<h1>413 Request Entity Too Large</h1>" in body, answer


# Where the answer behind nginx is not a 4xx: nginx answers an unknown HTTP version with 505 (RFC 9110 15.6.6), and
# has no limit on the number of header lines (only on their size), so 300 short ones reach the server: gunicorn and
# granian refuse over 100 with a 4xx, uWSGI takes up to 512 (uwsgi_app.MAX_VARS) and answers.
BEHIND_NGINX = {("*", "unsupported HTTP version"): 505, ("uwsgi", "too many headers"): 200}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_http_gets_a_4xx_from_nginx(case, front):
    """What uWSGI alone leaves unanswered or echoes (test_bad_input.py's strict xfails) is answered behind nginx:
    a 4xx, or the status ``BEHIND_NGINX`` gives."""
    answer = raw_exchange(front.port, MALFORMED[case])
    expected = BEHIND_NGINX.get(("*", case), BEHIND_NGINX.get((front.server, case)))
    if expected:
        assert status_of(answer) == expected, f"{case}: {answer[:200]!r}"
    else:
        assert 400 <= status_of(answer) < 500, f"{case}: {answer[:200]!r}"
    assert b"Traceback" not in answer and b'File "' not in answer, answer[:2000]
    assert get(front.port, "/hello")[0] == 200


def test_broken_chunked_body_is_400(front):
    """granian alone hands the app an empty body (test_bodies.py's strict xfail); nginx refuses it."""
    since = len(front.log_text())
    answer = raw_exchange(front.port, BROKEN_CHUNKED)
    assert status_of(answer) == 400, answer[:300]
    assert len(_access_lines(front, since, "POST /size 400")) == 1


def test_the_access_line_names_the_client_not_nginx(front):
    """The server behind trusts one proxy more (nginx's X-Forwarded-For), and only that one: a header the client
    forged stays to the left of the address nginx adds."""
    marker = f"front-{uuid.uuid4().hex[:8]}"  # earlier requests' lines may still arrive (batched writes)
    assert get(front.port, "/hello", source="127.0.0.2", headers={"X-Request-ID": f"{marker}-a"})[0] == 200
    assert get(front.port, "/hello", source="127.0.0.3",
               headers={"X-Request-ID": f"{marker}-b", "X-Forwarded-For": "203.0.113.9"})[0] == 200
    time.sleep(0.6)
    # by id: two workers write their batched lines in either order
    seen = dict(re.search(r" id=(\S+) client=(\S+)$", line).groups()
                for line in front.log_text().splitlines() if f"id={marker}-" in line)
    assert seen == {f"{marker}-a": "127.0.0.2", f"{marker}-b": "127.0.0.3"}, seen


def test_address_in_use_is_one_line_and_exit_2(tmp_path):
    require_nginx()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_serve({**FRONT, "PORT": str(port), "STACK_USERAPP_DIR": str(FIXTURE_USERAPP)}, tmp_path)
    assert done.returncode == 2, done.stdout
    assert done.stdout.strip().splitlines() == [f"serve: cannot listen on 127.0.0.1:{port}: Address already in use; "
                                                "set PORT or STACK_HOST"], done.stdout
    assert left_in(tmp_path) == []


@pytest.mark.parametrize("which", ["nginx (the front)", "nginx (the probe port)", "the app server (granian)"])
def test_a_dead_child_stops_the_front_within_a_second(start_server, which):
    """kill -9 of either nginx's master or of the server's: ``serve`` exits within 1 s, non-zero, with one ERROR
    line naming which died, and leaves no process behind (the dead nginx's workers included)."""
    require_nginx()
    srv = start_server(server="granian", env={**FRONT, "STACK_GRACEFUL_TIMEOUT": "5"})
    nginx_masters = [pid for pid in srv.nginx_pids() if pid in children_of(srv.proc.pid)]
    assert len(nginx_masters) == 2, srv.log_tail()  # the public port's and the probe port's
    everything = descendants(srv.proc.pid)
    if which == "the app server (granian)":
        victim = srv.master_pid()
    else:  # the probe port's master was started second
        victim = sorted(nginx_masters)[which == "nginx (the probe port)"]
    os.kill(victim, signal.SIGKILL)
    started = time.monotonic()
    status = srv.proc.wait(5)
    took = time.monotonic() - started
    assert status != 0 and took < 1.0, (status, took, srv.log_tail())
    lines = [line for line in srv.log_text().splitlines() if " died " in line]
    assert len(lines) == 1 and "[ERROR]" in lines[0], lines
    assert lines[0].endswith(f"flask-stack: {which} died (killed by SIGKILL); stopping the container"), lines
    time.sleep(0.2)
    assert [pid for pid in everything if alive(pid)] == [], everything


def test_nginx_listens_only_once_the_server_answers(tmp_path):
    """From the moment ``serve`` starts, the public port either refuses or answers 200: never nginx's 502 for a
    server still starting, and the start logs no ERROR (nor granian's worker-count warning, 3 workers here)."""
    require_nginx()
    srv = ProductionServer(project=copy_project(FIXTURE_USERAPP, tmp_path / "project"), workdir=tmp_path,
                           server="granian", workers=3, env={**FRONT, "WEB_CONCURRENCY": None})
    seen = []
    try:
        srv.port = free_port()
        thread = threading.Thread(target=lambda: srv.start(), daemon=True)
        thread.start()
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline and not seen[-1:] == [200]:
            try:
                seen.append(get(srv.port, "/hello", timeout=5)[0])
            except OSError:
                time.sleep(0.005)
        thread.join(45)
        assert seen and set(seen) == {200}, seen
        time.sleep(0.6)
        log_text = srv.log_text()
        assert "[ERROR]" not in log_text and "[WARNING]" not in log_text, log_text
        assert "higher than the amount of CPU cores" not in log_text, log_text
    finally:
        srv.stop()


def _unmatched(port: int, method: str, status: int) -> float:
    """``http_requests_total{endpoint="<unmatched>", method, status}`` on the app's /metrics (0 when absent),
    once every count is written (the front's access relay and the workers batch them)."""
    time.sleep(METRICS_SETTLE_SECONDS)
    body = get(port, "/metrics")[2].decode()
    match = re.search(rf'^http_requests_total\{{endpoint="<unmatched>",method="{method}",status="{status}"\}} (\S+)$',
                      body, re.M)
    return float(match.group(1)) if match else 0.0


MANY_HEADERS = b"".join(b"X-H-%d: v\r\n" % i for i in range(300))
# what the server behind answers 300 headers with (uWSGI takes up to 512: the app answers, traced by the app)
MANY_HEADERS_STATUS = {"granian": 431, "gunicorn": 431, "uwsgi": 200}


def test_raw_byte_in_the_path_is_nginx_json_400_traced(front):
    """A raw \\xff in the request target: nginx's 400 (JSON for a JSON client) with its id, which the access line
    carries, counted in http_requests_total (the servers behind would answer it untraced)."""
    before = _unmatched(front.port, "GET", 400)
    since = len(front.log_text())
    answer = raw_exchange(front.port, b"GET /\xff HTTP/1.1\r\nHost: t\r\nAccept: application/json\r\n"
                                      b"Connection: close\r\n\r\n")
    assert status_of(answer) == 400, answer[:300]
    error = json.loads(answer.partition(b"\r\n\r\n")[2])["error"]
    assert error["status"] == 400 and error["title"] == "Bad Request", error
    time.sleep(0.6)
    lines = [line for line in front.log_text()[since:].splitlines() if f"id={error['request_id']} " in line]
    assert len(lines) == 1 and " 400 " in lines[0], lines
    assert _unmatched(front.port, "GET", 400) == before + 1


def test_the_servers_own_answer_to_300_headers_is_nginx_page_traced(front):
    """300 header lines: what the server behind answers itself (granian's and gunicorn's 431) is replaced by nginx's
    page (JSON for a JSON client, HTML otherwise) with the id of nginx's access line, counted in
    http_requests_total; uWSGI's app answers and traces it."""
    expected = MANY_HEADERS_STATUS[front.server]
    before = _unmatched(front.port, "GET", expected)
    since = len(front.log_text())
    answer = raw_exchange(front.port, b"GET /hello HTTP/1.1\r\nHost: t\r\nAccept: application/json\r\n" + MANY_HEADERS
                          + b"Connection: close\r\n\r\n")
    assert status_of(answer) == expected, answer[:300]
    lines = _access_lines(front, since, f"GET /hello {expected}")
    assert len(lines) == 1 and re.search(r" id=\S+ ", lines[0]), lines
    if expected != 200:
        error = json.loads(answer.partition(b"\r\n\r\n")[2])["error"]
        assert error["status"] == 431 and error["title"] == "Request Header Fields Too Large", error
        assert f" id={error['request_id']} " in lines[0], (error, lines)
        assert _unmatched(front.port, "GET", expected) == before + 1
        html = raw_exchange(front.port, b"GET /hello HTTP/1.1\r\nHost: t\r\nAccept: text/html\r\n" + MANY_HEADERS
                            + b"Connection: close\r\n\r\n")
        assert status_of(html) == 431 and b"<h1>431 Request Header Fields Too Large</h1>" in html, html[:400]


def test_the_apps_own_400_500_and_503_pages_pass_through_the_front(front):
    """Behind nginx, which intercepts the app server's own refusals (431), the app's own 400 (a malformed JSON
    body), 500 (an exception) and 503 (``abort(503)``, as readiness DOWN answers) pages come through unchanged:
    the app's JSON with the app's request id (its X-Request-ID header), not nginx's page; and nginx's own
    bad-target 400 keeps its status (error_page 598 =400)."""
    for method, path, body, status in (("POST", "/parse", b"{not json", 400), ("GET", "/boom", None, 500),
                                       ("GET", "/unavailable", None, 503)):
        got, headers, text = get(front.port, path, method=method, body=body,
                                 headers={"Content-Type": "application/json", "Accept": "application/json",
                                          "X-Request-ID": f"app-page-{status}"})
        assert got == status, (path, got, text[:300])
        assert headers.get("x-request-id") == f"app-page-{status}", headers  # the app's answer, not nginx's
        assert json.loads(text)["error"]["request_id"] == f"app-page-{status}", text[:300]
    answer = raw_exchange(front.port, b"GET /\xff HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert status_of(answer) == 400 and b"<h1>400 Bad Request</h1>" in answer, answer[:300]


def test_http_0_9_is_refused_and_logged(front):
    """``GET /hello`` without a version (HTTP/0.9, which has no status line) gets no answer at all; the access
    line says 444 (nginx's "closed unanswered") and it is counted."""
    before = _unmatched(front.port, "GET", 444)
    since = len(front.log_text())
    assert raw_exchange(front.port, b"GET /hello\r\n") == b""
    assert len(_access_lines(front, since, "GET /hello 444")) == 1
    assert _unmatched(front.port, "GET", 444) == before + 1


def test_nginx_501_follows_the_json_rule(front):
    """An unknown Transfer-Encoding is nginx's 501, JSON for a JSON client, with the id of its access line."""
    since = len(front.log_text())
    answer = raw_exchange(front.port, b"POST /size HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n"
                                      b"Accept: application/json\r\nConnection: close\r\n\r\n")
    assert status_of(answer) == 501, answer[:300]
    error = json.loads(answer.partition(b"\r\n\r\n")[2])["error"]
    assert error["title"] == "Not Implemented", error
    (line,) = _access_lines(front, since, "POST /size 501")
    assert f" id={error['request_id']} " in line, line


def test_granian_behind_the_front_listens_on_a_unix_socket(front):
    """granian behind nginx listens on a unix socket in the front's private dir (cheaper per request than loopback
    TCP), which answers HTTP; the other servers on 127.0.0.1."""
    match = re.search(r"buffering requests for (\w+) on (\S+)", front.log_text())
    assert match, front.log_tail()
    if match[1] != "granian":
        assert match[2].startswith("127.0.0.1:"), match[0]
        return
    assert match[2].startswith("unix:/") and match[2].endswith("/app.sock"), match[0]
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(match[2][len("unix:"):])
        sock.sendall(b"GET /hello HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert status_of(answer) == 200, answer[:300]
