"""Security invariants of every pod: non-root, read-only, no capabilities, seccomp, pinned images, limits."""

import re

import pytest

from harness.gunicorn_config import gunicorn_settings

from .manifests import base_objects, containers, one, pod_spec, workloads


@pytest.fixture(scope="module")
def objects() -> list[dict]:
    return base_objects()


@pytest.fixture(scope="module")
def all_containers(objects) -> list[dict]:
    return [c for w in workloads(objects) for c in containers(pod_spec(w))]


def test_api_pods_run_as_user_and_group_10001_and_never_as_root(objects):
    spec = pod_spec(one(objects, "Deployment", "flask-api"))
    assert spec["securityContext"]["runAsNonRoot"] is True
    for container in containers(spec):
        context = container["securityContext"]
        assert (context["runAsUser"], context["runAsGroup"], context["runAsNonRoot"]) == (10001, 10001, True)


def test_postgres_pod_runs_as_the_image_postgres_user_not_root(objects):
    spec = pod_spec(one(objects, "StatefulSet", "flask-api-postgres"))
    context = spec["securityContext"]
    assert (context["runAsUser"], context["fsGroup"], context["runAsNonRoot"]) == (999, 999, True)


def test_every_container_has_a_read_only_root_filesystem(all_containers):
    assert all_containers
    assert all(c["securityContext"]["readOnlyRootFilesystem"] is True for c in all_containers)


def test_every_container_drops_all_capabilities_and_forbids_privilege_escalation(all_containers):
    for container in all_containers:
        context = container["securityContext"]
        assert context["capabilities"] == {"drop": ["ALL"]}, container["name"]
        assert context["allowPrivilegeEscalation"] is False, container["name"]
        assert not context.get("privileged", False), container["name"]


def test_every_pod_uses_the_runtime_default_seccomp_profile(objects):
    for workload in workloads(objects):
        assert pod_spec(workload)["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}


def test_no_pod_mounts_a_service_account_token(objects):
    for workload in workloads(objects):
        spec = pod_spec(workload)
        account = one(objects, "ServiceAccount", spec["serviceAccountName"])
        assert spec["automountServiceAccountToken"] is False
        assert account["automountServiceAccountToken"] is False


def test_no_image_is_latest_or_untagged(all_containers):
    for container in all_containers:
        name = container["image"].split("@")[0]
        tag = name.rpartition(":")[2] if ":" in name.rpartition("/")[2] else ""
        assert tag, f"{container['image']} has no tag"
        assert tag != "latest", container["image"]


def test_postgres_image_is_the_official_one_pinned_by_tag_and_digest(objects):
    (container,) = pod_spec(one(objects, "StatefulSet", "flask-api-postgres"))["containers"]
    name, _, digest = container["image"].partition("@sha256:")
    assert name.startswith("docker.io/library/postgres:18.")
    assert re.fullmatch(r"[0-9a-f]{64}", digest), container["image"]


def test_every_container_sets_cpu_and_memory_requests_and_limits(all_containers):
    for container in all_containers:
        resources = container["resources"]
        for kind in ("requests", "limits"):
            assert set(resources[kind]) >= {"cpu", "memory"}, container["name"]


def test_writable_paths_are_memory_empty_dirs(objects):
    spec = pod_spec(one(objects, "Deployment", "flask-api"))
    settings = one(objects, "ConfigMap", "flask-api-config")["data"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    (app,) = spec["containers"]
    mounts = {m["mountPath"]: volumes[m["name"]] for m in app["volumeMounts"]}
    scratch = "/tmp"  # noqa: S108 - the path mounted in the pod, not a file this test writes
    for path in (scratch, settings["GUNICORN_WORKER_TMP_DIR"], settings["PROMETHEUS_MULTIPROC_DIR"]):
        assert mounts[path]["emptyDir"]["medium"] == "Memory", path
        assert "sizeLimit" in mounts[path]["emptyDir"], path


def test_termination_grace_exceeds_prestop_plus_gunicorn_graceful_timeout(objects):
    spec = pod_spec(one(objects, "Deployment", "flask-api"))
    settings = one(objects, "ConfigMap", "flask-api-config")["data"]
    # What gunicorn itself makes of gunicorn.conf.py under the pod's settings (its default included).
    graceful = gunicorn_settings(settings, "graceful_timeout")["graceful_timeout"]
    (app,) = spec["containers"]
    pre_stop = app["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert spec["terminationGracePeriodSeconds"] > pre_stop + graceful
    assert (spec["terminationGracePeriodSeconds"], pre_stop, graceful) == (45, 5, 20)


def test_deployment_keeps_two_replicas_and_rolls_without_losing_capacity(objects):
    deployment = one(objects, "Deployment", "flask-api")
    assert "replicas" not in deployment["spec"], "the HorizontalPodAutoscaler owns the count"
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert one(objects, "HorizontalPodAutoscaler", "flask-api")["spec"]["minReplicas"] >= 2


def test_autoscaler_targets_the_deployment_on_cpu_and_memory(objects):
    spec = one(objects, "HorizontalPodAutoscaler", "flask-api")["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "flask-api"}
    assert {m["resource"]["name"] for m in spec["metrics"]} == {"cpu", "memory"}


def test_disruption_budget_covers_the_api_pods(objects):
    budget = one(objects, "PodDisruptionBudget", "flask-api")["spec"]
    labels = one(objects, "Deployment", "flask-api")["spec"]["template"]["metadata"]["labels"]
    assert budget["selector"]["matchLabels"]
    assert all(labels[k] == v for k, v in budget["selector"]["matchLabels"].items())
    assert budget["maxUnavailable"] == 1


def test_api_pods_spread_over_zones_and_nodes(objects):
    constraints = pod_spec(one(objects, "Deployment", "flask-api"))["topologySpreadConstraints"]
    assert {c["topologyKey"] for c in constraints} == {
        "topology.kubernetes.io/zone",
        "kubernetes.io/hostname",
    }


def test_namespace_enforces_the_restricted_pod_security_standard(objects):
    labels = one(objects, "Namespace", "flask-api")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_every_checkov_skip_names_a_check_and_a_reason_without_equals_sign(objects):
    skips = [
        value
        for o in objects
        for key, value in o["metadata"].get("annotations", {}).items()
        if key.startswith("checkov.io/skip")
    ]
    assert skips
    for value in skips:
        check, _, reason = value.partition("=")
        assert check.startswith(("CKV_K8S_", "CKV2_K8S_")), value
        assert len(reason.split()) >= 5, value
        assert "=" not in reason, value
