"""``python -m devloop run``: serving, hot reload, broken code, signals, port in use."""

from __future__ import annotations

import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time

import pytest
import requests

from testkit.procs import descendants

from .conftest import HELLO, alive, loop_env, write_source


def test_serves_template_and_prints_urls(devloop, project):
    loop = devloop("run", project)
    response = loop.wait_text(HELLO)
    assert response.headers["Content-Type"].startswith("text/plain")
    assert loop.get("/health").json()["status"] == "UP"
    assert "# TYPE" in loop.get("/metrics").text
    assert loop.get("/apidocs/").status_code == 200
    out = loop.output()
    for where in ("/health", "/metrics", "/apidocs/"):
        assert f"{loop.url}{where}" in out


def test_reload_on_save_is_fast(devloop, project, record_property):
    loop = devloop("run", project)
    loop.wait_watching()
    source = (project / "__init__.py").read_text()
    times = []
    for i in range(10):
        text = f"Hello number {i}"
        started = time.monotonic()
        (project / "__init__.py").write_text(source.replace(HELLO, text))
        loop.wait_text(text, timeout=20)
        times.append(time.monotonic() - started)
    p50 = statistics.median(times)
    record_property("reload_p50_seconds", round(p50, 3))
    print(f"\nreload save->new response: p50 {p50:.3f} s, max {max(times):.3f} s, all {[round(t, 3) for t in times]}")
    assert loop.output().count("reloading: __init__.py changed") >= 10


def test_new_module_in_package_reloads(devloop, project):
    loop = devloop("run", project)
    loop.wait_watching()
    (project / "words.py").write_text("WORD = 'first'\n")
    source = (project / "__init__.py").read_text()
    write_source(project / "__init__.py", source.replace(f'return "{HELLO}"', "from .words import WORD\n    return WORD"))
    loop.wait_text("first", timeout=20)
    write_source(project / "words.py", "WORD = 'second'\n")
    loop.wait_text("second", timeout=20)


