"""Kubernetes manifests: `flask-stack deploy --generate-only`, flask_stack.deploy, image/config/app-deploy.yaml.

These need no container engine: the manifests are validated offline with kubernetes-validate (strict schemas).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from testkit.need import missing

from flask_stack import deploy, front
from flask_stack.errors import CliError

from .conftest import REPO, flask_stack

IMAGE = "registry.example.com/team/demo-app:1.2.3"


def kubernetes_validate() -> str:
    """Path of the kubernetes-validate command of this test environment."""
    found = shutil.which("kubernetes-validate", path=str(Path(sys.executable).parent)) or shutil.which("kubernetes-validate")
    assert found, "kubernetes-validate is not installed in the test environment"
    return found


def setting_default(kind: str, field: str):
    """A default of the runtime's settings (``kind``: ``Settings`` of server/settings.py or ``ServingSettings`` of
    serving/settings.py)."""
    sys.path.insert(0, str(REPO / "image" / "project"))
    try:
        from server import settings
        from serving import settings as serving_settings
    finally:
        sys.path.pop(0)
    return getattr(getattr(serving_settings if kind == "ServingSettings" else settings, kind)(), field)


def load(path: Path) -> dict:
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert len(documents) == 1
    return documents[0]


def validate_strict(paths: list[Path]) -> None:
    """kubernetes-validate --strict accepts every file (no unknown field, no wrong type, no missing schema
    except the ServiceMonitor's: a CRD, not in the Kubernetes schemas)."""
    check = subprocess.run([kubernetes_validate(), "--strict", *map(str, paths)],
                           capture_output=True, text=True, timeout=300, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    unchecked = [line for line in check.stdout.splitlines() + check.stderr.splitlines()
                 if "Couldn't find schema" in line and "ServiceMonitor" not in line]
    assert not unchecked, unchecked


def test_generate_only_writes_valid_manifests(template_project: Path, tmp_path: Path) -> None:
    """The CLI writes deploy/deployment.yaml and service.yaml that pass strict schema validation and carry
    the probes, scrape annotations, limits and hardening the stack promises."""
    project = tmp_path / "demo-app"
    shutil.copytree(template_project, project)
    result = flask_stack("deploy", "--generate-only", "--image", IMAGE, cwd=project, timeout=120)
    assert result.returncode == 0, result.stderr
    deployment_file, service_file = project / "deploy" / "deployment.yaml", project / "deploy" / "service.yaml"
    assert sorted(p.name for p in (project / "deploy").iterdir()) == ["deployment.yaml", "hpa.yaml", "pdb.yaml",
                                                                      "service.yaml"]
    validate_strict(sorted((project / "deploy").iterdir()))

    deployment = load(deployment_file)
    assert deployment["kind"] == "Deployment" and deployment["metadata"]["name"] == "demo-app"
    pod = deployment["spec"]["template"]
    assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    assert pod["metadata"]["annotations"]["prometheus.io/path"] == "/metrics"
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == "8090"  # the image's probe port
    spec = pod["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] == 1001
    (container,) = spec["containers"]
    assert container["image"] == IMAGE
    assert container["ports"][0]["containerPort"] == 8080
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports["probes"] == setting_default("ServingSettings", "probe_port") == front.PROBE_PORT
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):  # a flood of 8080 cannot starve them
        assert container[probe]["httpGet"]["port"] == "probes", probe
    assert container["startupProbe"]["httpGet"]["path"] == "/health/started"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False and security["readOnlyRootFilesystem"] is True
    assert security["runAsNonRoot"] is True and security["runAsUser"] == 1001
    assert {"cpu", "memory"} <= set(container["resources"]["requests"]) and container["resources"]["limits"]
    env = {item["name"]: item["value"] for item in container["env"]}
    assert env["STACK_URL_PREFIX"] == ""  # the root
    assert "STACK_FRONT" not in env  # the image's default: its nginx front (tests/container/test_deploy_image.py)
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert env["PROMETHEUS_MULTIPROC_DIR"].startswith("/tmp/")
    assert int(env["STACK_PROBE_PORT"]) == front.PROBE_PORT
    # the /tmp emptyDir holds the front's body budget plus 64 MiB for the rest (README.md, "Production serving")
    size_limit = volumes[mounts["/tmp"]]["emptyDir"]["sizeLimit"]
    assert size_limit.endswith("Mi") and int(size_limit[:-2]) * 2**20 == (
        setting_default("ServingSettings", "front_body_budget") + 64 * 2**20), size_limit
    graceful = int(env.get("STACK_GRACEFUL_TIMEOUT", setting_default("ServingSettings", "graceful_timeout")))
    assert spec["terminationGracePeriodSeconds"] > graceful

    service = load(service_file)
    assert service["kind"] == "Service"
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["targetPort"] == "http"


def test_generate_to_output_dir_with_name_and_port(template_project: Path, tmp_path: Path) -> None:
    """generate() honours output, name and port; files are replaced atomically on a second call."""
    out = tmp_path / "manifests"
    paths = deploy.generate(template_project, out, IMAGE, name="Shop API", port=9090)
    assert [p.name for p in paths] == ["deployment.yaml", "service.yaml", "hpa.yaml", "pdb.yaml"]
    deployment = load(paths[0])
    assert deployment["metadata"]["name"] == "shop-api"
    assert deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] == 9090
    again = deploy.generate(template_project, out, "other/image:2", name="Shop API", port=9090)
    assert load(again[0])["spec"]["template"]["spec"]["containers"][0]["image"] == "other/image:2"
    assert sorted(p.name for p in out.iterdir()) == ["deployment.yaml", "hpa.yaml", "pdb.yaml",
                                                     "service.yaml"]  # no temp files left


def _files(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` by its relative path ({} when there is none): a failed deploy changes none."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_bad_image_is_one_line_and_writes_nothing(template_project: Path, tmp_path: Path) -> None:
    """An invalid --image gives one `flask-stack:` line, a non-zero exit and no files."""
    project = tmp_path / "demo-app"
    shutil.copytree(template_project, project)
    before = _files(project / "deploy")  # what init wrote (odo's devfile reads deploy/)
    result = flask_stack("deploy", "--generate-only", "--image", "bad image\"", cwd=project, timeout=120)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("flask-stack: ") and "image" in lines[-1] and "Traceback" not in result.stderr
    assert _files(project / "deploy") == before


def test_apply_without_cluster_is_actionable(template_project: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """apply() with no kubectl context (or no kubectl) raises CliError naming kubectl and the files."""
    paths = deploy.generate(template_project, tmp_path / "deploy", IMAGE)
    empty = tmp_path / "kubeconfig"
    empty.write_text("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n")
    monkeypatch.setenv("KUBECONFIG", str(empty))
    with pytest.raises(CliError) as caught:
        deploy.apply(paths)
    message = str(caught.value)
    assert "kubectl" in message and str(paths[0]) in message and "\n" not in message
    with pytest.raises(CliError, match="kubectl is not installed"):
        deploy.apply(paths, kubectl="kubectl-that-does-not-exist")


def test_appsody_deploy_template(template_project: Path, tmp_path: Path) -> None:
    """image/config/app-deploy.yaml keeps Appsody's placeholders; mounted at the root (STACK_URL_PREFIX ""), its
    probes are deployment.yaml's (paths, periods, timeouts, thresholds) and it scrapes /metrics; every path in it
    is one its comment says to prefix for a sub-path mount."""
    text = (REPO / "image" / "config" / "app-deploy.yaml").read_text()
    for placeholder in ("APPSODY_PROJECT_NAME", "APPSODY_DOCKER_IMAGE", "APPSODY_STACK", "APPSODY_PORT"):
        assert placeholder in text
    rendered = yaml.safe_load(deploy.render(text, {"APPSODY_PROJECT_NAME": "demo", "APPSODY_DOCKER_IMAGE": IMAGE,
                                                   "APPSODY_STACK": "dev.local/python-flask:0.3",
                                                   "APPSODY_PORT": "8080"}))
    assert rendered["kind"] == "AppsodyApplication"
    spec = rendered["spec"]
    assert spec["applicationImage"] == IMAGE and spec["service"]["port"] == 8080
    assert {item["name"]: item["value"] for item in spec["env"]}["STACK_URL_PREFIX"] == ""
    (container,) = load(deploy.generate(template_project, tmp_path / "deploy", IMAGE)[0])["spec"]["template"][
        "spec"]["containers"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        ours = {**container[probe], "httpGet": {**container[probe]["httpGet"], "port": front.PROBE_PORT}}
        assert spec[probe] == ours, probe
    assert spec["service"]["annotations"]["prometheus.io/path"] == "/metrics"
    assert spec["autoscaling"]["minReplicas"] >= 2 and spec["monitoring"]["endpoints"][0]["path"] == "/metrics"
    paths = re.findall(r"^[\s-]*(?:path|prometheus\.io/path): (\S+)$", text, re.M)
    assert sorted(paths) == ["/health/live", "/health/ready", "/health/started", "/metrics", "/metrics"]
    comment = " ".join(line.lstrip("# ") for line in text.splitlines() if line.startswith("#"))
    for named in ("STACK_URL_PREFIX", "three probes", "prometheus.io/path", "monitoring endpoint"):
        assert named in comment, named


def test_scale_out_manifests(template_project: Path, tmp_path: Path) -> None:
    """Without a replica count of its own, the Deployment is scaled by a CPU HorizontalPodAutoscaler (defaults
    2-10, overridable), a PodDisruptionBudget evicts one pod at a time, pods spread over nodes and zones; a
    ServiceMonitor only when asked, selecting the Service's labels and port; all strictly valid."""
    project = tmp_path / "demo-app"
    shutil.copytree(template_project, project)
    result = flask_stack("deploy", "--generate-only", "--image", IMAGE, "--min-replicas", "3", "--max-replicas",
                         "7", "--cpu-target", "60", "--service-monitor", cwd=project, timeout=120)
    assert result.returncode == 0, result.stderr
    out = project / "deploy"
    files = sorted(out.iterdir())
    assert [p.name for p in files] == ["deployment.yaml", "hpa.yaml", "pdb.yaml", "service.yaml",
                                       "servicemonitor.yaml"]
    validate_strict(files)
    deployment, service = load(out / "deployment.yaml"), load(out / "service.yaml")
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert "replicas" not in deployment["spec"]  # the autoscaler owns it

    hpa = load(out / "hpa.yaml")
    assert hpa["kind"] == "HorizontalPodAutoscaler" and hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "demo-app"}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 7)
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu" and metric["resource"]["target"]["averageUtilization"] == 60
    assert "cpu" in deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]

    pdb = load(out / "pdb.yaml")
    assert pdb["kind"] == "PodDisruptionBudget" and pdb["spec"]["selector"]["matchLabels"] == selector
    assert pdb["spec"]["maxUnavailable"] == 1

    spread = {c["topologyKey"]: c for c in deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]}
    assert set(spread) == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    assert all(c["labelSelector"]["matchLabels"] == selector and c["maxSkew"] == 1 for c in spread.values())

    monitor = load(out / "servicemonitor.yaml")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1" and monitor["kind"] == "ServiceMonitor"
    labels = service["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in monitor["spec"]["selector"]["matchLabels"].items())
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in [p["name"] for p in service["spec"]["ports"]] and endpoint["path"] == "/metrics"

    defaults = deploy.generate(template_project, tmp_path / "defaults", IMAGE)
    default_hpa = load(defaults[2])
    assert (default_hpa["spec"]["minReplicas"], default_hpa["spec"]["maxReplicas"]) == (2, 10)


def test_openshift_switch(template_project: Path, tmp_path: Path) -> None:
    """--openshift: no fixed uid, gid or fsGroup anywhere (OpenShift's restricted policy assigns them), the
    rest of the hardening kept; strictly valid."""
    project = tmp_path / "demo-app"
    shutil.copytree(template_project, project)
    result = flask_stack("deploy", "--generate-only", "--image", IMAGE, "--openshift", cwd=project, timeout=120)
    assert result.returncode == 0, result.stderr
    validate_strict(sorted((project / "deploy").iterdir()))
    spec = load(project / "deploy" / "deployment.yaml")["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    for context in (spec["securityContext"], container["securityContext"]):
        assert not {"runAsUser", "runAsGroup", "fsGroup"} & set(context), context
        assert context["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False and security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}


@pytest.mark.parametrize(("args", "fragment"), [
    (["--min-replicas", "5", "--max-replicas", "3"], "min <= max"),
    (["--min-replicas", "0"], "--min-replicas"),
    (["--cpu-target", "150"], "--cpu-target"),
    (["--tls-secret", "shop-tls"], "--tls-secret needs --ingress"),
    (["--ingress", "not a host"], "--ingress 'not a host' is not a host name"),
    (["--ingress", "a.example", "--tls-secret", "Bad_Name"], "--tls-secret 'Bad_Name' is not a Secret name"),
    (["--nginx-static"], "--nginx-static needs --nginx-sidecar"),
    (["--nginx-image", "nginx:1"], "--nginx-image needs --nginx-sidecar"),
    (["--nginx-sidecar", "--nginx-static"], "static is not a directory"),
    (["--nginx-sidecar", "--nginx-image", "bad image"], "--nginx-image 'bad image' is not an image reference"),
    (["--max-content-length", "-1"], "--max-content-length"),
])
def test_bad_deploy_options_are_one_line(template_project: Path, tmp_path: Path, args: list[str],
                                         fragment: str) -> None:
    """Impossible autoscaler bounds, front options that do not fit: one `flask-stack:` line naming the option,
    non-zero exit, no files."""
    project = tmp_path / "demo-app"
    shutil.copytree(template_project, project)
    before = _files(project / "deploy")
    result = flask_stack("deploy", "--generate-only", "--image", IMAGE, *args, cwd=project, timeout=120)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("flask-stack: ") and fragment in lines[0], result.stderr
    assert _files(project / "deploy") == before


def test_probes_and_scrape_path_follow_the_url_prefix(template_project: Path, tmp_path: Path) -> None:
    """--url-prefix /your/path/: the pods' STACK_URL_PREFIX, the three probes, the scrape annotation and the
    ServiceMonitor's path carry it; still strictly valid. A bad prefix is one line."""
    project = tmp_path / "demo-app"
    shutil.copytree(template_project, project)
    result = flask_stack("deploy", "--generate-only", "--image", IMAGE, "--service-monitor", "--url-prefix",
                         "/your/path/", cwd=project, timeout=120)
    assert result.returncode == 0, result.stderr
    out = project / "deploy"
    validate_strict(sorted(out.iterdir()))
    pod = load(out / "deployment.yaml")["spec"]["template"]
    assert pod["metadata"]["annotations"]["prometheus.io/path"] == "/your/path/metrics"
    (container,) = pod["spec"]["containers"]
    assert {item["name"]: item["value"] for item in container["env"]}["STACK_URL_PREFIX"] == "/your/path"
    for probe, path in (("startupProbe", "started"), ("livenessProbe", "live"), ("readinessProbe", "ready")):
        assert container[probe]["httpGet"]["path"] == f"/your/path/health/{path}", probe
    (endpoint,) = load(out / "servicemonitor.yaml")["spec"]["endpoints"]
    assert endpoint["path"] == "/your/path/metrics"
    with pytest.raises(CliError, match=re.escape("--url-prefix='your/path' must start with a slash, e.g. "
                                                 "--url-prefix=/your/path")):
        deploy.generate(template_project, tmp_path / "bad", IMAGE, url_prefix="your/path")


def env_of(container: dict) -> dict:
    return {item["name"]: item["value"] for item in container["env"]}


def test_ingress(template_project: Path, tmp_path: Path) -> None:
    """--ingress HOST --tls-secret NAME: an ingress-nginx Ingress routing HOST + the prefix to the Service's port,
    buffering on, the body limit of the pods (--max-content-length), timeouts, TLS; the pods trust one proxy.
    Without it: no Ingress, STACK_PROXY_HOPS 0, the serving layer's own body limit. Strictly valid."""
    project = tmp_path / "demo-app"
    shutil.copytree(template_project, project)
    result = flask_stack("deploy", "--generate-only", "--image", IMAGE, "--url-prefix", "/your/path", "--ingress",
                         "shop.example.com", "--tls-secret", "shop-tls", "--max-content-length", "1048576",
                         cwd=project, timeout=120)
    assert result.returncode == 0, result.stderr
    out = project / "deploy"
    assert sorted(p.name for p in out.iterdir()) == ["deployment.yaml", "hpa.yaml", "ingress.yaml", "pdb.yaml",
                                                     "service.yaml"]
    validate_strict(sorted(out.iterdir()))
    ingress, service = load(out / "ingress.yaml"), load(out / "service.yaml")
    assert ingress["apiVersion"] == "networking.k8s.io/v1" and ingress["spec"]["ingressClassName"] == "nginx"
    (rule,) = ingress["spec"]["rules"]
    (path,) = rule["http"]["paths"]
    assert rule["host"] == "shop.example.com" and (path["path"], path["pathType"]) == ("/your/path", "Prefix")
    backend = path["backend"]["service"]
    assert backend["name"] == service["metadata"]["name"]
    assert backend["port"]["name"] in [p["name"] for p in service["spec"]["ports"]]
    assert ingress["spec"]["tls"] == [{"hosts": ["shop.example.com"], "secretName": "shop-tls"}]
    notes = {k.removeprefix("nginx.ingress.kubernetes.io/"): v for k, v in ingress["metadata"]["annotations"].items()}
    assert notes["proxy-request-buffering"] == "on" and notes["proxy-buffering"] == "on"
    assert notes["proxy-body-size"] == "1m"
    assert all(int(notes[f"proxy-{kind}-timeout"]) > 0 for kind in ("connect", "send", "read"))
    (container,) = load(out / "deployment.yaml")["spec"]["template"]["spec"]["containers"]
    env = env_of(container)
    assert (env["STACK_PROXY_HOPS"], env["STACK_MAX_CONTENT_LENGTH"]) == ("1", "1048576")
    assert env["STACK_FRONT"] == "none"  # ingress-nginx buffers every request: the image's nginx would do it again
    assert "STACK_PROBE_PORT" not in env  # no front, no probe port: the probes ask the app's own port
    assert {container[f"{kind}Probe"]["httpGet"]["port"] for kind in ("startup", "liveness", "readiness")} == {"http"}
    assert [p["name"] for p in container["ports"]] == ["http"]

    plain = deploy.generate(template_project, tmp_path / "plain", IMAGE,
                            front=front.Front(ingress_host="shop.example.com"))
    assert [p.name for p in plain] == ["deployment.yaml", "service.yaml", "hpa.yaml", "pdb.yaml", "ingress.yaml"]
    ingress = load(plain[-1])
    assert "tls" not in ingress["spec"] and ingress["spec"]["rules"][0]["http"]["paths"][0]["path"] == "/"
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"] == "16m"
    defaults = deploy.generate(template_project, tmp_path / "defaults", IMAGE)
    env = env_of(load(defaults[0])["spec"]["template"]["spec"]["containers"][0])
    assert env["STACK_PROXY_HOPS"] == "0" and setting_default("Settings", "proxy_hops") == 0
    assert int(env["STACK_MAX_CONTENT_LENGTH"]) == setting_default("Settings", "max_content_length")
    assert env["STACK_SHUTDOWN_DELAY"] == "5"


def test_nginx_sidecar(template_project: Path, tmp_path: Path) -> None:
    """--nginx-sidecar --nginx-static (with --ingress, --openshift): a ConfigMap with nginx.conf (nginx -t accepts
    it) and an nginx container beside the app: the Service targets its port, the probes stay on the app's, the
    same hardening (read-only root, non-root, no capabilities; no fixed uid for OpenShift), its own emptyDir at
    /tmp, the static files copied by an init container from the app's image, the pods roll when the config
    changes, two proxies trusted, nginx stops accepting before the app. Strictly valid."""
    project = tmp_path / "demo-app"
    shutil.copytree(template_project, project)
    (project / "static").mkdir()
    (project / "static" / "app.css").write_text("body {}\n")
    result = flask_stack("deploy", "--generate-only", "--image", IMAGE, "--url-prefix", "/your/path",
                         "--nginx-sidecar", "--nginx-static", "--ingress", "shop.example.com", "--openshift",
                         cwd=project, timeout=120)
    assert result.returncode == 0, result.stderr
    out = project / "deploy"
    assert sorted(p.name for p in out.iterdir()) == ["deployment.yaml", "hpa.yaml", "ingress.yaml", "nginx.yaml",
                                                     "pdb.yaml", "service.yaml"]
    validate_strict(sorted(out.iterdir()))
    deployment, service, configmap = load(out / "deployment.yaml"), load(out / "service.yaml"), load(out / "nginx.yaml")
    pod = deployment["spec"]["template"]
    spec = pod["spec"]
    app, nginx = spec["containers"]
    assert (app["name"], nginx["name"]) == ("app", "nginx") and nginx["image"] == front.NGINX_IMAGE
    nginx_ports = {p["name"]: p["containerPort"] for p in nginx["ports"]}
    assert nginx_ports[service["spec"]["ports"][0]["targetPort"]] == front.NGINX_PORT > 1024
    app_ports = {p["name"] for p in app["ports"]}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert app[probe]["httpGet"]["port"] in app_ports and app[probe]["httpGet"]["path"].startswith("/your/path/")
    for container in (app, nginx, *spec["initContainers"]):
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True and security["runAsNonRoot"] is True
        assert security["allowPrivilegeEscalation"] is False and security["capabilities"] == {"drop": ["ALL"]}
        assert not {"runAsUser", "runAsGroup"} & set(security), container["name"]
        assert container["resources"]["requests"] and container["resources"]["limits"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in nginx["volumeMounts"]}
    assert "emptyDir" in volumes[mounts["/tmp"]] and "emptyDir" in volumes[mounts["/tmp/static"]]
    conf_mount = next(m for m in nginx["volumeMounts"] if m["name"] == volumes[mounts["/etc/nginx/flask-stack"]][
        "name"])
    assert conf_mount["readOnly"] is True
    assert volumes[conf_mount["name"]]["configMap"]["name"] == configmap["metadata"]["name"]
    assert nginx["command"][-2:] == ["-c", "/etc/nginx/flask-stack/nginx.conf"] and "/tmp/" in nginx["command"]
    conf = configmap["data"]["nginx.conf"]
    assert pod["metadata"]["annotations"]["checksum/nginx-conf"] == hashlib.sha256(conf.encode()).hexdigest()
    assert "listen 8081;" in conf and "server 127.0.0.1:8080;" in conf and "location /your/path/static/" in conf
    assert "client_max_body_size 16m;" in conf and "proxy_request_buffering on;" in conf
    (init,) = spec["initContainers"]
    assert init["image"] == IMAGE and init["command"][-2:] == ["/project/userapp/static/.", "/static/"]
    assert volumes[init["volumeMounts"][0]["name"]] == volumes[mounts["/tmp/static"]]
    env = env_of(app)
    assert env["STACK_PROXY_HOPS"] == "2"  # ingress-nginx, then the sidecar
    assert env["STACK_FRONT"] == "none"  # the sidecar is the front; no second nginx in the app's container
    pre_stop = " ".join(nginx["lifecycle"]["preStop"]["exec"]["command"])
    accepting = int(re.search(r"sleep (\d+);", pre_stop).group(1))
    assert accepting < int(env["STACK_SHUTDOWN_DELAY"]) and "-s quit" in pre_stop
    assert spec["terminationGracePeriodSeconds"] > int(env["STACK_GRACEFUL_TIMEOUT"])
    # Debian's nginx accepts the config, run the way the container runs it (relative paths under -p)
    nginx_binary = shutil.which("nginx", path="/usr/sbin:/usr/bin")
    if nginx_binary:
        (tmp_path / "run").mkdir()
        (tmp_path / "run" / "nginx.conf").write_text(conf)
        check = subprocess.run([nginx_binary, "-t", "-p", f"{tmp_path / 'run'}/", "-e", "/dev/stderr", "-c",
                                str(tmp_path / "run" / "nginx.conf")], capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, check.stderr
    else:
        missing("nginx is not installed (Debian package nginx-light); .ci/run installs it")


USER_SETTINGS = """\
default:
  GREETING: hello default
  LIMITS: {per_minute: 60, burst: 10}
  DATABASE_URL: null
development:
  GREETING: hello development
  SECRET_KEY: development-only-value-71c3
production:
  GREETING: hello production
  FEATURE_X: true
  SECRET_KEY: null
  DATABASE_URL: null
"""


@pytest.mark.timeout(420)  # its waits add up to 360 s
def test_settings_yaml_production_profile_in_a_configmap_and_secrets_from_a_secret(template_project: Path,
                                                                                     tmp_path: Path) -> None:
    """A project with settings.yaml: its production values go into configmap.yaml (the pods read them as FLASK_
    variables), the keys null in production come from the Secret <name>-secrets mounted at STACK_SECRETS_DIR; no
    value of another profile, and no secret from the environment or a secrets dir, reaches a manifest."""
    project = tmp_path / "demo-app"
    shutil.copytree(template_project, project)
    (project / "settings.yaml").write_text(USER_SETTINGS)
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "SECRET_KEY").write_text("secret-from-dir-5e0d")
    result = subprocess.run([sys.executable, "-m", "flask_stack", "deploy", "--generate-only", "--image", IMAGE],
                            cwd=project, capture_output=True, text=True, timeout=120,
                            env={**__import__("os").environ, "PYTHONPATH": str(REPO / "src"),
                                 "STACK_SECRETS_DIR": str(secrets), "SECRET_KEY": "secret-from-env-93aa",
                                 "FLASK_SECRET_KEY": "secret-from-env-93aa", "STACK_PROFILE": "development"})
    assert result.returncode == 0, result.stderr
    assert ("the pods read DATABASE_URL, SECRET_KEY from the Secret demo-app-secrets (production: null in "
            "settings.yaml); create it before they start: kubectl create secret generic demo-app-secrets "
            "--from-file=DATABASE_URL=./database_url.txt --from-file=SECRET_KEY=./secret_key.txt") in result.stderr
    files = sorted((project / "deploy").iterdir())
    assert [p.name for p in files] == ["configmap.yaml", "deployment.yaml", "hpa.yaml", "pdb.yaml", "service.yaml"]
    validate_strict(files)
    for path in files:
        text = path.read_text()
        for value in ("development-only-value-71c3", "secret-from-dir-5e0d", "secret-from-env-93aa",
                      "hello development"):
            assert value not in text, (path.name, value)

    configmap = load(project / "deploy" / "configmap.yaml")
    assert configmap["metadata"]["name"] == "demo-app-config"
    assert configmap["data"] == {"GREETING": '"hello production"', "FEATURE_X": "true",
                                 "LIMITS": '{"burst": 10, "per_minute": 60}'}
    deployment = load(project / "deploy" / "deployment.yaml")
    pod = deployment["spec"]["template"]
    digest = pod["metadata"]["annotations"]["checksum/config"]
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    app = pod["spec"]["containers"][0]
    assert app["envFrom"] == [{"prefix": "FLASK_", "configMapRef": {"name": "demo-app-config"}}]
    assert env_of(app)["STACK_PROFILE"] == "production" and env_of(app)["STACK_SECRETS_DIR"] == "/run/secrets/app"
    assert {"name": "user-secrets", "mountPath": "/run/secrets/app", "readOnly": True} in app["volumeMounts"]
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "user-secrets")
    assert volume["secret"] == {"secretName": "demo-app-secrets", "defaultMode": 0o440}

    # a changed production value changes the checksum (the pods roll); a development-only change does not
    (project / "settings.yaml").write_text(USER_SETTINGS.replace("hello development", "hi"))
    assert flask_stack("deploy", "--generate-only", "--image", IMAGE, cwd=project, timeout=120).returncode == 0
    assert load(project / "deploy" / "deployment.yaml")["spec"]["template"]["metadata"]["annotations"][
        "checksum/config"] == digest
    (project / "settings.yaml").write_text(USER_SETTINGS.replace("hello production", "hi"))
    assert flask_stack("deploy", "--generate-only", "--image", IMAGE, cwd=project, timeout=120).returncode == 0
    assert load(project / "deploy" / "deployment.yaml")["spec"]["template"]["metadata"]["annotations"][
        "checksum/config"] != digest


def test_settings_yaml_without_secrets_mounts_no_secret(template_project: Path, tmp_path: Path) -> None:
    project = tmp_path / "demo-app"
    shutil.copytree(template_project, project)
    (project / "settings.toml").write_text('[default]\nGREETING = "hi"\n')
    paths = deploy.generate(project, project / "deploy", IMAGE)
    validate_strict(paths)
    pod = load(project / "deploy" / "deployment.yaml")["spec"]["template"]["spec"]
    assert "STACK_SECRETS_DIR" not in env_of(pod["containers"][0])
    assert all(v["name"] != "user-secrets" for v in pod["volumes"])
    assert load(project / "deploy" / "configmap.yaml")["data"] == {"GREETING": '"hi"'}


def test_malformed_settings_yaml_is_one_line_for_deploy(template_project: Path, tmp_path: Path) -> None:
    project = tmp_path / "demo-app"
    shutil.copytree(template_project, project)
    (project / "settings.yaml").write_text("production:\n  GREETING: [open\n")
    before = _files(project / "deploy")
    with pytest.raises(CliError) as err:
        deploy.generate(project, project / "deploy", IMAGE)
    assert str(err.value).startswith(f"{project / 'settings.yaml'}: cannot be read for the production profile: ")
    assert "\n" not in str(err.value) and _files(project / "deploy") == before
