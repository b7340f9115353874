"""One managed node group per availability zone, as OpenTofu computes them (node_groups.py beside this file).

An Auto Scaling group that spans zones picks the zone of each new node itself, so the Cluster Autoscaler
cannot add a node where a pod bound to a zonal EBS volume waits; one group per zone, each in its own zone's
subnet, lets it. The zone IDs below are the stand-in's: the groups are computed over them.
"""

from __future__ import annotations

import pytest

from tests.infrastructure import node_groups as evaluated
from tests.infrastructure.test_invariants import INFRA, _labelled, _load_folder

pytestmark = pytest.mark.skipif(
    evaluated.tool() is None, reason="tofu or terraform evaluates the node groups"
)


@pytest.fixture(scope="module")
def root():
    return _load_folder(INFRA)


@pytest.fixture(scope="module")
def groups(root):
    eks = _labelled(root, "module")["eks"]
    assert eks["eks_managed_node_groups"] == "${local.eks_managed_node_groups}", (
        "eks.tf writes its own groups"
    )
    return evaluated.node_groups()


def sizes(groups: dict[str, dict], setting: str) -> dict[str, int]:
    return {name: group[f"{setting}_size"] for name, group in groups.items()}


def test_no_node_group_spans_more_than_one_zone(groups):
    assert {name: group["subnet_ids"] for name, group in groups.items()} == {
        "use1-az1": ["subnet-private-use1-az1"],
        "use1-az2": ["subnet-private-use1-az2"],
        "use1-az4": ["subnet-private-use1-az4"],
    }


def test_the_node_groups_together_cover_every_zone_of_the_vpc(root, groups):
    # The stand-in places private_subnets[i] in azs[i]; vpc.tf gives the VPC module the same zones and one
    # private subnet per zone, in that order.
    vpc = _labelled(root, "module")["vpc"]
    assert (vpc["azs"], vpc["private_subnets"]) == ("${local.azs}", "${local.private_subnets}")
    assert sorted(subnet for group in groups.values() for subnet in group["subnet_ids"]) == [
        "subnet-private-use1-az1",
        "subnet-private-use1-az2",
        "subnet-private-use1-az4",
    ]
    other_zones = evaluated.node_groups(zones=["euc1-az2", "euc1-az3", "euc1-az1"])
    assert {name: group["subnet_ids"] for name, group in other_zones.items()} == {
        "euc1-az2": ["subnet-private-euc1-az2"],
        "euc1-az3": ["subnet-private-euc1-az3"],
        "euc1-az1": ["subnet-private-euc1-az1"],
    }


def test_the_default_sizes_keep_one_node_in_each_zone_and_allow_three(groups):
    assert sizes(groups, "min") == {"use1-az1": 1, "use1-az2": 1, "use1-az4": 1}
    assert sizes(groups, "desired") == {"use1-az1": 1, "use1-az2": 1, "use1-az4": 1}
    assert sizes(groups, "max") == {"use1-az1": 3, "use1-az2": 3, "use1-az4": 3}


def test_totals_that_do_not_divide_by_three_are_kept_by_the_first_zones():
    groups = evaluated.node_groups({"node_min_size": 2, "node_desired_size": 4, "node_max_size": 10})
    assert sizes(groups, "min") == {"use1-az1": 1, "use1-az2": 1, "use1-az4": 0}
    assert sizes(groups, "desired") == {"use1-az1": 2, "use1-az2": 1, "use1-az4": 1}
    assert sizes(groups, "max") == {"use1-az1": 4, "use1-az2": 3, "use1-az4": 3}


def test_a_maximum_that_leaves_a_zone_without_nodes_is_refused():
    # EKS refuses a node group whose maximum is 0.
    with pytest.raises(AssertionError, match=r"at least one node in each of\s+the\s+three\s+zones"):
        evaluated.node_groups({"node_max_size": 2})


def test_every_node_group_is_al2023_with_encrypted_volumes_and_imds_v2_only(groups):
    for group in groups.values():
        assert group["ami_type"].startswith("AL2023_")
        assert group["block_device_mappings"]["xvda"]["ebs"]["encrypted"] is True
        assert group["metadata_options"]["http_tokens"] == "required"
        assert group["metadata_options"]["http_put_response_hop_limit"] == 1
