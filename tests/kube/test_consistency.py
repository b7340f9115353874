"""The manifests agree with each other, with the application and gunicorn, and with the CI workflow."""

import re
from pathlib import Path

import pytest
import yaml

from src import create_app
from tests.conftest import FAST_ARGON2, TEST_SECRET_KEY

from .manifests import (
    KUBE_CONFIG,
    NAMESPACE,
    OVERLAYS,
    REPO,
    base_objects,
    container_port,
    containers,
    find,
    load_documents,
    matches,
    one,
    overlay_image,
    overlay_resources,
    pod_spec,
    workloads,
)

# Kinds (and API versions) the manifests may use: kubernetes-validate only warns on an unknown kind.
KNOWN_KINDS = {
    "Namespace": "v1",
    "ServiceAccount": "v1",
    "ConfigMap": "v1",
    "Service": "v1",
    "Deployment": "apps/v1",
    "StatefulSet": "apps/v1",
    "Job": "batch/v1",
    "Ingress": "networking.k8s.io/v1",
    "NetworkPolicy": "networking.k8s.io/v1",
    "HorizontalPodAutoscaler": "autoscaling/v2",
    "PodDisruptionBudget": "policy/v1",
}
APP_IMAGE = "ghcr.io/flask-api/flask-api:1.0.0"
WORKFLOWS = REPO / ".github" / "workflows"


@pytest.fixture(scope="module")
def objects() -> list[dict]:
    return base_objects()


@pytest.fixture(scope="module")
def api(objects) -> dict:
    return one(objects, "Deployment", "flask-api")


@pytest.fixture(scope="module")
def api_container(api) -> dict:
    return next(c for c in pod_spec(api)["containers"] if c["name"] == "flask-api")


@pytest.fixture(scope="module")
def settings(objects) -> dict:
    return one(objects, "ConfigMap", "flask-api-config")["data"]


def test_every_manifest_uses_a_known_kind_and_api_version(objects):
    unknown = [(o["apiVersion"], o["kind"]) for o in objects if KNOWN_KINDS.get(o["kind"]) != o["apiVersion"]]
    assert not unknown


def test_every_namespaced_object_is_in_the_flask_api_namespace(objects):
    assert one(objects, "Namespace", NAMESPACE)
    elsewhere = [
        o["metadata"]["name"]
        for o in objects
        if o["kind"] != "Namespace" and o["metadata"].get("namespace") != NAMESPACE
    ]
    assert not elsewhere


def test_every_object_and_pod_carries_the_recommended_labels(objects):
    labelled = [o["metadata"] for o in objects] + [
        w["spec"]["template"]["metadata"] for w in workloads(objects)
    ]
    missing = [
        m.get("name", "pod template")
        for m in labelled
        if m.get("labels", {}).get("app.kubernetes.io/name") != "flask-api"
        or m["labels"].get("app.kubernetes.io/part-of") != "flask-api"
    ]
    assert not missing


def test_every_service_selects_the_pods_of_exactly_one_workload(objects):
    for service in find(objects, "Service"):
        selected = [
            w["metadata"]["name"]
            for w in workloads(objects)
            if matches(service["spec"]["selector"], w["spec"]["template"]["metadata"]["labels"])
        ]
        assert len(selected) == 1, f"Service {service['metadata']['name']} selects {selected}"


def test_every_workload_selector_matches_its_own_pod_labels(objects):
    for workload in workloads(objects):
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert matches(workload["spec"]["selector"]["matchLabels"], labels), workload["metadata"]["name"]


def test_service_target_ports_are_container_ports_of_the_selected_pods(objects):
    for service in find(objects, "Service"):
        workload = next(
            w
            for w in workloads(objects)
            if matches(service["spec"]["selector"], w["spec"]["template"]["metadata"]["labels"])
        )
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            numbers = [container_port(c, target) for c in pod_spec(workload)["containers"]]
            assert any(numbers), f"{service['metadata']['name']}: targetPort {target} is no container port"


