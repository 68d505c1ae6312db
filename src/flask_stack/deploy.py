"""Kubernetes manifests for a project: write what a cluster needs to run it on many nodes, and apply them.

``deployment.yaml`` and ``service.yaml``, ``hpa.yaml`` (a HorizontalPodAutoscaler on CPU), ``pdb.yaml`` (a
PodDisruptionBudget) and, when asked, ``servicemonitor.yaml`` (Prometheus Operator). They are the stack's
templates under ``image/config/`` with the Appsody placeholders replaced (the same names ``image/config/app-deploy.yaml`` uses for the Appsody
operator): ``APPSODY_PROJECT_NAME`` (a DNS-1123 label), ``APPSODY_DOCKER_IMAGE``, ``APPSODY_STACK``
and ``APPSODY_PORT`` (the container port, 8080), plus the autoscaler's ``FLASK_STACK_MIN_REPLICAS``,
``FLASK_STACK_MAX_REPLICAS`` and ``FLASK_STACK_CPU_TARGET``, and ``FLASK_STACK_URL_PREFIX`` (the app's
``STACK_URL_PREFIX``, which the probe and scrape paths carry; "" = the root). They run the deployable image as uid 1001
(or, for OpenShift, as the arbitrary uid its restricted policy assigns) with a read-only root filesystem,
an emptyDir at /tmp, startup/liveness/readiness probes on ``/health/started``, ``/health/live``,
``/health/ready``, pods spread over nodes and zones, and Prometheus scrape annotations. What stands in front of
the app when asked (an Ingress, an nginx sidecar: ``ingress.yaml``, ``nginx.yaml``) is :mod:`flask_stack.front`'s.
A project with a settings file (``settings.yaml``) also gets ``configmap.yaml``, its production profile's values
(:mod:`flask_stack.appconfig`), which the pods read as ``FLASK_<KEY>`` variables; the keys null in that profile are
secrets: the pods mount the Secret ``<name>-secrets`` (which the user creates) at ``STACK_SECRETS_DIR``. No secret
value is ever written.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from .appconfig import ProductionConfig, production_config
from .errors import CliError
from .front import MAX_CONTENT_LENGTH, Front, toggle, with_nginx_conf
from .paths import stack_root, stacksettings
from .project import project_name, sanitise_name, stack_id

#: Template files under ``image/config/``, in the order ``kubectl apply`` should see them.
TEMPLATES = ("deployment.yaml", "service.yaml", "hpa.yaml", "pdb.yaml")
#: The production profile of the project's settings file, written when it has one (:mod:`flask_stack.appconfig`).
CONFIGMAP = "configmap.yaml"
#: The Prometheus Operator's ServiceMonitor template, written only when asked (its CRD must be installed).
SERVICE_MONITOR = "servicemonitor.yaml"
#: Written when asked: the nginx sidecar's ConfigMap (its config from ``NGINX_CONF``, the runtime's
#: ``image/project/serving/nginx.conf``, which the deployable image's own front runs too) and the Ingress.
NGINX_CONFIGMAP, NGINX_CONF, INGRESS = "nginx.yaml", "nginx.conf", "ingress.yaml"
NGINX_CONF_DIR = ("image", "project", "serving")
#: The autoscaler's defaults: replicas (at least two, so one node going away leaves one pod serving) and
#: the target average CPU use, percent of the pods' CPU request.
MIN_REPLICAS, MAX_REPLICAS, CPU_TARGET = 2, 10, 70
#: Lines the ``openshift`` switch leaves out: the fixed uid/gid (OpenShift's restricted policy assigns an
#: arbitrary uid in group 0, and rejects a fixed one outside the project's range).
_FIXED_IDS = re.compile(r"^[ \t]*(runAsUser|runAsGroup|fsGroup): 1001[ \t]*\n", re.MULTILINE)
#: The port the deployable image listens on (its ``PORT``), unless ``generate(port=...)`` says otherwise.
DEFAULT_PORT = 8080
# An image reference: [registry[:port]/]path[:tag][@digest]; no whitespace, quotes or YAML specials.
_IMAGE_RE = re.compile(r"^[a-z0-9][a-z0-9._\-/:]*(@sha256:[0-9a-f]{64})?$", re.IGNORECASE)
#: Seconds ``kubectl`` gets to answer ``config current-context``.
KUBECTL_PROBE_TIMEOUT = 10.0


def render(template: str, values: dict[str, str]) -> str:
    """Return ``template`` with every placeholder in ``values`` (e.g. ``APPSODY_PORT``) replaced.

    Longer placeholder names are replaced first so that one name that prefixes another cannot clash.
    """
    for key in sorted(values, key=len, reverse=True):
        template = template.replace(key, values[key])
    return template


def generate(project: Path, output: Path, image: str, *, name: str | None = None, port: int = DEFAULT_PORT,
             min_replicas: int = MIN_REPLICAS, max_replicas: int = MAX_REPLICAS, cpu_target: int = CPU_TARGET,
             openshift: bool = False, service_monitor: bool = False, url_prefix: str = "",
             max_content_length: int = MAX_CONTENT_LENGTH, front: Front | None = None,
             config: ProductionConfig | None = None) -> list[Path]:
    """Write the project's Kubernetes manifests into ``output`` and return their paths.

    Args:
        project (Path): the project directory (its name comes from .appsody-config.yaml or the dir name).
        output (Path): directory to write ``deployment.yaml`` and ``service.yaml`` into (created if needed;
            same-named files are replaced, each atomically).
        image (str): the image reference the Deployment runs, e.g. ``registry.example.com/app:1.0``.
        name (str | None): the Kubernetes name; default the project's name (sanitised to DNS-1123).
        port (int): the container port (the image's ``PORT``), default 8080.
        min_replicas (int), max_replicas (int): the autoscaler's bounds (1 <= min <= max), default 2 and 10.
        cpu_target (int): the autoscaler's target average CPU use, percent of the request (1-100), default 70.
        openshift (bool): leave out the fixed ``runAsUser``/``runAsGroup``/``fsGroup`` (OpenShift's restricted
            policy assigns the uid); ``runAsNonRoot`` and the rest of the hardening stay.
        service_monitor (bool): also write ``servicemonitor.yaml`` for the Prometheus Operator.
        url_prefix (str): the path the app is mounted at (``/your/path``; "" or ``/``: the root): set as the
            pod's ``STACK_URL_PREFIX``, and the probes and the scrape path carry it.
        max_content_length (int): the largest request body, bytes (0: no limit): the pods'
            ``STACK_MAX_CONTENT_LENGTH``, and the Ingress's and nginx's limit; default 16 MiB.
        front (Front | None): an Ingress and/or an nginx sidecar in front of the app (default: neither).
        config (ProductionConfig | None): the production profile of the project's settings file, when the caller
            has read it already (default: read here, :func:`flask_stack.appconfig.production_config`).

    Returns:
        list[Path]: the written files, Deployment first.

    Raises:
        CliError: the image references, port, replica bounds, URL prefix, body limit or front options are
            invalid, a template is missing, or
            ``output`` cannot be written (nothing is left half-written: each file is written to a temp
            file, then renamed).
    """
    front = front or Front()
    for option, reference in (("--image", image), ("--nginx-image", front.image)):
        if not reference or not _IMAGE_RE.match(reference):
            raise CliError(f"{option} {reference!r} is not an image reference like registry.example.com/app:1.0")
    if not 1 <= port <= 65535:
        raise CliError(f"port {port} is not a TCP port (1-65535)")
    if not 1 <= min_replicas <= max_replicas:
        raise CliError(f"--min-replicas {min_replicas} and --max-replicas {max_replicas}: "
                         "need 1 <= min <= max")
    if not 1 <= cpu_target <= 100:
        raise CliError(f"--cpu-target {cpu_target} is not a percentage (1-100)")
    registry = stacksettings()
    try:
        prefix = registry.parse_url_prefix("--url-prefix", url_prefix)
    except registry.SettingsError as exc:
        raise CliError(str(exc)) from None
    if max_content_length < 0:
        raise CliError(f"--max-content-length {max_content_length} is not a size in bytes (0: no limit)")
    front.check(project, port)
    config = config if config is not None else production_config(project)
    values = {
        **_config_values(config),
        **front.values(max_content_length),
        "FLASK_STACK_INGRESS_PATH": prefix or "/",
        "FLASK_STACK_URL_PREFIX": prefix,
        "APPSODY_PROJECT_NAME": sanitise_name(name) if name else project_name(project),
        "APPSODY_DOCKER_IMAGE": image,
        "APPSODY_STACK": stack_id(),
        "APPSODY_PORT": str(port),
        "FLASK_STACK_MIN_REPLICAS": str(min_replicas),
        "FLASK_STACK_MAX_REPLICAS": str(max_replicas),
        "FLASK_STACK_CPU_TARGET": str(cpu_target),
    }
    blocks = {**front.blocks(), "user-config": config.file is not None, "user-secrets": bool(config.secret_keys)}
    filenames = [*TEMPLATES, *[CONFIGMAP] * (config.file is not None), *[NGINX_CONFIGMAP] * front.nginx_sidecar, *[INGRESS] * bool(front.ingress_host),
                 *[SERVICE_MONITOR] * service_monitor]
    if front.nginx_sidecar:
        values = with_nginx_conf(values, _template(NGINX_CONF, values, blocks, NGINX_CONF_DIR))
    texts = []
    for filename in filenames:
        text = _template(filename, values, blocks)
        texts.append((filename, _FIXED_IDS.sub("", text) if openshift else text))
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(f"cannot create {output}: {exc.strerror}") from None
    written = []
    for filename, text in texts:
        written.append(_write_atomic(output / filename, text))
    return written


def _config_values(config: ProductionConfig) -> dict[str, str]:
    """The placeholders of ``configmap.yaml`` and the pods' checksum of it: the ``data`` block (each value a
    JSON-encoded string, written as a YAML double-quoted scalar), and its SHA-256."""
    data = config.configmap_data()
    block = "data:\n" + "".join(f"  {key}: {json.dumps(value)}\n" for key, value in data.items()) if data else "data: {}\n"
    return {"FLASK_STACK_CONFIG_DATA": block.rstrip("\n"),
            "FLASK_STACK_CONFIG_SHA256": hashlib.sha256(block.encode()).hexdigest()}


def _template(filename: str, values: dict[str, str], blocks: dict[str, bool],
              directory: tuple[str, ...] = ("image", "config")) -> str:
    """The stack's template ``<directory>/<filename>`` (default ``image/config``) rendered with ``values``, its
    optional blocks kept or left out as ``blocks`` says.

    Raises:
        CliError: the template cannot be read.
    """
    path = stack_root().joinpath(*directory, filename)
    try:
        text = render(path.read_text(encoding="utf-8"), values)
    except OSError as exc:
        raise CliError(f"cannot read the stack's manifest template {path}: {exc.strerror}") from None
    for name, keep in blocks.items():
        text = toggle(text, name, keep)
    return text


def _write_atomic(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temp file in the same directory and a rename; return ``path``.

    Raises:
        CliError: the directory is not writable.
    """
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror}") from None
    return path


