"""The Kubernetes manifests under ``k8s/``: every overlay renders with ``kubectl kustomize``,
validates against the Kubernetes schemas, and keeps what the cluster and the deploy workflow
rely on (probes, limits, a locked-down security context, draining, names, selectors, one image
for every role, no real secret in production)."""

from __future__ import annotations

import copy
import functools
import ipaddress
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.config import Settings

yaml = pytest.importorskip(
    "yaml", reason="PyYAML is not installed: the manifests cannot be parsed (pip install pyyaml)"
)

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
OVERLAYS = sorted(path.parent.name for path in (K8S / "overlays").glob("*/kustomization.yaml"))
KUBECTL = shutil.which("kubectl")
# The oldest Kubernetes the manifests target (CronJob timeZone, matchLabelKeys need 1.27+).
KUBERNETES_VERSION = "1.32"
NAMESPACE = "recsys"

requires_kubectl = pytest.mark.skipif(
    KUBECTL is None,
    reason="kubectl is not on PATH: the overlays cannot be rendered (kubectl kustomize)",
)

# The role each recsys container runs (the image's first argument), by container name.
ROLES = {
    "api": "api",
    "consume-stream": "consume-stream",
    "migrate": "migrate",
    "retrain": "retrain",
}
# The app.kubernetes.io/component label of each recsys workload.
COMPONENTS = {
    "recsys-api": "api",
    "recsys-stream-consumer": "stream-consumer",
    "recsys-migrate": "migrate",
    "recsys-retrain": "retrain",
}
RECSYS_COMPONENTS = frozenset(COMPONENTS.values())
SECRET_KEYS = {"RECSYS_DATABASE_URL", "RECSYS_REDIS_URL", "RECSYS_API_KEYS"}
# What the deploy workflow and the documentation name.
REQUIRED_OBJECTS = {
    ("Namespace", "recsys"),
    ("ServiceAccount", "recsys"),
    ("ConfigMap", "recsys-config"),
    ("Deployment", "recsys-api"),
    ("Service", "recsys-api"),
    ("HorizontalPodAutoscaler", "recsys-api"),
    ("PodDisruptionBudget", "recsys-api"),
    ("Deployment", "recsys-stream-consumer"),
    ("Job", "recsys-migrate"),
    ("CronJob", "recsys-retrain"),
    ("NetworkPolicy", "recsys-default-deny"),
}
LONG_RUNNING = {"Deployment", "StatefulSet", "DaemonSet"}
RUN_TO_COMPLETION = {"Job", "CronJob"}

overlays = pytest.mark.parametrize("overlay", OVERLAYS)


# -- rendering and walking the documents ------------------------------------------------------


@functools.cache
def render(path: str) -> tuple[dict[str, Any], ...]:
    """The documents ``kubectl kustomize k8s/<path>`` prints (cached: read-only for tests)."""
    assert KUBECTL is not None
    result = subprocess.run(
        [KUBECTL, "kustomize", str(K8S / path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, f"kubectl kustomize k8s/{path} failed:\n{result.stderr}"
    docs = tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)
    assert docs, f"k8s/{path} rendered no documents"
    return docs


def overlay_docs(overlay: str) -> tuple[dict[str, Any], ...]:
    return render(f"overlays/{overlay}")


def find(docs: tuple[dict[str, Any], ...], kind: str, name: str) -> dict[str, Any]:
    for doc in docs:
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            return doc
    raise AssertionError(f"no {kind} {name} rendered")


def pod_template(doc: dict[str, Any]) -> dict[str, Any]:
    """The pod template of a workload (a CronJob's is inside its job template)."""
    if doc["kind"] == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]
    return doc["spec"]["template"]


def workloads(docs: tuple[dict[str, Any], ...]) -> Iterator[dict[str, Any]]:
    for doc in docs:
        if doc["kind"] in LONG_RUNNING | RUN_TO_COMPLETION:
            yield doc


def all_containers(pod_spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod_spec.get("initContainers", []), *pod_spec["containers"]]


def is_recsys(doc: dict[str, Any]) -> bool:
    """A workload that runs the recsys image (as opposed to e.g. the dev overlay's data stores)."""
    return pod_template(doc)["metadata"]["labels"].get("app.kubernetes.io/name") == "recsys"


def selector_matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels and matchExpressions) against a label set."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values") or []
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def pods_selected(docs: tuple[dict[str, Any], ...], selector: dict[str, Any]) -> list[str]:
    """Names of the workloads whose pods the selector picks."""
    return [
        doc["metadata"]["name"]
        for doc in workloads(docs)
        if selector_matches(selector, pod_template(doc)["metadata"].get("labels", {}))
    ]