def test_ingress_sends_every_path_to_the_http_port_of_the_api_service(objects):
    ingress = one(objects, "Ingress", "flask-api")
    service = one(objects, "Service", "flask-api")
    service_ports = {p["name"] for p in service["spec"]["ports"]} | {
        p["port"] for p in service["spec"]["ports"]
    }
    for rule in ingress["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            assert backend["name"] == "flask-api"
            assert backend["port"].get("name", backend["port"].get("number")) in service_ports
            assert (path["path"], path["pathType"]) == ("/", "Prefix")


def test_public_service_does_not_expose_the_metrics_port(objects, api_container):
    metrics = container_port(api_container, "metrics")
    service = one(objects, "Service", "flask-api")
    targets = {
        container_port(api_container, p.get("targetPort", p["port"])) for p in service["spec"]["ports"]
    }
    assert metrics not in targets


def test_http_container_port_is_the_port_gunicorn_binds(api_container, settings):
    assert container_port(api_container, "http") == int(settings["PORT"]) == 8888
    gunicorn_conf = REPO / "gunicorn.conf.py"
    assert re.search(r'\("PORT", 8888\b', gunicorn_conf.read_text(encoding="utf-8"))


def test_metrics_container_port_is_the_metrics_port_setting(api_container, settings):
    assert container_port(api_container, "metrics") == int(settings["METRICS_PORT"]) == 9102


def test_liveness_and_startup_probes_get_healthz_on_the_http_port(api_container):
    for probe in ("livenessProbe", "startupProbe"):
        http = api_container[probe]["httpGet"]
        assert (http["path"], container_port(api_container, http["port"])) == ("/healthz", 8888), probe


def test_readiness_probe_gets_readyz_on_the_http_port(api_container):
    http = api_container["readinessProbe"]["httpGet"]
    assert (http["path"], container_port(api_container, http["port"])) == ("/readyz", 8888)


def test_probe_paths_are_get_routes_of_the_application_that_answer_200(api_container, tmp_path):
    # The application as create_app builds it: each probe's path must be a rule of its URL map for GET
    # (not a 404, a 405 or a redirect to another spelling, which the kubelet would count as a failure).
    app = create_app(
        {**FAST_ARGON2, "DATA_FILE_PATH": str(tmp_path / "data.json"), "SECRET_KEY": TEST_SECRET_KEY}
    )
    adapter = app.url_map.bind("localhost")
    client = app.test_client()
    try:
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            path = api_container[probe]["httpGet"]["path"]
            endpoint, _ = adapter.match(path, method="GET")
            assert endpoint.startswith("health."), (probe, path, endpoint)
            assert client.get(path).status_code == 200, (probe, path)
    finally:
        app.extensions["user_store"].close()


def test_referenced_configmaps_and_keys_exist(objects):
    config_maps = {c["metadata"]["name"]: c["data"] for c in find(objects, "ConfigMap")}
    checked = 0
    for workload in workloads(objects):
        for container in containers(pod_spec(workload)):
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    assert source["configMapRef"]["name"] in config_maps
                    checked += 1
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("configMapKeyRef")
                if ref:
                    assert ref["key"] in config_maps[ref["name"]], env["name"]
                    checked += 1
    assert checked, "no workload references a ConfigMap: nothing was checked"


def _secret_references(objects: list[dict], *, optional: bool = False) -> set[tuple[str, str]]:
    """(Secret, key) the pods need to start; with optional=True, those they take only when present."""
    references = set()
    for workload in workloads(objects):
        spec = pod_spec(workload)
        for container in containers(spec):
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref and bool(ref.get("optional")) is optional:
                    references.add((ref["name"], ref["key"]))
            assert not any("secretRef" in s for s in container.get("envFrom", [])), "name the keys one by one"
        for volume in spec.get("volumes", []) if not optional else []:
            if "secret" in volume:
                references.update(
                    (volume["secret"]["secretName"], i["key"]) for i in volume["secret"]["items"]
                )
    return references


def test_k3d_secret_script_creates_every_secret_key_the_manifests_reference(objects, k3d_secrets):
    created = {(name, key) for name, data in k3d_secrets.items() for key in data}
    assert _secret_references(objects) <= created


def test_eks_external_secrets_create_every_secret_key_the_eks_overlay_references():
    objects = [doc for path in overlay_resources("eks") for doc in load_documents(path)]
    created = set()
    made = [
        *load_documents(OVERLAYS / "eks" / "external-secrets.yaml"),
        *load_documents(OVERLAYS / "eks" / "migration.yaml"),
    ]
    for external in find(made, "ExternalSecret"):
        target = external["spec"]["target"]
        created.update((target["name"], key) for key in target["template"]["data"])
    assert _secret_references(objects) <= created


def test_secret_keys_are_the_ones_the_team_contract_names(objects):
    assert _secret_references(objects) == {
        ("flask-api-secrets", "SECRET_KEY"),
        ("flask-api-db", "url"),
        ("flask-api-db", "password"),
        ("flask-api-db-admin", "url"),
        ("flask-api-db-admin", "password"),
        ("flask-api-postgres", "POSTGRES_PASSWORD"),
    }


def test_the_only_optional_secret_is_the_previous_signing_key_made_during_a_rotation(objects, k3d_secrets):
    assert _secret_references(objects, optional=True) == {
        ("flask-api-secrets-previous", "SECRET_KEY_PREVIOUS")
    }
    # Outside a rotation it does not exist: neither script nor operator makes it.
    assert "flask-api-secrets-previous" not in k3d_secrets


def test_no_secret_is_committed_anywhere_under_kube_config():
    # Argo CD's vendored manifest declares its Secrets empty; Argo CD fills them in the cluster. The Barman
    # Cloud plugin's vendored manifest holds one Secret: the name of the sidecar image, no credential.
    upstream = KUBE_CONFIG / "argocd" / "install" / "upstream" / "install.yaml"
    plugin = KUBE_CONFIG / "platform" / "plugin-barman-cloud" / "upstream" / "manifest.yaml"
    for path in KUBE_CONFIG.rglob("*.y*ml"):
        text = path.read_text(encoding="utf-8")
        documents = [
            doc for doc in yaml.load_all(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) if doc
        ]
        secrets = [doc for doc in documents if doc.get("kind") == "Secret"]
        if path == upstream:
            assert [s for s in secrets if {"data", "stringData"} & set(s)] == [], path
        elif path == plugin:
            assert [set(s["data"]) for s in secrets] == [{"SIDECAR_IMAGE"}], path
        else:
            assert secrets == [], path
        if "secretGenerator" in text:
            # The ones allowed: the Alertmanager routing (the chart reads its configuration from a Secret),
            # which names the files that hold the receivers' credentials and holds none itself, and
            # OpenSearch's roles and their mapping (the chart reads them from a Secret), which hold no user's
            # password hash (those are made outside Git).
            generators = yaml.safe_load(text)["secretGenerator"]
            files = [(g["name"], g["files"]) for g in generators]
            assert files in (
                [("alertmanager-flask-api", ["alertmanager.yaml"])],
                [("opensearch-security-config", ["roles.yml", "roles_mapping.yml"])],
            ), path
            credential = re.compile(
                r"^\s*(?:- )?(api_url|url|routing_key|service_key|api_key|password|token|hash):", re.M
            )
            for _, names in files:
                for name in names:
                    assert credential.findall((path.parent / name).read_text(encoding="utf-8")) == [], name


def test_no_env_value_or_setting_named_like_a_secret_is_a_literal(objects, settings):
    secret_like = re.compile(r"SECRET|PASSWORD|TOKEN|DATABASE_URL|_KEY$")
    literal = [name for name in settings if secret_like.search(name)]
    for workload in workloads(objects):
        for container in containers(pod_spec(workload)):
            literal += [
                e["name"]
                for e in container.get("env", [])
                if secret_like.search(e["name"]) and "value" in e and not e["name"].endswith("_FILE")
            ]
    assert not literal


def test_app_and_migration_run_the_flask_api_image_at_a_version_tag(api):
    images = {c["image"] for c in containers(pod_spec(api))}
    assert images == {APP_IMAGE}


def test_migration_runs_the_schema_command_before_the_app_starts(api, api_container):
    (migrate,) = pod_spec(api)["initContainers"]
    assert migrate["command"] == ["python", "-m", "src.migrate"]
    assert migrate["envFrom"] == api_container["envFrom"]
    assert [e["name"] for e in migrate["env"]] == [
        "DATABASE_URL",
        "DATABASE_PASSWORD_FILE",
        "DATABASE_APP_URL",
        "DATABASE_APP_PASSWORD_FILE",
        "DATABASE_WAIT_SECONDS",
    ]


def _workflow_texts() -> list[tuple[Path, str]]:
    files = sorted([*WORKFLOWS.glob("*.yml"), *WORKFLOWS.glob("*.yaml")]) if WORKFLOWS.is_dir() else []
    assert files, ".github/workflows/ holds no workflow"
    return [(path, path.read_text(encoding="utf-8")) for path in files]


def test_workflow_builds_an_image_whose_repository_ends_in_flask_api():
    # ghcr.io/${{ github.repository_owner }}/flask-api, ${{ env.REGISTRY }}/<owner>/flask-api,
    # ghcr.io/${OWNER,,}/flask-api
    image = re.compile(
        r"(?:ghcr\.io|\$\{\{\s*env\.\w+\s*\}\})/(?:\$\{\{[^}]*\}\}|[\w.${},-])+/flask-api(?![\w.-])"
    )
    built = [match.group(0) for _, text in _workflow_texts() for match in image.finditer(text)]
    # The pushed name follows the repository owner; the k3d re-tag (a literal owner) does not count here.
    assert any("${" in name for name in built), f"no ghcr.io/<owner>/flask-api image built: {built}"


def test_workflow_k3d_job_imports_the_image_tag_of_the_k3d_overlay(api_container):
    image = overlay_image("k3d", api_container["image"])
    jobs_with_import = []
    for _, text in _workflow_texts():
        workflow = yaml.safe_load(text)
        env_text = yaml.safe_dump(workflow.get("env", {}))
        for name, job in workflow.get("jobs", {}).items():
            job_text = yaml.safe_dump(job, width=10_000)
            if "k3d image import" in job_text:
                jobs_with_import.append(name)
                assert image in job_text + env_text, f"job {name} does not import {image}"
    assert jobs_with_import, "no workflow job runs `k3d image import`"
