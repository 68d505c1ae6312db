"""The dev loop's own lines: the runtime's log format (text or JSON, from LOG_FORMAT), URLs said once."""

from __future__ import annotations

import json

from flask_stack.launch import app_route

from .conftest import HELLO, LOG_LINE


def test_lines_have_the_runtime_format_and_urls_appear_once(devloop, project):
    loop = devloop("run", project)
    loop.wait_watching()
    loop.wait_log("/apidocs/\n")  # the URL line, said once the app answers
    loop.get("/hello")
    loop.wait_log(" GET /hello 200 ")  # the app's access line, from the forked app process
    lines = [line for line in loop.output().splitlines() if line.strip()]
    assert lines and all(LOG_LINE.match(line) for line in lines), "\n".join(lines)
    assert not [line for line in lines if "[devloop]" in line]
    out = loop.output()
    for where in ("/", "/hello", "/health", "/metrics", "/apidocs/"):
        assert out.count(f"{loop.url}{where} ") + out.count(f"{loop.url}{where}\n") == 1, out
    assert any("[INFO] serving " in line for line in lines)


def test_url_line_names_the_route_flask_stack_run_names(devloop, project, tmp_path):
    """The template's / is the stack's redirect to the API docs: the dev loop shows its /hello, in the words and
    from the same choice (``devloop.approute``) as ``flask-stack run``; an app with its own / shows /. A reload
    says nothing again."""
    loop = devloop("run", project)
    loop.wait_log("/apidocs/\n")
    line = next(line for line in loop.output().splitlines() if "API docs " in line)
    assert f"[INFO] app {loop.url}/hello  ({loop.url}/ redirects to the API docs)  health {loop.url}/health  " \
           f"metrics {loop.url}/metrics  API docs {loop.url}/apidocs/" in line, line
    assert app_route(loop.port) == "/hello"  # the CLI's answer for the same running app
    (project / "__init__.py").write_text((project / "__init__.py").read_text() + "\n# saved again\n")
    loop.wait_log("reloading: ")
    loop.wait_text(HELLO)
    assert loop.output().count("API docs ") == 1, loop.output()

    own = tmp_path / "own"
    own.mkdir()
    (own / "__init__.py").write_text(
        "from flask import Flask\n\napp = Flask(__name__)\n\n\n@app.get('/')\ndef index():\n"
        "    return 'mine'\n\n\n@app.get('/other')\ndef other():\n    return 'other'\n")
    mine = devloop("run", own)
    mine.wait_log("/apidocs/\n")
    line = next(line for line in mine.output().splitlines() if "API docs " in line)
    assert f"[INFO] app {mine.url}/  health " in line and "redirects" not in line, line
    assert app_route(mine.port) is None


def test_log_format_json_covers_the_loop_and_the_app(devloop, project):
    loop = devloop("run", project, env={"LOG_FORMAT": "json"})
    loop.wait_watching()
    loop.wait_log("/apidocs/")  # the URL line, said once the app answers
    loop.get("/hello")
    loop.wait_log('"GET /hello 200 ')
    records = [json.loads(line) for line in loop.output().splitlines() if line.strip()]  # every line is JSON
    mine = [r for r in records if r["logger"] == "devloop"]
    assert any(r["message"].startswith("serving ") and r["level"] == "INFO" for r in mine), records
    assert any(f"{loop.url}/metrics" in r["message"] for r in mine)
    assert any(r["message"].startswith("watching ") for r in mine)
    access = [r for r in records if r["logger"] == "server.access"]
    assert access and access[0]["path"] == "/hello" and access[0]["status"] == 200


def test_show_urls_off_leaves_them_to_the_caller(devloop, project):
    """``flask-stack run`` prints the URLs itself (with the host's ports) and sets STACK_SHOW_URLS=0."""
    loop = devloop("debug", project, env={"STACK_SHOW_URLS": "0", "STACK_DEBUG_PORT": "0"})
    loop.wait_text(HELLO)
    out = loop.output()
    assert "serving " in out
    assert loop.url not in out and "/apidocs/" not in out and "attach a DAP client" not in out, out


def test_log_level_applies_and_a_bad_format_is_one_line(devloop, project):
    quiet = devloop("run", project, "--no-watch", env={"LOG_LEVEL": "warning"})
    quiet.wait_text(HELLO)
    assert "[INFO]" not in quiet.output(), quiet.output()
    bad = devloop("run", project, env={"LOG_FORMAT": "xml"})
    assert bad.wait_exit(30) == 1
    lines = [line for line in bad.output().splitlines() if line.strip()]
    assert len(lines) == 1 and LOG_LINE.match(lines[0]), lines
    assert "[ERROR] LOG_FORMAT='xml' is not a log format; use text or json" in lines[0]


def test_url_prefix_holds_in_the_dev_loop(devloop, project):
    """STACK_URL_PREFIX: the dev loop's app answers under the prefix only, and the URLs it logs carry it."""
    loop = devloop("run", project, env={"STACK_URL_PREFIX": "/your/path"})
    loop.wait_text(HELLO, path="/your/path/hello")
    loop.wait_log("watching ")
    loop.wait_log("/apidocs/\n")  # the URL line, said once the app answers
    assert loop.get("/hello").status_code == 404
    assert loop.get("/your/path/health/ready").status_code == 200
    assert loop.get("/your/path/", allow_redirects=False).headers["Location"] == "/your/path/apidocs/"
    out = loop.output()
    for where in ("/health", "/metrics", "/apidocs/"):
        assert f"{loop.url}/your/path{where}" in out, out
    assert f"app {loop.url}/your/path/hello  ({loop.url}/your/path/ redirects to the API docs)" in out, out
