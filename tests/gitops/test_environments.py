"""The environments' overlays and the self-hosted variant: what each renders and what the API reads in it."""

from __future__ import annotations

import re

import pytest

from src.config import Settings
from tests.gitops.rendered import ENVIRONMENTS, render, values
from tests.kube.manifests import (
    KUBE_CONFIG,
    SCRIPTS,
    containers,
    find,
    matches,
    one,
    pod_spec,
)

# The keys CloudNativePG documents for the Secret <cluster>-app it makes for the database owner.
CNPG_APP_SECRET_KEYS = {"username", "password", "host", "port", "dbname", "uri", "jdbc-uri", "pgpass"}
WAVE = "argocd.argoproj.io/sync-wave"


def secret_refs(objects: list[dict]) -> set[tuple[str, str]]:
    """(Secret, key) pairs the API's pods read: environment variables and the files of Secret volumes."""
    spec = pod_spec(one(objects, "Deployment", "flask-api"))
    refs = {
        (env["valueFrom"]["secretKeyRef"]["name"], env["valueFrom"]["secretKeyRef"]["key"])
        for container in containers(spec)
        for env in container.get("env", [])
        if "secretKeyRef" in env.get("valueFrom", {})
    }
    for volume in spec["volumes"]:
        if "secret" in volume:
            refs.update((volume["secret"]["secretName"], item["key"]) for item in volume["secret"]["items"])
    return refs


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_every_object_carries_its_environment_label_and_lives_in_the_api_namespace(env):
    for obj in render(f"overlays/{env}"):
        assert obj["metadata"]["labels"]["environment"] == env
        # Traefik's settings (kube-system) come from the platform's Application "traefik", not the overlay.
        # EKS: the schema migration runs in a namespace of its own (overlays/eks/migration.yaml).
        namespaces = {"flask-api", "flask-api-migrate"} if env in ("staging", "prod") else {"flask-api"}
        assert obj["metadata"].get("namespace", "flask-api") in namespaces
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "flask-api"


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_the_database_and_its_service_come_a_wave_before_the_api_which_migrates_first(env):
    objects = render(f"overlays/{env}")
    api = one(objects, "Deployment", "flask-api")
    api_wave = int(api["metadata"]["annotations"][WAVE])
    for obj in objects:
        if obj["kind"] in {"StatefulSet", "Cluster", "Service"}:
            assert int(obj["metadata"]["annotations"][WAVE]) < api_wave, obj["metadata"]["name"]
    if env in ("staging", "prod"):
        # An Argo CD Sync hook of an earlier wave: the API is rolled only once the migration completed.
        job = one(objects, "Job", "flask-api-migrate")
        assert job["metadata"]["annotations"]["argocd.argoproj.io/hook"] == "Sync"
        assert int(job["metadata"]["annotations"][WAVE]) < api_wave
        assert pod_spec(job)["containers"][0]["command"] == ["python", "-m", "src.migrate"]
        assert not pod_spec(api).get("initContainers")
    else:
        assert pod_spec(api)["initContainers"][0]["command"] == ["python", "-m", "src.migrate"]


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_every_object_has_an_explicit_sync_wave(env):
    for obj in render(f"overlays/{env}"):
        assert obj["metadata"].get("annotations", {}).get(WAVE) in {"-2", "-1", "0", "1"}, obj["kind"]


