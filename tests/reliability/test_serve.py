"""The ``serve`` entry script and gunicorn.conf.py: metrics dir handling, one-line errors, forced-off debug, logs."""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid

import pytest
from testkit.net import free_port
from testkit.procs import pid_namespace_wrapper, zombies_of
from testkit.serve import METRICS_SETTLE_SECONDS, SERVERS, VENV_BIN, ProductionServer, copy_project, get

from .harness import FIXTURE_USERAPP, left_in, run_serve, sample_value, scrape

pytestmark = pytest.mark.slow


BAD_SETTINGS = [
    ({"STACK_SERVER": "apache"}, "STACK_SERVER='apache' is not a server; use granian, gunicorn or uwsgi"),
    ({"STACK_FRONT": "apache"}, "STACK_FRONT='apache' is not a front; use none or nginx"),
    ({"STACK_UWSGI_SOCKET": "0.0.0.0:3031"}, "STACK_UWSGI_SOCKET='0.0.0.0:3031' is not a loopback address"),
    ({"STACK_UWSGI_SOCKET": ":3031"}, "STACK_UWSGI_SOCKET=':3031' is not a loopback address"),
    ({"STACK_UWSGI_SOCKET": "3031"}, "STACK_UWSGI_SOCKET='3031' is neither HOST:PORT"),
    ({"PORT": "eighty"}, "PORT='eighty' is not a whole number"),
    ({"PORT": "x"}, "PORT='x' is not a whole number"),
    ({"PORT": "70000"}, "PORT='70000' must be from 1 to 65535"),
    ({"WEB_CONCURRENCY": ""}, "WEB_CONCURRENCY='' is not a whole number"),
    ({"WEB_CONCURRENCY": "0"}, "WEB_CONCURRENCY='0' must be at least 1"),
    ({"STACK_THREADS": "many"}, "STACK_THREADS='many' is not a whole number"),
    ({"STACK_GRACEFUL_TIMEOUT": "5", "STACK_SHUTDOWN_DELAY": "9"}, "must be below STACK_GRACEFUL_TIMEOUT"),
    ({"STACK_SHUTDOWN_DELAY": "soon"}, "STACK_SHUTDOWN_DELAY='soon' is not a number of seconds"),
    ({"LOG_FORMAT": "xml"}, "LOG_FORMAT='xml' is not a log format; use text or json"),
    ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL='LOUD' is not a log level"),
    ({"STACK_MAX_CONTENT_LENGTH": "16M"}, "STACK_MAX_CONTENT_LENGTH='16M' is not a whole number"),
    ({"STACK_LOG_FLUSH_SECONDS": "-1"}, "STACK_LOG_FLUSH_SECONDS='-1' must be at least 0"),
    ({"PROMETHEUS_MULTIPROC_DIR": "/proc/no/such/dir"}, "PROMETHEUS_MULTIPROC_DIR=/proc/no/such/dir cannot be used"),
]


@pytest.mark.parametrize("server", SERVERS)
@pytest.mark.parametrize("env, expected", BAD_SETTINGS, ids=[" ".join(f"{k}={v}" for k, v in e.items())
                                                            for e, _ in BAD_SETTINGS])
def test_bad_settings_fail_with_one_line_and_exit_2(server, env, expected, tmp_path):
    done = run_serve({"STACK_SERVER": server, **env}, tmp_path)
    assert done.returncode == 2, done.stdout
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], done.stdout
    assert lines[0].startswith("serve: ")
    assert "Traceback" not in done.stdout
    assert not left_in(tmp_path), "temporary files left behind"