def apply(paths: list[Path], kubectl: str = "kubectl") -> int:
    """Apply the manifests with ``kubectl apply -f`` against kubectl's current context; return 0.

    kubectl's output (which objects were created/configured) goes to the terminal.

    Raises:
        CliError: kubectl is not installed, has no current context (no cluster configured), or the
            apply fails; each message says how to apply the written files by hand instead.
    """
    where = " ".join(f"-f {p}" for p in paths)
    binary = shutil.which(kubectl)
    if binary is None:
        raise CliError(f"kubectl is not installed; install it, or apply the manifests yourself: kubectl apply {where}")
    try:
        probe = subprocess.run([binary, "config", "current-context"], capture_output=True, text=True,
                               timeout=KUBECTL_PROBE_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise CliError("kubectl did not answer `config current-context` within "
                         f"{KUBECTL_PROBE_TIMEOUT:.0f} s; check your kubeconfig") from None
    if probe.returncode != 0 or not probe.stdout.strip():
        raise CliError("kubectl has no current context (no cluster configured); select one with "
                         f"`kubectl config use-context NAME`, or use --generate-only and run kubectl apply {where}")
    argv = [binary, "apply"]
    for path in paths:
        argv += ["-f", str(path)]
    status = subprocess.run(argv, check=False).returncode
    if status != 0:
        raise CliError(f"kubectl apply failed (exit {status}) in context {probe.stdout.strip()}; see its output above")
    return 0
