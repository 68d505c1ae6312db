"""STACK_URL_PREFIX and STACK_PROXY_HOPS through the app's whole WSGI chain (``server.proxy``): every route under
the prefix, nothing outside it, links carrying it; X-Forwarded-* trusted only with hops. Real servers and a real
nginx in front: tests/proxy."""

from __future__ import annotations

import re

import pytest
from werkzeug.test import Client

from openapi_spec_validator import validate

from .support import PYTHON, USERAPPS, subprocess_env, write_userapp

PREFIX = "/your/path"


@pytest.fixture
def prefixed(make_app):
    """The ``proxied`` fixture app mounted at /your/path, as a raw WSGI client (no APPLICATION_ROOT applied)."""
    app = make_app("proxied", URL_PREFIX=PREFIX + "/")
    return app, Client(app.wsgi_app)


@pytest.mark.parametrize("path", ["/hello", "/health", "/health/live", "/health/ready", "/health/started",
                                  "/metrics", "/apidocs/", "/apispec_1.json", "/seen"])
def test_every_route_lives_under_the_prefix(prefixed, path):
    _, client = prefixed
    assert client.get(PREFIX + path).status_code == 200, path
    assert client.get(path).status_code == 404, path  # not at the root any more
    assert client.get("/your/pathx" + path).status_code == 404, path  # a longer first segment is not the prefix


def test_links_redirect_and_api_docs_carry_the_prefix(prefixed):
    _, client = prefixed
    seen = client.get(PREFIX + "/seen").get_json()
    assert seen["script_root"] == PREFIX and seen["path"] == PREFIX + "/hello"
    assert seen["link"] == "http://localhost/your/path/hello"
    index = client.get(PREFIX + "/")
    assert index.status_code == 302 and index.headers["Location"] == PREFIX + "/apidocs/"
    page = client.get(PREFIX + "/apidocs/").get_data(as_text=True)
    assets = re.findall(r'(?:src|href)="([^"]+)"', page) + re.findall(r'url: "([^"]+)"', page)
    assert any(a.endswith("swagger-ui-bundle.js") for a in assets), page[:2000]
    for asset in assets:
        if asset.startswith("/"):
            assert asset.startswith(PREFIX + "/"), asset
            assert client.get(asset).status_code == 200, asset
    assert PREFIX + "/apispec_1.json" in page
    spec = client.get(PREFIX + "/apispec_1.json").get_json()
    assert "/hello" in spec["paths"] and spec["basePath"] == PREFIX  # paths are relative to the mount point
    validate(spec)


def test_openapi3_spec_gets_servers_under_the_prefix(make_app, tmp_path):
    write_userapp(tmp_path / "o3", "from flask import Blueprint\nblueprint = Blueprint('o3', __name__)\n"
                                   "swagger_template = {'openapi': '3.0.2'}\n")
    app = make_app(None, USERAPP="userapp", USERAPP_DIR=str(tmp_path / "o3"), URL_PREFIX=PREFIX)
    spec = Client(app.wsgi_app).get(PREFIX + "/apispec_1.json").get_json()
    assert spec["servers"] == [{"url": PREFIX}] and "basePath" not in spec
    validate(spec)
    unprefixed = Client(make_app(None, USERAPP="userapp", USERAPP_DIR=str(tmp_path / "o3")).wsgi_app)
    assert "servers" not in unprefixed.get("/apispec_1.json").get_json()  # at the root: nothing added


def test_metrics_labelled_by_rule_and_access_line_shows_the_full_path(prefixed, capsys):
    _, client = prefixed
    capsys.readouterr()
    assert client.get(PREFIX + "/hello").status_code == 200
    assert client.get("/elsewhere").status_code == 404
    out = capsys.readouterr().out
    assert re.search(r"GET /your/path/hello 200 ", out), out
    assert re.search(r"GET /elsewhere 404 ", out), out  # outside the prefix: still counted and logged
    metrics = client.get(PREFIX + "/metrics").get_data(as_text=True)
    assert 'http_requests_total{endpoint="/hello",method="GET",status="200"} 1.0' in metrics, metrics
    assert "/your/path/hello" not in metrics  # labels are URL rules, not paths


