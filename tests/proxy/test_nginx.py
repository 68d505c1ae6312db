"""The app behind a real nginx (README.md's location blocks: ``proxy_pass`` to granian's and gunicorn's HTTP port,
``uwsgi_pass`` to uWSGI's STACK_UWSGI_SOCKET), under /your/path/, on each production server.

nginx listens on 127.0.0.1 (HTTP and HTTPS with a throwaway certificate); the client connects from 127.0.0.2 (the
loopback network is 127/8), so the client's address differs from the proxy's (127.0.0.1) and the access line shows
which one the app took. The server runs with STACK_URL_PREFIX=/your/path and STACK_PROXY_HOPS=1 (one trusted
proxy), except where a test says otherwise.
"""

from __future__ import annotations

import http.client
import json
import re
import ssl
from pathlib import Path

import pytest
from testkit.browser import chromium
from testkit.net import free_port
from testkit.nginx import Nginx, readme_location
from testkit.serve import SERVERS, ProductionServer, copy_project
from testkit.serve import hello_count as serve_hello_count

REPO = Path(__file__).resolve().parents[2]
APP = REPO / "tests" / "fixtures" / "userapps" / "proxied"
PREFIX = "/your/path"
CLIENT = "127.0.0.2"  # the client's source address; nginx and the app see it as $remote_addr / X-Forwarded-For
pytestmark = pytest.mark.slow


def request(port: int, path: str, headers: dict | None = None, tls: bool = False, method: str = "GET"):
    """One request from CLIENT to nginx on 127.0.0.1:``port``: (status, headers (lower-case names), body)."""
    if tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the test's own throwaway certificate
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, source_address=(CLIENT, 0),
                                           context=context)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(CLIENT, 0))
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


# README's other way: nginx strips the prefix and says it in X-Forwarded-Prefix (the app trusts it with hops)
STRIPPING_LOCATION = f"""
        location {PREFIX}/ {{
            proxy_pass http://flask_stack/;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $host;
            proxy_set_header X-Forwarded-Prefix {PREFIX};
        }}
"""


def start_behind_nginx(workdir: Path, server: str, env: dict, location: str | None = None
                       ) -> tuple[ProductionServer, Nginx]:
    """``server`` serving APP with ``env``, behind nginx with ``location`` (default: README's block for that server:
    ``uwsgi_pass`` to STACK_UWSGI_SOCKET for uWSGI, ``proxy_pass`` to the HTTP port for the others)."""
    uwsgi_port = free_port() if server == "uwsgi" and location is None else None
    if uwsgi_port:
        env = {**env, "STACK_UWSGI_SOCKET": f"127.0.0.1:{uwsgi_port}"}
    srv = ProductionServer(project=copy_project(APP, workdir / "project"), workdir=workdir, server=server,
                           workers=2, env=env)
    srv.start(ready_path=f"{PREFIX}/health/ready" if env.get("STACK_URL_PREFIX") else "/health/ready")
    try:
        location = location or readme_location(REPO / "README.md",
                                               passes_with="uwsgi_pass" if uwsgi_port else "proxy_pass")
        proxy = Nginx(workdir / "nginx", location, f"127.0.0.1:{uwsgi_port or srv.port}").start()
    except BaseException:
        srv.stop()
        raise
    return srv, proxy


@pytest.fixture(scope="module", params=SERVERS)
def stack(request, tmp_path_factory):
    """(server, nginx): the proxied app mounted at /your/path, one trusted proxy, behind README's nginx block."""
    workdir = tmp_path_factory.mktemp(f"nginx-{request.param}")
    srv, proxy = start_behind_nginx(workdir, request.param,
                                    {"STACK_URL_PREFIX": PREFIX, "STACK_PROXY_HOPS": "1"})
    try:
        yield srv, proxy
    finally:
        proxy.stop()
        srv.stop()


def hello_count(port: int) -> float:
    return serve_hello_count(port, PREFIX, CLIENT)


