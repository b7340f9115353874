"""Names that one file gives and another relies on: namespaces, Services and Secrets across the platform."""

from __future__ import annotations

import pytest

from tests.gitops.rendered import applications, fluent_bit_pipeline, platform_secrets, render, values
from tests.kube.manifests import one


def namespace_of(app: str, env: str = "selfhosted") -> str:
    return applications(env)[app]["spec"]["destination"]["namespace"]


def test_fluent_bit_writes_to_the_service_the_opensearch_chart_names_in_its_namespace():
    (settings,) = values("opensearch")
    (output,) = fluent_bit_pipeline()["pipeline"]["outputs"]
    service = f"{settings['clusterName']}-{settings['nodeGroup']}"
    assert output["host"] == f"{service}.{namespace_of('opensearch')}.svc"


def test_the_fluent_bit_configuration_lives_in_the_namespace_of_the_fluent_bit_release():
    (config_map,) = render("logging")
    assert config_map["metadata"]["namespace"] == namespace_of("fluent-bit") == "logging"


@pytest.mark.parametrize(
    ("secret", "app"),
    [
        ("grafana-admin", "kube-prometheus-stack"),
        ("opensearch-admin", "opensearch"),
        ("opensearch-credentials", "fluent-bit"),
    ],
)
def test_the_platform_script_creates_each_secret_in_the_namespace_of_the_release_that_reads_it(secret, app):
    assert (namespace_of(app), secret) in platform_secrets()


def test_the_platform_script_creates_the_keys_the_values_name():
    (prometheus_stack,) = values("kube-prometheus-stack")
    (opensearch,) = values("opensearch")
    created = platform_secrets()
    admin = prometheus_stack["grafana"]["admin"]
    assert created["monitoring", admin["existingSecret"]] == {admin["userKey"], admin["passwordKey"]}
    reference = opensearch["extraEnvs"][0]["valueFrom"]["secretKeyRef"]
    assert created["opensearch", reference["name"]] == {reference["key"]}
    assert created["logging", "opensearch-credentials"] == {"OPENSEARCH_USER", "OPENSEARCH_PASSWORD"}


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


def test_the_dashboard_and_alertmanager_objects_go_where_the_chart_runs():
    monitoring = applications("dev")["monitoring"]["spec"]["destination"]["namespace"]
    assert monitoring == namespace_of("kube-prometheus-stack", "dev")
    dashboard = one(render("monitoring"), "ConfigMap", "flask-api-dashboard")
    assert dashboard["metadata"]["namespace"] == monitoring
