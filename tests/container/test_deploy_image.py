"""The deployable image (image/project/Dockerfile) built by `flask-stack build`, run as a real container."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from testkit.serve import METRICS_SETTLE_SECONDS, percentile, probe
from testkit.slow import SLOW, SLOW_BODY_HEAD, SLOW_HEAD, Trickle

from flask_stack.container import ContainerEngine, project_key
from flask_stack.project import project_name

from .conftest import (
    BUILD_OUTPUT,
    base_image_name,
    container_processes,
    flask_stack,
    free_port,
    http_get,
    assert_production_server,
    start_flask_stack,
    stop_process,
    wait_for,
)

pytestmark = pytest.mark.container

CONTENTS_PROBE = r"""
import importlib.util, json, os, shutil
def read(path):
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as exc:
        return str(exc).encode()
print(json.dumps({
    "importable": {m: importlib.util.find_spec(m) is not None
                   for m in ("debugpy", "watchfiles", "pipenv", "pytest", "pip", "six", "flask", "gunicorn",
                             "granian", "pyuwsgi")},
    "compilers": [c for c in ("gcc", "cc", "clang") if shutil.which(c)],
    "exists": {p: os.path.exists(p) for p in ("/project/userapp/tests", "/project/server/checks",
               "/project/server/testing.py", "/project/serve", "/project/serving/gunicorn.conf.py",
               "/project/serving/granian_app.py", "/project/serving/uwsgi_app.py", "/project/userapp/.venv", "/project/userapp/.git",
               "/project/userapp/.flaskenv", "/project/userapp/app-deploy.yaml",
               "/project/userapp/.appsody-config.yaml",
               "/project/userapp/.devcontainer", "/project/userapp/devfile.yaml")},
    "private": sorted(os.path.relpath(os.path.join(root, name), "/project/userapp")
                      for root, dirs, names in os.walk("/project/userapp") for name in dirs + names
                      if name.startswith(".env") or name == "instance" or name.endswith((".sqlite3", ".db"))),
    "never-in-an-image": [os.path.join(root, name) for root, _, names in os.walk("/project") for name in names
                          if b"never-in-an-image" in read(os.path.join(root, name))],
}))
"""


def test_image_metadata(engine: str, app_image: str, app_project: tuple[Path, str]) -> None:
    """Numeric non-root user, CMD /project/serve, a HEALTHCHECK, OCI labels with the commit."""
    _, sha = app_project
    data = json.loads(subprocess.run([engine, "image", "inspect", app_image], capture_output=True, text=True,
                                     check=True, timeout=60).stdout)[0]
    config = data["Config"]
    assert config["User"] == "1001:1001"
    assert config["Cmd"] == ["/project/serve"]
    assert "8080/tcp" in config["ExposedPorts"]
    health = config.get("Healthcheck") or data.get("Healthcheck") or {}
    assert "/health/live" in " ".join(health.get("Test", []))
    labels = config["Labels"]
    assert labels["org.opencontainers.image.revision"] == sha
    assert labels["org.opencontainers.image.title"] == project_name(app_project[0])
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["STACK_COMMIT"] == sha and env["STACK_DEBUG"] == "0"


def test_image_contents(engine: str, app_image: str) -> None:
    """No dev tools, compiler or test code in the image; the runtime and the user's package (six) are there."""
    result = subprocess.run([engine, "run", "--rm", "--entrypoint", "python3", app_image, "-c", CONTENTS_PROBE],
                            capture_output=True, text=True, check=True, timeout=120)
    found = json.loads(result.stdout.strip().splitlines()[-1])
    importable = found["importable"]
    assert not any(importable[m] for m in ("debugpy", "watchfiles", "pipenv", "pytest", "pip")), importable
    assert importable["six"] and importable["flask"] and importable["gunicorn"] and importable["granian"]
    assert importable["pyuwsgi"]
    assert found["compilers"] == []
    exists = found["exists"]
    assert not exists["/project/userapp/tests"] and not exists["/project/server/checks"]
    assert not exists["/project/server/testing.py"]
    assert not exists["/project/userapp/.venv"] and not exists["/project/userapp/.git"]
    assert not exists["/project/userapp/app-deploy.yaml"] and not exists["/project/userapp/.appsody-config.yaml"]
    assert not exists["/project/userapp/.devcontainer"] and not exists["/project/userapp/devfile.yaml"]  # dev only
    assert exists["/project/serve"] and exists["/project/serving/gunicorn.conf.py"]
    assert exists["/project/serving/granian_app.py"] and exists["/project/serving/uwsgi_app.py"]


