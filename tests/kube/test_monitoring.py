"""Monitoring: the PodMonitor scrapes the metrics port, the SLO alerts exist, are tested and use the app's
metric names, and the dashboard loads."""

import json
import re

import pytest

from .manifests import MONITORING, REPO, base_objects, load_documents, matches, one, pod_spec

REQUIRED_ALERTS = {
    "FlaskApiAvailabilityBudgetBurnFast",  # availability
    "FlaskApiLatencyP99High",  # p99 latency
    "FlaskApiPodsNotReady",  # pods not ready
    "FlaskApiPostgresDown",  # PostgreSQL down
}


@pytest.fixture(scope="module")
def rule_groups() -> list[dict]:
    (rule,) = load_documents(MONITORING / "prometheusrule.yaml")
    assert (rule["apiVersion"], rule["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    return rule["spec"]["groups"]


@pytest.fixture(scope="module")
def alerts(rule_groups) -> dict[str, dict]:
    return {r["alert"]: r for g in rule_groups for r in g["rules"] if "alert" in r}


def test_pod_monitor_scrapes_the_metrics_port_of_the_api_pods():
    (monitor,) = load_documents(MONITORING / "podmonitor.yaml")
    assert (monitor["apiVersion"], monitor["kind"]) == ("monitoring.coreos.com/v1", "PodMonitor")
    deployment = one(base_objects(), "Deployment", "flask-api")
    assert matches(
        monitor["spec"]["selector"]["matchLabels"], deployment["spec"]["template"]["metadata"]["labels"]
    )
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    (app,) = pod_spec(deployment)["containers"]
    assert endpoint["port"] in {p["name"] for p in app["ports"]}
    assert (endpoint["port"], endpoint["path"]) == ("metrics", "/metrics")


def test_rules_define_the_availability_latency_readiness_and_postgresql_alerts(alerts):
    assert set(alerts) >= REQUIRED_ALERTS


def test_every_alert_has_a_severity_summary_and_description(alerts):
    for name, alert in alerts.items():
        assert alert["labels"]["severity"] in {"critical", "warning"}, name
        assert {"summary", "description"} <= set(alert["annotations"]), name


def test_every_alert_is_exercised_by_a_promtool_unit_test(alerts):
    (tests,) = load_documents(MONITORING / "prometheusrule-tests.yaml")
    tested = {
        case["alertname"] for test in tests["tests"] for case in test["alert_rule_test"] if case["exp_alerts"]
    }
    assert tested == set(alerts)


def test_every_recording_rule_is_used_by_an_alert_or_the_dashboard(rule_groups, alerts):
    records = {r["record"] for g in rule_groups for r in g["rules"] if "record" in r}
    used = (
        " ".join(a["expr"] for a in alerts.values()) + (MONITORING / "flask-api-dashboard.json").read_text()
    )
    assert records
    assert all(record in used for record in records)


def test_rules_use_the_metric_names_the_application_exports(rule_groups):
    exprs = " ".join(r["expr"] for g in rule_groups for r in g["rules"])
    used = set(re.findall(r"\b(http_request\w*?)(?:_bucket)?\{", exprs))
    assert used == {"http_requests_total", "http_request_duration_seconds"}
    observability = REPO / "src" / "observability.py"
    source = observability.read_text(encoding="utf-8")
    for name in used:
        assert f'"{name}"' in source, name


def test_dashboard_is_json_with_panels_on_a_selectable_prometheus_datasource():
    dashboard = json.loads((MONITORING / "flask-api-dashboard.json").read_text(encoding="utf-8"))
    assert dashboard["uid"] == "flask-api-slo"
    assert [v["type"] for v in dashboard["templating"]["list"]] == ["datasource"]
    assert dashboard["panels"]
    assert all(panel["targets"] for panel in dashboard["panels"])
    assert all(t["expr"] for panel in dashboard["panels"] for t in panel["targets"])
