"""``flask-stack run|debug|test|stop --engine local`` end to end on a project made by ``flask-stack init``."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from .conftest import START_TIMEOUT, descendants, flask_stack_cmd, free_port, serve, still_running
from testkit.dap import add_greet_view, attach, break_in_view
from testkit.net import wait_until
from testkit.serve import METRICS_SETTLE_SECONDS

pytestmark = pytest.mark.slow


def test_run_serves_every_stack_endpoint(cli_env, project, tmp_path):
    with serve(cli_env, project, tmp_path) as app:
        sys.stderr.write(f"\n[integration] first start (venv ready) -> /health in {app.start_seconds:.2f} s\n")
        root = app.get("/", allow_redirects=False)
        assert root.status_code in (301, 302, 303, 307, 308)
        assert root.headers["Location"].endswith("/apidocs/")

        hello = app.get("/hello")
        assert (hello.status_code, hello.text) == (200, "Hello from Appsody!")

        for path in ("/health", "/health/live", "/health/ready"):
            health = app.wait_for(path, lambda r: r.status_code == 200, timeout=15)
            assert health.json()["status"] == "UP", path

        metrics = app.get("/metrics")
        assert metrics.status_code == 200
        assert metrics.headers["Content-Type"].startswith("text/plain")
        hello_series = [line for line in metrics.text.splitlines()
                        if line.startswith("http_requests_total{") and '"/hello"' in line]
        assert hello_series and float(hello_series[0].rsplit(" ", 1)[1]) >= 1.0

        docs = app.get("/apidocs/")
        assert docs.status_code == 200 and "swagger" in docs.text.lower()
        spec = app.get("/apispec_1.json").json()
        assert "/hello" in spec["paths"] and "get" in spec["paths"]["/hello"]

        out = app.output()
        assert "flask-stack: engine: local (from --engine)" in out
        assert re.search(r"^flask-stack: serving in \d+\.\d s:$", out, re.M), out
        # the template's own route is the app's URL shown; its / is the stack's redirect to the API docs
        assert f"flask-stack: app       {app.base}/hello  ({app.base}/ redirects to the API docs)\n" in out
        for url in (f"{app.base}/", f"{app.base}/health", f"{app.base}/metrics", f"{app.base}/apidocs/"):
            assert url in out


def test_urls_are_printed_once_the_server_answers(cli_env, project, tmp_path):
    source = project / "__init__.py"
    source.write_text("import time\ntime.sleep(3)\n" + source.read_text())  # a slow first import
    with serve(cli_env, project, tmp_path) as app:
        app.wait_for("/hello", lambda r: r.status_code == 200)
        deadline = time.monotonic() + 5
        while "/apidocs/" not in app.output() and time.monotonic() < deadline:
            time.sleep(0.05)
        out = app.output()
        # the app process logs "app ready" just before it starts accepting; the URLs come after that
        assert out.index("app ready in") < out.index(f"flask-stack: app       {app.base}/"), out
        assert out.count(f"{app.base}/apidocs/") == 1


def test_url_prefix_from_e_serves_and_announces_under_it(cli_env, project, tmp_path):
    with serve(cli_env, project, tmp_path, "run", "-e", "STACK_URL_PREFIX=/your/path/",
               health="/your/path/health") as app:
        app.wait_for("/your/path/hello", lambda r: r.status_code == 200)
        assert app.get("/hello").status_code == 404
        deadline = time.monotonic() + 5
        while "/apidocs/" not in app.output() and time.monotonic() < deadline:
            time.sleep(0.05)
        out = app.output()
        for line in (f"app       {app.base}/your/path/", f"health    {app.base}/your/path/health ",
                     f"metrics   {app.base}/your/path/metrics", f"API docs  {app.base}/your/path/apidocs/"):
            assert line in out, out



def test_url_prefix_from_the_projects_dotenv_serves_and_announces_under_it(cli_env, project, tmp_path):
    (project / ".env").write_text("STACK_URL_PREFIX=/from/env\n")
    with serve(cli_env, project, tmp_path, health="/from/env/health") as app:
        app.wait_for("/from/env/hello", lambda r: r.status_code == 200)
        deadline = time.monotonic() + 5
        while "/apidocs/" not in app.output() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert f"app       {app.base}/from/env/" in app.output(), app.output()

def test_edits_reload_and_a_syntax_error_is_survived(cli_env, project, tmp_path):
    source = project / "__init__.py"
    original = source.read_text()
    with serve(cli_env, project, tmp_path) as app:
        app.wait_for("/hello", lambda r: r.status_code == 200)
        source.write_text(original.replace("Hello from Appsody!", "Hello again!"))
        app.wait_for("/hello", lambda r: r.status_code == 200 and r.text == "Hello again!")

        source.write_text(original + "\ndef broken(:\n")
        broken = app.wait_for("/hello", lambda r: r.status_code == 500)
        assert "SyntaxError" in broken.text and "__init__.py" in broken.text
        assert "Traceback" not in broken.text
        assert app.proc.poll() is None  # the loop survives

        source.write_text(original.replace("Hello from Appsody!", "Fixed!"))
        app.wait_for("/hello", lambda r: r.status_code == 200 and r.text == "Fixed!")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_everything(cli_env, project, tmp_path, sig):
    with serve(cli_env, project, tmp_path) as app:
        app.wait_for("/hello", lambda r: r.status_code == 200)
        family = descendants(app.proc.pid)
        assert len(family) >= 2  # the dev loop and the app process it forked
        status = app.stop(sig)
        assert status == 0, app.output()[-3000:]
        deadline = time.monotonic() + 10
        while still_running(family) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert still_running(family) == []
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", app.port), timeout=2).close()


@pytest.mark.parametrize("engine", [["--engine", "local"], []], ids=["local", "default"])
def test_stop_command_stops_the_running_server(cli_env, project, tmp_path, engine):
    with serve(cli_env, project, tmp_path) as app:
        family = descendants(app.proc.pid)
        result = subprocess.run(flask_stack_cmd("stop", *engine, "--project", str(project)),
                                env=cli_env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert result.stderr == (f"flask-stack: stopped the server of {project} (pid {app.proc.pid}, "
                                 f"port {app.port}, local engine)\n")
        assert app.proc.wait(timeout=30) == 0
        assert still_running(family) == []
        again = subprocess.run(flask_stack_cmd("stop", "--engine", "local", "--project", str(project)),
                               env=cli_env, capture_output=True, text=True, timeout=120)
        assert again.stderr == f"flask-stack: nothing of {project} is running\n"


@pytest.mark.parametrize("same_port", [True, False], ids=["same-port", "other-port"])
def test_second_run_of_a_served_project_is_one_line(cli_env, project, tmp_path, same_port):
    with serve(cli_env, project, tmp_path) as app:
        port = app.port if same_port else free_port()
        result = subprocess.run(
            flask_stack_cmd("run", "--engine", "local", "--port", str(port), "--project", str(project)),
            env=cli_env, capture_output=True, text=True, timeout=60,
        )
        assert result.returncode == 1
        assert result.stderr == (f"flask-stack: {project} is already being served (pid {app.proc.pid}, "
                                 f"port {app.port}); `flask-stack stop` stops it\n")
        assert app.get("/hello").status_code == 200  # the first server is untouched


def test_port_held_by_another_project_of_ours_names_it(cli_env, project, tmp_path):
    other = tmp_path / "other-app"
    assert subprocess.run(flask_stack_cmd("init", str(other)), env=cli_env, capture_output=True,
                          timeout=60).returncode == 0
    with serve(cli_env, project, tmp_path) as app:
        result = subprocess.run(flask_stack_cmd("run", "--port", str(app.port), "--project", str(other)),
                                env=cli_env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 1
        assert result.stderr == (f"flask-stack: port {app.port} is in use by flask-stack serving {project} (pid "
                                 f"{app.proc.pid}, local engine); `flask-stack stop --project {project}` stops it, "
                                 f"or pass --port N\n")


def _probe(port: int) -> None:
    """A port check: connect, close without a word (it used to wedge debugpy: microsoft/debugpy#1308)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass


def test_debug_stops_at_a_breakpoint_in_a_view_after_a_port_probe(cli_env, project, tmp_path):
    """`flask-stack debug --engine local`: VS Code's attach (after a port check), a breakpoint in the user's
    view, the request held there, a local read, continue, the answer."""
    init = project / "__init__.py"
    line, _ = add_greet_view(init)
    debug_port = free_port()
    with serve(cli_env, project, tmp_path, "debug", "--debug-port", str(debug_port)) as app:
        app.wait_for("/greet", lambda r: r.status_code == 200)
        # the URLs are said once the app answers and its API spec is read (the app route shown is from it)
        said = f"debugger  127.0.0.1:{debug_port}"
        wait_until(lambda: True if said in app.output() else None, 20)
        _probe(debug_port)
        session = attach(debug_port, {str(init): [line]})
        try:
            name, (status, body, _) = break_in_view(session, f"{app.base}/greet?name=local", str(init), line,
                                                    "name")
        finally:
            session.close()
        assert (name, status, body) == ("'local'", 200, "Hello, local")


def test_debug_wait_serves_nothing_before_the_client_attaches(cli_env, project, tmp_path):
    """`flask-stack debug --wait`: no request is answered before a debugger client attaches (a port check is
    no client); then the breakpoint works as without --wait."""
    init = project / "__init__.py"
    line, _ = add_greet_view(init)
    debug_port = free_port()
    with serve(cli_env, project, tmp_path, "debug", "--debug-port", str(debug_port), "--wait", health=None) as app:
        deadline = time.monotonic() + START_TIMEOUT
        while "waiting for a debugger client to attach" not in app.output():
            assert app.proc.poll() is None and time.monotonic() < deadline, app.output()[-3000:]
            time.sleep(0.1)
        _probe(debug_port)
        with pytest.raises(requests.exceptions.ReadTimeout):
            app.get("/hello", timeout=3)  # accepted into the backlog, never answered while waiting
        assert "debugger client attached" not in app.output()
        session = attach(debug_port, {str(init): [line]})
        try:
            assert app.wait_for("/hello", lambda r: r.status_code == 200).text == "Hello from Appsody!"
            name, (status, body, _) = break_in_view(session, f"{app.base}/greet", str(init), line, "name")
        finally:
            session.close()
        assert (name, status, body) == ("'world'", 200, "Hello, world")


@pytest.mark.timeout(660)  # two `flask-stack test` of up to 300 s
def test_test_command_reports_pytest_status(cli_env, project, tmp_path):
    report = tmp_path / "junit.xml"
    command = flask_stack_cmd("test", "--engine", "local", "--project", str(project), "--junitxml", str(report))
    passed = subprocess.run(command, env=cli_env, capture_output=True, text=True, timeout=300)
    assert passed.returncode == 0, passed.stdout[-3000:] + passed.stderr[-3000:]
    assert "test_hello_says_hello" in report.read_text()

    (project / "tests" / "test_broken.py").write_text(
        "def test_hello_says_goodbye(client):\n    assert client.get('/hello').text == 'Goodbye'\n")
    failed = subprocess.run(command, env=cli_env, capture_output=True, text=True, timeout=300)
    assert failed.returncode == 1, failed.stdout[-3000:] + failed.stderr[-3000:]
    assert "test_hello_says_goodbye" in failed.stdout + failed.stderr
    suite = ET.parse(report).getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("9", "1", "0")  # 2 own, 7 checks


def test_production_serves_with_the_default_server(cli_env, project, tmp_path):
    with serve(cli_env, project, tmp_path, "run", "--production", "-e", "WEB_CONCURRENCY=2") as app:
        assert app.wait_for("/hello", lambda r: r.status_code == 200).text == "Hello from Appsody!"
        assert app.wait_for("/health/ready", lambda r: r.status_code == 200).json()["status"] == "UP"
        for _ in range(6):
            app.get("/hello")
        time.sleep(METRICS_SETTLE_SECONDS)  # every worker's counts written (server.request_batch)
        totals = [float(line.rsplit(" ", 1)[1]) for line in app.get("/metrics").text.splitlines()
                  if line.startswith("http_requests_total{") and 'endpoint="/hello"' in line]
        assert sum(totals) == 7  # the first 200 wait_for saw, then six (nothing answers /hello before the app)
        family = descendants(app.proc.pid)
        assert any(Path(f"/proc/{pid}/comm").read_text().strip() == "granian" for pid in family)  # serve's name
        assert app.stop() == 0, app.output()[-3000:]
        deadline = time.monotonic() + 10
        while still_running(family) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert still_running(family) == []


@pytest.mark.parametrize("command", ["run", "debug", "test"])
@pytest.mark.parametrize("layout", ["several-packages", "none"])
def test_no_app_to_find_stops_with_one_line_and_no_url(cli_env, local_env, tmp_path, command, layout):
    project = tmp_path / "work"
    project.mkdir()
    (project / "Pipfile").write_text("[packages]\n")
    packages = ("api", "ctr", "web") if layout == "several-packages" else ()
    for name in packages:
        (project / name).mkdir()
        (project / name / "__init__.py").write_text("")
    ports = ["--port", str(free_port())] if command != "test" else []
    if command == "debug":
        ports += ["--debug-port", str(free_port())]
    result = subprocess.run(flask_stack_cmd(command, *ports, "--project", str(project)), env=cli_env,
                            capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    errors = [line for line in output.splitlines() if "ERROR" in line or "error" in line.lower()]
    expected = ("holds several packages (api, ctr, web); say which is the app with --app NAME (FLASK_APP)"
                if packages else f"no Flask app found in {project}")
    assert len(errors) == 1 and expected in errors[0], output
    assert "http://" not in output and "serving" not in output, output
    assert "Traceback" not in output


def test_from_inside_tests_the_message_names_the_project(cli_env, project):
    result = subprocess.run(flask_stack_cmd("run", "--port", str(free_port())), cwd=project / "tests", env=cli_env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr == (f"flask-stack: not a python-flask stack project: {project / 'tests'} has no Flask app; "
                             f"the project may be {project} (run there, or pass --project {project})\n")


def test_run_serves_a_factory_app_under_its_app_config_prefix_and_timeout(cli_env, project, tmp_path):
    """A factory that sets app.config["STACK_URL_PREFIX"] and ["STACK_HEALTH_TIMEOUT"] before ``Stack(app)`` is
    served there, with that timeout (the extension reads app.config; README "Stack settings in app.config")."""
    fixture = Path(__file__).resolve().parents[1] / "fixtures" / "userapps" / "configured" / "app.py"
    (project / "__init__.py").unlink()
    (project / "app.py").write_text(fixture.read_text(encoding="utf-8"), encoding="utf-8")
    with serve(cli_env, project, tmp_path, health="/x/health/ready") as app:
        hello = app.get("/x/hello")
        assert (hello.status_code, hello.text) == (200, "hello from /x")
        assert app.get("/hello").status_code == 404
        live = app.get("/x/health/live")
        assert live.status_code == 503
        assert live.json()["checks"]["hung"] == {"status": "DOWN", "detail": "timed out after 0.3s"}