def config_data(docs: tuple[dict[str, Any], ...]) -> dict[str, str]:
    return find(docs, "ConfigMap", "recsys-config")["data"]


def port_number(container: dict[str, Any], port: int | str) -> int:
    """A probe's or Service's port, resolving a container port name."""
    if isinstance(port, int):
        return port
    for declared in container.get("ports", []):
        if declared.get("name") == port:
            return int(declared["containerPort"])
    raise AssertionError(f"container {container['name']} declares no port named {port!r}")


def overlay_image(overlay: str) -> str:
    """``newName:newTag`` that the overlay's kustomization gives the image ``recsys``."""
    kustomization = yaml.safe_load((K8S / "overlays" / overlay / "kustomization.yaml").read_text())
    (entry,) = [image for image in kustomization.get("images", []) if image["name"] == "recsys"]
    return f"{entry.get('newName', 'recsys')}:{entry['newTag']}"


# -- the checks, as functions that list what is wrong (so that they can be tested failing) ---


def security_problems(where: str, pod_spec: dict[str, Any], container: dict[str, Any]) -> list[str]:
    problems = []
    pod_security = pod_spec.get("securityContext") or {}
    security = container.get("securityContext") or {}
    if not (security.get("runAsNonRoot") or pod_security.get("runAsNonRoot")):
        problems.append(f"{where}: runAsNonRoot is not true (pod or container)")
    if security.get("readOnlyRootFilesystem") is not True:
        problems.append(f"{where}: readOnlyRootFilesystem is not true")
    if security.get("allowPrivilegeEscalation") is not False:
        problems.append(f"{where}: allowPrivilegeEscalation is not false")
    if "ALL" not in ((security.get("capabilities") or {}).get("drop") or []):
        problems.append(f"{where}: capabilities do not drop ALL")
    seccomp = security.get("seccompProfile") or pod_security.get("seccompProfile") or {}
    if seccomp.get("type") not in ("RuntimeDefault", "Localhost"):
        problems.append(f"{where}: no RuntimeDefault seccomp profile")
    return problems


def resource_problems(where: str, container: dict[str, Any]) -> list[str]:
    resources = container.get("resources") or {}
    return [
        f"{where}: no {bound} for {resource}"
        for bound in ("requests", "limits")
        for resource in ("cpu", "memory")
        if resource not in (resources.get(bound) or {})
    ]


def workload_problems(doc: dict[str, Any]) -> list[str]:
    """What a workload lacks: for every container, resources and the security context; for
    long-running ones, readiness and liveness probes (and a startup probe for the API); for
    Jobs and CronJobs, a deadline."""
    kind, name = doc["kind"], doc["metadata"]["name"]
    pod_spec = pod_template(doc)["spec"]
    problems = []
    if pod_spec.get("automountServiceAccountToken") is not False:
        problems.append(f"{kind} {name}: the service account token is mounted")
    for container in all_containers(pod_spec):
        where = f"{kind} {name} container {container['name']}"
        problems += resource_problems(where, container)
        problems += security_problems(where, pod_spec, container)
        if kind in LONG_RUNNING and container in pod_spec["containers"]:
            for probe in ("readinessProbe", "livenessProbe"):
                if probe not in container:
                    problems.append(f"{where}: no {probe}")
            if name == "recsys-api" and "startupProbe" not in container:
                problems.append(f"{where}: no startupProbe (the model loads before it serves)")
    if kind in RUN_TO_COMPLETION:
        # Jobs run to completion and have no probes: the deadline is what ends a stuck run.
        job_spec = doc["spec"]["jobTemplate"]["spec"] if kind == "CronJob" else doc["spec"]
        if not job_spec.get("activeDeadlineSeconds"):
            problems.append(f"{kind} {name}: no activeDeadlineSeconds")
        if "backoffLimit" not in job_spec:
            problems.append(f"{kind} {name}: no backoffLimit")
    return problems


# -- tests ------------------------------------------------------------------------------------


