"""kube-prometheus-stack's default alerts stay silent on a healthy cluster of each kind this repository runs.

The chart's rule templates are vendored at the pinned version (tests/gitops/upstream/kube-prometheus-stack,
the twelve that hold a critical alert) and rendered with each environment's values
(tests/gitops/chart_rules.py); promtool then evaluates them over the series a healthy cluster of that kind
has: every target the chart scrapes there is up, and nothing else exists. EKS and k3s expose no scheduler,
controller manager, etcd or kube-proxy metrics to a pod, so those jobs have no series at all.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from harness import in_ci
from tests.gitops.chart_rules import chart_values, kept_rules
from tests.gitops.rendered import ENVIRONMENTS, chart_source, helm_values

CLUSTER_KIND = {"dev": "k3s", "selfhosted": "k3s", "staging": "eks", "prod": "eks"}
# up == 1 of every target Prometheus reaches on a healthy cluster of either kind, with the labels the chart's
# ServiceMonitors give them; and the node kube-state-metrics reports.
HEALTHY = [
    'up{job="apiserver", namespace="default", service="kubernetes"}',
    'up{job="kubelet", metrics_path="/metrics", namespace="kube-system", node="node-1"}',
    'up{job="kubelet", metrics_path="/metrics/cadvisor", namespace="kube-system", node="node-1"}',
    'up{job="kube-state-metrics", namespace="monitoring", service="kube-state-metrics"}',
    'up{job="node-exporter", namespace="monitoring", instance="10.0.0.1:9100"}',
    'up{job="coredns", namespace="kube-system", service="kube-prometheus-stack-coredns"}',
    'up{job="kube-prometheus-stack-operator", namespace="monitoring", container="kube-prometheus-stack"}',
    'up{job="kube-prometheus-stack-prometheus", namespace="monitoring", container="prometheus",'
    ' service="kube-prometheus-stack-prometheus"}',
    'up{job="kube-prometheus-stack-alertmanager", namespace="monitoring", container="alertmanager",'
    ' service="kube-prometheus-stack-alertmanager", pod="alertmanager-0"}',
    'kube_node_info{job="kube-state-metrics", node="node-1"}',
]


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        if in_ci():
            pytest.fail("promtool is needed to evaluate the chart's rules")
        pytest.skip("promtool not installed")
    return path


def environment_values(env: str) -> dict:
    """The values Argo CD gives kube-prometheus-stack in env, over the chart's defaults."""
    source = chart_source(env, "kube-prometheus-stack")
    return chart_values(helm_values(source["helm"]["valueFiles"]))


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_a_healthy_cluster_fires_no_critical_alert_of_the_charts_default_rules(env, tmp_path):
    groups = kept_rules(environment_values(env))
    critical = sorted(
        {r["alert"] for g in groups for r in g["rules"] if r.get("labels", {}).get("severity") == "critical"}
    )
    assert "KubeAPIDown" in critical  # the rules that guard what does exist are kept
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}), encoding="utf-8")
    tests = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": series, "values": "1+0x240"} for series in HEALTHY],
                "alert_rule_test": [
                    {"eval_time": eval_time, "alertname": name, "exp_alerts": []}
                    for name in critical
                    for eval_time in ("30m", "4h")
                ],
            }
        ],
    }
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(tests), encoding="utf-8")
    result = subprocess.run(
        [promtool(), "test", "rules", "tests.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"{env} ({CLUSTER_KIND[env]}):\n{result.stdout}{result.stderr}"


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_no_target_the_cluster_kind_cannot_expose_is_scraped(env):
    values = environment_values(env)
    for component in ("kubeControllerManager", "kubeScheduler", "kubeEtcd", "kubeProxy"):
        assert values[component]["enabled"] is False, (env, CLUSTER_KIND[env], component)
    assert values["kubeApiServer"]["enabled"] is True
    assert values["kubelet"]["enabled"] is True
