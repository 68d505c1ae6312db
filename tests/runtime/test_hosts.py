"""Host safety on Werkzeug's development server (what ``flask run`` and the dev loop serve with): redirects never
carry the client's ``Host``; STACK_TRUSTED_HOSTS restricts it (Flask's TRUSTED_HOSTS) and keeps probes working."""

from __future__ import annotations

import http.client
import json
import threading

import pytest
from flask import redirect, url_for
from werkzeug.serving import make_server

from server.exceptions import SettingsError
from server.settings import load_settings

EVIL = "evil.example"


@pytest.fixture
def serve_app():
    """``serve_app(app)``: serve ``app`` on Werkzeug's threaded development server on 127.0.0.1; returns its port."""
    servers = []

    def serve(app) -> int:
        server = make_server("127.0.0.1", 0, app, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server.server_port

    yield serve
    for server in servers:
        server.shutdown()


def ask(port: int, path: str, host: str) -> tuple[int, dict[str, str], bytes]:
    """GET ``path`` with ``Host: host`` and ``Accept: application/json``; (status, lower-case headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest("GET", path, skip_host=True)
        conn.putheader("Host", host)
        conn.putheader("Accept", "application/json")
        conn.endheaders()
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


@pytest.mark.parametrize(("prefix", "path", "location"), [
    ("", "/apidocs", "/apidocs/"),
    ("", "/health//live", "/health/live"),
    ("", "/static//style.css", "/static/style.css"),
    ("", "/external", "/hello?x=1"),
    ("/shop", "/shop/apidocs", "/shop/apidocs/"),
    ("/shop", "/shop/health//live", "/shop/health/live"),
])
def test_redirects_never_carry_the_client_host(make_app, serve_app, prefix, path, location):
    """Werkzeug's own redirects (a missing trailing slash, merged slashes) and a view's
    ``url_for(_external=True)`` answer with a relative Location: the Host the client sent is not in it."""
    app = make_app("basic", TESTING=False, URL_PREFIX=prefix)
    app.add_url_rule("/external", "external", lambda: redirect(url_for("basic.hello", x=1, _external=True)))
    port = serve_app(app)
    for host in (EVIL, f"{EVIL}:8080", f"127.0.0.1:{port}"):
        status, headers, _ = ask(port, path, host)
        assert status in (301, 302, 307, 308), (host, status)
        assert headers["location"] == location, (host, headers["location"])
    assert ask(port, location, EVIL)[0] == 200


def test_trusted_hosts_setting(make_app, serve_app, monkeypatch):
    """STACK_TRUSTED_HOSTS: those names (``.example.com``: and subdomains) are answered; another Host gets the stack's
    400 JSON error; 127.0.0.1, localhost and the machine's own name still reach the health probes."""
    import socket

    monkeypatch.setenv("STACK_TRUSTED_HOSTS", "shop.example.org, .example.com")
    port = serve_app(make_app("basic", TESTING=False))
    for host in ("shop.example.org", "example.com", "api.example.com:8443", f"127.0.0.1:{port}", "localhost",
                 socket.gethostname()):
        assert ask(port, "/health/live", host)[0] == 200, host
    for host in (EVIL, f"{EVIL}:80", "shop.example.org.evil.example", "notexample.com"):
        status, headers, body = ask(port, "/apidocs", host)
        assert status == 400, host
        assert json.loads(body)["error"]["status"] == 400 and "location" not in headers


def test_trusted_hosts_app_setting_wins(make_app, monkeypatch):
    """The app's own TRUSTED_HOSTS is kept; unset, Flask's default (any host) stays."""
    monkeypatch.setenv("STACK_TRUSTED_HOSTS", "shop.example.org")
    assert make_app("basic", TRUSTED_HOSTS=["mine.example"]).config["TRUSTED_HOSTS"] == ["mine.example"]
    assert "shop.example.org" in make_app("basic").config["TRUSTED_HOSTS"]
    monkeypatch.delenv("STACK_TRUSTED_HOSTS")
    assert make_app("basic").config["TRUSTED_HOSTS"] is None


@pytest.mark.parametrize("value", ["https://shop.example.org", "shop.example.org:443", "shop.example.org/x",
                                   "[::1]", "bad host!"])
def test_trusted_hosts_bad_value_is_one_line(value):
    with pytest.raises(SettingsError, match="STACK_TRUSTED_HOSTS=.*not a host name"):
        load_settings(environ={"STACK_TRUSTED_HOSTS": value})


def test_trusted_hosts_parsed():
    assert load_settings(environ={"STACK_TRUSTED_HOSTS": " Shop.Example.org,.example.com  10.0.0.7"}).trusted_hosts \
        == ("shop.example.org", ".example.com", "10.0.0.7")
    assert load_settings(environ={"STACK_TRUSTED_HOSTS": ""}).trusted_hosts is None


@pytest.mark.parametrize(("location", "expected"), [
    ("http://evil.example/a/?q=1#f", "/a/?q=1#f"),
    ("http://evil.example:80/a", "/a"),
    ("http://evil.example//other.example/x", "/.//other.example/x"),
    ("http://evil.example", "/"),
    ("https://evil.example/a", "https://evil.example/a"),
    ("http://elsewhere.example/a", "http://elsewhere.example/a"),
    ("/already/relative", "/already/relative"),
])
def test_relative_location(location, expected):
    """Only a Location at the request's own scheme and Host becomes relative; a path starting with // never
    becomes a reference to another host."""
    from server.observe import _relative_location

    headers = [("Content-Type", "text/html"), ("Location", location)]
    _relative_location(headers, {"HTTP_HOST": "evil.example", "wsgi.url_scheme": "http"})
    assert headers == [("Content-Type", "text/html"), ("Location", expected)]