def test_image_holds_nothing_private(engine: str, app_image: str) -> None:
    """The project's .env, .env.production, instance/config.py and app.sqlite3 are not in the image (no file
    anywhere under /project holds their secret); .flaskenv is; the build printed one line naming what it left out."""
    result = subprocess.run([engine, "run", "--rm", "--entrypoint", "python3", app_image, "-c", CONTENTS_PROBE],
                            capture_output=True, text=True, check=True, timeout=120)
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["private"] == [] and found["never-in-an-image"] == [], found
    assert found["exists"]["/project/userapp/.flaskenv"]
    lines = [line for line in BUILD_OUTPUT["stderr"].splitlines() if "left out of the image" in line]
    assert lines == ["flask-stack: left out of the image (private; never shipped): "
                     ".env, .env.production, app.sqlite3, instance/"], BUILD_OUTPUT["stderr"][-2000:]


def test_serves_every_endpoint_as_non_root(engine: str, running_app: tuple[str, str],
                                           app_project: tuple[Path, str]) -> None:
    """The default production configuration (nginx in front of granian, both started by the serving layer, PID 1)
    answers every endpoint; all processes run as uid 1001; errors carry no traceback and no Werkzeug debugger
    although STACK_DEBUG=1 was passed."""
    name, base = running_app
    _, sha = app_project
    assert wait_for(f"{base}/hello") == "Hello from Appsody!"
    health = json.loads(wait_for(f"{base}/health/ready"))
    assert health["status"] == "UP"
    status, body, _ = http_get(f"{base}/health")
    assert status == 200 and json.loads(body)["commit"] == (sha or None)
    for path in ("/health/live", "/health/started"):
        assert http_get(base + path)[0] == 200, path
    status, body, _ = http_get(f"{base}/metrics")
    assert status == 200 and 'http_requests_total{' in body
    status, body, _ = http_get(f"{base}/apispec_1.json")
    assert status == 200 and "/hello" in json.loads(body)["paths"]
    assert http_get(f"{base}/apidocs/")[0] == 200

    status, body, _ = http_get(f"{base}/boom")
    assert status == 500
    assert "Traceback" not in body and "secret-internal-detail" not in body and "Werkzeug Debugger" not in body

    assert_production_server(container_processes(engine, name), workers=2)  # WEB_CONCURRENCY=2


def test_holds_slow_clients(engine: str, app_image: str) -> None:
    """The image as it runs by default (nginx in front, 3 workers) keeps answering normal requests while 64
    connections send a request head and 64 a request body (to a route that reads it) one byte a second: none
    fails, p99 under 250 ms; the slow heads are closed within 13 s (nginx's client_header_timeout, 10 s)."""
    name = f"flask-stack-test-slow-{os.getpid()}"
    port = free_port()
    try:
        subprocess.run([engine, "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8080", "-e", "WEB_CONCURRENCY=3",
                        app_image], check=True, capture_output=True, timeout=120)
        wait_for(f"http://127.0.0.1:{port}/health/ready")
        assert http_get(f"http://127.0.0.1:{port}/hello")[0] == 200
        heads, bodies = Trickle(port, b"", SLOW_HEAD), Trickle(port, SLOW_BODY_HEAD, b"x" * 100_000)
        heads.start()
        bodies.start()
        try:
            time.sleep(2)
            latencies, failures = probe(port, "/hello", 12.0)
        finally:
            heads.close()
            bodies.close()
        assert not failures, failures[:5]
        assert percentile(latencies, 0.99) < 0.25, f"p99 {percentile(latencies, 0.99) * 1000:.0f} ms"
        assert len(heads.closed_after) == SLOW and max(heads.closed_after) < 13, heads.closed_after
        status, body, _ = http_get(f"http://127.0.0.1:{port}/metrics")
        assert 'endpoint="/size"' not in body  # no slow body ever reached the app
    finally:
        subprocess.run([engine, "rm", "-f", name], capture_output=True, check=False, timeout=60)


def test_healthcheck_passes(engine: str, running_app: tuple[str, str]) -> None:
    """The image's HEALTHCHECK (python3 urllib on /health/live) passes in the running container."""
    name, base = running_app
    wait_for(f"{base}/health/ready")
    run_healthcheck(engine, name)


