"""README.md's static-files block (``location /your/path/static/``) in a real nginx, beside README's app location,
in front of the production server with the app under /your/path: the files come from nginx, the app never sees
those requests.

The block's ``alias`` directory (the user's copy of the image's /project/userapp/static/) is the one thing the test
changes: it points at a copy of the test project's static/ made the way README says (the whole directory's
contents).
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import pytest
from testkit.nginx import Nginx, readme_location
from testkit.serve import ProductionServer, copy_project
from testkit.serve import get as serve_get

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
APP = REPO / "tests" / "fixtures" / "userapps" / "fronted"
PREFIX = "/your/path"
pytestmark = pytest.mark.slow


def get(port: int, path: str, request_id: str) -> tuple[int, dict, bytes]:
    """GET ``path`` on 127.0.0.1:``port`` with an X-Request-ID (``testkit.serve.get``): (status, headers (lower-case
    names), body)."""
    return serve_get(port, path, 10.0, headers={"X-Request-ID": request_id})


@pytest.fixture(scope="module")
def fronted(tmp_path_factory):
    """(server, nginx, static copy): README's two locations, the app mounted at /your/path behind them."""
    workdir = tmp_path_factory.mktemp("static-nginx")
    srv = ProductionServer(project=copy_project(APP, workdir / "project"), workdir=workdir, server="granian",
                           workers=2, env={"STACK_URL_PREFIX": PREFIX, "STACK_PROXY_HOPS": "1"})
    srv.start(ready_path=f"{PREFIX}/health/ready")
    try:  # whatever fails from here on, the server started above is stopped
        copied = workdir / "srv-static"
        shutil.copytree(srv.project / "static", copied)  # README: podman cp static:/project/userapp/static/. <dir>/
        block = readme_location(README, f"{PREFIX}/static/")
        alias = re.search(r"^\s*alias (\S+);", block, re.M)
        assert alias and alias.group(1) == "/srv/myapp/static/", block
        block = block.replace(alias.group(1), f"{copied}/")
        # Debian's nginx.conf includes mime.types in its http block; the test's own config does not, hence here
        body = f"        include /etc/nginx/mime.types;\n{block}\n{readme_location(README)}"
        proxy = Nginx(workdir / "nginx", body, f"127.0.0.1:{srv.port}").start()
    except BaseException:
        srv.stop()
        raise
    try:
        yield srv, proxy, copied
    finally:
        proxy.stop()
        srv.stop()


def wait_for_request_id(srv: ProductionServer, request_id: str, timeout: float = 10.0) -> str:
    """The app's access line of the request with X-Request-ID ``request_id`` (lines come in 0.25 s batches)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = re.search(rf"^.* id={re.escape(request_id)} .*$", srv.log_text(), re.M)
        if match:
            return match.group(0)
        time.sleep(0.1)
    raise AssertionError(f"no access line for {request_id}:\n{srv.log_tail()}")


def test_static_file_comes_from_nginx_and_the_app_is_not_hit(fronted):
    srv, proxy, copied = fronted
    expected = (APP / "static" / "app.css").read_bytes()
    status, headers, body = get(proxy.port, f"{PREFIX}/static/app.css", "static-from-nginx")
    assert (status, body) == (200, expected), proxy.errors()
    assert headers["content-type"].startswith("text/css") and headers["cache-control"] == "max-age=3600"
    assert get(proxy.port, f"{PREFIX}/static/missing.css", "static-missing")[0] == 404  # nginx's, not the app's
    # a request the app serves, after those: its access line is written, theirs never were
    assert get(proxy.port, f"{PREFIX}/hello", "app-after-static")[0] == 200
    assert f"GET {PREFIX}/hello 200" in wait_for_request_id(srv, "app-after-static")
    log = srv.log_text()
    assert "static-from-nginx" not in log and "static-missing" not in log and "/static/" not in log
    # nginx read the copy: a changed copy is what it serves next
    (copied / "app.css").write_bytes(b"/* changed */\n")
    assert get(proxy.port, f"{PREFIX}/static/app.css", "static-changed")[2] == b"/* changed */\n"
    # the app itself still serves the project's file (Flask's static route): the fallback without nginx
    status, _, body = get(srv.port, f"{PREFIX}/static/app.css", "static-from-flask")
    assert (status, body) == (200, expected)
    assert f"GET {PREFIX}/static/app.css 200" in wait_for_request_id(srv, "static-from-flask")
