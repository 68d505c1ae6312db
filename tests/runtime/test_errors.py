"""Error responses: JSON for JSON clients, HTML otherwise, no tracebacks, malformed JSON is a 400."""

from __future__ import annotations

import logging

import pytest

from .support import write_userapp

JSON = {"Accept": "application/json"}


def test_404_json(make_app):
    response = make_app("basic").test_client().get("/missing", headers=JSON)
    assert response.status_code == 404
    assert response.mimetype == "application/json"
    error = response.get_json()["error"]
    assert error["status"] == 404 and error["title"] == "Not Found"
    assert error["detail"]
    assert error["request_id"] == response.headers["X-Request-ID"]


def test_404_html_for_browsers_and_curl(make_app):
    client = make_app("basic").test_client()
    for accept in ("text/html,application/xhtml+xml,*/*;q=0.8", "*/*", None):
        response = client.get("/missing", headers={"Accept": accept} if accept else {})
        assert response.status_code == 404
        assert response.mimetype == "text/html"
        assert "<h1>404 Not Found</h1>" in response.get_data(as_text=True)


def test_abort_description_kept(make_app):
    response = make_app("basic").test_client().get("/forbidden", headers=JSON)
    assert response.status_code == 403
    assert response.get_json()["error"]["detail"] == "members only"


def test_405_keeps_allow_header(make_app):
    response = make_app("basic").test_client().delete("/hello", headers=JSON)
    assert response.status_code == 405
    assert "GET" in response.headers["Allow"]
    assert response.get_json()["error"]["title"] == "Method Not Allowed"


@pytest.mark.parametrize("headers", [JSON, {"Accept": "text/html"}])
def test_500_has_no_traceback_but_is_logged(make_app, caplog, headers):
    client = make_app("basic", TESTING=False).test_client()
    with caplog.at_level(logging.ERROR):
        response = client.get("/boom", headers=headers)
    assert response.status_code == 500
    body = response.get_data(as_text=True)
    assert "Traceback" not in body and "secret internal detail" not in body and "RuntimeError" not in body
    assert "Internal Server Error" in body
    logged = [r for r in caplog.records if r.exc_info]
    assert logged and "secret internal detail" in str(logged[0].exc_info[1])  # the traceback stays server-side


def test_malformed_json_is_400(make_app, caplog):
    client = make_app("basic", TESTING=False).test_client()
    with caplog.at_level(logging.INFO):
        response = client.post("/echo", data="{not json", content_type="application/json")
    assert response.status_code == 400
    assert response.get_json()["error"]["status"] == 400  # the request was JSON, so the answer is too
    reason = "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"
    assert response.get_json()["error"]["detail"] == f"The request body is not valid JSON: {reason}."
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].exc_info is None
    assert warnings[0].getMessage().startswith(f"malformed JSON body: POST /echo: {reason} id=")
    assert client.post("/echo", data="{}", content_type="text/plain").status_code == 415
    ok = client.post("/echo", json={"a": 1})
    assert ok.status_code == 200 and ok.get_json() == {"a": 1}


def test_debug_mode_propagates_for_the_debugger(make_app):
    app = make_app("basic", TESTING=False, DEBUG=True)
    assert app.debug is True
    with pytest.raises(RuntimeError, match="secret internal detail"):
        app.test_client().get("/boom")


def test_user_error_handler_wins(make_app, tmp_path):
    source = (
        "from flask import Blueprint\n"
        "blueprint = Blueprint('eh', __name__)\n"
        "@blueprint.app_errorhandler(404)\n"
        "def not_found(e):\n"
        "    return 'my own 404', 404\n"
    )
    write_userapp(tmp_path / "eh", source)
    client = make_app(None, USERAPP="userapp", USERAPP_DIR=str(tmp_path / "eh")).test_client()
    response = client.get("/nowhere", headers=JSON)
    assert response.status_code == 404 and response.get_data(as_text=True) == "my own 404"


def test_redirects_untouched(make_app):
    response = make_app("basic").test_client().get("/apidocs")  # strict slashes: 308 to /apidocs/
    assert response.status_code == 308
    assert response.headers["Location"].endswith("/apidocs/")