def run_healthcheck(engine: str, name: str) -> None:
    """Run the container's HEALTHCHECK once; AssertionError with its output when it fails."""
    command = [engine, "healthcheck", "run", name] if engine == "podman" else None
    if command is None:  # docker: run the HEALTHCHECK's own command
        config = json.loads(subprocess.run([engine, "inspect", name], capture_output=True, text=True,
                                           check=True, timeout=60).stdout)[0]["Config"]["Healthcheck"]["Test"]
        command = [engine, "exec", name, *config[1:]]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_healthcheck_follows_the_url_prefix(engine: str, app_image: str) -> None:
    """With STACK_URL_PREFIX, the app answers under it only, and the image's HEALTHCHECK still passes."""
    name = f"flask-stack-test-prefix-{os.getpid()}"
    port = free_port()
    try:
        subprocess.run([engine, "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8080", "-e",
                        "STACK_URL_PREFIX=/your/path/", app_image], check=True, capture_output=True, timeout=120)
        wait_for(f"http://127.0.0.1:{port}/your/path/health/ready")
        assert http_get(f"http://127.0.0.1:{port}/health/live")[0] == 404
        run_healthcheck(engine, name)
    finally:
        subprocess.run([engine, "rm", "-f", name], capture_output=True, check=False, timeout=60)


STATE_PROBE = r"""
import os
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        comm = open(f"/proc/{pid}/comm").read().strip()
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        continue
    print(pid, fields[1], fields[0], comm)
"""


def process_states(engine: str, name: str) -> list[list[str]]:
    """[pid, ppid, state (``S``, ``Z``...), name] of every process in the running container ``name``."""
    return [line.split(" ", 3) for line in subprocess.run(
        [engine, "exec", name, "python3", "-c", STATE_PROBE], capture_output=True, text=True, check=True,
        timeout=60).stdout.splitlines()]


def stop_exit_code(engine: str, name: str) -> str:
    """`<engine> stop` (SIGTERM, SIGKILL after 60 s) the container ``name``; its exit code."""
    subprocess.run([engine, "stop", "-t", "60", name], check=True, capture_output=True, timeout=120)
    return subprocess.run([engine, "inspect", "--format", "{{.State.ExitCode}}", name],
                          capture_output=True, text=True, check=True, timeout=60).stdout.strip()


@pytest.mark.timeout(420)  # its waits add up to 360 s
def test_sigterm_stops_cleanly(engine: str, app_image: str) -> None:
    """`<engine> stop` (SIGTERM) drains and stops the server with exit status 0, no SIGKILL needed."""
    name = f"flask-stack-test-stop-{os.getpid()}"
    port = free_port()
    try:
        subprocess.run([engine, "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8080", app_image],
                       check=True, capture_output=True, timeout=120)
        wait_for(f"http://127.0.0.1:{port}/health/ready")
        assert stop_exit_code(engine, name) == "0"
    finally:
        subprocess.run([engine, "rm", "-f", name], capture_output=True, check=False, timeout=60)


@pytest.mark.timeout(540)  # its waits add up to 480 s
def test_serves_with_uwsgi(engine: str, app_image: str) -> None:
    """STACK_SERVER=uwsgi: the image serves through uWSGI behind its nginx front (uWSGI's supervisor, uwsgi_app.py,
    is a child of the serving layer; two workers as uid 1001), answers every kind of endpoint, and `<engine> stop`
    (SIGTERM) ends it with exit status 0."""
    name = f"flask-stack-test-uwsgi-{os.getpid()}"
    port = free_port()
    try:
        subprocess.run([engine, "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8080", "-e", "STACK_SERVER=uwsgi",
                        "-e", "WEB_CONCURRENCY=2", app_image], check=True, capture_output=True, timeout=120)
        base = f"http://127.0.0.1:{port}"
        assert wait_for(f"{base}/hello") == "Hello from Appsody!"
        assert json.loads(wait_for(f"{base}/health/ready"))["status"] == "UP"
        time.sleep(METRICS_SETTLE_SECONDS)  # the /hello count written by whichever worker served it
        status, body, _ = http_get(f"{base}/metrics")
        assert status == 200 and 'http_requests_total{endpoint="/hello"' in body
        assert http_get(f"{base}/apidocs/")[0] == 200
        assert_production_server(container_processes(engine, name), server="/project/serving/uwsgi_app.py")
        deadline = time.monotonic() + 30  # each worker names itself once it has loaded the app
        while True:
            table = process_states(engine, name)
            if sum(row[3] == "uwsgi worker" for row in table) == 2 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert sum(row[3] == "uwsgi worker" for row in table) == 2, table
        code = stop_exit_code(engine, name)
        logs = subprocess.run([engine, "logs", name], capture_output=True, text=True, timeout=60)
        assert code == "0", logs.stdout[-3000:] + logs.stderr[-3000:]
        assert "with uWSGI, 2 workers x 4 threads" in logs.stderr + logs.stdout
    finally:
        subprocess.run([engine, "rm", "-f", name], capture_output=True, check=False, timeout=60)