def test_the_test_client_needs_no_prefix(make_app):
    """Flask's test client sends APPLICATION_ROOT as SCRIPT_NAME: a user's tests keep their paths."""
    app = make_app("proxied", URL_PREFIX=PREFIX)
    assert app.config["APPLICATION_ROOT"] == PREFIX
    client = app.test_client()
    assert client.get("/hello").status_code == 200
    assert client.get("/seen").get_json()["path"] == PREFIX + "/hello"


def test_no_prefix_by_default(make_app):
    client = Client(make_app("proxied").wsgi_app)
    assert client.get("/hello").status_code == 200
    assert client.get("/seen").get_json()["script_root"] == ""
    assert "basePath" not in client.get("/apispec_1.json").get_json()


@pytest.mark.parametrize("value, expected", [("/your/path", "/your/path"), ("/your/path/", "/your/path"),
                                             ("/", ""), ("", ""), (" /a ", "/a"), ("/a-b_c.d~/e", "/a-b_c.d~/e")])
def test_prefix_values(value, expected):
    from server.settings import load_settings

    assert load_settings({"URL_PREFIX": value}).url_prefix == expected


@pytest.mark.parametrize("value, message", [
    ("your/path", "STACK_URL_PREFIX='your/path' must start with a slash, e.g. STACK_URL_PREFIX=/your/path"),
    ("/a//b", "is not a URL path like /your/path (segment '')"),
    ("/a/../b", "(segment '..')"),
    ("/a b", "(segment 'a b')"),
    ("/a?b=1", "(segment 'a?b=1')"),
    ("/caf%C3%A9", "(segment 'caf%C3%A9')"),
])
def test_bad_prefix_is_one_line(value, message):
    from server.exceptions import SettingsError
    from server.settings import load_settings

    with pytest.raises(SettingsError) as info:
        load_settings(environ={"STACK_URL_PREFIX": value})
    assert message in str(info.value) and "\n" not in str(info.value)


def test_bad_prefix_stops_the_server_with_one_line(tmp_path):
    import subprocess

    env = subprocess_env(STACK_URL_PREFIX="your/path", STACK_USERAPP_DIR=str(USERAPPS / "proxied"),
                         STACK_USERAPP="userapp")
    proc = subprocess.run([PYTHON, "-c", "import server; server.app"], env=env, capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert proc.returncode == 4, proc.stderr
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and "STACK_URL_PREFIX='your/path' must start with a slash" in lines[0], lines


FORGED = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "forged.example",
          "X-Forwarded-Prefix": "/forged"}


@pytest.mark.parametrize("prefix", ["", PREFIX])
def test_forwarded_headers_change_nothing_without_trusted_proxies(make_app, capsys, prefix):
    client = Client(make_app("proxied", URL_PREFIX=prefix).wsgi_app)
    capsys.readouterr()
    seen = client.get(prefix + "/seen", headers=FORGED, environ_base={"REMOTE_ADDR": "192.0.2.1"}).get_json()
    assert seen == {"remote_addr": "192.0.2.1", "scheme": "http", "host": "localhost", "script_root": prefix,
                    "link": f"http://localhost{prefix}/hello", "path": f"{prefix}/hello"}
    assert re.search(rf"GET {prefix}/seen 200 .* client=192\.0\.2\.1$", capsys.readouterr().out, re.M)


def test_trusted_proxy_gives_the_client_address_scheme_host_and_prefix(make_app, capsys):
    client = Client(make_app("proxied", PROXY_HOPS=1).wsgi_app)
    capsys.readouterr()
    headers = {**FORGED, "X-Forwarded-For": "198.51.100.9, 203.0.113.7"}  # the proxy appended the last one
    seen = client.get("/seen", headers=headers, environ_base={"REMOTE_ADDR": "192.0.2.1"}).get_json()
    assert seen == {"remote_addr": "203.0.113.7", "scheme": "https", "host": "forged.example",
                    "script_root": "/forged", "link": "https://forged.example/forged/hello", "path": "/forged/hello"}
    assert re.search(r"GET /forged/seen 200 .* client=203\.0\.113\.7$", capsys.readouterr().out, re.M)


@pytest.mark.parametrize("value, message", [("-1", "must be from 0 to 10"), ("x", "is not a whole number"),
                                            ("", "is not a whole number")])
def test_bad_proxy_hops_is_one_line(value, message):
    from server.exceptions import SettingsError
    from server.settings import load_settings

    with pytest.raises(SettingsError, match=f"^STACK_PROXY_HOPS={value!r} {message}"):
        load_settings(environ={"STACK_PROXY_HOPS": value})