def test_syntax_error_keeps_loop_alive_and_fix_recovers(devloop, project):
    loop = devloop("run", project)
    loop.wait_watching()
    init = project / "__init__.py"
    good = init.read_text()
    init.write_text(good + "\ndef broken(:\n")
    response = loop.wait_for(lambda r: r.status_code == 500, timeout=20)
    body = response.text.strip()
    first, *excerpt = body.splitlines()
    assert "SyntaxError" in first and "__init__.py" in first
    assert excerpt == ["def broken(:", "           ^"], body  # the source line and the caret, as Python shows them
    assert "Traceback" not in body
    lineno = good.count("\n") + 2
    as_json = loop.get("/hello", headers={"Accept": "application/json"})
    assert as_json.status_code == 500 and "SyntaxError" in as_json.json()["error"]
    assert as_json.json()["source"] == excerpt and as_json.json()["line"] == lineno
    assert as_json.json()["file"] == str(init)
    page = loop.get("/hello", headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    assert page.status_code == 500 and page.headers["Content-Type"].startswith("text/html")
    assert "<pre>def broken(:\n           ^</pre>" in page.text
    logged = loop.output().splitlines()
    at = next(i for i, line in enumerate(logged) if "SyntaxError" in line and "[ERROR]" in line)
    assert logged[at + 1:at + 3] == ["    def broken(:", "               ^"], logged[at:at + 3]
    health = loop.get("/health")
    assert health.status_code == 503 and health.json()["status"] == "DOWN"
    assert loop.proc.poll() is None
    assert "SyntaxError" in loop.output()
    init.write_text(good.replace(HELLO, "fixed"))
    loop.wait_text("fixed", timeout=20)
    assert loop.get("/health").status_code == 200


def test_view_exception_serves_its_traceback_and_logs_it(devloop, project):
    init = project / "__init__.py"
    init.write_text(init.read_text() + BOOM)
    loop = devloop("run", project)
    loop.wait_text(HELLO)
    text = loop.get("/boom")
    assert text.status_code == 500 and text.headers["Content-Type"].startswith("text/plain")
    assert text.text.startswith("Traceback (most recent call last):")
    assert 'raise RuntimeError("kaboom in a view")' in text.text and text.text.rstrip().endswith(
        "RuntimeError: kaboom in a view")
    assert text.headers["X-Request-ID"]
    as_json = loop.get("/boom", headers={"Accept": "application/json"}).json()
    assert as_json["error"]["detail"] == "RuntimeError: kaboom in a view"
    assert as_json["traceback"][-1] == "RuntimeError: kaboom in a view"
    page = loop.get("/boom", headers={"Accept": "text/html"})
    assert page.headers["Content-Type"].startswith("text/html") and "<pre>Traceback (most recent call" in page.text
    loop.wait_log("RuntimeError: kaboom in a view")
    out = loop.output()
    assert "Exception on /boom [GET]" in out and "Traceback (most recent call last):" in out
    assert loop.get("/nope").status_code == 404  # other errors are the stack's as before
    assert "Traceback" not in loop.get("/nope").text


BOOM = """

@blueprint.get("/boom")
def boom():
    raise RuntimeError("kaboom in a view")
"""


def test_import_error_names_the_missing_package(devloop, project):
    loop = devloop("run", project)
    loop.wait_watching()
    init = project / "__init__.py"
    init.write_text("import no_such_module_for_devloop_tests\n" + init.read_text())
    response = loop.wait_for(lambda r: r.status_code == 500, timeout=20)
    assert "no_such_module_for_devloop_tests" in response.text


def test_app_process_that_dies_is_reported_and_replaced(devloop, project):
    loop = devloop("run", project)
    loop.wait_watching()
    init = project / "__init__.py"
    init.write_text(init.read_text() + "\n\n@blueprint.get('/die')\ndef die():\n    import os\n    os._exit(3)\n\n\n"
                    "@blueprint.get('/alive')\ndef alive():\n    return 'v2'\n")
    loop.wait_text("v2", path="/alive", timeout=20)
    with pytest.raises(requests.RequestException):
        loop.get("/die", timeout=5)
    response = loop.wait_for(lambda r: r.status_code == 500, timeout=20)
    assert "exited with status 3" in response.text
    assert loop.proc.poll() is None
    init.write_text(init.read_text().replace(HELLO, "back"))
    loop.wait_text("back", timeout=20)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_loop_and_app_process(devloop, project, sig):
    loop = devloop("run", project)
    loop.wait_text(HELLO)
    kids = list(descendants(loop.proc.pid))
    assert kids, "the loop should have an app process"
    loop.proc.send_signal(sig)
    assert loop.wait_exit(20) == 0
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in kids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in kids if alive(pid)], loop.output()
    with socket.socket() as probe:
        probe.settimeout(2)
        assert probe.connect_ex(("127.0.0.1", loop.port)) != 0


