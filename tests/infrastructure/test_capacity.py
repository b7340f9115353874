"""The node groups hold the prod overlay at its HPA maximums, and a Cluster Autoscaler gets them there.

tools/capacity.py renders kube_config/overlays/prod with kubectl kustomize and sums the requests at each
HorizontalPodAutoscaler's maxReplicas; these tests hold the zones' node groups (as OpenTofu computes them,
tests/infrastructure/node_groups.py) to that figure and docs/aws.md to the sentence the tool prints.
"""

from __future__ import annotations

import re
import shutil

import pytest

from tests.infrastructure.node_groups import node_groups, tool
from tests.infrastructure.test_invariants import INFRA, _labelled, _load_folder
from tools import capacity

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl renders the overlay")
needs_tofu = pytest.mark.skipif(tool() is None, reason="tofu or terraform evaluates the node groups")


@pytest.fixture(scope="module")
def root():
    return _load_folder(INFRA)


@pytest.fixture(scope="module")
def groups():
    return node_groups()


@pytest.fixture(scope="module")
def prod(root):
    defaults = _labelled(root, "variable")
    instance_type = defaults["node_instance_types"]["default"][0]
    return capacity.capacity(instance_type, platform_nodes=defaults["node_min_size"]["default"])


def test_a_pod_requests_the_larger_of_its_containers_and_its_largest_init_container():
    spec = {
        "initContainers": [{"resources": {"requests": {"cpu": "1", "memory": "64Mi"}}}],
        "containers": [
            {"resources": {"requests": {"cpu": "250m", "memory": "1Gi"}}},
            {"resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}},
        ],
    }
    assert capacity.pod_requests(spec) == (1000, 1152)


def test_an_m7i_large_node_offers_its_allocatable_less_the_daemonsets():
    # 2000m - 70m kube-reserved; 8192Mi - (255 + 11 x 29)Mi kube-reserved - 100Mi eviction.
    assert capacity.node_allocatable("m7i.large") == (1930, 7518)


def test_the_api_counts_at_its_hpa_maximum_spread_over_the_zones(prod):
    (api,) = [w for w in prod.workloads if w.name == "flask-api"]
    assert (api.replicas, api.cpu_m, api.memory_mi, api.zone_spread) == (12, 500, 384, True)
    # 3 pods of 500m per node, 4 pods per zone: 2 nodes in each of 3 zones.
    assert prod.workload_nodes == 6


@needs_tofu
def test_the_node_groups_minimums_add_up_to_the_nodes_counted_for_the_platform(groups, prod):
    assert [group["min_size"] for group in groups.values()] == [1, 1, 1]
    assert sum(group["min_size"] for group in groups.values()) == prod.platform_nodes == 3


@needs_tofu
def test_the_node_group_maximum_holds_the_prod_overlay_at_its_hpa_maximums(groups, prod):
    # The API's pods spread evenly over the zones, and the platform keeps one node in each: every zone's
    # group holds its third.
    assert prod.nodes == 9
    assert [group["max_size"] for group in groups.values()] == [3, 3, 3]
    assert all(group["max_size"] * len(groups) >= prod.nodes for group in groups.values())


def test_a_cluster_autoscaler_may_resize_this_clusters_node_group_through_pod_identity(root):
    identity = _labelled(root, "module")["cluster_autoscaler_pod_identity"]
    assert identity["attach_cluster_autoscaler_policy"] is True
    assert identity["cluster_autoscaler_cluster_names"] == ["${module.eks.cluster_name}"]
    association = identity["associations"]["this"]
    assert (association["namespace"], association["service_account"]) == ("kube-system", "cluster-autoscaler")
    assert association["cluster_name"] == "${module.eks.cluster_name}"


def test_docs_state_the_figures_the_tool_computes(prod):
    page = re.sub(r"\s+", " ", (INFRA.parent / "docs" / "aws.md").read_text())
    assert capacity.summary(prod) in page


def test_a_pod_without_init_containers_requests_the_sum_of_its_containers():
    spec = {"containers": [{"resources": {"requests": {"cpu": "500m", "memory": "384Mi"}}}]}
    assert capacity.pod_requests(spec) == (500, 384)
