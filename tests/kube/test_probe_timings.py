"""The probe timings of the Deployment, bounded by what the alerts and the rollout assume.

Every number is read from the manifests as kubectl renders them (the base and each overlay), from the alerting
rules (kube_config/monitoring/prometheusrule.yaml) and from gunicorn.conf.py as gunicorn loads it under the
pod's ConfigMap; each bound says where it comes from. Worst cases of the kubelet's probing:

- a probe that starts failing right after a success is declared failed ``failureThreshold`` periods later,
  plus the last check's timeout: ``period * threshold + timeout`` at worst;
- it acts at the earliest when the failure starts just before a check: ``period * (threshold - 1) + timeout``.
"""

import re

import pytest

from harness.gunicorn_config import gunicorn_settings
from tests.gitops.rendered import render

from .manifests import MONITORING, base_objects, load_documents, one, pod_spec

OVERLAYS = ("dev", "staging", "prod", "selfhosted", "eks", "k3d")
# The p99 of /healthz during a 16-client login flood that `make drills` allows (docs/drills.md).
HEALTHZ_P99_UNDER_LOGIN_FLOOD_SECONDS = 1.0
FAST_BURN = re.compile(r"ratio_rate1h > \((?P<factor>[\d.]+) \* (?P<budget>[\d.]+)\)")


@pytest.fixture(scope="module", params=("base", *OVERLAYS))
def objects(request) -> list[dict]:
    """Every object of the base (kube_config/*.yaml) or of one rendered overlay."""
    return base_objects() if request.param == "base" else render(f"overlays/{request.param}")


@pytest.fixture(scope="module")
def alerts() -> dict[str, dict]:
    (rule,) = load_documents(MONITORING / "prometheusrule.yaml")
    return {r["alert"]: r for group in rule["spec"]["groups"] for r in group["rules"] if "alert" in r}


def seconds(duration: str) -> int:
    """A Prometheus duration of the rules ("2m", "90s", "1h") in seconds."""
    match = re.fullmatch(r"(\d+)([smh])", duration)
    assert match, f"unexpected duration {duration!r}"
    return int(match[1]) * {"s": 1, "m": 60, "h": 3600}[match[2]]


def api_container(objects: list[dict]) -> dict:
    (container,) = pod_spec(one(objects, "Deployment", "flask-api"))["containers"]
    return container


def latest_failure_detection(probe: dict) -> int:
    return probe["periodSeconds"] * probe["failureThreshold"] + probe["timeoutSeconds"]


def earliest_failure_detection(probe: dict) -> int:
    return probe["periodSeconds"] * (probe["failureThreshold"] - 1) + probe["timeoutSeconds"]


def test_a_broken_pod_leaves_the_service_before_its_errors_alone_can_page(objects, alerts):
    # One pod that answers 5xx to everything, out of the fewest replicas the autoscaler keeps, serves
    # 1/minReplicas of the traffic until readiness takes it out. The fast-burn page needs the error ratio of
    # the last hour above factor * budget: those seconds of errors alone must stay below it.
    readiness = api_container(objects)["readinessProbe"]
    replicas = one(objects, "HorizontalPodAutoscaler", "flask-api")["spec"]["minReplicas"]
    page = FAST_BURN.search(alerts["FlaskApiAvailabilityBudgetBurnFast"]["expr"])
    assert page, "the fast-burn alert no longer compares the 1 h error ratio with factor * budget"
    threshold = float(page["factor"]) * float(page["budget"])

    error_ratio_of_the_hour = latest_failure_detection(readiness) / replicas / 3600

    assert error_ratio_of_the_hour < threshold


def test_readiness_takes_a_sick_pod_out_before_liveness_restarts_it(objects):
    # Unready first (the pod keeps its connections and may recover, e.g. when the database returns), restarted
    # only if it stays sick: the slowest readiness decision comes before the quickest liveness one.
    container = api_container(objects)

    assert latest_failure_detection(container["readinessProbe"]) < earliest_failure_detection(
        container["livenessProbe"]
    )


def test_liveness_outlasts_the_slowest_answer_a_healthy_pod_gives(objects):
    # /healthz answers within 1 s at p99 even during a login flood: each check waits twice that, and one slow
    # answer never restarts the pod.
    liveness = api_container(objects)["livenessProbe"]

    assert liveness["timeoutSeconds"] >= 2 * HEALTHZ_P99_UNDER_LOGIN_FLOOD_SECONDS
    assert liveness["failureThreshold"] >= 2


def test_the_startup_budget_covers_a_boot_gunicorn_tolerates_and_ends_before_the_not_ready_alert(
    objects, alerts
):
    # gunicorn gives a booting worker `timeout` seconds before replacing it, and a worker's first connection
    # to PostgreSQL may wait DATABASE_TIMEOUT_SECONDS: a start the master tolerates must not be cut short by
    # the kubelet. A pod still starting counts as unavailable: FlaskApiPodsNotReady must not fire for a start
    # within the budget.
    startup = api_container(objects)["startupProbe"]
    settings = one(objects, "ConfigMap", "flask-api-config")["data"]
    worker_timeout = gunicorn_settings(settings, "timeout")["timeout"]
    budget = startup["periodSeconds"] * startup["failureThreshold"]

    assert budget >= worker_timeout + int(settings["DATABASE_TIMEOUT_SECONDS"])
    assert budget + startup["timeoutSeconds"] < seconds(alerts["FlaskApiPodsNotReady"]["for"])