def test_routes_health_and_metrics_under_the_prefix(stack):
    srv, proxy = stack
    status, _, body = request(proxy.port, f"{PREFIX}/hello")
    assert (status, body) == (200, b"hello"), srv.log_tail()
    status, _, body = request(proxy.port, f"{PREFIX}/health")
    assert status == 200 and json.loads(body)["status"] == "UP"
    for probe in ("live", "ready", "started"):
        assert request(proxy.port, f"{PREFIX}/health/{probe}")[0] == 200, probe
    before = hello_count(proxy.port)
    for _ in range(20):  # fresh connections from nginx's keep-alive pool reach both workers
        assert request(proxy.port, f"{PREFIX}/hello")[0] == 200
    assert hello_count(proxy.port) == before + 20  # labelled by URL rule, exact across workers
    status, _, body = request(proxy.port, f"{PREFIX}/metrics")
    assert f'endpoint="{PREFIX}' not in body.decode()  # rules, not paths
    # nginx answers outside its location; the app answers outside the prefix (a direct request) with a 404
    assert request(proxy.port, "/hello")[0] == 404
    assert request(srv.port, "/health")[0] == 404 and request(srv.port, f"{PREFIX}/health")[0] == 200


def test_redirect_and_links_carry_the_prefix_and_the_forwarded_scheme_and_host(stack):
    srv, proxy = stack
    status, headers, _ = request(proxy.port, f"{PREFIX}/")
    assert status == 302 and headers["location"] == f"{PREFIX}/apidocs/", headers
    status, _, page = request(proxy.port, headers["location"])
    assert status == 200 and f"{PREFIX}/apispec_1.json".encode() in page
    assets = re.findall(r'(?:src|href)="(/[^"]+)"', page.decode())
    assert assets and all(a.startswith(PREFIX + "/") for a in assets), assets
    for asset in assets + [f"{PREFIX}/apispec_1.json"]:
        assert request(proxy.port, asset)[0] == 200, asset
    status, _, body = request(proxy.tls_port, f"{PREFIX}/seen", headers={"Host": "shop.example"}, tls=True)
    assert status == 200, srv.log_tail()
    seen = json.loads(body)
    assert seen == {"remote_addr": CLIENT, "scheme": "https", "host": "shop.example", "script_root": PREFIX,
                    "link": f"https://shop.example{PREFIX}/hello", "path": f"{PREFIX}/hello"}
    srv.wait_for_log(rf"GET {PREFIX}/seen 200 \S+ id=\S+ client={re.escape(CLIENT)}$")


def test_forged_headers_through_nginx_change_nothing(stack):
    """A client's own X-Forwarded-* values: nginx overwrites Proto and Host, appends to For (the app trusts only
    the last, nginx's) and drops Prefix, as README's block says."""
    srv, proxy = stack
    forged = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example",
              "X-Forwarded-Prefix": "/forged", "X-Forwarded-Ssl": "on", "X-Request-ID": "forged-through-nginx"}
    status, _, body = request(proxy.port, f"{PREFIX}/seen", headers=forged)
    assert status == 200
    assert json.loads(body) == {  # nginx's $host is the client's Host header without its port
        "remote_addr": CLIENT, "scheme": "http", "host": "127.0.0.1", "script_root": PREFIX,
        "link": f"http://127.0.0.1{PREFIX}/hello", "path": f"{PREFIX}/hello"}
    srv.wait_for_log(rf"GET {PREFIX}/seen 200 \S+ id=forged-through-nginx client={re.escape(CLIENT)}$")


@pytest.mark.parametrize("server", SERVERS)
def test_without_trusted_proxies_forwarded_headers_change_nothing(server, tmp_path):
    """STACK_PROXY_HOPS unset: behind nginx the app sees the proxy as the client (over HTTP; over the uwsgi protocol
    nginx itself passes the client's address and scheme), and a client's forged headers sent straight to the app
    change nothing."""
    srv, proxy = start_behind_nginx(tmp_path, server, {"STACK_URL_PREFIX": PREFIX})
    try:
        status, _, body = request(proxy.tls_port, f"{PREFIX}/seen", headers={"Host": "shop.example"}, tls=True)
        seen = json.loads(body)
        if server == "uwsgi":  # the uwsgi protocol carries nginx's REMOTE_ADDR and HTTPS itself, not in headers
            assert status == 200 and seen["remote_addr"] == CLIENT and seen["scheme"] == "https", seen
        else:
            assert status == 200 and seen["remote_addr"] == "127.0.0.1" and seen["scheme"] == "http", seen
        forged = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https",
                  "X-Forwarded-Host": "evil.example", "X-Forwarded-Prefix": "/forged", "X-Forwarded-Ssl": "on",
                  "X-Request-ID": "forged-direct"}
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10, source_address=(CLIENT, 0))
        try:
            conn.request("GET", f"{PREFIX}/seen", headers=forged)
            resp = conn.getresponse()
            direct = json.loads(resp.read())
        finally:
            conn.close()
        assert direct == {"remote_addr": CLIENT, "scheme": "http", "host": f"127.0.0.1:{srv.port}",
                          "script_root": PREFIX, "link": f"http://127.0.0.1:{srv.port}{PREFIX}/hello",
                          "path": f"{PREFIX}/hello"}
        srv.wait_for_log(rf"GET {PREFIX}/seen 200 \S+ id=forged-direct client={re.escape(CLIENT)}$")
    finally:
        proxy.stop()
        srv.stop()


