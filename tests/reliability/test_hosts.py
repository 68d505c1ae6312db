"""Host safety on the production servers (gunicorn, granian, uWSGI; and behind the nginx front): a redirect's
Location never carries the Host the client sent; STACK_TRUSTED_HOSTS answers other hosts 400."""

from __future__ import annotations

import pytest
from testkit.nginx import require_nginx
from testkit.serve import SERVERS, raw_exchange, status_of

EVIL = b"evil.example"
REDIRECTS = {b"/apidocs": b"/apidocs/", b"/health//live": b"/health/live", b"/apidocs//": b"/apidocs/"}


def location_of(answer: bytes) -> bytes | None:
    """The Location header's value in a raw HTTP answer, or None."""
    head = answer.split(b"\r\n\r\n", 1)[0]
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"location":
            return value.strip()
    return None


def ask(port: int, path: bytes, host: bytes) -> bytes:
    """One raw GET of ``path`` with ``Host: host``; the whole answer."""
    return raw_exchange(port, b"GET %s HTTP/1.1\r\nHost: %s\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
                        % (path, host))


@pytest.mark.parametrize("front", [False, True], ids=["direct", "nginx-front"])
@pytest.mark.parametrize("kind", SERVERS)
def test_redirects_carry_no_client_host(start_server, kind, front):
    """/apidocs (no trailing slash) and doubled slashes redirect to a relative Location, whatever Host came."""
    if front:
        require_nginx()
    srv = start_server(server=kind, workers=1, env={"STACK_FRONT": "nginx" if front else "none"})
    for path, target in REDIRECTS.items():
        for host in (EVIL, EVIL + b":8080", b"127.0.0.1:%d" % srv.port):
            answer = ask(srv.port, path, host)
            assert status_of(answer) in (301, 302, 307, 308), (path, host, answer[:300])
            assert location_of(answer) == target, (path, host, answer[:300])
            assert EVIL not in answer.split(b"\r\n\r\n", 1)[0], answer[:300]


@pytest.mark.parametrize("kind", SERVERS)
def test_trusted_hosts(start_server, kind):
    """STACK_TRUSTED_HOSTS=shop.example.org: that host is served, evil.example gets 400 (no Location), and the
    health probe on 127.0.0.1 still answers."""
    srv = start_server(server=kind, workers=1, env={"STACK_TRUSTED_HOSTS": "shop.example.org"})
    assert status_of(ask(srv.port, b"/hello", b"shop.example.org")) == 200
    assert status_of(ask(srv.port, b"/health/ready", b"127.0.0.1:%d" % srv.port)) == 200
    answer = ask(srv.port, b"/apidocs", EVIL)
    assert status_of(answer) == 400 and location_of(answer) is None, answer[:300]
