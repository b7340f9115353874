"""Cluster Autoscaler on EKS: the pinned chart, values the chart knows, the identity the IAM side binds.

Helm cannot run here. The chart's values.yaml and Chart.yaml are vendored at the pinned tag, and the node
group comparison of the Cluster Autoscaler release it runs (tests/gitops/upstream/cluster-autoscaler, SOURCE
and SHA256SUMS); the IAM side is read from the parsed HCL of infrastructure/cluster-autoscaler.tf.
"""

from __future__ import annotations

import re

import pytest
import yaml

from tests.gitops.rendered import ENVIRONMENTS, applications, chart_source, helm_values, unknown_keys
from tests.gitops.upstream import vendored
from tests.infrastructure.test_invariants import INFRA, _labelled, _load_folder
from tests.kube.manifests import KUBE_CONFIG

EKS = ("staging", "prod")
CHART = "cluster-autoscaler"
# Maps whose keys the chart passes through as they are (command-line flags, Kubernetes fields): their keys are
# checked below against the flags the chart's values.yaml names, or not at all for Kubernetes' own fields.
PASS_THROUGH = frozenset({"extraArgs", "resources", "securityContext", "containerSecurityContext"})
# Labels whose values differ between the nodes of two zones' managed node groups built from the same settings
# (infrastructure/node-groups.tf): the zone labels of Kubernetes, of the EBS CSI driver and of EKS, the node's
# name, and the labels EKS gives each node for its node group and the group's launch template.
ZONE_GROUP_LABELS = {
    "topology.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/zone",
    "topology.ebs.csi.aws.com/zone",
    "topology.k8s.aws/zone-id",
    "kubernetes.io/hostname",
    "eks.amazonaws.com/nodegroup",
    "eks.amazonaws.com/sourceLaunchTemplateId",
    "eks.amazonaws.com/sourceLaunchTemplateVersion",
}
# The Kubernetes constants compare_nodegroups.go names (k8s.io/api/core/v1, well_known_labels.go).
API_LABELS = {
    "LabelHostname": "kubernetes.io/hostname",
    "LabelZoneFailureDomain": "failure-domain.beta.kubernetes.io/zone",
    "LabelZoneRegion": "failure-domain.beta.kubernetes.io/region",
    "LabelZoneFailureDomainStable": "topology.kubernetes.io/zone",
    "LabelZoneRegionStable": "topology.kubernetes.io/region",
}


def chart_defaults() -> dict:
    return yaml.safe_load(vendored("cluster-autoscaler", "values.yaml"))


def labels_ignored_on_aws() -> set[str]:
    """Labels the AWS provider's node group comparison ignores without any flag."""
    basic = re.search(
        r"var BasicIgnoredLabels = map\[string\]bool\{(.*?)\n\}",
        vendored("cluster-autoscaler", "compare_nodegroups.go"),
        re.DOTALL,
    ).group(1)
    aws = re.search(
        r"awsIgnoredLabels := map\[string\]bool\{(.*?)\n\t\}",
        vendored("cluster-autoscaler", "aws_nodegroups.go"),
        re.DOTALL,
    ).group(1)
    return (
        {API_LABELS[name] for name in re.findall(r"apiv1\.(\w+):", basic)}
        | set(re.findall(r'"([^"]+)":\s*true', basic))
        | set(re.findall(r'"([^"]+)":\s*true', aws))
    )


def flags(extra_args: dict) -> list[tuple[str, str]]:
    """(flag, value) as the chart passes them: a key up to its first "_" names the flag, so flags repeat."""
    return [
        (key.split("_", 1)[0], str(value).lower() if isinstance(value, bool) else str(value))
        for key, value in extra_args.items()
    ]


@pytest.fixture(scope="module")
def association() -> dict:
    module = _labelled(_load_folder(INFRA), "module")["cluster_autoscaler_pod_identity"]
    (only,) = module["associations"].values()
    return only


def test_the_vendored_chart_is_the_version_the_application_pins():
    chart = yaml.safe_load(vendored("cluster-autoscaler", "Chart.yaml"))
    for env in EKS:
        source = chart_source(env, CHART)
        assert source["repoURL"] == "https://kubernetes.github.io/autoscaler"
        assert source["chart"] == chart["name"]
        assert source["targetRevision"] == chart["version"] == "9.59.0"


