"""The committed Alertmanager routing: amtool accepts it, and every alert of the rules reaches its receiver.

``amtool config routes test`` resolves the receiver of each alert from its labels in prometheusrule.yaml; a
route or a rule that sends an alert elsewhere fails the check, as the last tests show on broken copies.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from .stack import ALERTMANAGER_CONFIG, MONITORING, alerts, binary, rule_spec

# Who hears about what: a page wakes someone, a ticket waits for working hours.
EXPECTED_RECEIVERS = {
    "FlaskApiAvailabilityBudgetBurnFast": "page",
    "FlaskApiAvailabilityBudgetBurnSlow": "ticket",
    "FlaskApiLatencyP99High": "ticket",
    "FlaskApiPodsNotReady": "ticket",
    "FlaskApiDown": "page",
    "FlaskApiPostgresDown": "page",
}


def amtool(*args: str) -> subprocess.CompletedProcess[str]:
    command = [binary("amtool", "prometheus-alertmanager"), *args]
    return subprocess.run(command, check=False, capture_output=True, text=True, timeout=60)


def check_config(path: Path) -> list[str]:
    """amtool check-config's complaint, or nothing."""
    result = amtool("check-config", str(path))
    return [] if result.returncode == 0 else [result.stdout + result.stderr]


def routing_problems(config: Path, rules: dict[str, Any], expected: dict[str, str]) -> list[str]:
    """Alerts of ``rules`` that the routing of ``config`` does not send to their expected receiver."""
    problems = []
    found = alerts(rules)
    if set(found) != set(expected):
        problems.append(f"alerts {sorted(found)} but expectations for {sorted(expected)}")
    for name, rule in sorted(found.items()):
        labels = [f"alertname={name}", *(f"{key}={value}" for key, value in rule.get("labels", {}).items())]
        result = amtool(
            "config",
            "routes",
            "test",
            f"--config.file={config}",
            f"--verify.receivers={expected.get(name)}",
            *labels,
        )
        if result.returncode != 0:
            problems.append(f"{name}: {(result.stdout + result.stderr).strip()}")
    return problems


def test_amtool_accepts_the_committed_configuration():
    assert check_config(ALERTMANAGER_CONFIG) == []


def test_every_alert_of_the_rules_reaches_its_receiver():
    assert routing_problems(ALERTMANAGER_CONFIG, rule_spec(), EXPECTED_RECEIVERS) == []


def test_the_monitoring_stack_heartbeat_reaches_nobody():
    result = amtool("config", "routes", "test", f"--config.file={ALERTMANAGER_CONFIG}", "alertname=Watchdog")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "blackhole"


def test_receiver_urls_are_read_from_the_mounted_secret_only():
    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    urls = [
        slack["api_url_file"]
        for receiver in config["receivers"]
        for slack in receiver.get("slack_configs", [])
    ]
    assert urls == [
        "/etc/alertmanager/secrets/alertmanager-receivers/page-slack-url",
        "/etc/alertmanager/secrets/alertmanager-receivers/ticket-slack-url",
    ]
    text = ALERTMANAGER_CONFIG.read_text()
    assert "hooks.slack.com" not in text
    assert "api_url:" not in text


def test_the_kustomization_makes_the_secret_the_chart_loads():
    kustomization = yaml.safe_load((MONITORING / "kustomization.yaml").read_text())
    (generator,) = kustomization["secretGenerator"]
    assert generator["name"] == "alertmanager-flask-api"
    assert generator["namespace"] == "monitoring"
    # The key is the file name: alertmanager.yaml, the key kube-prometheus-stack reads from configSecret.
    assert generator["files"] == ["alertmanager.yaml"]
    assert generator["options"]["disableNameSuffixHash"] is True


# ----------------------------------------------------------------- the checks fail on a broken copy
def broken_copy(tmp_path: Path, old: str, new: str) -> Path:
    text = ALERTMANAGER_CONFIG.read_text()
    assert old in text
    path = tmp_path / "alertmanager.yaml"
    path.write_text(text.replace(old, new, 1))
    return path


def test_a_route_to_the_wrong_receiver_fails_the_routing_check(tmp_path):
    # The critical route now opens tickets: the pages no longer reach anyone on call.
    broken = broken_copy(tmp_path, "    - receiver: page\n", "    - receiver: ticket\n")
    assert check_config(broken) == []
    problems = routing_problems(broken, rule_spec(), EXPECTED_RECEIVERS)
    assert [problem.split(":")[0] for problem in problems] == [
        "FlaskApiAvailabilityBudgetBurnFast",
        "FlaskApiDown",
        "FlaskApiPostgresDown",
    ]


def test_a_rule_with_a_wrong_severity_fails_the_routing_check():
    rules = rule_spec()
    alerts(rules)["FlaskApiDown"]["labels"]["severity"] = "warning"
    problems = routing_problems(ALERTMANAGER_CONFIG, rules, EXPECTED_RECEIVERS)
    assert [problem.split(":")[0] for problem in problems] == ["FlaskApiDown"]


def test_a_new_alert_without_an_expected_receiver_fails_the_routing_check():
    rules = rule_spec()
    rules["groups"][-1]["rules"].append(
        {"alert": "FlaskApiNew", "expr": "vector(1)", "labels": {"severity": "critical"}}
    )
    problems = routing_problems(ALERTMANAGER_CONFIG, rules, EXPECTED_RECEIVERS)
    assert problems[0].startswith("alerts ")


def test_a_receiver_that_does_not_exist_fails_check_config(tmp_path):
    broken = broken_copy(tmp_path, "    - receiver: page\n", "    - receiver: pager\n")
    assert check_config(broken) != []
