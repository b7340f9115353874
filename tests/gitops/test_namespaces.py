"""Names that one file gives and another relies on: namespaces, Services and Secrets across the platform."""

from __future__ import annotations

import re

import pytest

from tests.gitops.conftest import PLATFORM_NAMESPACES
from tests.gitops.rendered import applications, fluent_bit_pipeline, render, values
from tests.kube.conftest import run_k3d_script, secrets_in
from tests.kube.manifests import KUBE_CONFIG, one


def namespace_of(app: str, env: str = "selfhosted") -> str:
    return applications(env)[app]["spec"]["destination"]["namespace"]


def test_fluent_bit_writes_to_the_service_the_opensearch_chart_names_in_its_namespace():
    (settings,) = values("opensearch")
    (output,) = fluent_bit_pipeline()["pipeline"]["outputs"]
    service = f"{settings['clusterName']}-{settings['nodeGroup']}"
    assert output["host"] == f"{service}.{namespace_of('opensearch')}.svc"


def test_the_fluent_bit_configuration_lives_in_the_namespace_of_the_fluent_bit_release():
    objects = render("logging")
    assert {o["kind"] for o in objects} == {"ConfigMap", "Certificate"}
    for obj in objects:
        assert obj["metadata"]["namespace"] == namespace_of("fluent-bit") == "logging"


@pytest.mark.parametrize(
    ("secret", "app"),
    [
        ("grafana-admin", "kube-prometheus-stack"),
        ("opensearch-admin", "opensearch"),
        ("opensearch-internal-users", "opensearch"),
        ("opensearch-credentials", "fluent-bit"),
    ],
)
def test_the_platform_script_creates_each_secret_in_the_namespace_of_the_release_that_reads_it(
    secret, app, platform_secrets
):
    assert (namespace_of(app), secret) in platform_secrets


def test_the_platform_script_creates_the_keys_the_values_name(platform_secrets):
    (prometheus_stack,) = values("kube-prometheus-stack")
    (opensearch,) = values("opensearch")
    admin = prometheus_stack["grafana"]["admin"]
    assert set(platform_secrets["monitoring", admin["existingSecret"]]) == {
        admin["userKey"],
        admin["passwordKey"],
    }
    users = opensearch["securityConfig"]["internalUsersSecret"]
    # The chart mounts the file of that name from the Secret into the security plugin's folder.
    assert set(platform_secrets["opensearch", users]) == {"internal_users.yml"}
    assert set(platform_secrets["opensearch", "opensearch-admin"]) == {"password"}
    assert set(platform_secrets["logging", "opensearch-credentials"]) == {
        "OPENSEARCH_USER",
        "OPENSEARCH_PASSWORD",
    }


def test_the_platform_passwords_are_random_and_strong_enough_for_opensearch(platform_secrets):
    grafana = platform_secrets["monitoring", "grafana-admin"]["admin-password"]
    opensearch = platform_secrets["opensearch", "opensearch-admin"]["password"]
    assert len(grafana) == 48
    assert grafana != opensearch
    # OpenSearch asks for upper and lower case, a digit and a symbol in its initial admin password.
    assert all(any(test(c) for c in opensearch) for test in (str.isupper, str.islower, str.isdigit))
    assert any(not c.isalnum() for c in opensearch)


def test_a_second_run_of_the_platform_script_keeps_every_secret(tmp_path):
    assert run_k3d_script(tmp_path, "create-secrets-platform.sh").returncode == 0
    first = {ns: secrets_in(tmp_path, ns) for ns in PLATFORM_NAMESPACES}
    second = run_k3d_script(tmp_path, "create-secrets-platform.sh")
    assert second.returncode == 0
    assert "exists: kept" in second.stdout
    assert {ns: secrets_in(tmp_path, ns) for ns in PLATFORM_NAMESPACES} == first


@pytest.mark.parametrize("overlay", ["dev", "staging", "prod", "selfhosted"])
def test_the_api_admits_scrapes_from_the_namespace_prometheus_runs_in(overlay):
    policy = one(render(f"overlays/{overlay}"), "NetworkPolicy", "flask-api")["spec"]
    sources = [
        peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
        for rule in policy["ingress"]
        for peer in rule["from"]
        if "namespaceSelector" in peer and "podSelector" not in peer
    ]
    assert namespace_of("kube-prometheus-stack", "dev") in sources


def test_the_database_admits_the_operator_from_the_namespace_it_is_installed_in():
    ingress = one(render("overlays/selfhosted"), "NetworkPolicy", "flask-api-pg")["spec"]["ingress"]
    namespaces = {
        peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
        for rule in ingress
        for peer in rule["from"]
        if "namespaceSelector" in peer
    }
    assert namespace_of("cloudnative-pg") in namespaces


@pytest.mark.parametrize("port", [5432, 8000])
def test_the_database_admits_the_operator_on_postgresql_and_the_status_port(port):
    # The operator connects to each instance on 5432 as well as on the instance manager's 8000.
    ingress = one(render("overlays/selfhosted"), "NetworkPolicy", "flask-api-pg")["spec"]["ingress"]
    namespaces = {
        peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
        for rule in ingress
        if {"protocol": "TCP", "port": port} in rule["ports"]
        for peer in rule["from"]
        if "namespaceSelector" in peer and "podSelector" not in peer
    }
    assert namespace_of("cloudnative-pg") in namespaces


def test_the_dashboard_and_alertmanager_objects_go_where_the_chart_runs():
    monitoring = applications("dev")["monitoring"]["spec"]["destination"]["namespace"]
    assert monitoring == namespace_of("kube-prometheus-stack", "dev")
    dashboard = one(render("monitoring"), "ConfigMap", "flask-api-dashboard")
    assert dashboard["metadata"]["namespace"] == monitoring


def test_kube_config_monitoring_makes_the_alertmanager_configuration_the_chart_loads():
    (settings,) = values("kube-prometheus-stack")
    name = settings["alertmanager"]["alertmanagerSpec"]["configSecret"]
    secret = one(render("monitoring"), "Secret", name)
    assert secret["metadata"]["namespace"] == namespace_of("kube-prometheus-stack", "dev") == "monitoring"
    # The operator reads the configuration from this one key.
    assert list(secret.get("data", secret.get("stringData", {}))) == ["alertmanager.yaml"]


def test_every_receiver_url_file_lies_in_a_secret_the_chart_mounts():
    (settings,) = values("kube-prometheus-stack")
    mounted = settings["alertmanager"]["alertmanagerSpec"]["secrets"]
    text = (KUBE_CONFIG / "monitoring" / "alertmanager.yaml").read_text(encoding="utf-8")
    files = re.findall(r"_file:\s*(\S+)", text)
    assert files
    # The Prometheus Operator mounts each listed Secret at /etc/alertmanager/secrets/<name>/.
    assert all(any(f.startswith(f"/etc/alertmanager/secrets/{name}/") for name in mounted) for f in files)