@pytest.mark.parametrize("server", SERVERS)
@pytest.mark.parametrize("workers", [1, 3])
def test_app_that_fails_to_load_exits_4_with_one_line(server, workers, tmp_path):
    """A user package that raises at import: one line naming the file and line, exit status 4, whatever the server
    and the worker count; no temporary dir left."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "__init__.py").write_text("import os\n\nraise RuntimeError('no database')\n")
    done = run_serve({"STACK_SERVER": server, "WEB_CONCURRENCY": str(workers), "PORT": str(free_port()),
                       "STACK_USERAPP_DIR": str(project)}, tmp_path)
    assert done.returncode == 4, done.stdout
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, done.stdout
    assert f"{project / '__init__.py'}:3: RuntimeError: no database" in lines[0], done.stdout
    assert not left_in(tmp_path), "temporary files left behind"


@pytest.mark.parametrize("server", SERVERS)
def test_the_check_leaves_the_app_to_the_workers_when_one_loaded_it(server, tmp_path):
    """Beside the workers the app check waits for the first worker's own load and does not load the app a second
    time on two cores' worth of start: with 2 workers the user package is imported twice, not three times (a check
    that loads it, at a lower priority, imports it within a second of the start on an idle machine: the test
    watches for 2 s after the "serving on" line)."""
    project = tmp_path / "project"
    project.mkdir()
    marks = tmp_path / "imports"
    (project / "__init__.py").write_text(
        "import os\nfrom flask import Blueprint\n"
        f"with open({str(marks)!r}, 'a') as fh:\n    fh.write(f'{{os.getpid()}}\\n')\n"
        "blueprint = Blueprint('marked', __name__)\n"
        "@blueprint.route('/hello')\ndef hello():\n    return 'hello'\n")
    srv = ProductionServer(project=project, workdir=tmp_path, server=server, workers=2).start()
    try:
        srv.wait_for_log(r"flask-stack serving on ")
        assert get(srv.port, "/hello")[0] == 200
        deadline = time.monotonic() + 2
        while len(marks.read_text().split()) <= 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        pids = marks.read_text().split()
        assert len(pids) == 2 and len(set(pids)) == 2, pids
    finally:
        srv.stop()


@pytest.mark.parametrize("server", SERVERS)
def test_stale_metric_files_are_wiped_before_start(server, start_server, tmp_path):
    """A previous run's counter files in PROMETHEUS_MULTIPROC_DIR must not leak into the new run's totals."""
    metrics_dir = tmp_path / "stale-metrics"
    metrics_dir.mkdir()
    writer = (
        "from prometheus_client import Counter\n"
        "c = Counter('http_requests_total', 'x', ['method', 'endpoint', 'status'])\n"
        "c.labels('GET', '/hello', '200').inc(1000)\n"
    )
    subprocess.run(
        [str(VENV_BIN / "python"), "-c", writer], env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}, check=True,
        timeout=60,
    )
    stale = list(metrics_dir.glob("counter_*.db"))
    assert stale, "the stale counter file was not written"
    keep = metrics_dir / "README.txt"
    keep.write_text("not a metric file")

    srv = start_server(server=server, env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)})
    assert get(srv.port, "/hello")[0] == 200
    assert sample_value(scrape(srv.port), "http_requests_total", endpoint="/hello") == 1
    assert not any(path.exists() for path in stale)
    assert keep.read_text() == "not a metric file"


@pytest.mark.parametrize("server", SERVERS)
def test_temporary_metrics_dir_made_and_removed(server, start_server, tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    srv = start_server(server=server, env={"PROMETHEUS_MULTIPROC_DIR": None, "TMPDIR": str(tmp_path)})
    assert get(srv.port, "/hello")[0] == 200
    time.sleep(METRICS_SETTLE_SECONDS)  # the worker writes its counts in batches (server.request_batch)
    made = list(tmp_path.glob("flask-stack-metrics.*"))
    assert len(made) == 1 and list(made[0].glob("*.db")), "serve did not make a metrics dir used by the workers"
    assert sample_value(scrape(srv.port), "http_requests_total", endpoint="/hello") == 1
    assert srv.stop() == 0
    assert not made[0].exists(), "the temporary metrics dir outlived the server"


@pytest.mark.parametrize("server", SERVERS)
def test_debug_is_forced_off(server, start_server):
    srv = start_server(server=server, env={"STACK_DEBUG": "1", "FLASK_DEBUG": "1"})
    status, headers, body = get(srv.port, "/boom", headers={"Accept": "text/html"})
    assert status == 500
    assert b"Traceback" not in body and b"reliability test failure on purpose" not in body
    assert b"Werkzeug Debugger" not in body
    assert "STACK_DEBUG is ignored in production" in srv.log_text()


@pytest.mark.parametrize("server", SERVERS)
def test_one_access_line_per_request(server, start_server):
    """gunicorn's (and granian's) own access log is off: the runtime's line is the only one."""
    srv = start_server(server=server)
    request_id = uuid.uuid4().hex
    assert get(srv.port, "/hello", headers={"X-Request-ID": request_id})[0] == 200
    srv.stop()
    lines = [line for line in srv.log_text().splitlines() if request_id in line]
    assert len(lines) == 1, lines