@pytest.mark.parametrize("url_prefix", [None, PREFIX])
def test_a_stripping_proxy_with_x_forwarded_prefix(url_prefix, tmp_path):
    """nginx strips /your/path and sends X-Forwarded-Prefix: with STACK_PROXY_HOPS=1 the app is mounted there
    all the same, with or without STACK_URL_PREFIX (a SCRIPT_NAME that already ends with it is kept)."""
    env = {"STACK_PROXY_HOPS": "1", "STACK_URL_PREFIX": url_prefix}
    srv, proxy = start_behind_nginx(tmp_path, "granian", env, STRIPPING_LOCATION)
    try:
        status, _, body = request(proxy.tls_port, f"{PREFIX}/seen", headers={"Host": "shop.example"}, tls=True)
        assert status == 200, srv.log_tail()
        assert json.loads(body) == {"remote_addr": CLIENT, "scheme": "https", "host": "shop.example",
                                    "script_root": PREFIX, "link": f"https://shop.example{PREFIX}/hello",
                                    "path": f"{PREFIX}/hello"}
        status, headers, _ = request(proxy.port, f"{PREFIX}/")
        assert status == 302 and headers["location"] == f"{PREFIX}/apidocs/"
        status, _, page = request(proxy.port, f"{PREFIX}/apidocs/")
        assets = re.findall(r'(?:src|href)="(/[^"]+)"', page.decode())
        assert status == 200 and assets and all(a.startswith(PREFIX + "/") for a in assets), assets
        assert all(request(proxy.port, asset)[0] == 200 for asset in assets)
        assert request(proxy.port, f"{PREFIX}/health/ready")[0] == 200
    finally:
        proxy.stop()
        srv.stop()


@pytest.mark.browser
def test_swagger_ui_under_the_prefix_in_chromium(stack, tmp_path):
    """Swagger UI at /your/path/apidocs/ through nginx renders the app's spec, and "Try it out" calls
    /your/path/hello (the spec's basePath); every request stays on nginx's address."""
    srv, proxy = stack
    base = f"http://127.0.0.1:{proxy.port}"
    with chromium() as browser:
        page = browser.new_page()
        requested: list[str] = []
        page.on("request", lambda req: requested.append(req.url))
        try:
            page.goto(f"{base}{PREFIX}/apidocs/", wait_until="load", timeout=30_000)
            operation = page.locator(".opblock-summary-path", has_text="/hello").first
            operation.wait_for(state="visible", timeout=30_000)
            page.locator(".opblock-summary", has_text="/hello").first.click()
            page.get_by_role("button", name="Try it out").first.click()
            with page.expect_response(lambda r: r.url.split("?")[0].endswith("/hello"), timeout=15_000) as called:
                page.get_by_role("button", name="Execute").first.click()
            response = called.value
            assert response.url.split("?")[0] == f"{base}{PREFIX}/hello" and response.status == 200
            assert response.text() == "hello"
            page.screenshot(path=str(tmp_path / "apidocs.png"))
        finally:
            page.close()
    assert f"{base}{PREFIX}/apispec_1.json" in requested, requested
    outside = [u for u in requested if not u.startswith(f"{base}{PREFIX}/") and not u.startswith(("data:", "blob:"))]
    assert outside == [], outside
