"""Existing IAM roles instead of created ones: the cluster, node group and load balancer controller roles.

Each input defaults to null (the role is created) and takes an IAM role ARN (the role is reused). The wiring
is read from the parsed HCL and evaluated here for both cases; the few expression shapes it may use are
interpreted below, and any other shape fails the test rather than being guessed at. The node groups are a
for expression over the zones, which OpenTofu itself evaluates (tests/infrastructure/node_groups.py).
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.infrastructure.node_groups import node_groups, tool
from tests.infrastructure.test_invariants import INFRA, _labelled, _load_folder, _resources

CLUSTER_ROLE = "arn:aws:iam::123456789012:role/eks-cluster"
NODE_ROLE = "arn:aws:iam::123456789012:role/platform/eks-nodes"
LBC_ROLE = "arn:aws-us-gov:iam::123456789012:role/aws-lbc"
INPUTS = (
    "cluster_iam_role_arn",
    "node_iam_role_arn",
    "lb_controller_iam_role_arn",
)
# The controllers whose role a Pod Identity association binds: module, association, output, service account.
CONTROLLERS = {
    "lb_controller": ("lb_controller_pod_identity", "lb_controller_existing_role", "lb_controller_role_arn"),
}


@pytest.fixture(scope="module")
def root() -> dict[str, list[Any]]:
    return _load_folder(INFRA)


def evaluate(expression: Any, values: dict[str, str | None]) -> Any:
    """The value of ``${var.x}``, ``${var.x == null}`` or ``${var.x == null ? a : b}`` for these inputs."""
    text = str(expression)
    if match := re.fullmatch(r"\$\{var\.(\w+)\}", text):
        return values[match.group(1)]
    if match := re.fullmatch(r"\$\{var\.(\w+) == null\}", text):
        return values[match.group(1)] is None
    if match := re.fullmatch(r"\$\{var\.(\w+) == null \? (\S+) : (\S+)\}", text):
        chosen = match.group(2) if values[match.group(1)] is None else match.group(3)
        if chosen.isdigit():
            return int(chosen)
        if chosen.startswith("var."):
            return values[chosen.removeprefix("var.")]
        return chosen
    raise AssertionError(f"unsupported expression {text!r}: extend evaluate() deliberately")


def accepts(variable: dict[str, Any], name: str, value: str | None) -> bool:
    """Whether every validation of the variable holds for ``value`` (null, or an ARN matched by its regex)."""
    results = []
    for rule in variable["validation"]:
        match = re.fullmatch(
            rf'\$\{{var\.{name} == null \|\| can\(regex\("(.+)", var\.{name}\)\)\}}', rule["condition"]
        )
        assert match, f"unsupported condition {rule['condition']!r}"
        results.append(value is None or re.search(match.group(1), value) is not None)
    return all(results)


def association(root: dict[str, list[Any]], name: str) -> dict[str, Any]:
    (body,) = [
        b for rtype, n, b in _resources(root) if (rtype, n) == ("aws_eks_pod_identity_association", name)
    ]
    return body


def wiring(root: dict[str, list[Any]], values: dict[str, str | None]) -> dict[str, Any]:
    modules = _labelled(root, "module")
    eks = modules["eks"]
    # Every zone's node group takes the same role: one (creates, given) pair over the groups.
    groups = node_groups({"node_iam_role_arn": values["node_iam_role_arn"]})
    ((creates, given),) = {(group["create_iam_role"], group["iam_role_arn"]) for group in groups.values()}
    found = {
        "cluster creates its role": evaluate(eks["create_iam_role"], values),
        "cluster role given": evaluate(eks["iam_role_arn"], values),
        "node group creates its role": creates,
        "node group role given": given,
    }
    for controller, (module, existing, output) in CONTROLLERS.items():
        bound = association(root, existing)
        found |= {
            f"{controller} module creates its role": evaluate(modules[module]["create"], values),
            f"{controller} associations of the given role": evaluate(bound["count"], values),
            f"{controller} association role": evaluate(bound["role_arn"], values),
            f"{controller} role output": evaluate(_labelled(root, "output")[output]["value"], values),
        }
    return found


@pytest.mark.skipif(tool() is None, reason="tofu or terraform evaluates the node groups")
def test_every_role_is_created_by_default(root):
    defaults = {name: _labelled(root, "variable")[name]["default"] for name in INPUTS}
    assert defaults == dict.fromkeys(INPUTS)
    assert wiring(root, defaults) == {
        "cluster creates its role": True,
        "cluster role given": None,
        "node group creates its role": True,
        "node group role given": None,
        "lb_controller module creates its role": True,
        "lb_controller associations of the given role": 0,
        "lb_controller association role": None,
        "lb_controller role output": "module.lb_controller_pod_identity.iam_role_arn",
    }


@pytest.mark.skipif(tool() is None, reason="tofu or terraform evaluates the node groups")
def test_given_roles_are_used_and_none_is_created(root):
    values = {
        "cluster_iam_role_arn": CLUSTER_ROLE,
        "node_iam_role_arn": NODE_ROLE,
        "lb_controller_iam_role_arn": LBC_ROLE,
    }
    assert wiring(root, values) == {
        "cluster creates its role": False,
        "cluster role given": "arn:aws:iam::123456789012:role/eks-cluster",
        "node group creates its role": False,
        "node group role given": "arn:aws:iam::123456789012:role/platform/eks-nodes",
        "lb_controller module creates its role": False,
        "lb_controller associations of the given role": 1,
        "lb_controller association role": "arn:aws-us-gov:iam::123456789012:role/aws-lbc",
        "lb_controller role output": "arn:aws-us-gov:iam::123456789012:role/aws-lbc",
    }


@pytest.mark.parametrize(
    ("existing", "service_account"),
    [
        ("lb_controller_existing_role", ("kube-system", "aws-load-balancer-controller")),
    ],
)
def test_a_given_controller_role_is_bound_to_the_service_account_of_its_controller(
    root, existing, service_account
):
    bound = association(root, existing)
    assert bound["cluster_name"] == "${module.eks.cluster_name}"
    assert (bound["namespace"], bound["service_account"]) == service_account


@pytest.mark.parametrize("name", INPUTS)
@pytest.mark.parametrize(
    "value", [None, CLUSTER_ROLE, NODE_ROLE, LBC_ROLE, "arn:aws-cn:iam::123456789012:role/x"]
)
def test_role_inputs_accept_null_and_role_arns(root, name, value):
    assert accepts(_labelled(root, "variable")[name], name, value)


@pytest.mark.parametrize("name", INPUTS)
@pytest.mark.parametrize(
    "value",
    [
        "",
        "eks-cluster",
        "arn:aws:iam::123456789012:user/alice",
        "arn:aws:iam::123456789012:policy/x",
        "arn:aws:iam::12345:role/x",
        "arn:aws:iam::123456789012:role/",
        "arn:aws:s3:::bucket",
        "arn:aws:iam::123456789012:role/x y",
    ],
)
def test_role_inputs_reject_anything_but_a_role_arn(root, name, value):
    assert not accepts(_labelled(root, "variable")[name], name, value)


def test_the_reuse_inputs_are_documented_in_the_example_settings():
    example = (INFRA / "terraform.tfvars.example").read_text()
    for name in INPUTS:
        assert re.search(rf"^# {name} += \"arn:aws:iam::", example, re.MULTILINE), name
