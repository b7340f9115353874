"""NetworkPolicies: default deny, the API reached only by the ingress controller and Prometheus, and reaching
only DNS and PostgreSQL."""

import pytest

from .manifests import base_objects, find, matches, one, overlay_patch

DNS = {("UDP", 53), ("TCP", 53)}


@pytest.fixture(scope="module")
def objects() -> list[dict]:
    return base_objects()


@pytest.fixture(scope="module")
def api_policy(objects) -> dict:
    return one(objects, "NetworkPolicy", "flask-api")["spec"]


def _ports(rule: dict) -> set[tuple[str, int | str]]:
    return {(p["protocol"], p["port"]) for p in rule["ports"]}


def test_default_deny_covers_every_pod_both_ways(objects):
    spec = one(objects, "NetworkPolicy", "default-deny-all")["spec"]
    assert spec == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}


def test_every_pod_has_a_policy_of_its_own(objects):
    policies = find(objects, "NetworkPolicy")
    for workload in [*find(objects, "Deployment"), *find(objects, "StatefulSet")]:
        labels = workload["spec"]["template"]["metadata"]["labels"]
        own = [
            p
            for p in policies
            if p["spec"]["podSelector"] and matches(p["spec"]["podSelector"]["matchLabels"], labels)
        ]
        assert len(own) == 1, workload["metadata"]["name"]


def test_api_accepts_http_only_from_traefik_and_metrics_only_from_monitoring(api_policy):
    sources = {
        (
            peer.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name"),
            peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name"),
            port,
        )
        for rule in api_policy["ingress"]
        for peer in rule["from"]
        for _, port in _ports(rule)
    }
    assert sources == {("kube-system", "traefik", "http"), ("monitoring", None, "metrics")}


def test_api_reaches_only_dns_and_postgresql(api_policy):
    dns, database = api_policy["egress"]
    assert _ports(dns) == DNS
    assert dns["to"][0]["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}
    assert _ports(database) == {("TCP", 5432)}
    assert database["to"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "database"


def test_postgresql_accepts_only_the_api_pods_and_opens_nothing(objects):
    spec = one(objects, "NetworkPolicy", "flask-api-postgres")["spec"]
    (rule,) = spec["ingress"]
    assert rule["from"] == [
        {
            "podSelector": {
                "matchLabels": {"app.kubernetes.io/name": "flask-api", "app.kubernetes.io/component": "api"}
            }
        }
    ]
    assert spec["egress"] == []


def test_eks_policy_admits_the_alb_subnets_and_reaches_only_dns_and_rds():
    spec = overlay_patch("eks", "NetworkPolicy", "flask-api")["spec"]
    alb, monitoring = spec["ingress"]
    assert alb["from"]
    assert all("ipBlock" in peer for peer in alb["from"])
    assert _ports(alb) == {("TCP", "http")}
    assert _ports(monitoring) == {("TCP", "metrics")}
    dns, database = spec["egress"]
    assert _ports(dns) == DNS
    assert _ports(database) == {("TCP", 5432)}
    assert database["to"]
    assert all("ipBlock" in peer and peer["ipBlock"]["cidr"] != "0.0.0.0/0" for peer in database["to"])