def test_both_overlays_exist() -> None:
    """The deploy workflow applies k8s/overlays/production and the docs start from
    k8s/overlays/dev: both must stay there (and every overlay is tested below)."""
    assert {"dev", "production"} <= set(OVERLAYS)


@requires_kubectl
@overlays
def test_overlay_renders_the_objects_the_deploy_workflow_names(overlay: str) -> None:
    """Every overlay renders the namespace, Deployments, Service, HPA, PDB, Job, CronJob,
    ConfigMap and NetworkPolicies under the names the workflow and the docs use, every
    namespaced object in the `recsys` namespace, and each recsys object labelled with its
    name, component and part-of."""
    docs = overlay_docs(overlay)
    rendered = {(doc["kind"], doc["metadata"]["name"]) for doc in docs}
    assert rendered >= REQUIRED_OBJECTS, REQUIRED_OBJECTS - rendered
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == NAMESPACE, doc["metadata"]["name"]
    for name, component in COMPONENTS.items():
        (doc,) = [d for d in workloads(docs) if d["metadata"]["name"] == name]
        for labels in (doc["metadata"]["labels"], pod_template(doc)["metadata"]["labels"]):
            assert labels["app.kubernetes.io/name"] == "recsys", name
            assert labels["app.kubernetes.io/component"] == component, name
            assert labels["app.kubernetes.io/part-of"] == "recsys", name


@requires_kubectl
@overlays
def test_every_document_validates_against_the_kubernetes_schemas(overlay: str) -> None:
    """Each rendered document is valid for Kubernetes (strict: no unknown fields, which the API
    server would drop or refuse); a kind without a schema counts as a failure too."""
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate",
        reason="kubernetes-validate is not installed (pip install kubernetes-validate)",
    )
    failures = []
    for doc in overlay_docs(overlay):
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(part) for part in exc.path)
            failures.append(f"{doc['kind']} {doc['metadata']['name']}: {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            failures.append(exc.message)
    assert failures == []


@requires_kubectl
@overlays
def test_workloads_have_probes_resources_and_a_locked_down_security_context(
    overlay: str,
) -> None:
    """Every container of every workload has cpu and memory requests and limits and runs
    non-root with a read-only root filesystem, no privilege escalation, no capabilities and
    the runtime's seccomp profile; long-running ones have readiness and liveness probes (the
    API a startup probe as well); Jobs and CronJobs a deadline and a retry limit."""
    problems = [
        problem for doc in workloads(overlay_docs(overlay)) for problem in workload_problems(doc)
    ]
    assert problems == []


@requires_kubectl
@overlays
def test_recsys_containers_get_writable_var_and_tmp(overlay: str) -> None:
    """With a read-only root filesystem the service still needs /app/var (state and model
    cache, RECSYS_VAR_DIR and RECSYS_MODEL_DIR) and /tmp: both are emptyDir volumes."""
    docs = overlay_docs(overlay)
    config = config_data(docs)
    assert config["RECSYS_VAR_DIR"] == "/app/var"
    assert config["RECSYS_MODEL_DIR"].startswith("/app/var/")
    for doc in filter(is_recsys, workloads(docs)):
        pod_spec = pod_template(doc)["spec"]
        empty_dirs = {volume["name"] for volume in pod_spec["volumes"] if "emptyDir" in volume}
        for container in all_containers(pod_spec):
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            for path in ("/app/var", "/tmp"):
                assert mounts.get(path) in empty_dirs, (doc["metadata"]["name"], path)


@requires_kubectl
@overlays
def test_api_rolls_out_without_losing_capacity_and_drains_before_it_stops(overlay: str) -> None:
    """The API rolls out one surge pod at a time and never below current capacity; a stopping
    pod sleeps in preStop while endpoints drop it, and the grace period covers that sleep plus
    the time uvicorn gives requests in flight (RECSYS_SHUTDOWN_TIMEOUT_SECONDS)."""
    docs = overlay_docs(overlay)
    api = find(docs, "Deployment", "recsys-api")
    strategy = api["spec"]["strategy"]
    assert strategy["type"] == "RollingUpdate"
    assert str(strategy["rollingUpdate"]["maxUnavailable"]) in ("0", "0%")
    pod_spec = pod_template(api)["spec"]
    (container,) = [c for c in pod_spec["containers"] if c["name"] == "api"]
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] in ("sleep", "/bin/sleep")
    sleep = float(command[1])
    assert sleep >= 5
    shutdown = float(config_data(docs).get("RECSYS_SHUTDOWN_TIMEOUT_SECONDS", "20"))
    assert pod_spec["terminationGracePeriodSeconds"] > sleep + shutdown