@pytest.mark.timeout(990)  # its waits add up to 930 s
def test_cli_run_production(engine: str, template_project: Path, tmp_path: Path) -> None:
    """`flask-stack run --production --engine X` builds the deployable image and serves it with granian
    on the host port; SIGTERM to the CLI stops it (exit 0) and removes the container."""
    project = tmp_path / "prod-app"
    shutil.copytree(template_project, project)
    cli_engine = ContainerEngine(engine)
    name = cli_engine.container_name(project)
    tag = f"localhost/flask-stack-{project_key(project)}:production"
    port = free_port()
    proc = start_flask_stack("run", "--production", "--engine", engine, "--port", str(port), cwd=project,
                             log=tmp_path / "prod.log")
    try:
        assert wait_for(f"http://127.0.0.1:{port}/hello", timeout=600, proc=proc) == "Hello from Appsody!"
        assert_production_server(container_processes(engine, name))
        assert stop_process(proc, timeout=90) == 0, (tmp_path / "prod.log").read_text()[-3000:]
        left = subprocess.run([engine, "ps", "-a", "--filter", f"name={name}", "--format", "{{.Names}}"],
                              capture_output=True, text=True, check=True, timeout=60).stdout.split()
        assert name not in left
    finally:
        stop_process(proc)
        subprocess.run([engine, "rm", "-f", name], capture_output=True, check=False, timeout=60)
        subprocess.run([engine, "rmi", "-f", tag], capture_output=True, check=False, timeout=120)


@pytest.mark.timeout(960)  # its waits add up to 900 s (testkit.budget)
def test_a_context_without_the_app_fails_the_build_in_one_line(engine: str, tmp_path: Path) -> None:
    """What `appsody build` through podman's Docker API lays out (an empty userapp/): the build fails, saying so
    in one line, instead of making an image that exits 4 at start."""
    from flask_stack import container_image

    empty = tmp_path / "empty-app"
    empty.mkdir()
    context = container_image.layout_build_context(empty, tmp_path / "context")
    argv = [engine, "build", "-f", str(context / "Dockerfile"), "-t", f"localhost/flask-stack-empty:{os.getpid()}",
            "--build-arg", f"BASE_IMAGE={base_image_name()}"]
    if engine == "podman":
        argv += ["--format", "docker"]
    result = subprocess.run([*argv, str(context)], capture_output=True, text=True, timeout=900,
                            env=container_image.build_env(engine))
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    lines = [line for line in output.splitlines() if line.startswith("flask-stack: the build context holds no")]
    assert lines == ["flask-stack: the build context holds no Flask app in userapp/ (no app.py, wsgi.py, __init__.py, "
                     "package or FLASK_APP); lay the context out with: flask-stack build, or on podman: appsody build "
                     "--buildah (appsody build through the Docker API of podman copies an empty userapp/)"], output[-3000:]


