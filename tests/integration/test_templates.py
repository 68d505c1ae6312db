"""The ``web`` and ``api`` templates (and ``simple``) end to end with the local engine: their own tests under
``flask-stack test``, the web pages and form in a browser's way (cookies, redirects), and the api's readiness
check against a real PostgreSQL that is stopped and started again."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import requests
from testkit.need import missing
from testkit.postgres import Postgres, postgres_bin

from .conftest import flask_stack_cmd, free_port, serve

pytestmark = pytest.mark.slow


def _init(cli_env, where: Path, template: str) -> Path:
    result = subprocess.run(flask_stack_cmd("init", str(where), "--template", template), env=cli_env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return where


@pytest.mark.timeout(660)  # `flask-stack test` of up to 600 s
@pytest.mark.parametrize("template", ["simple", "web", "api"])
def test_template_tests_pass_under_flask_stack_test(cli_env, local_env, tmp_path, template):
    project = _init(cli_env, tmp_path / f"{template}-app", template)
    result = subprocess.run(flask_stack_cmd("test", "--engine", "local", "--project", str(project)), env=cli_env,
                            capture_output=True, text=True, timeout=600)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    assert " passed" in out and " failed" not in out
    assert "tests/test_" in out  # the template's own tests ran, beside the stack's checks


def test_web_pages_stylesheet_form_and_flash(cli_env, local_env, tmp_path):
    project = _init(cli_env, tmp_path / "site", "web")
    with serve(cli_env, project, tmp_path) as app:
        home = app.wait_for("/", lambda r: r.status_code == 200)
        assert "<form" in home.text and 'href="/static/style.css"' in home.text
        assert "text/css" in app.get("/static/style.css").headers["Content-Type"]
        browser = requests.Session()
        signed = browser.post(f"{app.base}/messages", data={"name": "Grace", "text": "Hi"}, timeout=10)
        assert signed.status_code == 200 and signed.url == f"{app.base}/"  # followed the 303
        assert "Thank you, Grace: your message is up." in signed.text
        assert "<strong>Grace</strong>: Hi" in signed.text
        refused = browser.post(f"{app.base}/messages", data={"name": "Grace", "text": ""}, timeout=10)
        assert refused.status_code == 400 and "Your message must be 1 to 500 characters." in refused.text


@pytest.fixture
def postgres():
    """A PostgreSQL cluster on a free 127.0.0.1 port, started; removed afterwards."""
    if postgres_bin() is None:
        missing("PostgreSQL is not installed (apt-get install postgresql; .ci/run installs it)")
    server = Postgres(free_port())
    try:
        server.start()
        yield server
    finally:
        server.remove()


def _database(app) -> dict:
    return app.get("/health/ready").json()["checks"]["database"]


def test_api_readiness_follows_a_real_postgresql(cli_env, local_env, tmp_path, postgres):
    project = _init(cli_env, tmp_path / "items", "api")
    with serve(cli_env, project, tmp_path, "run", "-e", f"FLASK_DATABASE_URL={postgres.url}") as app:
        ready = app.wait_for("/health/ready", lambda r: r.status_code == 200, timeout=120)
        assert ready.json()["checks"]["database"] == {"status": "UP", "detail": "postgresql answers"}
        from openapi_spec_validator import validate

        validate(app.get("/apispec_1.json").json())  # a valid OpenAPI 3 document
        created = requests.post(f"{app.base}/items", json={"name": "Kettle", "price_cents": 2500}, timeout=10)
        assert created.status_code == 201, created.text

        postgres.stop()
        down = app.wait_for("/health/ready", lambda r: r.status_code == 503, timeout=30)
        check = down.json()["checks"]["database"]
        assert check["status"] == "DOWN"
        assert "\n" not in check["detail"] and 0 < len(check["detail"]) <= 300, check
        assert "OperationalError" in check["detail"], check
        assert down.json()["status"] == "DOWN"

        postgres.start()
        app.wait_for("/health/ready", lambda r: r.status_code == 200, timeout=30)
        assert _database(app)["status"] == "UP"
        items = app.get("/items").json()
        assert [item["name"] for item in items] == ["Kettle"]  # stored in PostgreSQL, read after its restart


def test_two_api_projects_do_not_share_items_and_answer_curl_with_json(cli_env, local_env, tmp_path):
    first, second = _init(cli_env, tmp_path / "one", "api"), _init(cli_env, tmp_path / "two", "api")
    with serve(cli_env, first, tmp_path) as app:
        app.wait_for("/health/ready", lambda r: r.status_code == 200, timeout=120)
        created = requests.post(f"{app.base}/items", json={"name": "Kettle"}, timeout=10)
        assert created.status_code == 201
        assert [item["name"] for item in app.get("/items").json()] == ["Kettle"]
        # as curl asks: Accept */* (requests' default), or none at all
        for headers in ({"Accept": "*/*"}, {"Accept": None}):
            cases = {404: requests.get(f"{app.base}/items/999", headers=headers, timeout=10),
                     405: requests.patch(f"{app.base}/items", headers=headers, timeout=10),
                     415: requests.post(f"{app.base}/items", data={"name": "x"}, headers=headers, timeout=10),
                     422: requests.post(f"{app.base}/items", json={"name": ""}, headers=headers, timeout=10),
                     400: requests.post(f"{app.base}/items", data="{not json", timeout=10,
                                        headers={**headers, "Content-Type": "application/json"})}
            for status, response in cases.items():
                assert response.status_code == status
                assert response.headers["Content-Type"] == "application/problem+json", (status, response.text)
                assert response.json()["status"] == status
        # two malformed bodies within a minute: one WARNING line (a client's mistake, server.mistakes), the other DEBUG
        warnings = [line for line in app.output().splitlines() if "malformed JSON body: POST /items" in line]
        assert len(warnings) == 1 and "[WARNING]" in warnings[0], app.output()[-3000:]
    assert (first / "instance" / "items.sqlite3").is_file()
    with serve(cli_env, second, tmp_path) as app:
        app.wait_for("/health/ready", lambda r: r.status_code == 200, timeout=120)
        assert app.get("/items").json() == []