def test_port_in_use_is_one_line_exit_1(devloop, project):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        loop = devloop("run", project, port=port)
        assert loop.wait_exit(30) == 1
    lines = [line for line in loop.output().splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert re.fullmatch(rf"\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d \[ERROR\] port {port} is in use; "
                        r"stop the other server or pass --port N", lines[0]), lines


def test_missing_project_is_one_line(devloop, tmp_path):
    loop = devloop("run", tmp_path / "nowhere")
    assert loop.wait_exit(30) == 1
    lines = [line for line in loop.output().splitlines() if line.strip()]
    assert len(lines) == 1 and "does not exist" in lines[0] and "Traceback" not in lines[0]


def test_requests_during_reload_are_not_refused(devloop, project):
    loop = devloop("run", project)
    loop.wait_watching()
    source = (project / "__init__.py").read_text()
    (project / "__init__.py").write_text(source.replace(HELLO, "during"))
    refused = 0
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            sock.settimeout(5)
            if sock.connect_ex(("127.0.0.1", loop.port)) != 0:
                refused += 1
        try:
            if loop.get("/hello").text == "during":
                break
        except Exception:
            pass
    assert refused == 0
    loop.wait_text("during", timeout=5)


def test_saves_under_load_fail_no_request(devloop, project):
    """16 clients request /hello without pause while __init__.py is saved 5 times: every request is answered
    200 (by the old app or the new one), and the log has no traceback."""
    import http.client
    import threading

    loop = devloop("run", project)
    loop.wait_watching()
    stop = threading.Event()
    counts = {"ok": 0, "failed": 0}
    failures: list[str] = []
    lock = threading.Lock()

    def client() -> None:
        while not stop.is_set():
            connection = http.client.HTTPConnection("127.0.0.1", loop.port, timeout=10)
            try:
                connection.request("GET", "/hello")
                response = connection.getresponse()
                response.read()
                ok = response.status == 200
                why = f"status {response.status}"
            except (OSError, http.client.HTTPException) as exc:
                ok, why = False, repr(exc)
            finally:
                connection.close()
            with lock:
                counts["ok" if ok else "failed"] += 1
                if not ok:
                    failures.append(why)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(16)]
    for thread in threads:
        thread.start()
    source = (project / "__init__.py").read_text()
    try:
        time.sleep(0.5)
        for i in range(5):
            (project / "__init__.py").write_text(source.replace(HELLO, f"Hello {i}"))
            loop.wait_text(f"Hello {i}", timeout=20)
            time.sleep(0.3)
    finally:
        stop.set()
        for thread in threads:
            thread.join(15)
    assert counts["failed"] == 0, (counts, failures[:5])
    assert counts["ok"] > 100
    out = loop.output()
    assert out.count("reloading: __init__.py changed") == 5
    assert "Traceback" not in out and "Errno" not in out, out[-3000:]


def test_loop_preloads_third_party_modules_never_the_projects(devloop, project, tmp_path):
    """The app imports a third-party module (``decimal``'s C part stands in: any module the loop had not) and a
    module of its own that records which process imported it: the loop preloads the first, never the second,
    and an edit of the project's module is still served."""
    marker = tmp_path / "imported-by"
    (project / "words.py").write_text(f"import os\nopen({str(marker)!r}, 'a').write(f'{{os.getpid()}}\\n')\n"
                                      "WORD = 'first'\n")
    source = (project / "__init__.py").read_text()
    (project / "__init__.py").write_text(
        "import email.mime.text  # not imported by the stack\n"
        + source.replace(f'return "{HELLO}"', "from .words import WORD\n    return WORD"))
    loop = devloop("run", project)
    loop.wait_text("first")
    loop.wait_log("preloaded", timeout=20)
    assert re.search(r"preloaded \d+ modules your app imports", loop.output())
    write_source(project / "words.py", (project / "words.py").read_text().replace("first", "second"))
    loop.wait_text("second", timeout=20)
    assert str(loop.proc.pid) not in marker.read_text().split()


def test_loop_warms_up_pydantic_once_when_the_app_uses_it(tmp_path):
    """pydantic's first model class does work every app process would repeat (plugin discovery): the loop makes
    one itself once pydantic is loaded, once per loop, and none for an app without pydantic. A stand-in
    ``pydantic`` records the model classes made."""
    stub = tmp_path / "stub"
    (stub / "pydantic").mkdir(parents=True)
    (stub / "pydantic" / "__init__.py").write_text(
        "made = []\n\nclass BaseModel:\n    def __init_subclass__(cls, **kw):\n        made.append(cls.__name__)\n")
    script = (
        "import sys\nfrom devloop import preload\n"
        "print(preload.warm_up())\n"  # pydantic not loaded: nothing
        "import pydantic\n"
        "print(preload.warm_up(), preload.warm_up(), pydantic.made)\n"
    )
    env = loop_env()
    env["PYTHONPATH"] = os.pathsep.join([str(stub), env["PYTHONPATH"]])
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["[]", "['pydantic'] [] ['StackWarmUp']"]