def test_deploy_after_build_writes_the_built_tag(app_image: str, app_project: tuple[Path, str], tmp_path: Path) -> None:
    """`build -t X` (the session's image) then `deploy` with no --image: the Deployment runs X, and one line says
    it must be pushed where the cluster pulls from."""
    project, _ = app_project
    result = flask_stack("deploy", "--generate-only", "--output", str(tmp_path / "manifests"), cwd=project,
                         timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"image: {app_image}" in (tmp_path / "manifests" / "deployment.yaml").read_text()
    assert result.stderr.splitlines()[-1] == (
        f"flask-stack: image {app_image}: the last `flask-stack build` of this project; push it to a registry the "
        f"cluster pulls from (or pass --image)")


SECRET = "s3cr3t-in-the-image-6f2d0b"


@pytest.mark.timeout(300)
def test_production_profile_and_mounted_secrets_show_nowhere(engine: str, app_image: str, tmp_path: Path) -> None:
    """The image serves settings.yaml's production profile; SECRET_KEY from a SECRET_KEY_FILE and API_TOKEN from a
    mounted secrets directory (STACK_SECRETS_DIR, as a Kubernetes Secret volume lays it out) reach the app and
    are found in no log line, probe, metric, API doc or error page."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "API_TOKEN").write_text(SECRET + "-token\n")
    (tmp_path / "key").write_text(SECRET + "\n")
    for path in (tmp_path, secrets):
        path.chmod(0o755)
    for path in (secrets / "API_TOKEN", tmp_path / "key"):
        path.chmod(0o644)  # the container's worker (uid 1001) reads them
    name = f"flask-stack-test-secrets-{os.getpid()}"
    port = free_port()
    subprocess.run([engine, "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8080",
                    "-v", f"{secrets}:/run/secrets/app:ro", "-v", f"{tmp_path / 'key'}:/run/key:ro",
                    "-e", "STACK_SECRETS_DIR=/run/secrets/app", "-e", "SECRET_KEY_FILE=/run/key",
                    "-e", "WEB_CONCURRENCY=2", app_image], check=True, capture_output=True, timeout=120)
    base = f"http://127.0.0.1:{port}"
    try:
        body = json.loads(wait_for(f"{base}/config"))
        assert body == {"greeting": "hello production", "key_set": True, "token_length": len(SECRET) + 6}
        answers = {}
        for path in ("/health", "/health/live", "/health/ready", "/health/started", "/metrics", "/apidocs/",
                     "/apispec_1.json", "/leak", "/nope"):
            answers[path] = http_get(base + path)
        assert answers["/leak"][0] == 500
        for path, (_, text, headers) in answers.items():
            assert SECRET not in text and SECRET not in json.dumps(dict(headers)), path
        deadline = time.monotonic() + 30
        while True:
            logs = subprocess.run([engine, "logs", name], capture_output=True, text=True, timeout=60)
            text = logs.stdout + logs.stderr
            if "cannot connect with key [secret]" in text or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert "using key [secret] and token [secret]" in text and "cannot connect with key [secret]" in text, text
        assert "secrets: API_TOKEN, SECRET_KEY" in text
        assert SECRET not in text
    finally:
        subprocess.run([engine, "rm", "-f", name], capture_output=True, check=False, timeout=120)


@pytest.mark.timeout(540)  # its waits add up to 480 s
def test_serves_without_the_front_as_pid_1(engine: str, app_image: str) -> None:
    """STACK_FRONT=none (what `deploy --ingress` and `--nginx-sidecar` set): PID 1 is the serving layer become
    granian's master (named ``granian``) with its two workers; the app check it adopted is reaped once its verdict
    is in (no zombie); it answers, and `<engine> stop` ends it with exit status 0."""
    name = f"flask-stack-test-nofront-{os.getpid()}"
    port = free_port()
    try:
        subprocess.run([engine, "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8080", "-e", "STACK_FRONT=none",
                        "-e", "WEB_CONCURRENCY=2", app_image], check=True, capture_output=True, timeout=120)
        base = f"http://127.0.0.1:{port}"
        assert wait_for(f"{base}/hello") == "Hello from Appsody!"
        deadline = time.monotonic() + 30  # the master's "serving on" line is held until the check's verdict
        while True:
            logs = subprocess.run([engine, "logs", name], capture_output=True, text=True, timeout=60)
            if "flask-stack serving on" in logs.stdout + logs.stderr or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert "with granian, 2 workers" in logs.stdout + logs.stderr, logs.stdout[-2000:] + logs.stderr[-2000:]
        deadline = time.monotonic() + 5
        while True:
            table = process_states(engine, name)
            zombies = [row for row in table if row[2] == "Z"]
            if not zombies or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert zombies == [], table
        assert [row[3] for row in table if row[0] == "1"] == ["granian"], table
        assert len([row for row in table if row[1] == "1" and row[3] == "granian"]) == 2, table  # its workers
        assert stop_exit_code(engine, name) == "0"
    finally:
        subprocess.run([engine, "rm", "-f", name], capture_output=True, check=False, timeout=60)
