"""Kubernetes manifests: `flask-stack deploy --generate-only`, flask_stack.deploy, image/config/app-deploy.yaml.

These need no container engine: the manifests are validated offline with kubernetes-validate (strict schemas).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flask_stack import deploy
from flask_stack.errors import StackError

from .conftest import REPO, flask_stack

IMAGE = "registry.example.com/team/demo-app:1.2.3"


def kubernetes_validate() -> str:
    """Path of the kubernetes-validate command of this test environment."""
    found = shutil.which("kubernetes-validate", path=str(Path(sys.executable).parent)) or shutil.which("kubernetes-validate")
    assert found, "kubernetes-validate is not installed in the test environment"
    return found


def graceful_timeout_default() -> int:
    """The production servers' graceful timeout default (STACK_GRACEFUL_TIMEOUT), from the serving settings."""
    sys.path.insert(0, str(REPO / "image" / "project"))
    try:
        from server.settings import ServingSettings
    finally:
        sys.path.pop(0)
    return ServingSettings().graceful_timeout


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
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == "8080"
    spec = pod["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] == 1001
    (container,) = spec["containers"]
    assert container["image"] == IMAGE
    assert container["ports"][0]["containerPort"] == 8080
    assert container["startupProbe"]["httpGet"]["path"] == "/health/started"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False and security["readOnlyRootFilesystem"] is True
    assert security["runAsNonRoot"] is True and security["runAsUser"] == 1001
    assert {"cpu", "memory"} <= set(container["resources"]["requests"]) and container["resources"]["limits"]
    env = {item["name"]: item["value"] for item in container["env"]}
    assert env["STACK_URL_PREFIX"] == ""  # the root
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert env["PROMETHEUS_MULTIPROC_DIR"].startswith("/tmp/")
    graceful = int(env.get("STACK_GRACEFUL_TIMEOUT", graceful_timeout_default()))
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


def test_bad_image_is_one_line_and_writes_nothing(template_project: Path, tmp_path: Path) -> None:
    """An invalid --image gives one `flask-stack:` line, a non-zero exit and no files."""
    project = tmp_path / "demo-app"
    shutil.copytree(template_project, project)
    result = flask_stack("deploy", "--generate-only", "--image", "bad image\"", cwd=project, timeout=120)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("flask-stack: ") and "image" in lines[-1] and "Traceback" not in result.stderr
    assert not (project / "deploy").exists()


def test_apply_without_cluster_is_actionable(template_project: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """apply() with no kubectl context (or no kubectl) raises StackError naming kubectl and the files."""
    paths = deploy.generate(template_project, tmp_path / "deploy", IMAGE)
    empty = tmp_path / "kubeconfig"
    empty.write_text("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n")
    monkeypatch.setenv("KUBECONFIG", str(empty))
    with pytest.raises(StackError) as caught:
        deploy.apply(paths)
    message = str(caught.value)
    assert "kubectl" in message and str(paths[0]) in message and "\n" not in message
    with pytest.raises(StackError, match="kubectl is not installed"):
        deploy.apply(paths, kubectl="kubectl-that-does-not-exist")


def test_appsody_deploy_template() -> None:
    """image/config/app-deploy.yaml keeps Appsody's placeholders and probes on the three health endpoints."""
    text = (REPO / "image" / "config" / "app-deploy.yaml").read_text()
    for placeholder in ("APPSODY_PROJECT_NAME", "APPSODY_DOCKER_IMAGE", "APPSODY_STACK", "APPSODY_PORT"):
        assert placeholder in text
    rendered = yaml.safe_load(deploy.render(text, {"APPSODY_PROJECT_NAME": "demo", "APPSODY_DOCKER_IMAGE": IMAGE,
                                                   "APPSODY_STACK": "dev.local/python-flask:0.3",
                                                   "APPSODY_PORT": "8080"}))
    assert rendered["kind"] == "AppsodyApplication"
    spec = rendered["spec"]
    assert spec["applicationImage"] == IMAGE and spec["service"]["port"] == 8080
    assert spec["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert spec["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert spec["startupProbe"]["httpGet"]["path"] == "/health/started"
    assert spec["autoscaling"]["minReplicas"] >= 2 and spec["monitoring"]["endpoints"][0]["path"] == "/metrics"


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
])
def test_bad_replica_bounds_are_one_line(template_project: Path, tmp_path: Path, args: list[str],
                                         fragment: str) -> None:
    """Impossible autoscaler bounds: one `flask-stack:` line naming the option, non-zero exit, no files."""
    project = tmp_path / "demo-app"
    shutil.copytree(template_project, project)
    result = flask_stack("deploy", "--generate-only", "--image", IMAGE, *args, cwd=project, timeout=120)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("flask-stack: ") and fragment in lines[0], result.stderr
    assert not (project / "deploy").exists()


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
    with pytest.raises(StackError, match="--url-prefix 'your/path' is not a URL path like /your/path"):
        deploy.generate(template_project, tmp_path / "bad", IMAGE, url_prefix="your/path")
