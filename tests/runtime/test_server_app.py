"""``server.app``: lazy creation, ``import server`` imports no user code, SystemExit(4) on failure, real
servers (``flask --app server``, gunicorn ``server:app``) load it."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from .support import USERAPPS, free_port, http_get, stop_group, subprocess_env, wait_ready

_PROBE = r"""
import json, os, sys
import flask
import server
name = os.path.basename(os.environ["STACK_USERAPP_DIR"])  # the project package's module name
before = name in sys.modules
app = server.app
print(json.dumps({"before": before, "after": name in sys.modules, "same": app is server.app,
                  "flask": isinstance(app, flask.Flask), "rules": sorted(r.rule for r in app.url_map.iter_rules())}))
"""


def run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env=subprocess_env(**env), capture_output=True, text=True,
                          timeout=120)


def test_lazy_app_created_on_first_access():
    proc = run_python(_PROBE, STACK_USERAPP_DIR=str(USERAPPS / "basic"), LOG_LEVEL="WARNING")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["before"] is False  # import server alone imported no user code
    assert result["after"] is True
    assert result["same"] is True  # cached
    assert result["flask"] is True  # a flask.Flask (the stack's subclass, server.apps.StackFlask)
    assert "/hello" in result["rules"]


def test_lazy_app_appsody_style():
    proc = run_python(_PROBE, STACK_USERAPP_DIR=str(USERAPPS / "appsody"), LOG_LEVEL="WARNING")
    assert proc.returncode == 0, proc.stderr
    assert "/hello" in json.loads(proc.stdout)["rules"]


def test_other_attributes_raise_attribute_error():
    import server

    with pytest.raises(AttributeError):
        server.no_such_thing  # noqa: B018
    assert "app" in dir(server)


@pytest.mark.parametrize("fixture, expected", [
    ("syntax_error", ":7: SyntaxError: "),
    ("no_init", "no Flask app found"),
])
def test_import_failure_exits_4_with_one_line(fixture, expected):
    proc = run_python("import server\nserver.app\n", STACK_USERAPP_DIR=str(USERAPPS / fixture))
    assert proc.returncode == 4
    output = proc.stdout + proc.stderr
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0], output
    assert "[ERROR]" in lines[0]


def test_bad_setting_exits_4():
    proc = run_python("import server\nserver.app\n", STACK_USERAPP_DIR=str(USERAPPS / "basic"),
                      STACK_HEALTH_TIMEOUT="soon")
    assert proc.returncode == 4
    assert "STACK_HEALTH_TIMEOUT='soon' is not a number of seconds" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


def test_flask_cli_loads_server_app():
    proc = subprocess.run([sys.executable, "-m", "flask", "--app", "server", "routes"],
                          env=subprocess_env(STACK_USERAPP_DIR=str(USERAPPS / "basic"), LOG_LEVEL="WARNING"),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "/users/<int:user_id>" in proc.stdout and "/health/ready" in proc.stdout


def _start_gunicorn(fixture: str, port: int, *args: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--graceful-timeout", "5",
         *(args or ("--workers", "2")), "server:app"],
        env=subprocess_env(STACK_USERAPP_DIR=str(USERAPPS / fixture), **env),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )


@pytest.mark.parametrize("args", [("--workers", "2"), ("--workers", "2", "--preload")], ids=["fork", "preload"])
def test_gunicorn_serves_server_app(tmp_path, args):
    port = free_port()
    proc = _start_gunicorn("basic", port, *args, PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
    try:
        base = f"http://127.0.0.1:{port}"
        assert wait_ready(base, proc), "gunicorn did not become ready"
        for _ in range(10):
            assert http_get(base + "/hello?name=gunicorn") == (200, b"Hello, gunicorn!")
        time.sleep(0.2)  # each worker writes its counts at most 0.05 s after a request (server.request_batch)
        code, body = http_get(base + "/metrics")
        assert code == 200
        text = body.decode()
        line = [ln for ln in text.splitlines() if ln.startswith("http_requests_total{")
                and 'endpoint="/hello"' in ln]
        assert len(line) == 1 and line[0].endswith(" 10.0"), text  # exact over both workers
        pids = {ln.split('pid="')[1].split('"')[0] for ln in text.splitlines()
                if ln.startswith("flask_stack_worker_resident_memory_bytes{")}
        assert pids and str(proc.pid) not in pids  # only workers, never the (preloading) arbiter
        assert http_get(base + "/nope")[0] == 404
    finally:
        output = stop_group(proc)
    assert proc.returncode == 0, output
    assert "GET /hello 200" in output  # the stack's access line from the workers


# With several workers and no preload, gunicorn's arbiter can itself crash with a HaltServer traceback and exit 1
# when two workers fail at once (a gunicorn race, benoitc/gunicorn#2186); it still stops. Hence one worker or
# --preload (the app loads once, in the arbiter) here.
@pytest.mark.parametrize("args", [("--workers", "1"), ("--workers", "2", "--preload")], ids=["one-worker", "preload"])
def test_gunicorn_stops_on_import_error(args):
    proc = _start_gunicorn("syntax_error", free_port(), *args)
    try:
        proc.wait(60)
    finally:
        output = stop_group(proc)
    assert proc.returncode == 4, output
    assert "syntax_error failed to import:" in output and ":7: SyntaxError" in output
    assert "Traceback" not in output