@requires_kubectl
@overlays
def test_api_probes_use_the_health_endpoints_on_the_served_port(overlay: str) -> None:
    """Readiness asks /readyz (503 while the database or Redis is down), liveness and start-up
    /healthz, all on the port the API listens on (RECSYS_PORT); the startup probe allows at
    least two minutes for the model to load."""
    docs = overlay_docs(overlay)
    port = int(config_data(docs)["RECSYS_PORT"])
    (container,) = pod_template(find(docs, "Deployment", "recsys-api"))["spec"]["containers"]
    assert port_number(container, "http") == port
    expected = {
        "readinessProbe": "/readyz",
        "livenessProbe": "/healthz",
        "startupProbe": "/healthz",
    }
    for probe, path in expected.items():
        assert container[probe]["httpGet"]["path"] == path, probe
        assert port_number(container, container[probe]["httpGet"]["port"]) == port, probe
    startup = container["startupProbe"]
    assert startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3) >= 120


@requires_kubectl
@overlays
def test_stream_consumer_probes_its_metrics_server(overlay: str) -> None:
    """The consumer has no HTTP API: its probes ask the Prometheus metrics server it runs on
    RECSYS_STREAM_METRICS_PORT, bound to every interface so that the kubelet reaches it."""
    docs = overlay_docs(overlay)
    config = config_data(docs)
    assert ipaddress.ip_address(config["RECSYS_STREAM_METRICS_HOST"]).is_unspecified
    port = int(config["RECSYS_STREAM_METRICS_PORT"])
    consumer = find(docs, "Deployment", "recsys-stream-consumer")
    (container,) = pod_template(consumer)["spec"]["containers"]
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/metrics", probe
        assert port_number(container, container[probe]["httpGet"]["port"]) == port, probe


@requires_kubectl
@overlays
def test_retrain_cronjob_never_runs_twice_at_once(overlay: str) -> None:
    """A training run still going when the next one is due makes the next one skipped
    (concurrencyPolicy Forbid): two trainers would compete for memory and the promotion gate."""
    cronjob = find(overlay_docs(overlay), "CronJob", "recsys-retrain")
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    assert pod_template(cronjob)["spec"]["restartPolicy"] == "Never"


@requires_kubectl
@overlays
def test_hpa_pdb_and_service_select_the_api_pods(overlay: str) -> None:
    """The HPA scales the API Deployment (which sets no replicas of its own, so that an apply
    never resets a scaled-out API), and the PDB and the Service select exactly the API pods;
    the Service's port 80 named http reaches the container's port 8000."""
    docs = overlay_docs(overlay)
    api = find(docs, "Deployment", "recsys-api")
    api_labels = pod_template(api)["metadata"]["labels"]
    assert selector_matches(api["spec"]["selector"], api_labels)
    assert "replicas" not in api["spec"]

    hpa = find(docs, "HorizontalPodAutoscaler", "recsys-api")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        "apps/v1",
        "Deployment",
        "recsys-api",
    )
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]

    pdb = find(docs, "PodDisruptionBudget", "recsys-api")
    assert pods_selected(docs, pdb["spec"]["selector"]) == ["recsys-api"]

    service = find(docs, "Service", "recsys-api")
    assert pods_selected(docs, {"matchLabels": service["spec"]["selector"]}) == ["recsys-api"]
    (port,) = service["spec"]["ports"]
    assert (port["name"], port["port"]) == ("http", 80)
    (container,) = pod_template(api)["spec"]["containers"]
    assert port_number(container, port["targetPort"]) == 8000


@requires_kubectl
def test_production_scales_the_api_between_3_and_20_pods() -> None:
    """Production runs at least three API pods (one can be drained and one can fail while a
    third serves) and the HPA may grow it to twenty."""
    hpa = find(overlay_docs("production"), "HorizontalPodAutoscaler", "recsys-api")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 20)