@pytest.mark.parametrize(("env", "low", "high"), [("dev", 2, 6), ("staging", 2, 6), ("prod", 3, 12)])
def test_autoscaler_bounds_per_environment(env, low, high):
    hpa = one(render(f"overlays/{env}"), "HorizontalPodAutoscaler", "flask-api")["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (low, high)


def test_prod_keeps_two_pods_through_a_voluntary_disruption():
    pdb = one(render("overlays/prod"), "PodDisruptionBudget", "flask-api")["spec"]
    assert pdb["minAvailable"] == 2
    assert "maxUnavailable" not in pdb


def test_selfhosted_runs_postgresql_as_a_three_instance_cloudnativepg_cluster_instead_of_the_statefulset():
    objects = render("overlays/selfhosted")
    assert find(objects, "StatefulSet") == []
    assert [o["metadata"]["name"] for o in find(objects, "Service")] == ["flask-api"]
    (cluster,) = find(objects, "Cluster")
    assert cluster["apiVersion"] == "postgresql.cnpg.io/v1"
    assert cluster["spec"]["instances"] == 3
    assert cluster["spec"]["bootstrap"]["initdb"] == {"database": "flask_api", "owner": "flask_api"}


def test_every_secret_the_selfhosted_api_reads_is_made_by_the_operator_or_the_k3d_script(k3d_secrets):
    objects = render("overlays/selfhosted")
    (cluster,) = find(objects, "Cluster")
    operator_made = {(f"{cluster['metadata']['name']}-app", key) for key in CNPG_APP_SECRET_KEYS}
    scripted = {(name, key) for name, data in k3d_secrets.items() for key in data}
    # The previous signing key is optional: its Secret exists during a key rotation only (docs/security.md).
    refs = secret_refs(objects) - {("flask-api-secrets-previous", "SECRET_KEY_PREVIOUS")}
    assert refs == {
        ("flask-api-pg-app", "uri"),
        ("flask-api-pg-app", "password"),
        ("flask-api-secrets", "SECRET_KEY"),
    }
    assert refs <= operator_made | scripted


def test_the_selfhosted_migration_connects_as_the_owner_and_creates_no_role():
    migrate = pod_spec(one(render("overlays/selfhosted"), "Deployment", "flask-api"))["initContainers"][0]
    names = {env["name"] for env in migrate["env"]}
    assert "DATABASE_APP_URL" not in names
    assert "DATABASE_APP_PASSWORD_FILE" not in names
    assert {"DATABASE_URL", "DATABASE_PASSWORD_FILE"} <= names


@pytest.mark.parametrize("env", ["dev", "staging", "prod"])
def test_the_other_environments_read_the_application_roles_url_from_flask_api_db(env):
    assert ("flask-api-db", "url") in secret_refs(render(f"overlays/{env}"))


def test_the_api_accepts_the_url_shape_of_the_operator_made_secret():
    # uri of flask-api-pg-app: the owner, its password, the -rw Service of the Cluster, the database.
    url = "postgresql://flask_api:0123abcd@flask-api-pg-rw.flask-api:5432/flask_api"
    settings = Settings.from_env({"DATABASE_URL": url, "SECRET_KEY": "k" * 64})
    assert settings.database_url == url


def test_api_and_cluster_network_policies_let_the_api_reach_the_instances_on_5432():
    objects = render("overlays/selfhosted")
    (cluster,) = find(objects, "Cluster")
    instance_labels = {**cluster["spec"]["inheritedMetadata"]["labels"], "cnpg.io/cluster": "flask-api-pg"}
    api_policy = one(objects, "NetworkPolicy", "flask-api")["spec"]
    assert any(
        matches(peer["podSelector"]["matchLabels"], instance_labels)
        and {"protocol": "TCP", "port": 5432} in rule["ports"]
        for rule in api_policy["egress"]
        for peer in rule.get("to", [])
        if "podSelector" in peer and "namespaceSelector" not in peer
    )
    db_policy = one(objects, "NetworkPolicy", "flask-api-pg")["spec"]
    assert matches(db_policy["podSelector"]["matchLabels"], instance_labels)
    api_labels = one(objects, "Deployment", "flask-api")["spec"]["template"]["metadata"]["labels"]
    assert any(
        matches(peer["podSelector"]["matchLabels"], api_labels)
        and {"protocol": "TCP", "port": 5432} in rule["ports"]
        for rule in db_policy["ingress"]
        for peer in rule["from"]
        if "podSelector" in peer
    )


def test_alertmanager_runs_the_projects_configuration_with_receivers_from_a_secret():
    (settings,) = values("kube-prometheus-stack")
    spec = settings["alertmanager"]["alertmanagerSpec"]
    assert spec["configSecret"] == "alertmanager-flask-api"
    assert spec["secrets"] == ["alertmanager-receivers"]


def test_grafana_loads_the_projects_dashboard_and_prometheus_selects_its_rules_and_pod_monitor():
    (settings,) = values("kube-prometheus-stack")
    sidecar = settings["grafana"]["sidecar"]["dashboards"]
    dashboard = one(render("monitoring"), "ConfigMap", "flask-api-dashboard")
    assert dashboard["metadata"]["labels"][sidecar["label"]] == sidecar["labelValue"]
    assert sidecar["searchNamespace"] == "ALL"
    prometheus = settings["prometheus"]["prometheusSpec"]
    assert prometheus["ruleSelectorNilUsesHelmValues"] is False
    assert prometheus["podMonitorSelectorNilUsesHelmValues"] is False
    assert settings["grafana"]["admin"]["existingSecret"] == "grafana-admin"


def test_opensearch_is_one_node_by_default_and_three_on_distinct_nodes_when_highly_available():
    base, ha = values("opensearch", "ha")
    assert (base["singleNode"], base["replicas"]) == (True, 1)
    assert (ha["singleNode"], ha["replicas"], ha["antiAffinity"]) == (False, 3, "hard")


def test_opensearch_values_keep_every_container_within_the_restricted_pod_security_level():
    (base,) = values("opensearch")
    assert base["persistence"]["enableInitChown"] is False
    assert base["sysctlInit"]["enabled"] is False
    assert base["podSecurityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    context = base["securityContext"]
    assert (context["runAsNonRoot"], context["allowPrivilegeEscalation"]) == (True, False)
    assert context["capabilities"]["drop"] == ["ALL"]


def test_prometheus_scrapes_the_instances_on_the_port_their_network_policy_opens_to_monitoring():
    objects = render("overlays/selfhosted")
    (cluster,) = find(objects, "Cluster")
    monitor = one(objects, "PodMonitor", "flask-api-pg")["spec"]
    assert monitor["selector"]["matchLabels"] == {"cnpg.io/cluster": cluster["metadata"]["name"]}
    assert [e["port"] for e in monitor["podMetricsEndpoints"]] == ["metrics"]
    ingress = one(objects, "NetworkPolicy", "flask-api-pg")["spec"]["ingress"]
    from_monitoring = [
        rule["ports"]
        for rule in ingress
        if {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
        in rule["from"]
    ]
    # CloudNativePG's instances export metrics on the port named "metrics", number 9187.
    assert from_monitoring == [[{"protocol": "TCP", "port": 9187}]]


def test_dev_reaches_postgresql_at_the_service_the_secret_script_writes_into_database_url():
    script = (SCRIPTS / "create-secrets-k3d.sh").read_text(encoding="utf-8")
    # host:port in the URL (postgresql://user:password@host:port/db) or in the variable it is built from.
    (host, port) = re.search(r"(?:@|service=)([a-z][a-z0-9-]*):(\d+)\b", script).groups()
    service = one(render("overlays/dev"), "Service", host)
    assert [p["port"] for p in service["spec"]["ports"]] == [int(port)] == [5432]


def test_selfhosted_reaches_postgresql_at_the_rw_service_the_operator_names_after_the_cluster():
    (cluster,) = find(render("overlays/selfhosted"), "Cluster")
    # The operator's Services: <cluster>-rw, -ro, -r; its app Secret's uri names <cluster>-rw.<namespace>.
    assert (
        f"{cluster['metadata']['name']}-rw.{cluster['metadata']['namespace']}" == "flask-api-pg-rw.flask-api"
    )
    assert cluster["spec"]["bootstrap"]["initdb"]["owner"] == "flask_api"


def env_file(path) -> dict[str, str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


@pytest.mark.parametrize(("env", "values_from"), [("staging", "staging"), ("prod", "eks")])
def test_each_eks_environment_uses_its_own_accounts_certificate_and_database_secrets(env, values_from):
    expected = env_file(KUBE_CONFIG / "overlays" / values_from / "infrastructure.env")
    objects = render(f"overlays/{env}")
    ingress = one(objects, "Ingress", "flask-api")["metadata"]["annotations"]
    assert ingress["alb.ingress.kubernetes.io/certificate-arn"] == expected["CERTIFICATE_ARN"]
    keys = {
        data["remoteRef"]["key"]
        for external in find(objects, "ExternalSecret")
        for data in external["spec"].get("data", [])
    }
    assert keys == {expected["DB_APP_SECRET_ARN"], expected["DB_MASTER_SECRET_ARN"]}


def test_staging_and_prod_point_at_different_accounts_values():
    staging = env_file(KUBE_CONFIG / "overlays" / "staging" / "infrastructure.env")
    prod = env_file(KUBE_CONFIG / "overlays" / "eks" / "infrastructure.env")
    for key in ("CERTIFICATE_ARN", "DB_APP_SECRET_ARN", "DB_MASTER_SECRET_ARN"):
        assert staging[key] != prod[key], key