def test_the_autoscaler_runs_the_clusters_kubernetes_minor_version():
    # Cluster Autoscaler supports the Kubernetes minor version of its own release only.
    chart = yaml.safe_load(vendored("cluster-autoscaler", "Chart.yaml"))
    kubernetes = _labelled(_load_folder(INFRA), "variable")["kubernetes_version"]["default"]
    assert kubernetes == "1.35"
    assert chart["appVersion"].rsplit(".", 1)[0] == kubernetes
    assert "image" not in helm_values(chart_source("staging", CHART)["helm"]["valueFiles"])


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_only_eks_environments_run_the_cluster_autoscaler(env):
    assert ("cluster-autoscaler" in applications(env)) is (env in EKS)


@pytest.mark.parametrize("env", EKS)
def test_every_value_and_parameter_is_a_key_of_the_charts_values(env):
    source = chart_source(env, CHART)
    committed = helm_values(source["helm"]["valueFiles"])
    defaults = chart_defaults()
    assert unknown_keys(committed, defaults, PASS_THROUGH) == []
    assert [p["name"] for p in source["helm"]["parameters"] if p["name"] not in defaults] == []


def test_every_extra_flag_is_one_the_charts_values_name():
    # values.yaml lists the flags worth setting (some commented out) under extraArgs.
    text = vendored("cluster-autoscaler", "values.yaml")
    extra = helm_values(["$values/kube_config/platform/cluster-autoscaler/values.yaml"])["extraArgs"]
    assert extra
    assert [flag for flag in extra if f"# {flag}:" not in text and f"  {flag}:" not in text] == []


@pytest.mark.parametrize("env", EKS)
def test_auto_discovery_finds_the_node_group_of_the_environments_cluster(env):
    values = helm_values(chart_source(env, CHART)["helm"]["valueFiles"])
    name = _labelled(_load_folder(INFRA), "variable")["name"]["default"]
    environment = {"staging": "staging", "prod": "production"}[env]
    assert values["cloudProvider"] == "aws"
    assert values["autoDiscovery"]["clusterName"] == f"{name}-{environment}"
    # The chart's default tags are the ones EKS puts on a managed node group's Auto Scaling group.
    assert chart_defaults()["autoDiscovery"]["tags"] == [
        "k8s.io/cluster-autoscaler/enabled",
        "k8s.io/cluster-autoscaler/{{ .Values.autoDiscovery.clusterName }}",
    ]


@pytest.mark.parametrize("env", EKS)
def test_the_service_account_is_the_one_the_pod_identity_association_binds(env, association):
    app = applications(env)["cluster-autoscaler"]
    account = helm_values(chart_source(env, CHART)["helm"]["valueFiles"])["rbac"]["serviceAccount"]
    assert (association["namespace"], association["service_account"]) == ("kube-system", "cluster-autoscaler")
    assert app["spec"]["destination"]["namespace"] == association["namespace"]
    assert (account["create"], account["name"]) == (True, association["service_account"])


@pytest.mark.parametrize("env", EKS)
def test_the_autoscaler_calls_aws_in_the_region_opentofu_wrote(env):
    settings = (KUBE_CONFIG / "overlays" / "eks" / "infrastructure.env").read_text(encoding="utf-8")
    region = dict(line.split("=", 1) for line in settings.splitlines() if line)["REGION"]
    assert {"name": "awsRegion", "value": region} in chart_source(env, CHART)["helm"]["parameters"]


@pytest.mark.parametrize("env", EKS)
def test_the_autoscaler_balances_the_zones_node_groups(env):
    given = flags(helm_values(chart_source(env, CHART)["helm"]["valueFiles"])["extraArgs"])
    assert ("balance-similar-node-groups", "true") in given
    # balancing-label would replace the comparison by labels altogether (and exclude balancing-ignore-label).
    assert "balancing-label" not in {flag for flag, _ in given}
    ignored = labels_ignored_on_aws() | {value for flag, value in given if flag == "balancing-ignore-label"}
    assert sorted(ZONE_GROUP_LABELS - ignored) == []
