"""Every volume an environment claims gets a StorageClass that environment has.

A claim that names no class takes the cluster's default one; without a default it stays Pending forever, and
so does the Argo CD wave that waits on its pod. The claims are read from what each environment's Applications
deploy: the kustomizations they build (PersistentVolumeClaims, StatefulSet volumeClaimTemplates, CloudNativePG
Clusters) and the Helm values they pass to the charts that make volumes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from tests.gitops.rendered import ENVIRONMENTS, applications, build, source_values
from tests.kube.manifests import KUBE_CONFIG

DEFAULT_CLASS = "storageclass.kubernetes.io/is-default-class"
# The StorageClasses a cluster has before anything of this repository is applied, and its default one:
# k3d and k3s ship Rancher's local-path provisioner as the default class; EKS (1.30 and later) has none.
DISTRIBUTION = {
    "dev": ({"local-path"}, "local-path"),
    "selfhosted": ({"local-path"}, "local-path"),
    "staging": (set(), None),
    "prod": (set(), None),
}
# Where a chart's values ask for a volume: (path to the claim's settings, key of the class inside them, key
# that turns the volume off or None when setting the claim turns it on).
CHART_CLAIMS = {
    "kube-prometheus-stack": [
        ("prometheus.prometheusSpec.storageSpec.volumeClaimTemplate.spec", "storageClassName", None),
        ("alertmanager.alertmanagerSpec.storage.volumeClaimTemplate.spec", "storageClassName", None),
        ("grafana.persistence", "storageClassName", "enabled"),
    ],
    "opensearch": [("persistence", "storageClass", "enabled")],
}


def dig(values: dict, path: str) -> dict | None:
    for key in path.split("."):
        if not isinstance(values, dict) or key not in values:
            return None
        values = values[key]
    return values


def deployed(env: str) -> Iterator[tuple[str, dict | None, list[dict]]]:
    """(Application, Helm values or None, objects its kustomization sources render) for each source."""
    for name, app in applications(env).items():
        for source in app["spec"].get("sources") or [app["spec"]["source"]]:
            if "chart" in source:
                yield f"{name} (chart {source['chart']})", source_values(source), []
            elif "path" in source:
                yield f"{name} ({source['path']})", None, build(source["path"])


def claims(env: str) -> Iterator[tuple[str, str | None]]:
    """(what claims, the StorageClass it names or None) for every volume claim the environment makes."""
    charts = {
        source["chart"]: source
        for app in applications(env).values()
        for source in app["spec"].get("sources") or [app["spec"]["source"]]
        if "chart" in source
    }
    for chart, source in charts.items():
        values = source_values(source)
        for path, class_key, switch in CHART_CLAIMS.get(chart, []):
            settings = dig(values, path)
            if settings is None or (switch is not None and settings.get(switch) is not True):
                continue
            yield f"{chart}: {path}", settings.get(class_key) or None
    for where, _, objects in deployed(env):
        for obj in objects:
            kind, name = obj["kind"], obj["metadata"]["name"]
            if kind == "PersistentVolumeClaim":
                yield f"{where}: {kind} {name}", obj["spec"].get("storageClassName")
            elif kind == "StatefulSet":
                for template in obj["spec"].get("volumeClaimTemplates", []):
                    yield f"{where}: {kind} {name}", template["spec"].get("storageClassName")
            elif kind == "Cluster" and obj["apiVersion"].startswith("postgresql.cnpg.io/"):
                for key in ("storage", "walStorage"):
                    if key in obj["spec"]:
                        yield f"{where}: {kind} {name} {key}", obj["spec"][key].get("storageClass")


def storage_classes(env: str) -> tuple[set[str], set[str]]:
    """(every StorageClass name, the default ones) the environment's cluster has once Argo CD synced it."""
    names, default = DISTRIBUTION[env]
    names, defaults = set(names), {default} - {None}
    for _, _, objects in deployed(env):
        for obj in objects:
            if obj["kind"] == "StorageClass":
                names.add(obj["metadata"]["name"])
                if obj["metadata"].get("annotations", {}).get(DEFAULT_CLASS) == "true":
                    defaults.add(obj["metadata"]["name"])
    return names, defaults


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_every_volume_claim_of_an_environment_gets_a_storage_class_it_has(env):
    names, defaults = storage_classes(env)
    assert len(defaults) <= 1, f"{env}: more than one default StorageClass: {sorted(defaults)}"
    found = list(claims(env))
    assert found, env
    for what, class_name in found:
        if class_name is None:
            assert defaults, f"{env}: {what} names no StorageClass and the cluster has no default one"
        else:
            assert class_name in names, f"{env}: {what} names {class_name}, not one of {sorted(names)}"


@pytest.mark.parametrize("env", ["staging", "prod"])
def test_eks_volumes_are_encrypted_gp3_made_in_the_zone_of_their_pod_and_can_grow(env):
    (gp3,) = [
        obj
        for _, _, objects in deployed(env)
        for obj in objects
        if obj["kind"] == "StorageClass" and obj["metadata"]["annotations"].get(DEFAULT_CLASS) == "true"
    ]
    assert gp3["provisioner"] == "ebs.csi.aws.com"
    assert gp3["parameters"]["type"] == "gp3"
    assert gp3["parameters"]["encrypted"] == "true"
    # The cluster's own key (infrastructure/storage.tf), the one of this environment's account.
    assert re.fullmatch(r"arn:aws:kms:[a-z0-9-]+:\d{12}:key/[0-9a-f-]{36}", gp3["parameters"]["kmsKeyId"])
    env_file = {"staging": "overlays/staging", "prod": "overlays/eks"}[env]
    settings = (KUBE_CONFIG / env_file / "infrastructure.env").read_text(encoding="utf-8")
    assert f"EBS_KMS_KEY_ARN={gp3['parameters']['kmsKeyId']}\n" in settings
    assert gp3["volumeBindingMode"] == "WaitForFirstConsumer"
    assert gp3["allowVolumeExpansion"] is True


@pytest.mark.parametrize("env", ["staging", "prod"])
def test_the_storage_class_exists_before_the_first_chart_that_claims_a_volume(env):
    apps = applications(env)

    def wave(app: dict) -> int:
        return int(app["metadata"].get("annotations", {}).get("argocd.argoproj.io/sync-wave", "0"))

    assert wave(apps["storage"]) < min(wave(apps[n]) for n in ("kube-prometheus-stack", "opensearch"))