@requires_kubectl
@overlays
def test_network_policies_deny_by_default_and_select_existing_pods(overlay: str) -> None:
    """Every pod starts denied both ways; every policy and every peer it names selects pods
    that exist; the API's port is open; and egress to the data stores' ports is granted to
    exactly the four recsys roles."""
    docs = overlay_docs(overlay)
    policies = [doc for doc in docs if doc["kind"] == "NetworkPolicy"]
    default_deny = find(docs, "NetworkPolicy", "recsys-default-deny")["spec"]
    assert default_deny["podSelector"] == {}
    assert set(default_deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in default_deny
    assert "egress" not in default_deny

    for policy in policies:
        name, spec = policy["metadata"]["name"], policy["spec"]
        if spec["podSelector"]:
            assert pods_selected(docs, spec["podSelector"]), f"{name} selects no pod"
        for rule in [*spec.get("ingress", []), *spec.get("egress", [])]:
            for peer in [*rule.get("from", []), *rule.get("to", [])]:
                if "podSelector" in peer and "namespaceSelector" not in peer:
                    assert pods_selected(docs, peer["podSelector"]), f"{name}: peer selects none"

    api_ports = {
        port["port"]
        for policy in policies
        if "recsys-api" in pods_selected(docs, policy["spec"]["podSelector"])
        for rule in policy["spec"].get("ingress", [])
        for port in rule.get("ports", [])
    }
    assert 8000 in api_ports

    reaching_stores = set()
    for policy in policies:
        for rule in policy["spec"].get("egress", []):
            if {5432, 6379} & {port["port"] for port in rule.get("ports", [])}:
                reaching_stores.update(pods_selected(docs, policy["spec"]["podSelector"]))
    assert reaching_stores == set(COMPONENTS)


@requires_kubectl
@overlays
def test_one_image_serves_every_role(overlay: str) -> None:
    """Every recsys container runs the image the overlay names for `recsys`, with the role
    that workload needs as its first argument; in production no other image runs at all."""
    docs = overlay_docs(overlay)
    image = overlay_image(overlay)
    recsys_workloads = [doc for doc in workloads(docs) if is_recsys(doc)]
    assert {doc["metadata"]["name"] for doc in recsys_workloads} == set(COMPONENTS)
    for doc in recsys_workloads:
        (container,) = pod_template(doc)["spec"]["containers"]
        assert container["image"] == image, doc["metadata"]["name"]
        assert container["args"][0] == ROLES[container["name"]], doc["metadata"]["name"]
        component = pod_template(doc)["metadata"]["labels"]["app.kubernetes.io/component"]
        assert component == COMPONENTS[doc["metadata"]["name"]]
    if overlay == "production":
        for doc in workloads(docs):
            for container in all_containers(pod_template(doc)["spec"]):
                assert container["image"] == image, (doc["metadata"]["name"], container["name"])


@requires_kubectl
@overlays
def test_workloads_read_the_configmap_and_the_secret(overlay: str) -> None:
    """Every recsys container takes its settings from ConfigMap recsys-config and Secret
    recsys-secrets, whole (envFrom), so that one place configures every role; neither is
    optional, so a pod without its Secret waits instead of starting without credentials."""
    for doc in filter(is_recsys, workloads(overlay_docs(overlay))):
        for container in all_containers(pod_template(doc)["spec"]):
            sources = container.get("envFrom", [])
            config_maps = [s["configMapRef"]["name"] for s in sources if "configMapRef" in s]
            secrets = [s["secretRef"]["name"] for s in sources if "secretRef" in s]
            assert config_maps == ["recsys-config"], doc["metadata"]["name"]
            assert secrets == ["recsys-secrets"], doc["metadata"]["name"]
            assert not any(s.get(ref, {}).get("optional") for s in sources for ref in s)


@requires_kubectl
def test_production_and_base_carry_no_secret() -> None:
    """Production credentials never live in the repository: neither the base nor the
    production overlay renders a Secret; the cluster's `recsys-secrets` is created apart
    (kubectl create secret generic, or a secrets operator)."""
    for path in ("base", "overlays/production"):
        secrets = [doc["metadata"]["name"] for doc in render(path) if doc["kind"] == "Secret"]
        assert secrets == [], path


@requires_kubectl
def test_dev_secret_holds_only_values_marked_as_not_secret() -> None:
    """The dev overlay's Secrets carry throw-away values that say so, with the keys the
    service reads, so that nobody mistakes them for credentials worth keeping."""
    docs = overlay_docs("dev")
    secrets = [doc for doc in docs if doc["kind"] == "Secret"]
    assert "recsys-secrets" in {doc["metadata"]["name"] for doc in secrets}
    for secret in secrets:
        values = secret.get("stringData", {})
        assert "data" not in secret, "base64 data hides what it holds: use stringData"
        for key, value in values.items():
            if key in ("RECSYS_REDIS_URL",):
                continue  # the dev Redis has no password: nothing secret in its URL
            assert "not-a-secret" in value, (secret["metadata"]["name"], key)
    assert set(find(docs, "Secret", "recsys-secrets")["stringData"]) == SECRET_KEYS


def test_secret_template_holds_placeholders_only() -> None:
    """k8s/secret.example.yaml is the template of `recsys-secrets`: exactly the three keys the
    service reads, every value a CHANGE_ME placeholder, so a copy applied unfilled fails
    loudly rather than running with a guessable credential."""
    (secret,) = yaml.safe_load_all((K8S / "secret.example.yaml").read_text())
    assert (secret["kind"], secret["metadata"]["name"]) == ("Secret", "recsys-secrets")
    assert secret["metadata"]["namespace"] == NAMESPACE
    assert "data" not in secret
    assert set(secret["stringData"]) == SECRET_KEYS
    for key, value in secret["stringData"].items():
        assert "CHANGE_ME" in value, key


def test_configmap_and_secret_keys_are_settings_the_service_reads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every RECSYS_* key of the base ConfigMap and of the Secret template names a field of
    app.config.Settings (a misspelt key would be ignored silently), and the ConfigMap's values
    parse into the production settings the manifests are built for."""
    config = yaml.safe_load((K8S / "base" / "configmap.yaml").read_text())["data"]
    (secret,) = yaml.safe_load_all((K8S / "secret.example.yaml").read_text())
    fields = {f"RECSYS_{name.upper()}" for name in Settings.model_fields}
    recsys_keys = {key for key in [*config, *secret["stringData"]] if key.startswith("RECSYS_")}
    assert recsys_keys - fields == set()
    assert set(config) - recsys_keys == {"OPENBLAS_NUM_THREADS"}

    for key, value in config.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("RECSYS_API_KEYS", "placeholder-key-0123456789:admin")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.env == "production"
    assert settings.auto_migrate is False
    assert settings.artifact_store == "database"
    assert ipaddress.ip_address(settings.host).is_unspecified  # every interface: 0.0.0.0
    assert (settings.port, settings.workers) == (8000, 1)
    assert settings.stream_metrics_port == 9109


@requires_kubectl
def test_the_checks_report_a_manifest_that_breaks_them() -> None:
    """The workload check is not vacuous: an API Deployment stripped of probes, limits and its
    security settings, and a Job without a deadline, are each reported."""
    docs = overlay_docs("production")
    api = copy.deepcopy(find(docs, "Deployment", "recsys-api"))
    assert workload_problems(api) == []
    container = pod_template(api)["spec"]["containers"][0]
    del container["readinessProbe"]
    del container["startupProbe"]
    del container["resources"]["limits"]["memory"]
    container["securityContext"]["readOnlyRootFilesystem"] = False
    del container["securityContext"]["capabilities"]
    problems = "\n".join(workload_problems(api))
    for expected in (
        "no readinessProbe",
        "no startupProbe",
        "no limits for memory",
        "readOnlyRootFilesystem",
        "drop ALL",
    ):
        assert expected in problems

    job = copy.deepcopy(find(docs, "Job", "recsys-migrate"))
    del job["spec"]["activeDeadlineSeconds"]
    pod_template(job)["spec"]["securityContext"].pop("runAsNonRoot")
    pod_template(job)["spec"]["containers"][0]["securityContext"].pop("runAsNonRoot")
    problems = "\n".join(workload_problems(job))
    assert "no activeDeadlineSeconds" in problems
    assert "runAsNonRoot" in problems


def test_selector_matching_follows_kubernetes_semantics() -> None:
    """The selector helper the tests above rely on treats matchLabels and the four
    matchExpressions operators as Kubernetes does (otherwise a policy could select nothing
    and still pass)."""
    labels = {"app.kubernetes.io/name": "recsys", "app.kubernetes.io/component": "api"}
    assert selector_matches({}, labels)
    assert selector_matches({"matchLabels": {"app.kubernetes.io/component": "api"}}, labels)
    assert not selector_matches({"matchLabels": {"app.kubernetes.io/component": "x"}}, labels)
    expr = {"key": "app.kubernetes.io/component", "values": ["api", "migrate"]}
    assert selector_matches({"matchExpressions": [{**expr, "operator": "In"}]}, labels)
    assert not selector_matches({"matchExpressions": [{**expr, "operator": "NotIn"}]}, labels)
    assert selector_matches(
        {"matchExpressions": [{"key": "x", "operator": "DoesNotExist"}]}, labels
    )
    assert not selector_matches({"matchExpressions": [{"key": "x", "operator": "Exists"}]}, labels)


@requires_kubectl
@overlays
def test_the_pre_deploy_selector_applies_the_migration_and_what_it_needs_only(
    overlay: str,
) -> None:
    """The documented first step, `kubectl apply -k <overlay> -l 'app.kubernetes.io/component
    notin (api,stream-consumer,retrain)'`, creates the migrate Job with everything it reads
    (namespace, service account, ConfigMap, egress policy; in dev the data stores and their
    Secrets) and no API, consumer or trainer, so these roll out only after the schema is
    migrated."""
    docs = overlay_docs(overlay)
    pre_deploy = {
        "matchExpressions": [
            {
                "key": "app.kubernetes.io/component",
                "operator": "NotIn",
                "values": ["api", "stream-consumer", "retrain"],
            }
        ]
    }
    applied = {
        (doc["kind"], doc["metadata"]["name"])
        for doc in docs
        if selector_matches(pre_deploy, doc["metadata"].get("labels", {}))
    }
    assert {
        ("Namespace", "recsys"),
        ("ServiceAccount", "recsys"),
        ("ConfigMap", "recsys-config"),
        ("Job", "recsys-migrate"),
        ("NetworkPolicy", "recsys-default-deny"),
        ("NetworkPolicy", "recsys-egress-datastores"),
    } <= applied
    workloads_applied = {name for kind, name in applied if kind in LONG_RUNNING | RUN_TO_COMPLETION}
    assert workloads_applied & set(COMPONENTS) == {"recsys-migrate"}
    if overlay == "dev":
        assert {("Secret", "recsys-secrets"), ("StatefulSet", "recsys-postgres")} <= applied


# -- k8s/monitoring: the alert rules and the dashboard for the cluster's Prometheus and Grafana --


@requires_kubectl
def test_monitoring_publishes_the_rule_and_dashboard_files_as_they_are() -> None:
    """k8s/monitoring renders two ConfigMaps, in the placeholder namespace `monitoring` under
    fixed names a Prometheus can mount, whose data are monitoring/'s files byte for byte
    (generated from them, so no hand-kept copy drifts); the dashboard's carries the label the
    Grafana sidecar loads, and both validate against the Kubernetes schemas."""
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate",
        reason="kubernetes-validate is not installed (pip install kubernetes-validate)",
    )
    docs = render("monitoring")
    assert {(doc["kind"], doc["metadata"]["name"]) for doc in docs} == {
        ("ConfigMap", "recsys-prometheus-rules"),
        ("ConfigMap", "recsys-grafana-dashboard"),
    }
    monitoring = ROOT / "monitoring"
    rules = find(docs, "ConfigMap", "recsys-prometheus-rules")
    assert rules["data"] == {
        "recsys-alerts.yml": (monitoring / "prometheus" / "alerts.yml").read_text()
    }
    dashboard = find(docs, "ConfigMap", "recsys-grafana-dashboard")
    assert dashboard["data"] == {
        "recsys.json": (monitoring / "grafana" / "dashboards" / "recsys.json").read_text()
    }
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    for doc in docs:
        assert doc["metadata"]["namespace"] == "monitoring"
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "recsys"
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


@requires_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_overlays_configmap_parses_into_settings(
    overlay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What an overlay adds to the ConfigMap names settings and parses: production sends a
    tenth of the users to a new version first, as a canary."""
    data = config_data(overlay_docs(overlay))
    fields = {f"RECSYS_{name.upper()}" for name in Settings.model_fields}
    assert {key for key in data if key.startswith("RECSYS_")} - fields == set()
    for key, value in data.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("RECSYS_API_KEYS", "placeholder-key-0123456789:admin")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.canary_share == (0.1 if overlay == "production" else 0.0)