@pytest.mark.parametrize("server", SERVERS)
def test_access_lines_are_batched_and_written_at_worker_exit(server, start_server):
    """Workers write INFO lines in batches (STACK_LOG_FLUSH_SECONDS): with a 60 s interval the access line is
    still in the worker a second after the request, and the worker writes it when it exits on SIGTERM."""
    srv = start_server(server=server, env={"STACK_LOG_FLUSH_SECONDS": "60"})
    request_id = uuid.uuid4().hex
    assert get(srv.port, "/hello", headers={"X-Request-ID": request_id})[0] == 200
    time.sleep(1.0)
    assert request_id not in srv.log_text(), "the access line was not buffered"
    assert srv.stop() == 0
    assert len([line for line in srv.log_text().splitlines() if request_id in line]) == 1


@pytest.mark.parametrize("server", SERVERS)
def test_access_lines_arrive_within_the_default_interval(server, start_server):
    """serve's default interval (0.25 s): the access line is on stdout soon after the request, server running."""
    srv = start_server(server=server)
    request_id = uuid.uuid4().hex
    assert get(srv.port, "/hello", headers={"X-Request-ID": request_id})[0] == 200
    deadline = time.monotonic() + 5
    while request_id not in srv.log_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert request_id in srv.log_text(), "no access line within 5 s of the request"


@pytest.mark.parametrize("server", SERVERS)
def test_json_logs_are_json_lines(server, start_server):
    srv = start_server(server=server, env={"LOG_FORMAT": "json"})
    assert get(srv.port, "/hello")[0] == 200
    srv.stop()
    lines = [line for line in srv.log_text().splitlines() if line.strip()]
    assert len(lines) >= 3
    for line in lines:
        entry = json.loads(line)  # fails the test on any non-JSON line (the server's own included)
        assert {"level", "message"} <= set(entry), line


def test_gunicorn_log_lines_use_the_stack_format(start_server):
    srv = start_server()
    srv.stop()
    booted = [line for line in srv.log_text().splitlines() if "Booting worker" in line]
    assert booted and all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \[INFO\] Booting worker", l) for l in booted)


def test_control_socket_is_off_unless_asked(start_server, tmp_path):
    """gunicorn 25+ makes a control socket under $HOME by default; the image's $HOME is read-only."""
    home = tmp_path / "home"
    home.mkdir()
    srv = start_server(env={"HOME": str(home), "XDG_RUNTIME_DIR": None})
    assert get(srv.port, "/hello")[0] == 200
    assert not list(home.iterdir()), f"gunicorn wrote into $HOME: {list(home.iterdir())}"

    socket_path = tmp_path / "ctl" / "gunicorn.ctl"
    srv = start_server(env={"HOME": str(home), "XDG_RUNTIME_DIR": None, "STACK_CONTROL_SOCKET": str(socket_path)})
    deadline = time.monotonic() + 10
    while not socket_path.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert socket_path.is_socket()


@pytest.mark.parametrize("front", ["none", "nginx"])
@pytest.mark.parametrize("server", SERVERS)
def test_serve_as_pid_1_leaves_no_zombie(server, front, tmp_path):
    """In a container ``serve`` is PID 1, so every process that ends without its parent (an orphan) becomes its
    child: the app check it starts, whatever the server and front, is reaped once its verdict is known, not left a
    zombie. ``serve`` runs as PID 1 of a new PID namespace; the verdict is known once the server's "serving on" line
    is written (held until then)."""
    srv = ProductionServer(project=copy_project(FIXTURE_USERAPP, tmp_path / "project"), workdir=tmp_path,
                           server=server, workers=2, env={"STACK_FRONT": front}, wrapper=pid_namespace_wrapper())
    srv.start()
    try:
        pid1 = srv.serve_pid()
        with open(f"/proc/{pid1}/status") as fh:
            assert [line.split()[-1] for line in fh if line.startswith("NSpid:")] == ["1"]
        srv.wait_for_log(r"flask-stack serving on ")
        deadline = time.monotonic() + 3
        while zombies_of(pid1) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert zombies_of(pid1) == [], [open(f"/proc/{pid}/stat").read() for pid in zombies_of(pid1)]
        assert get(srv.port, "/hello")[0] == 200
    finally:
        srv.stop()
